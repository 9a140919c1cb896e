"""Start one gloo worker process per rank on a list of loss cases and collect what each rank saved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def run_ring_workers(worker: Path, world: int, tmp_path: Path, cases: list[dict]) -> list[list[dict]]:
    """Run `worker` (rank, world, init file, cases file, out dir) as `world` processes; each writes rank<r>.pt."""
    torch.save(cases, tmp_path / "cases.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), str(world), str(tmp_path / "init"),
                               str(tmp_path / "cases.pt"), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("distributed workers hung")
    for r, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {r} failed:\n{out}"
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
