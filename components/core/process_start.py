"""How litops starts its processes: local steps and data readers. The whole model:

    flow ──exec──> step server       imports torch, MLflow and litops once, starts no thread, then
                    │                 waits on a Unix socket (and exits when the flow's pipe closes)
                    └──fork──> step  one per request: its own session, its output into a pipe the
                                │     flow passed along with the request, its exit code sent back
                                └──> readers: forked when the step is still single-threaded and has
                                      loaded nothing that leaves fork-unsafe state (Prefect, boto3);
                                      otherwise started by a forkserver with the readers' imports

A step forks from the server in milliseconds instead of paying the imports (seconds) again. A
light step (`JobSpec.light`: no torch) that comes while the server is still importing runs as a
fresh interpreter at once rather than wait. The server forks before any thread exists, so no lock
is copied mid-use; a step that then starts threads starts its readers from a forkserver.
Only public interfaces are used: subprocess, os.fork, socket.send_fds, multiprocessing contexts.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterator

SERVER_PRELOAD = ["torch", "numpy", "PIL.Image", "webdataset", "matplotlib", "mlflow", "mlflow.pyfunc",
                  "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
                  "litops.core.model", "litops.core.losses", "litops.core.shards", "litops.core.config",
                  "litops.core.stream", "torchvision.io"]
READER_PRELOAD = ["torch", "litops.core.stream", "torchvision.io"]
FORK_UNSAFE_MODULES = ("prefect", "boto3")  # they leave threads, exit hooks or locks a forked reader must not copy
ENABLE_ENV = "LITOPS_WARM_START"  # "0": every step is a fresh interpreter
REAP_SECONDS = 0.05
MAX_REQUEST = 1 << 20


def server_enabled(python: str = sys.executable) -> bool:
    return python == sys.executable and sys.platform == "linux" and os.environ.get(ENABLE_ENV, "1") != "0"


# ----------------------------------------------------------------------------------------- readers


def reader_context():
    """The multiprocessing context for a step's reader processes (see the module docstring)."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    unsafe = [m for m in FORK_UNSAFE_MODULES if m in sys.modules]
    if "fork" in methods and threading.active_count() == 1 and not unsafe:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        short_temp_folder()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(READER_PRELOAD)
        return context
    return None


def short_temp_folder() -> None:
    """A forkserver's socket lives in multiprocessing's temp folder; under a long TMPDIR its path
    exceeds the 107 bytes an AF_UNIX address allows. That folder is made once per process and
    remembered: make it under /tmp then, and leave every other temp file where TMPDIR says."""
    if len(tempfile.gettempdir()) > 60 and os.path.isdir("/tmp"):
        import multiprocessing.util

        previous, tempfile.tempdir = tempfile.tempdir, "/tmp"
        try:
            multiprocessing.util.get_temp_dir()
        finally:
            tempfile.tempdir = previous


# ------------------------------------------------------------------------------------ flow's side


class StepProcess:
    """A step forked by the server: its pid (its session), its output, its exit code."""

    def __init__(self, pid: int, output: int, channel: _Channel):
        self.pid, self.output, self.channel = pid, output, channel
        self.returncode: int | None = None

    def chunks(self) -> Iterator[bytes]:
        """The step's output until it exits; then what is left in the pipe (a reader it started
        may still hold the pipe open, so the exit, not EOF, ends the stream)."""
        while self.returncode is None:
            ready, _, _ = select.select([self.output, self.channel], [], [])
            if self.output in ready:
                chunk = os.read(self.output, 65536)
                if chunk:
                    yield chunk
                    continue
            self.wait()
        os.set_blocking(self.output, False)
        while True:
            try:
                chunk = os.read(self.output, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            yield chunk
        os.close(self.output)

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None:
            try:
                reply = self.channel.message(timeout)
            except TimeoutError:
                return None
            self.returncode = int(reply["exit"]) if reply else -9  # the server died with it
            self.channel.close()
        return self.returncode

    def poll(self) -> int | None:
        return self.wait(timeout=0)


class StepServer:
    """The flow's step server (see the module docstring); started once, on first use."""

    def __init__(self, python: str = sys.executable):
        self.folder = tempfile.mkdtemp(prefix="litops-steps-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.address = os.path.join(self.folder, "socket")
        # The flow's process group: a power cut of the flow (tests' crash points) takes the server too.
        self.process = subprocess.Popen([python, "-m", "litops.core.process_start", self.address],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._ready = False

    def ready(self) -> bool:
        """The server has done its imports: a step forked now waits for nothing."""
        if not self._ready and select.select([self.process.stdout], [], [], 0)[0]:
            self._ready = self.process.stdout.readline() == b"ready\n"
        return self._ready

    def start(self, component: str, args: list[str], env: dict[str, str]) -> StepProcess:
        if not self._ready:
            self._ready = self.process.stdout.readline() == b"ready\n"
        if not self._ready:
            raise RuntimeError(f"the step server exited with code {self.process.wait()} before it was ready")
        read_end, write_end = os.pipe()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = _Channel(sock)
        try:
            sock.connect(self.address)
            request = json.dumps({"component": component, "args": list(args), "env": dict(env)}).encode()
            socket.send_fds(sock, [len(request).to_bytes(8, "big") + request], [write_end])
            reply = channel.message()
        finally:
            os.close(write_end)
        if not reply:
            raise RuntimeError("the step server closed the connection without starting the step")
        return StepProcess(int(reply["pid"]), read_end, channel)

    def stop(self) -> None:
        """Closing its stdin ends a ready server; one still importing is terminated rather than
        waited for (an up-to-date run can end before the imports do). Steps it started run on in
        their own sessions."""
        if self.process.poll() is None:
            self.process.stdin.close()
            if not self.ready():
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class _Channel:
    """The flow's end of one step's connection: newline-ended JSON messages (its pid, then its exit)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer = sock, b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def message(self, timeout: float | None = None) -> dict | None:
        """The next message; None when the server closed the connection. TimeoutError past `timeout`."""
        while b"\n" not in self.buffer:
            if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
                raise TimeoutError
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------------- server's side


@dataclass
class StepRequest:
    component: str
    args: list[str]
    env: dict[str, str]
    output: int


def serve(address: str) -> StepRequest | None:
    """The server's loop. Returns only in a forked step (its request), or when the flow is gone."""
    for name in SERVER_PRELOAD:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - an optional import missing here (a bare GPU box) is skipped
            pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    print("ready", flush=True)
    steps: dict[int, socket.socket] = {}
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [], REAP_SECONDS)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return None  # the flow closed its end, or died
        if listener in readable:
            conn, _ = listener.accept()
            request = _receive(conn)
            if request is not None:
                pid = os.fork()
                if pid == 0:
                    for held in (listener, conn, *steps.values()):
                        held.close()
                    return request
                os.close(request.output)
                steps[pid] = conn
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            else:
                conn.close()
        _reap(steps)


def _receive(conn: socket.socket) -> StepRequest | None:
    data, fds, _, _ = socket.recv_fds(conn, 65536, 1)
    if len(data) < 8 or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    size = int.from_bytes(data[:8], "big")
    body = data[8:]
    while len(body) < size <= MAX_REQUEST:
        chunk = conn.recv(size - len(body))
        if not chunk:
            break
        body += chunk
    doc = json.loads(body)
    return StepRequest(doc["component"], list(doc["args"]), dict(doc["env"]), fds[0])


def _reap(steps: dict[int, socket.socket]) -> None:
    while steps:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn = steps.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            except OSError:
                pass  # the flow stopped listening
            conn.close()


def run_step(request: StepRequest) -> int:
    """In the forked child: a new session, output into the flow's pipe, then `python -m litops.<component>`.
    Its exit code; the caller ends the process with it at once (see `_end`)."""
    import runpy

    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(request.output, 1)
    os.dup2(request.output, 2)
    os.close(request.output)
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(request.env)
    sys.argv = [f"litops.{request.component}", *request.args]
    try:
        runpy.run_module(f"litops.{request.component}", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return _exit_code(e.code)
    except BaseException:  # noqa: BLE001 - shown as `python -m` would show it, then exit 1
        import traceback

        traceback.print_exc()
        return 1
    return 0


def _exit_code(code) -> int:
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _end(code: int) -> None:
    """Flush and leave without the interpreter's exit hooks, as a multiprocessing child does: those
    of the server's preloaded libraries (never used by a light step) cost seconds at exit. What a
    component must finish (MLflow's runs, files) it finishes before it returns."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    step = serve(sys.argv[1])
    _end(0 if step is None else run_step(step))  # the server too: its preloaded libraries' exit hooks cost seconds
