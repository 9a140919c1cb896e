"""Conventions every component CLI follows, so any launcher can drive any component.

- The last stdout line `LITOPS_RESULT {json}` carries the step's result back to the flow
  (a local pipe or a Kubernetes pod log: both carry it).
- A user error (bad config, bad input) prints one line (`error_line`) and exits with a known
  code; no traceback wall. A launcher merges a component's stdout and stderr into one pipe and
  tells the error line apart by its form (`is_error_line`).
- Libraries log warnings and errors only: MLflow's INFO lines (database migrations, system
  metrics start/stop) would otherwise fill the flow's log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any, Callable

RESULT_PREFIX = "LITOPS_RESULT "
EXIT_BAD_INPUT = 65  # EX_DATAERR: the data was wrong
EXIT_CONFIG_ERROR = 78  # EX_CONFIG: the config was wrong; a retry cannot help
_ERROR_LINE = re.compile(r"litops [\w-]+: (config error|error|interrupted)\b")


class UserError(Exception):
    """A problem the user can fix; its message is shown as one line."""

    exit_code = EXIT_BAD_INPUT


def emit_result(result: dict[str, Any]) -> None:
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result, sort_keys=True), flush=True)


def parse_result(lines: list[str]) -> dict[str, Any] | None:
    """The result of a component run, from its output lines (last one wins)."""
    for line in reversed(lines):
        line = line.strip()
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def error_line(component: str, kind: str, message: str = "") -> str:
    """The one line a component's user error prints, e.g. `litops data: error: no such folder`."""
    return f"litops {component}: {kind}" + (f": {message}" if message else "")


def is_error_line(line: str) -> bool:
    """Whether a line of a component's merged output is its one-line error (a launcher sends it to stderr)."""
    return _ERROR_LINE.match(line) is not None


def quiet_library_logs() -> None:
    """MLflow's log level, WARNING unless MLFLOW_LOGGING_LEVEL says otherwise.

    Set both ways: the variable for an MLflow imported later, the loggers for one imported already
    (a component forked from the flow's warm-start server)."""
    level = logging.getLevelNamesMapping().get(os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING").upper())
    if level is None:  # a misspelt level: MLflow reports it itself
        return
    logging.getLogger("mlflow").setLevel(level)
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))  # as MLflow sets it


def run_main(main: Callable[[list[str] | None], int | None], component: str, argv: list[str] | None = None) -> None:
    """Run a component's main; turn user errors into one line and a known exit code."""
    from litops.core import faults
    from litops.core.config import ConfigError

    quiet_library_logs()
    try:
        faults.armed()  # a misspelt test fault point fails here, at the start
        code = main(argv)
    except ConfigError as e:
        print(error_line(component, "config error", str(e)), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    except UserError as e:
        print(error_line(component, "error", str(e)), file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        print(error_line(component, "interrupted"), file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
