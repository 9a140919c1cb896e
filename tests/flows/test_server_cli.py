"""`litops server` on a workspace with no server: clear one-line answers, nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LITOPS = str(Path(sys.executable).with_name("litops"))


def _litops(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"LITOPS_HOME": str(home)}
    return subprocess.run([LITOPS, *args], env=env, capture_output=True, text=True, timeout=60)


def test_status_and_stop_without_a_server(tmp_path):
    status = _litops(tmp_path, "server", "status")
    assert status.returncode == 3 and status.stdout.strip().count("\n") == 0
    assert "no Prefect server is running" in status.stdout and "litops server start" in status.stdout
    stop = _litops(tmp_path, "server", "stop")
    assert stop.returncode == 0 and "no Prefect server was running" in stop.stdout
    assert not (tmp_path / "prefect" / "server.json").exists()


def test_a_stale_state_file_is_not_taken_for_a_running_server(tmp_path):
    (tmp_path / "prefect").mkdir()
    (tmp_path / "prefect" / "server.json").write_text(
        '{"pid": 999999, "port": 9, "api_url": "http://127.0.0.1:9/api", "database": "", "log": "", "started": 0}')
    status = _litops(tmp_path, "server", "status")
    assert status.returncode == 3, status.stdout + status.stderr
