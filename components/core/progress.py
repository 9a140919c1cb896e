"""Progress of a component's long loops, shown to a person or reported to the launcher that runs it.

Two modes, chosen by the LITOPS_PROGRESS environment variable:
- `lines` (set by the flow's launchers; the default when stderr is not a terminal, e.g. a pod log):
  one line per update on stderr, `LITOPS_PROGRESS {"task", "done", "total", "unit", "postfix"}`,
  at most one per MIN_INTERVAL_S plus the first and the last. The launcher draws them (flows/progress.py).
- `bar` (the default on a terminal, e.g. `python -m litops.train` on a bare GPU box): a tqdm bar.

Standard library only (plus tqdm for the bar): components run where the orchestration packages are absent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

PREFIX = "LITOPS_PROGRESS "
MODE_ENV = "LITOPS_PROGRESS"
MIN_INTERVAL_S = 0.5


def mode() -> str:
    chosen = os.environ.get(MODE_ENV, "")
    if chosen in ("lines", "bar"):
        return chosen
    return "bar" if sys.stderr.isatty() else "lines"


def parse(line: str) -> dict[str, Any] | None:
    """The event of a `LITOPS_PROGRESS {json}` line; None when the line is not one (or is torn)."""
    if not line.startswith(PREFIX):
        return None
    try:
        event = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    if not isinstance(event, dict) or not {"task", "done", "total"} <= event.keys():
        return None
    return event


class Progress:
    """Reports nothing: for a process whose progress another one reports (DDP ranks > 0)."""

    def update(self, n: int = 1, **postfix: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineProgress(Progress):
    """Reports updates as protocol lines, rate-limited so a fast loop does not flood the pipe."""

    def __init__(self, task: str, total: int, unit: str, initial: int = 0,
                 clock: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None):
        self.task, self.total, self.unit, self.done = task, total, unit, initial
        self.postfix: dict[str, Any] = {}
        self._clock, self._write = clock, write or _write_stderr
        self._sent_at, self._sent_done = float("-inf"), None
        self._send()  # the bar appears before the first (possibly slow) unit of work ends

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        self.postfix.update(postfix)
        if self.done >= self.total or self._clock() - self._sent_at >= MIN_INTERVAL_S:
            self._send()

    def close(self) -> None:
        if self._sent_done != self.done:
            self._send()

    def _send(self) -> None:
        event = {"task": self.task, "done": self.done, "total": self.total, "unit": self.unit, "postfix": self.postfix}
        self._write(PREFIX + json.dumps(event))
        self._sent_at, self._sent_done = self._clock(), self.done


class BarProgress(Progress):
    """A tqdm bar on stderr."""

    def __init__(self, task: str, total: int, unit: str, initial: int = 0):
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, desc=task, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def start(task: str, total: int, unit: str = "it", initial: int = 0, silent: bool = False) -> Progress:
    """Progress over `total` units of `task`, `initial` of them already done (a resumed run)."""
    if silent:
        return Progress()
    kind = BarProgress if mode() == "bar" else LineProgress
    return kind(task, total, unit, initial)


def _write_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")  # one write: the line is not split by other writers of the pipe
    sys.stderr.flush()
