"""Draw the progress a component reports (its LITOPS_PROGRESS lines, litops.core.progress) in the flow's process.

On a terminal: a live tqdm bar on stderr, redrawn in place; log lines are written around it.
Otherwise (a log file, CI): one plain line through the log callback per tenth of the work, e.g.
`train: 30% 90/300 step [00:06<00:14, 14.6step/s, loss=0.410]`.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from tqdm import tqdm

LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def postfix_text(event: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in (event.get("postfix") or {}).items())


class ProgressRenderer:
    """One bar at a time: an event of another task closes the current one."""

    def __init__(self, log: Callable[[str], None], live: bool | None = None, stream: TextIO | None = None):
        self.log = log
        self.stream = stream or sys.stderr
        self.live = _is_terminal(self.stream) if live is None else live
        self.task: str | None = None
        self._bar: tqdm | None = None
        self._tenths_shown = -1
        self._started = (0.0, 0)  # clock and units done at the task's first event

    def show(self, event: dict[str, Any]) -> None:
        if event["task"] != self.task:
            self.close()
            self.task = event["task"]
            self._started = (time.monotonic(), int(event["done"]))
        if self.live:
            self._draw(event)
        else:
            self._print_each_tenth(event)

    def log_around(self, line: str, write: Callable[[str], None] | None = None) -> None:
        """Log a line (through `write`, default the log callback) without tearing a live bar: clear it, log, redraw."""
        write = write or self.log
        if self._bar is None:
            write(line)
            return
        self._bar.clear()
        try:
            write(line)
        finally:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self.task, self._tenths_shown = None, None, -1

    def _draw(self, event: dict[str, Any]) -> None:
        if self._bar is None:
            self._bar = tqdm(total=int(event["total"]), initial=int(event["done"]), desc=event["task"],
                             unit=event.get("unit") or "it", file=self.stream, dynamic_ncols=True, mininterval=0)
        self._bar.n = int(event["done"])  # absolute: a replacement pod may resume below the last count
        self._bar.set_postfix_str(postfix_text(event), refresh=False)
        self._bar.refresh()

    def _print_each_tenth(self, event: dict[str, Any]) -> None:
        done, total = int(event["done"]), int(event["total"])
        tenths = min(10, done * 10 // total) if total > 0 else 10
        if tenths <= self._tenths_shown:
            return
        self._tenths_shown = tenths
        started_at, initial = self._started
        self.log(tqdm.format_meter(done, total, time.monotonic() - started_at, prefix=event["task"],
                                   unit=event.get("unit") or "it", postfix=postfix_text(event) or None,
                                   initial=initial, bar_format=LINE_FORMAT))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False
