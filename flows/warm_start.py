"""Start component processes fast: fork them from a server that has already imported torch and MLflow.

Each component still runs in its own OS process (own pid, session, pipes and exit code); only the
few seconds of importing the heavy libraries are paid once per flow process instead of once per step.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import select
import shutil
import signal
import tempfile
import sys
import types
from typing import Iterator

PRELOAD = ["torch", "numpy", "PIL.Image", "webdataset", "matplotlib", "mlflow", "mlflow.pyfunc",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
           "litops.core.model", "litops.core.losses", "litops.core.shards", "litops.core.config",
           "litops.core.stream", "torchvision.io",
           "litops.flows.warm_ready"]  # last: it marks the others done
READY_ENV = "LITOPS_WARM_READY_FILE"


def _run_component(component: str, args: list[str], env: dict[str, str], out) -> None:
    """The child: a new session, stdout+stderr into the pipe, then `python -m litops.<component>`."""
    os.setsid()
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    out.close()
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [f"litops.{component}", *args]
    runpy.run_module(f"litops.{component}", run_name="__main__", alter_sys=True)


class WarmProcess:
    def __init__(self, process: multiprocessing.process.BaseProcess, out) -> None:
        self.process, self.out, self.pid = process, out, process.pid

    def chunks(self) -> Iterator[bytes]:
        """The child's output until it exits (EOF, or its exit sentinel, then a final drain)."""
        fd = self.out.fileno()
        while True:
            ready, _, _ = select.select([fd, self.process.sentinel], [], [])
            if fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                yield chunk
                continue
            os.set_blocking(fd, False)  # exited; a grandchild may still hold the pipe open
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    return
                if not chunk:
                    return
                yield chunk

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode


_context = None
_ready_file: str | None = None


def prestart() -> None:
    """Start the server's imports now, in the background: steps that run before the first warm one
    (versioning data, looking up the registry) overlap them instead of waiting for them."""
    global _context, _ready_file
    if _context is not None:
        return
    _context = multiprocessing.get_context("forkserver")
    _context.set_forkserver_preload(PRELOAD)  # imports that fail (a bare GPU box) are skipped
    from multiprocessing import forkserver

    ready_dir = tempfile.mkdtemp(prefix="litops-warm-")
    _ready_file = os.path.join(ready_dir, "ready")
    os.environ[READY_ENV] = _ready_file
    try:
        forkserver.ensure_running()  # spawns the server; its imports run while this process goes on
    finally:
        os.environ.pop(READY_ENV, None)  # the server has its copy; the steps need none
    atexit.register(_stop_server, ready_dir)


def ready() -> bool:
    """The server has finished its imports: forking from it now costs no wait."""
    return _ready_file is not None and os.path.exists(_ready_file)


def _stop_server(ready_dir: str) -> None:
    """An up-to-date run can end while the server is still importing; it would finish them first."""
    from multiprocessing import forkserver

    shutil.rmtree(ready_dir, ignore_errors=True)
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def start(component: str, args: list[str], env: dict[str, str]) -> WarmProcess:
    prestart()
    read_end, write_end = _context.Pipe(duplex=False)
    process = _context.Process(target=_run_component, args=(component, list(args), dict(env), write_end),
                               name=f"litops-{component}")
    # A forkserver child re-imports the parent's __main__ (for pickled functions defined there). Ours
    # needs nothing from it, and the flow's main may import Prefect: hand the child an empty one.
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        process.start()
    finally:
        sys.modules["__main__"] = main
    write_end.close()
    return WarmProcess(process, read_end)
