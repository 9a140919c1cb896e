"""How a flow starts a component: the Launcher interface and the local-process launcher.

A flow builds a JobSpec and hands it to whichever launcher the config names; it never imports
a component. Any launcher streams the job's log lines to a callback, draws its progress
(`LITOPS_PROGRESS {json}` lines, flows/progress.py) and returns the component's typed result (its
`LITOPS_RESULT {json}` line, litops.core.step_results), or raises ComponentFailed carrying the
component's error record (`LITOPS_ERROR {json}`, litops.core.step_errors); OutputRelay sorts the
lines for all of them.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from litops.core import process_start, progress, step_errors
from litops.core.step_errors import ERROR_PREFIX, ERRORS_ENV, ErrorRecord
from litops.core.step_results import RESULT_PREFIX, StepResult, UnreadableRecord, parse_result
from litops.flows.progress import ProgressRenderer

LogFn = Callable[[str], None]
TAIL_LINES = 40


@dataclass
class JobSpec:
    name: str  # a short run-unique name, e.g. "train-3f2a"
    component: str  # data | train | evaluate | register
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    gpus: int = 0
    light: bool = False  # imports neither torch nor much of MLflow: need not wait for a warm start


@dataclass
class JobResult:
    exit_code: int
    result: StepResult | None
    log_tail: list[str]


class ComponentFailed(RuntimeError):
    """A component exited non-zero; the message carries its last log lines, `error` its error record
    (None: it crashed, or its log is gone)."""

    def __init__(self, spec: JobSpec, exit_code: int, tail: list[str], reason: str = "",
                 error: ErrorRecord | None = None):
        self.spec, self.exit_code, self.tail, self.error = spec, exit_code, tail, error
        shown = "\n".join(f"    {line}" for line in tail[-15:]) or "    (no output)"
        why = f" ({reason})" if reason else ""
        super().__init__(f"{spec.component} step '{spec.name}' failed with exit code {exit_code}{why}. Last log lines:\n{shown}")

    @property
    def kind(self) -> str | None:
        """Its error kind: the record's, else what the exit code stands for; None: a crash."""
        if self.error is not None:
            return self.error.kind
        kind = step_errors.kind_of_exit(self.exit_code)
        return kind.name if kind is not None else None

    @property
    def retried(self) -> bool:
        """Whether another try may work: not for a bad config or bad input, which fail the same way again."""
        return step_errors.retried(self.exit_code, self.error)


class HideExplainedTracebacks(logging.Filter):
    """A ComponentFailed already carries the component's own error lines: log it without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ComponentFailed):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_component_failures() -> None:
    """Attach the filter to the loggers Prefect's engines report task and flow failures on."""
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.engine"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, HideExplainedTracebacks) for f in logger.filters):
            logger.addFilter(HideExplainedTracebacks())


def read_result(spec: JobSpec, result_lines: list[str]) -> StepResult | None:
    """The job's typed result (the last line wins); UnreadableRecord naming the step when it cannot be read."""
    try:
        return parse_result(result_lines)
    except UnreadableRecord as e:
        raise UnreadableRecord(f"{spec.component} step '{spec.name}': {e}") from None


class Launcher(Protocol):
    def run(self, spec: JobSpec, log: LogFn) -> JobResult:
        """Run the job to completion; raise ComponentFailed on failure."""


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class OutputRelay:
    """A component's output, line by line: its result lines kept, its progress drawn, its error record
    kept and its one line sent to `error` (default: logged), every other line logged.

    Every launcher feeds its job's lines through one of these, so they all treat output the same way.
    Relays of one job (a Job's pods) may share a tail and a list of error records.
    """

    def __init__(self, renderer: ProgressRenderer, tail: deque | None = None, error: LogFn | None = None,
                 log: LogFn | None = None, errors: list[ErrorRecord] | None = None):
        self.renderer = renderer
        self.tail: deque[str] = tail if tail is not None else deque(maxlen=TAIL_LINES)
        self.results: list[str] = []  # LITOPS_RESULT lines, kept whole
        self.errors: list[ErrorRecord] = errors if errors is not None else []
        self.error = error
        self.write = log or renderer.log

    def feed(self, raw: bytes) -> None:
        line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
        if not line:
            return
        if line.startswith(RESULT_PREFIX.strip()):
            self.results.append(line)
        elif line.startswith(progress.PREFIX.strip()):
            if (event := progress.parse(line)) is not None:  # a torn line is dropped, never logged
                self.renderer.show(event)
        elif line.startswith(ERROR_PREFIX.strip()):
            self.report(line)
        else:
            self.log(line)

    def report(self, line: str) -> None:
        """Keep the component's error record; its one line goes to `error` (a record this side cannot read: logged)."""
        try:
            record = ErrorRecord.parse_line(line)
        except UnreadableRecord:
            self.log(line)
            return
        self.errors.append(record)
        self.tail.append(record.line())
        self.renderer.log_around(record.line(), self.error or self.write)

    def log(self, line: str) -> None:
        """Log a line of the job (kept in the tail for a failure report) around the live bar."""
        self.tail.append(line)
        self.renderer.log_around(line, self.write)

    @property
    def last_error(self) -> ErrorRecord | None:
        return self.errors[-1] if self.errors else None

    def close(self) -> None:
        self.renderer.close()


_step_server = None


def step_server() -> "process_start.StepServer":
    """This flow process's step server (litops.core.process_start), started on first use."""
    global _step_server
    if _step_server is None:
        _step_server = process_start.StepServer()
        atexit.register(_step_server.stop)
    return _step_server


def prestart_step_server() -> None:
    """Begin the server's imports now (they overlap Prefect's start) when local steps will use it."""
    if process_start.server_enabled():
        step_server()


class LocalProcessLauncher:
    """Runs `python -m litops.<component> ARGS` as a child process of the flow.

    warm (the default on Linux with this interpreter): the child is forked from a step server that
    has already imported torch and MLflow (litops.core.process_start); otherwise a fresh interpreter.
    """

    def __init__(self, python: str = sys.executable, extra_env: dict[str, str] | None = None, warm: bool | None = None):
        self.python = python
        self.extra_env = extra_env or {}
        self.warm = process_start.server_enabled(python) if warm is None else warm

    def command(self, spec: JobSpec) -> list[str]:
        return [self.python, "-u", "-m", f"litops.{spec.component}", *spec.args]

    def run(self, spec: JobSpec, log: LogFn, diagnostics: LogFn | None = None) -> JobResult:
        """`diagnostics`, when given, gets the job's one-line error and its progress lines in a log
        (a CLI keeps them off stdout, which carries results); otherwise `log` gets every line."""
        env = {**os.environ, **self.extra_env, **spec.env, "PYTHONUNBUFFERED": "1", progress.MODE_ENV: "lines",
               ERRORS_ENV: "records"}
        relay = OutputRelay(ProgressRenderer(diagnostics or log), error=diagnostics, log=log)
        proc, chunks = self._start(spec, env)
        try:
            buf = b""
            for chunk in chunks:
                buf += chunk
                *complete, buf = re.split(rb"[\r\n]", buf)
                for raw in complete:
                    relay.feed(raw)
            relay.feed(buf)
            code = proc.wait()
        except BaseException:  # cancelled flow or Ctrl-C: do not leave the child running
            self._stop(proc)
            raise
        finally:
            relay.close()
        if code != 0:
            raise ComponentFailed(spec, code, list(relay.tail), error=relay.last_error)
        return JobResult(code, read_result(spec, relay.results), list(relay.tail))

    def _start(self, spec: JobSpec, env: dict[str, str]):
        if self.warm:
            server = step_server()
            if not spec.light or server.ready():
                proc = server.start(spec.component, spec.args, env)
                return proc, proc.chunks()
        proc = subprocess.Popen(self.command(spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        return proc, iter(lambda: proc.stdout.read1(65536), b"")

    @staticmethod
    def _stop(proc) -> None:
        """SIGTERM the child's whole session, SIGKILL it if it lingers."""
        if proc.poll() is not None:
            return
        _signal(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            _signal(proc.pid, signal.SIGKILL)
            proc.wait()


def _signal(pid: int, sig: int) -> None:
    """Signal the process group a child leads; the child alone if it has not made its session yet."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def make_launcher(kind: str, **options: Any) -> Launcher:
    if kind == "local":
        options.pop("cfg", None)  # the local launcher needs no config
        return LocalProcessLauncher(**options)
    if kind == "kubernetes":
        from litops.flows.k8s_launcher import KubernetesJobLauncher  # not built yet in the embedded profile

        return KubernetesJobLauncher(**options)
    raise ValueError(f"unknown launcher kind {kind!r}")
