"""Chunked loss memory: RSS growth of forward+backward, measured in a fresh subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("losses_rss_probe.py")
MB = 1 << 20


def _probe(*args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["MALLOC_MMAP_THRESHOLD_"] = "1048576"  # freed big buffers leave RSS (see benchmarks/losses.py)
    out = subprocess.run([sys.executable, str(PROBE), *args], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_chunked_sigmoid_memory_n16384():
    res = _probe("chunked", "sigmoid", "16384", "128")
    assert res["finite_grads"]
    # one fp32 16384×16384 logits matrix alone is 1 GiB; chunked keeps O(block·N + N·D)
    assert res["rss_growth_bytes"] < 300 * MB, res


def test_reference_needs_gigabytes():
    # measured at N=4096 (N² memory, so ×16 at N=16384) to keep CI fast
    res = _probe("reference", "sigmoid", "4096", "128")
    assert res["rss_growth_bytes"] * 16 > 2048 * MB, res
