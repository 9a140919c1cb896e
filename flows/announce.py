"""What the retrain flow and `litops rollback` announce: a gate decision, a failed run, a rollback.

Each builds a notify.Message from what the run knows and sends it (flows/notify.py). A failed or
crashed flow is announced by Prefect's state hooks, which get the flow run but not the run's
context, so the flow registers its context here while it runs.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

from litops.core.config import LitopsConfig, NotifyConfig
from litops.core.step_results import GateDecision, RollbackResult
from litops.core.workspace import tracking_uri
from litops.flows.notify import Message, Warn, mlflow_run_url, send

if TYPE_CHECKING:
    from litops.flows.retrain import RunContext

_running: dict[str, "RunContext"] = {}  # flow run id -> its context, while the flow runs in this process


def best_effort(fn: Callable[..., None]) -> Callable[..., None]:
    """Announcing must never fail the run it reports on: any error is one warning line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:
            _warn(f"notify: no message sent ({type(e).__name__}: {_first_line(str(e))})")
    return wrapper


def track(ctx: "RunContext") -> None:
    """Called by the flow once its context exists: a failure hook can then name its data and version."""
    if flow_run_id := _current_flow_run_id():
        _running[flow_run_id] = ctx


@best_effort
def gate_decided(ctx: "RunContext", version: int, run_id: str, decision: GateDecision,
                 metrics: Mapping[str, Any]) -> None:
    promoted = decision.promoted
    message = Message(event="champion_promoted" if promoted else "challenger_rejected", model=ctx.model_name,
                      version=version, data_version=ctx.data_version or None,
                      decision="promoted" if promoted else "rejected", reason=decision.reason,
                      champion_version=decision.champion_version,
                      metrics=gate_metrics(ctx.cfg, metrics["challenger"], metrics.get("champion")),
                      flow_run_id=_current_flow_run_id(), mlflow_run_id=run_id)
    send(_with_links(message, ctx.cfg), ctx.cfg.notify, _warn)


def gate_metrics(cfg: LitopsConfig, challenger: Mapping[str, Any],
                 champion: Mapping[str, Any] | None) -> dict[str, dict[str, float | None]]:
    """The gate's primary and guard metrics, challenger's and champion's (None: no champion)."""
    names = dict.fromkeys([cfg.registry.primary_metric, *cfg.registry.guard_metrics])
    return {name: {"challenger": _number(challenger.get(name)), "champion": _number((champion or {}).get(name))}
            for name in names if name in challenger}


def run_finished(flow, flow_run, state) -> None:
    """on_completion hook: the run's context is no longer needed."""
    _running.pop(str(flow_run.id), None)


@best_effort
def run_failed(flow, flow_run, state) -> None:
    """on_failure / on_crashed hook: one message naming the run's model, data, version and error."""
    ctx = _running.pop(str(flow_run.id), None)
    cfg = ctx.cfg if ctx is not None else _config_of(flow_run)
    message = Message(event="retrain_failed", model=cfg.registry.model_name if cfg else None,
                      version=getattr(ctx, "version", None), data_version=(ctx.data_version or None) if ctx else None,
                      decision="crashed" if state.is_crashed() else "failed", reason=failure_reason(state),
                      flow_run_id=str(flow_run.id))
    send(_with_links(message, cfg), cfg.notify if cfg else NotifyConfig(), _warn)


@best_effort
def rolled_back(cfg: LitopsConfig, result: RollbackResult, warn: Warn) -> None:
    """After `litops rollback`: the restored champion, with its metrics against the version it replaced."""
    demoted = result.rolled_back_metrics
    metrics = {name: {"champion": _number(value), "rolled_back": _number(demoted.get(name))}
               for name, value in result.metrics.items()}
    message = Message(event="rollback", model=cfg.registry.model_name, version=result.version,
                      data_version=result.data_version or None, decision="rolled_back",
                      reason=f"champion moved back from v{result.rolled_back_from} to v{result.version} "
                             "by `litops rollback`",
                      champion_version=result.version, metrics=metrics, mlflow_run_id=result.run_id)
    send(_with_links(message, cfg), cfg.notify, warn)


def failure_reason(state) -> str:
    """The one line that says why: a component's own error line, else the exception's first line."""
    from litops.flows.launcher import ComponentFailed

    error = state.result(raise_on_failure=False) if state.is_failed() else None
    if isinstance(error, ComponentFailed):
        return error.error.line() if error.error is not None else _first_line(str(error))
    if isinstance(error, BaseException):
        first = _first_line(str(error))
        return f"{type(error).__name__}: {first}" if first else type(error).__name__
    return _first_line(state.message or state.name or "")


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _with_links(message: Message, cfg: LitopsConfig | None) -> Message:
    prefect_url = None
    if message.flow_run_id:
        from prefect.utilities.urls import url_for

        prefect_url = (url_for("flow-run", obj_id=message.flow_run_id)
                       or url_for("flow-run", obj_id=message.flow_run_id, url_type="api"))
    mlflow_url = mlflow_run_url(tracking_uri(cfg), message.mlflow_run_id) if cfg else None
    message.links = {"prefect_flow_run": prefect_url, "mlflow_run": mlflow_url}
    return message


def _config_of(flow_run) -> LitopsConfig | None:
    """The failed run's config, from its parameter (None: the config itself was bad)."""
    from litops.core.config import from_dict, to_dict, validate

    config = (flow_run.parameters or {}).get("config")
    try:
        return validate(from_dict(LitopsConfig, config if isinstance(config, dict) else to_dict(config)))
    except Exception:
        return None


def _current_flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _warn(line: str) -> None:
    """The flow run's log when there is one (the Prefect UI shows it), else litops's own logger."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        get_run_logger().warning(line)
    except MissingContextError:
        logging.getLogger("litops.notify").warning(line)
