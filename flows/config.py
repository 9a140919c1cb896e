"""Compose the litops config with Hydra: YAML tree + typed schema + CLI overrides."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from litops.core.config import ConfigError, LitopsConfig, from_dict, validate
from litops.core.workspace import resolve_home

SCHEMA_NAME = "litops_schema"


def config_dir() -> str:
    return str(resources.files("litops.configs"))


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=LitopsConfig)


def _one_line(err: Exception) -> str:
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
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    _register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            composed = compose(config_name="config", overrides=list(overrides or []))
        data = OmegaConf.to_container(composed, resolve=True)
    except Exception as e:  # hydra/omegaconf raise several types; all are user errors here
        raise ConfigError(_one_line(e)) from None
    cfg = validate(from_dict(LitopsConfig, data))
    cfg.home = str(resolve_home(cfg.home))
    return cfg


def write_config(cfg: LitopsConfig, path: Path) -> Path:
    import dataclasses

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))
    return path
