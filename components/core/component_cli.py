"""Conventions every component CLI follows, so any launcher can drive any component.

- The last stdout line carries the step's typed result back to the flow (`emit_result`,
  litops.core.step_results; a local pipe or a Kubernetes pod log: both carry it).
- A user error (bad config, bad input) ends the component with its kind's exit code and one
  line, or, under a launcher, one error record (litops.core.step_errors); no traceback wall.
- Libraries log warnings and errors only: MLflow's INFO lines (database migrations, system
  metrics start/stop) would otherwise fill the flow's log.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, NoReturn

from litops.core.step_errors import ERROR_KINDS, EXIT_BAD_INPUT, EXIT_CONFIG_ERROR, ErrorRecord, records_wanted
from litops.core.step_results import RESULT_PREFIX, StepResult

__all__ = ["EXIT_BAD_INPUT", "EXIT_CONFIG_ERROR", "RESULT_PREFIX", "UserError", "emit_result", "report_error", "run_main"]


class UserError(Exception):
    """A problem the user can fix; its message is shown as one line. `kind` is its step_errors kind."""

    kind = "input"

    @property
    def exit_code(self) -> int:
        return ERROR_KINDS[self.kind].exit_code


def emit_result(result: StepResult) -> None:
    sys.stdout.flush()
    print(result.to_line(), flush=True)


def report_error(record: ErrorRecord) -> NoReturn:
    """End the component: its error as a record for a launcher, else as one line for a person."""
    sys.stdout.flush()
    print(record.to_line() if records_wanted() else record.line(), file=sys.stderr, flush=True)
    raise SystemExit(record.exit_code) from None


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
    """Run a component's main; turn user errors into one line (or record) and their kind's exit code."""
    from litops.core import faults
    from litops.core.config import ConfigError

    quiet_library_logs()
    try:
        faults.armed()  # a misspelt test fault point fails here, at the start
        code = main(argv)
    except ConfigError as e:
        report_error(ErrorRecord(component, "config", str(e)))
    except UserError as e:
        report_error(ErrorRecord(component, e.kind, str(e)))
    except KeyboardInterrupt:
        report_error(ErrorRecord(component, "interrupted"))
    raise SystemExit(code or 0)
