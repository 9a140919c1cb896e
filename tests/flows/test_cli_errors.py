"""What a user sees when `litops run` cannot work: short, named errors, never a traceback wall."""

from __future__ import annotations

import os
import subprocess
import sys

TINY_DATA = ["data.n_train=40", "data.n_val=10", "data.n_test=10", "data.image_size=32"]


def litops(args: list[str], home, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "LITOPS_HOME": str(home), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    return subprocess.run([sys.executable, "-m", "litops.flows", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_unreachable_mlflow_store_fails_the_run_with_one_clear_reason(tmp_path):
    out = litops(["run", "mlflow.tracking_uri=http://127.0.0.1:9", *TINY_DATA], tmp_path / "home")
    assert out.returncode == 65, out.stderr[-2000:]
    assert "litops:" not in out.stdout  # the error is on stderr, the result (none) on stdout
    last = [l for l in out.stderr.splitlines() if l.startswith("litops:")]
    assert last and "register step" in last[-1] and "exit code 65" in last[-1]
    assert "http://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr


def test_data_add_of_a_missing_path_is_one_line(tmp_path):
    out = litops(["data", "add", str(tmp_path / "nope")], tmp_path / "home", timeout=120)
    assert out.returncode == 65
    assert "Traceback" not in out.stdout + out.stderr
    assert out.stdout == "" and out.stderr.strip().splitlines() == [f"litops: data add: {tmp_path / 'nope'} does not exist"]
    assert not (tmp_path / "home").exists()  # checked before the workspace or the benchmark is made
