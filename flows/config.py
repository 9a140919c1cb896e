"""Compose the litops config once, with Hydra's public compose API: YAML tree + typed schema + overrides.

A run composes its config here (or in Hydra's app for sweeps), checks it against the schema, and
writes it as the run's resolved `config.yaml`. The flow takes the typed config as its parameter and
every step reads that file: nothing composes it again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from litops.core.config import ConfigError, LitopsConfig, from_dict, validate
from litops.core.workspace import resolve_home

SCHEMA_NAME = "litops_schema"
CONFIG_NAME = "config"
JOB_NAME = "litops_run"


def config_dir() -> str:
    return str(resources.files("litops.configs"))


@dataclass(frozen=True)
class ConfigSource:
    """Where the config tree is read from: `litops run --config-path/--config-name/--config-dir` change it."""

    primary_dir: str = ""  # empty: the configs package
    name: str = CONFIG_NAME
    extra_dir: str = ""  # searched after the primary tree: extra group options, extra primary configs

    @property
    def tree(self) -> str:
        return self.primary_dir or config_dir()

    def layout(self) -> tuple[str, list[str]]:
        """The folder the primary config is read from, and the folders searched after it (Hydra's own
        `hydra.searchpath` key). A primary config that only the extra folder has is read from there,
        as `--config-dir` finds it in Hydra's app."""
        if not self.extra_dir:
            return self.tree, []
        extra = str(Path(self.extra_dir).resolve())
        if not (Path(self.tree) / f"{self.name}.yaml").exists() and (Path(extra) / f"{self.name}.yaml").exists():
            return extra, [self.tree]
        return self.tree, [extra]


PACKAGED = ConfigSource()


def register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=LitopsConfig)


def one_line(err: BaseException) -> str:
    """Hydra/OmegaConf errors carry several lines and a cause chain; keep what names the key."""
    parts = []
    while err is not None:
        text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        for noise in ("full_key:", "object_type=", "Config search path:"):
            text = text.split(noise)[0].strip().rstrip(",")
        if text and text not in parts:
            parts.append(text)
        err = err.__cause__
    return " - ".join(parts) or "invalid config"


def load_config(overrides: list[str] | None = None, source: ConfigSource = PACKAGED) -> LitopsConfig:
    """The resolved, type-checked config; raises ConfigError with one line naming the bad key."""
    return to_litops_config(compose_config(overrides, source))


def compose_config(overrides: list[str] | None = None, source: ConfigSource = PACKAGED,
                   with_hydra_node: bool = False) -> Any:
    """The composed DictConfig; ConfigError with one line when it cannot be composed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.utils import setup_globals

    register_schema()
    setup_globals()  # Hydra's resolvers (${now:...}) for its own node
    primary, searched = source.layout()
    search = [f"hydra.searchpath=[{','.join(f'file://{folder}' for folder in searched)}]"] if searched else []
    try:
        with initialize_config_dir(config_dir=primary, version_base="1.3", job_name=JOB_NAME):
            return compose(config_name=source.name, overrides=[*(overrides or []), *search],
                           return_hydra_config=with_hydra_node)
    except Exception as e:  # hydra/omegaconf raise several types; all are user errors here
        raise ConfigError(one_line(e)) from None


def to_litops_config(composed: Any) -> LitopsConfig:
    """A composed DictConfig as the typed, validated config, its home resolved."""
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(composed, resolve=True)
    except Exception as e:
        raise ConfigError(one_line(e)) from None
    data.pop("hydra", None)
    cfg = validate(from_dict(LitopsConfig, data))
    cfg.home = str(resolve_home(cfg.home))
    return cfg


def write_config(cfg: LitopsConfig, path: Path) -> Path:
    """The run's resolved config as YAML: what every step of the run reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return path
