"""How a component says why it failed: an error kind, its exit code, and one record or one line.

A user error (bad config, bad input, a store still down after its retries, a diverged run, Ctrl-C)
ends a component with the exit code of its kind. Run by a launcher (which sets ERRORS_ENV), the
component prints an ErrorRecord, `LITOPS_ERROR {json}`, and the launcher shows the record's one
line and decides from its kind whether a retry can help. Run by hand, it prints that line itself.
A failure with no record (a crash, a pod whose log is gone) is judged by its exit code alone.

Standard library only: components and flows both import it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from litops.core.step_results import UnreadableRecord, decode_line

ERROR_PREFIX = "LITOPS_ERROR "
ERRORS_ENV = "LITOPS_ERRORS"  # "records": a launcher reads this component's errors
EXIT_BAD_INPUT = 65  # EX_DATAERR: the data was wrong
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a later try may work
EXIT_CONFIG_ERROR = 78  # EX_CONFIG: the config was wrong
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


@dataclass(frozen=True)
class ErrorKind:
    name: str
    exit_code: int
    retried: bool  # whether the flow tries the step again
    label: str  # how the one line names it: `litops data: <label>: <message>`


ERROR_KINDS: dict[str, ErrorKind] = {kind.name: kind for kind in (
    ErrorKind("config", EXIT_CONFIG_ERROR, retried=False, label="config error"),
    ErrorKind("input", EXIT_BAD_INPUT, retried=False, label="error"),
    ErrorKind("diverged", EXIT_BAD_INPUT, retried=False, label="error"),  # the same data diverges the same way
    ErrorKind("unavailable", EXIT_UNAVAILABLE, retried=True, label="error"),
    ErrorKind("interrupted", EXIT_INTERRUPTED, retried=True, label="interrupted"),
)}


def kind_of_exit(code: int) -> ErrorKind | None:
    """The kind an exit code stands for when no record came (the first kind with that code); None: a crash."""
    return next((kind for kind in ERROR_KINDS.values() if kind.exit_code == code), None)


def retried(exit_code: int, record: "ErrorRecord | None") -> bool:
    """Whether a failed step is worth another try: by its record's kind, else by its exit code."""
    kind = record.error_kind if record is not None else kind_of_exit(exit_code)
    return kind is None or kind.retried


@dataclass(frozen=True)
class ErrorRecord:
    component: str  # data | train | evaluate | register
    kind: str  # a key of ERROR_KINDS
    message: str = ""

    SCHEMA = 1

    def __post_init__(self) -> None:
        if self.kind not in ERROR_KINDS:
            raise UnreadableRecord(f"unknown error kind {self.kind!r} (known: {', '.join(ERROR_KINDS)})")

    @property
    def error_kind(self) -> ErrorKind:
        return ERROR_KINDS[self.kind]

    @property
    def exit_code(self) -> int:
        return self.error_kind.exit_code

    def line(self) -> str:
        """The one line a person sees, e.g. `litops data: error: no such folder`."""
        return f"litops {self.component}: {self.error_kind.label}" + (f": {self.message}" if self.message else "")

    def to_line(self) -> str:
        payload = {"schema": self.SCHEMA, "component": self.component, "kind": self.kind, "message": self.message}
        return ERROR_PREFIX + json.dumps(payload, sort_keys=True)

    @classmethod
    def parse_line(cls, line: str) -> "ErrorRecord":
        payload = decode_line(line, ERROR_PREFIX)
        schema = payload.get("schema") if isinstance(payload, dict) else None
        if schema != cls.SCHEMA:
            raise UnreadableRecord(f"an error record of schema {schema!r}: this side reads schema {cls.SCHEMA}")
        fields = {k: payload.get(k) for k in ("component", "kind", "message")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise UnreadableRecord(f"an error record needs component, kind and message as strings: {payload}")
        return cls(**fields)


def records_wanted() -> bool:
    """Whether a launcher runs this component (it then reads an ErrorRecord, not a line for a person)."""
    return os.environ.get(ERRORS_ENV) == "records"
