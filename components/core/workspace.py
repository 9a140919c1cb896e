"""Where the embedded default keeps its state: everything lives under one home folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".litops"


def resolve_home(home: str | None = None) -> Path:
    """$LITOPS_HOME wins over the config value; both default to ./.litops."""
    return Path(os.environ.get("LITOPS_HOME") or home or DEFAULT_HOME).expanduser().resolve()


@dataclass(frozen=True)
class Workspace:
    home: Path

    @property
    def data_repo(self) -> Path:  # git + DVC repository
        return self.home / "data"

    def dataset_dir(self, name: str) -> Path:
        return self.data_repo / "datasets" / name

    @property
    def dvc_remote(self) -> Path:  # local DVC remote
        return self.home / "dvc-remote"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def checkpoints(self) -> Path:
        return self.home / "checkpoints"

    @property
    def runs(self) -> Path:  # resolved configs and step outputs of flow runs
        return self.home / "runs"

    def create(self) -> "Workspace":
        for p in (self.home, self.checkpoints, self.runs, self.artifacts):
            p.mkdir(parents=True, exist_ok=True)
        return self


def tracking_uri(cfg) -> str:
    """The MLflow tracking URI a config points at: explicit, else the workspace's SQLite file."""
    return cfg.mlflow.tracking_uri or Workspace(resolve_home(cfg.home)).tracking_uri


def artifact_location(cfg) -> str:
    """Where new MLflow experiments keep artifacts: explicit, else <home>/mlartifacts."""
    return cfg.mlflow.artifact_location or str(Workspace(resolve_home(cfg.home)).artifacts)
