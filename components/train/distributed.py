"""Multi-process (DDP) training under torchrun: one process per GPU, or per CPU with gloo.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; on Kubernetes the
launcher runs `torchrun --node-rank=$JOB_COMPLETION_INDEX --master-addr=<pod 0's DNS name>`
in each pod of an Indexed Job. Without WORLD_SIZE > 1 everything here is a no-op, so the
single-process trainer is unchanged.

- Backend: nccl on CUDA, gloo on CPU; each process uses cuda:LOCAL_RANK.
- Batches: every rank reads its contiguous slice of the same global batch (litops.core.stream), so
  the global batch is the same as a single-process run of train.batch_size.
- BatchNorm: SyncBatchNorm on CUDA (global batch statistics); on CPU (gloo) each rank normalises
  with its local batch statistics and rank 0's running statistics are broadcast, so the replicas
  stay identical but the gradient differs slightly from a one-process run of the same batch.
- Loss: the exact global loss over all ranks (litops.core.losses' ring `*_loss_distributed`
  with ddp=True, so that DDP's gradient average yields the exact global gradient).
- Rank 0 alone writes checkpoints, logs metrics and prints the result; all ranks resume from
  the same checkpoint step (chosen by rank 0, broadcast).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -------------------------------------------------------------- model / data

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around the model (the same module object keeps its attributes: logit_scale, towers)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        cuda = self.device is not None and self.device.type == "cuda"
        if cuda:  # batch statistics over the global batch, as in one process (SyncBatchNorm is CUDA-only)
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # children swapped in place; same Parameters
        # broadcast_buffers: rank 0's BatchNorm running statistics on every rank, so the replicas stay identical
        return DDP(model, device_ids=[self.device.index] if cuda else None, broadcast_buffers=True)

    def local_batch(self, batch_size: int) -> int:
        if batch_size % self.world:
            from litops.core.config import ConfigError

            raise ConfigError(f"config key 'train.batch_size' ({batch_size}) must be divisible by the number of "
                              f"training processes ({self.world})")
        return batch_size // self.world

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of the global batch (rank 0 first, as the distributed loss expects)."""
        if not self.active:
            return idx
        n = len(idx) // self.world
        return idx[self.rank * n:(self.rank + 1) * n]

    def loss(self, name: str, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, *,
             groups: torch.Tensor | None = None, duplicates: str = "negative") -> torch.Tensor:
        """The global contrastive loss over every rank's embeddings (identical value on all ranks).
        groups: this rank's rows' group ids (e.g. litops.core.losses.caption_groups); duplicates:
        negative | positive | ignore (see litops.core.losses)."""
        from litops.core.losses import sigmoid_loss_distributed, softmax_loss_distributed

        if name == "sigmoid":
            return sigmoid_loss_distributed(img, txt, scale, bias, ddp=True, groups=groups, duplicates=duplicates)
        return softmax_loss_distributed(img, txt, scale, ddp=True, groups=groups, duplicates=duplicates)

    # -------------------------------------------------------------- coordination

    def agree_step(self, step: int | None) -> int | None:
        """Rank 0's value of a checkpoint step (None: no checkpoint), the same on every rank."""
        if not self.active:
            return step
        t = torch.tensor([-1 if step is None else step], dtype=torch.long, device=self._comm_device())
        dist.broadcast(t, src=0)
        value = int(t.item())
        return None if value < 0 else value

    def barrier(self) -> None:
        if self.active:
            if self._comm_device().type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if self.device is not None and self.device.type == "cuda" else torch.device("cpu")

    def report_weights(self, model: torch.nn.Module) -> str:
        """Print (stderr) a digest of this rank's parameters: all ranks of a DDP run must print the same.
        (Buffers are left out: BatchNorm running statistics of ranks > 0 are never saved.)"""
        import hashlib
        import sys

        h = hashlib.sha256()
        for name, t in sorted(model.named_parameters()):
            h.update(name.encode())
            h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
        digest = h.hexdigest()[:16]
        if self.active:
            print(f"rank {self.rank}/{self.world}: weights sha256 {digest}", file=sys.stderr, flush=True)
        return digest

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def from_env(device_pref: str = "auto", env: dict[str, str] | None = None) -> DistContext:
    """Initialise the process group when torchrun started more than one process."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
        import atexit

        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=device)


def unwrap_state(model: torch.nn.Module) -> dict[str, Any]:
    return (model.module if hasattr(model, "module") else model).state_dict()


def checkpoint_step(path: Path | None) -> int | None:
    if path is None:
        return None
    return int(path.stem.split("-")[-1])
