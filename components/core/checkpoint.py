"""Checkpoint files: atomic writes, finding the latest, and loading a model for inference."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from litops.core.config import LitopsConfig, from_dict
from litops.core.model import LiTModel

_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def step_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step-{step:08d}.pt"


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_FILE.match(p.name))]
    return max(steps)[1] if steps else None


def prune_checkpoints(ckpt_dir: Path, keep: int = 2) -> None:
    steps = sorted((int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_FILE.match(p.name)))
    for _, p in steps[:-keep]:
        p.unlink(missing_ok=True)


def export_model(state: dict[str, Any], path: Path) -> None:
    """The inference part of a training checkpoint: config, image size and weights."""
    atomic_save({"format": 1, "config": state["config"], "image_size": state["image_size"], "model": state["model"],
                 "step": state["step"]}, path)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[LiTModel, LitopsConfig]:
    """A ready-to-use model in eval mode from a training checkpoint or an exported model file."""
    state = torch.load(path, map_location=map_location, weights_only=False)
    cfg = from_dict(LitopsConfig, state["config"])
    model = LiTModel(cfg.model, state["image_size"])
    model.lock()  # as trained: a partly locked tower's frozen BatchNorm layers are in the saved weights
    model.load_state_dict(state["model"])
    return model.eval(), cfg
