"""Elastic order: the sample keys of every global batch are the same for 1 rank without reader
processes, 1 rank with 3, and 2 gloo ranks (torchrun) with 2 each; a run stopped at step 20
under 1 rank and resumed under 2 ranks, or stopped under 2 and resumed under 1, continues the
same key sequence."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.test_exact_resume import config_file, sharded_dataset

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp: Path, name: str, data: Path, ranks: int, workers: int, steps: int, ckpt: Path | None = None,
        crash_at: int | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    keys = tmp / f"keys-{name}"
    cfg = config_file(tmp / f"{name}.json", steps=steps, checkpoint_every=10)
    spec = json.loads(cfg.read_text())
    spec["data"]["workers"] = workers
    cfg.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LITOPS_RECORD_BATCH_KEYS": str(keys), "LITOPS_PROGRESS": "lines"}
    env.pop("LITOPS_CRASH_AT", None)
    if crash_at is not None:
        env["LITOPS_CRASH_AT"] = f"after_step_{crash_at}"
    train = ["-m", "litops.train", "--config", str(cfg), "--dataset-dir", str(data),
             "--checkpoint-dir", str(ckpt or tmp / f"ckpt-{name}")]
    launcher = [] if ranks == 1 else ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={ranks}",
                                      "--master-addr=127.0.0.1", f"--master-port={free_port()}", "--max-restarts=0"]
    out = subprocess.run([sys.executable, *launcher, *train], capture_output=True, text=True, env=env, timeout=240,
                         start_new_session=True)
    return out, keys


def global_batches(keys: Path) -> dict[int, list[str]]:
    """Step -> the global batch's keys: rank 0's slice, then rank 1's."""
    slices: dict[int, dict[int, list[str]]] = {}
    for path in sorted(keys.glob("keys-rank*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            slices.setdefault(r["step"], {})[r["rank"]] = r["keys"]
    return {s: sum((v[r] for r in sorted(v)), []) for s, v in sorted(slices.items())}


def test_global_batches_do_not_depend_on_ranks_or_reader_processes(tmp_path):
    data = sharded_dataset(tmp_path / "data")
    out, keys = run(tmp_path, "one-rank", data, ranks=1, workers=0, steps=40)
    assert out.returncode == 0, out.stderr[-3000:]
    reference = global_batches(keys)
    assert list(reference) == list(range(40)) and all(len(b) == 16 for b in reference.values())

    for name, ranks, workers in (("three-workers", 1, 3), ("two-ranks", 2, 2)):
        out, keys = run(tmp_path, name, data, ranks=ranks, workers=workers, steps=10)
        assert out.returncode == 0, out.stderr[-3000:]
        assert global_batches(keys) == {s: reference[s] for s in range(10)}, name

    ckpt = tmp_path / "elastic"
    out, keys = run(tmp_path, "stopped", data, ranks=1, workers=0, steps=40, ckpt=ckpt, crash_at=20)
    assert out.returncode == -9, out.stderr[-3000:]
    assert global_batches(keys) == {s: reference[s] for s in range(20)}
    out, keys = run(tmp_path, "resumed", data, ranks=2, workers=2, steps=40, ckpt=ckpt)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming from step-00000020.pt" in out.stderr
    assert global_batches(keys) == {s: reference[s] for s in range(20, 40)}

    ckpt = tmp_path / "shrunk"
    out, keys = run(tmp_path, "stopped-two", data, ranks=2, workers=2, steps=40, ckpt=ckpt, crash_at=20)
    assert out.returncode != 0, out.stderr[-3000:]
    assert global_batches(keys) == {s: reference[s] for s in range(20)}
    out, keys = run(tmp_path, "resumed-one", data, ranks=1, workers=2, steps=40, ckpt=ckpt)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming from step-00000020.pt" in out.stderr
    assert global_batches(keys) == {s: reference[s] for s in range(20, 40)}
