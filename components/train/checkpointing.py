"""A run's checkpoints: resume from the newest (local or mirrored), save every `checkpoint_every`, export.

A checkpoint holds the model, optimizer and scheduler states, the step and the data cursor,
so a resumed run continues at the next sample with the same weights it would have had.
Rank 0 alone writes; every rank resumes rank 0's step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from litops.core.checkpoint import atomic_save, export_model, latest_checkpoint, prune_checkpoints, step_path
from litops.core.config import LitopsConfig, to_dict
from litops.train import distributed

MODEL_FILE = "model.pt"


class Checkpointer:
    def __init__(self, cfg: LitopsConfig, ckpt_dir: Path, ddp, mirror=None):
        self.cfg, self.dir, self.ddp, self.mirror = cfg, ckpt_dir, ddp, mirror

    def resume(self, model, optimizer, scheduler, device) -> tuple[int, dict[str, Any] | None] | None:
        """(step to start at, the checkpoint's data cursor), or None for a fresh run."""
        if self.mirror is not None:  # the newest checkpoint on the object store (a replacement pod)
            self.mirror.pull(self.dir)
        last = latest_checkpoint(self.dir) if self.ddp.is_main else None
        agreed = self.ddp.agree_step(distributed.checkpoint_step(last))
        if agreed is None:
            return None
        path = step_path(self.dir, agreed)
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        print(f"resuming from {path.name} (step {state['step']}/{self.cfg.train.steps})", file=sys.stderr, flush=True)
        return state["step"], state.get("data_cursor")

    def due(self, step: int) -> bool:
        return self.ddp.is_main and (step % self.cfg.train.checkpoint_every == 0 or step == self.cfg.train.steps)

    def save(self, step: int, model, optimizer, scheduler, cursor: dict[str, Any]) -> None:
        state = {"config": to_dict(self.cfg), "image_size": self.cfg.data.image_size, "step": step,
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "data_cursor": cursor}
        atomic_save(state, step_path(self.dir, step))
        prune_checkpoints(self.dir)
        if self.mirror is not None:
            self.mirror.push(step_path(self.dir, step))

    def export(self) -> tuple[Path, int]:
        """The newest checkpoint's inference part as model.pt (rank 0), and its step."""
        state = torch.load(latest_checkpoint(self.dir), map_location="cpu", weights_only=False)
        export_model(state, self.dir / MODEL_FILE)
        if self.mirror is not None:
            self.mirror.push(self.dir / MODEL_FILE, keep=None)
        return self.dir / MODEL_FILE, state["step"]
