"""Compose the litops config with Hydra: YAML tree + typed schema + CLI overrides."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from litops.core.config import ConfigError, LitopsConfig, from_dict, validate
from litops.core.workspace import resolve_home

SCHEMA_NAME = "litops_schema"
CONFIG_NAME = "config"


def config_dir() -> str:
    return str(resources.files("litops.configs"))


@dataclass(frozen=True)
class ConfigSource:
    """Where the config tree is read from: `litops run --config-path/--config-name/--config-dir` change it."""

    primary_dir: str = ""  # empty: the configs package
    name: str = CONFIG_NAME
    extra_dir: str = ""  # searched after the primary tree: extra group options, extra primary configs


_source = ConfigSource()


@contextmanager
def config_source(source: ConfigSource) -> Iterator[None]:
    """Every load_config in the block reads from `source` (the flow composes its config again by overrides)."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous


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


def load_config(overrides: list[str] | None = None) -> LitopsConfig:
    """The resolved, type-checked config; raises ConfigError with one line naming the bad key."""
    return to_litops_config(compose_config(overrides))


def compose_config(overrides: list[str] | None = None) -> Any:
    """The composed DictConfig (Hydra's own node left out); ConfigError with one line when it cannot be.

    Composed by a config loader of its own, not Hydra's global instance: `litops run`'s Hydra app
    holds that one while the flow composes its config again."""
    from hydra import version
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.utils import setup_globals
    from hydra.types import RunMode
    from omegaconf import open_dict

    register_schema()
    version.setbase("1.3")
    setup_globals()  # Hydra's resolvers (${now:...}) for its own node
    try:
        loader = ConfigLoaderImpl(config_search_path=search_path(_source))
        composed = loader.load_configuration(config_name=_source.name, overrides=list(overrides or []),
                                             run_mode=RunMode.RUN, from_shell=False)
    except Exception as e:  # hydra/omegaconf raise several types; all are user errors here
        raise ConfigError(one_line(e)) from None
    with open_dict(composed):
        del composed["hydra"]
    return composed


def search_path(source: ConfigSource) -> Any:
    """Hydra's config search path for a source, as `hydra.main` builds it (--config-dir before the schemas)."""
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    path = create_config_search_path(os.path.abspath(source.primary_dir or config_dir()))
    if source.extra_dir:
        path.prepend(provider="command-line", path=f"file://{os.path.abspath(source.extra_dir)}",
                     anchor=SearchPathQuery(provider="schema"))
    return path


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
    import dataclasses

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))
    return path
