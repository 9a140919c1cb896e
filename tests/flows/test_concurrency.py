"""One retrain per model and workspace: a second `litops run` is refused fast, in one line.

The lock is held the way a running retrain holds it (an flock on <home>/locks/<model>.lock, taken
here by another process through the same module), so the refusal is the real code path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from litops.flows.run_lock import RunInProgress, model_lock

LITOPS = str(Path(sys.executable).with_name("litops"))
HOLD = textwrap.dedent("""
    import sys, time
    from litops.flows.run_lock import model_lock
    with model_lock(sys.argv[1], "lit-embedded"):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def held_lock(tmp_path):
    """Another process holds the retrain lock of `lit-embedded` in tmp_path (as a running retrain does)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield holder
    holder.kill()
    holder.wait()


def test_a_concurrent_run_is_refused_in_one_line_within_3_seconds(held_lock, tmp_path):
    env = {**os.environ, "LITOPS_HOME": str(tmp_path)}
    t0 = time.perf_counter()
    out = subprocess.run([LITOPS, "run", "train.steps=1"], env=env, capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "another retrain of 'lit-embedded' is running" in lines[0] and f"pid {held_lock.pid}" in lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "prefect").exists()  # refused before Prefect was set up
    assert wall < 3, f"refusal took {wall:.1f} s"


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(held_lock, tmp_path):
    with pytest.raises(RunInProgress, match=f"pid {held_lock.pid}"):
        with model_lock(tmp_path, "lit-embedded"):
            pass
    with model_lock(tmp_path, "other-model"):  # `litops run` holds it ...
        with model_lock(tmp_path, "other-model"):  # ... and the flow it calls takes it again
            pass
        probe = subprocess.run([sys.executable, "-c", HOLD.replace("lit-embedded", "other-model"), str(tmp_path)],
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "RunInProgress" in probe.stderr  # still held after the inner exit
    with model_lock(tmp_path, "other-model"):  # released when the outermost holder exits
        pass


@pytest.mark.slow
def test_a_deployment_run_of_the_flow_is_refused_too(held_lock, tmp_path, monkeypatch):
    """Deployments call the flow directly (no `litops run` lock around it): the flow takes the lock itself."""
    from prefect.testing.utilities import prefect_test_harness

    from litops.flows.config import load_config
    from litops.flows.retrain import retrain

    monkeypatch.setenv("LITOPS_HOME", str(tmp_path))
    with prefect_test_harness(server_startup_timeout=60):
        with pytest.raises(RunInProgress):
            retrain(config=load_config(["train.steps=1"]))
    assert not list((tmp_path / "checkpoints").iterdir())  # nothing was trained
