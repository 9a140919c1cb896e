"""One persistent Prefect server per litops workspace.

`litops server start` runs a real `prefect server start` bound to 127.0.0.1, with its SQLite
database under `<home>/prefect`, and records pid, port and API URL in `<home>/prefect/server.json`.
`litops run`, `litops deploy` and `litops data add` talk to it when it is up. Without it, a
flow run starts Prefect's temporary server, which dies with the run: fine for `litops run`,
useless for schedules (each served run would get a server of its own).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

STATE_FILE = "server.json"
LOG_FILE = "server.log"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
# The scheduler's default loop (60 s) can delay a new deployment's first run by a minute; 10 s
# costs one cheap query on SQLite.
SCHEDULER_LOOP_SECONDS = "10"


class ServerError(RuntimeError):
    """The workspace's Prefect server could not be started, stopped or reached."""


@dataclass
class ServerState:
    pid: int
    port: int
    api_url: str
    database: str
    log: str
    started: float


def prefect_dir(home: Path) -> Path:
    return Path(home) / "prefect"


def state_path(home: Path) -> Path:
    return prefect_dir(home) / STATE_FILE


def database_url(home: Path) -> str:
    return f"sqlite+aiosqlite:///{prefect_dir(home) / 'prefect.db'}"


def read_state(home: Path) -> ServerState | None:
    try:
        return ServerState(**json.loads(state_path(home).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(home: Path) -> ServerState | None:
    """The recorded server if its process is alive and its API answers; else None."""
    state = read_state(home)
    if state is None or not _alive(state.pid) or not healthy(state.api_url):
        return None
    return state


def api_url(home: Path) -> str | None:
    state = running(home)
    return state.api_url if state else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    """Two `litops server start` at once must not both launch a server."""
    path = prefect_dir(home) / "server.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(prefect_dir(home)), PREFECT_SERVER_DATABASE_CONNECTION_URL=database_url(home),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_API_HOST="127.0.0.1")
    env.setdefault("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", SCHEDULER_LOOP_SECONDS)
    return env


def start(home: Path, port: int = 0, timeout: float = START_TIMEOUT_S) -> tuple[ServerState, bool]:
    """Start the workspace's server unless it is already up; returns (state, started_now)."""
    home = Path(home)
    with _start_lock(home):
        if (state := running(home)) is not None:
            return state, False
        port = port or _free_port()
        log = prefect_dir(home) / LOG_FILE
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
               "--analytics-off"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=server_env(home), cwd=str(home), start_new_session=True)
        state = ServerState(pid=proc.pid, port=port, api_url=f"http://127.0.0.1:{port}/api",
                            database=database_url(home), log=str(log), started=time.time())
        _wait_healthy(proc, state, timeout)
        state_path(home).write_text(json.dumps(asdict(state), indent=2))
        return state, True


def _wait_healthy(proc: subprocess.Popen, state: ServerState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"the Prefect server exited with code {proc.returncode} while starting; "
                              f"last log lines: {_log_tail(state.log)}")
        if healthy(state.api_url):
            return
        time.sleep(0.5)
    _terminate(proc.pid)
    raise ServerError(f"the Prefect server did not answer on {state.api_url} within {timeout:.0f} s; "
                      f"see {state.log}")


def _log_tail(path: str, n: int = 3) -> str:
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:]) or "(empty log)"


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server's process group (uvicorn and its services), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:  # not our child: poll for it instead
                if not _alive(pid):
                    return
            time.sleep(0.2)


def stop(home: Path) -> ServerState | None:
    """Stop the recorded server; returns its state, or None when none was running."""
    state = read_state(Path(home))
    if state is None:
        return None
    alive = _alive(state.pid)
    if alive:
        _terminate(state.pid)
    state_path(Path(home)).unlink(missing_ok=True)
    return state if alive else None


def use_if_running(home: Path) -> str | None:
    """Point this process (and the processes it starts) at the workspace's server when it is up.

    An explicit PREFECT_API_URL (a remote server, Kubernetes) wins and is left alone."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    url = api_url(Path(home))
    if url:
        os.environ["PREFECT_API_URL"] = url
    return url
