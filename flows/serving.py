"""Serve one deployment until SIGINT or SIGTERM, then leave it in a clear state.

Prefect's `serve()` handles SIGTERM by calling an async `stop()` without awaiting it: a
RuntimeWarning, two tracebacks, and the run in flight left "Running" forever with its
concurrency slot held. Here the runner is stopped on the event loop instead. On exit:
the schedule is paused, the run in flight is cancelled (a retrain resumes from its
checkpoints next time), and runs still queued for the concurrency slot are cancelled, so
resuming the deployment does not fire a backlog.
"""

from __future__ import annotations

from datetime import datetime, timezone

import asyncio
import logging
import signal
from typing import Any

from litops.flows.crash_watch import watch_for_crashes

ACTIVE_STATES = ("RUNNING", "PENDING", "SCHEDULED")


class _DropQueuedNotices(logging.Filter):
    """The runner logs "Aborted submission ... non-pending state 'SCHEDULED'" every poll for each
    run queued behind the concurrency limit: that is the limit working, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Aborted submission of flow run")


def _quiet_runner_logs() -> None:
    logger = logging.getLogger("prefect.runner.state_proposer")
    if not any(isinstance(f, _DropQueuedNotices) for f in logger.filters):
        logger.addFilter(_DropQueuedNotices())


async def _serve(deployment: Any, heartbeat_seconds: int, crashed_after_seconds: int) -> list[str]:
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True, heartbeat_seconds=heartbeat_seconds)
    deployment_id = await runner.aadd_deployment(deployment)
    await watch_for_crashes(deployment_id, deployment.name, crashed_after_seconds)
    serving = asyncio.create_task(runner.start())
    await asyncio.sleep(0)  # runner.start() installs Prefect's own SIGTERM handler first; ours replaces it
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not serving.done():
        await runner.astop()
        await serving
    waiter.cancel()
    return await _cancel_leftovers(deployment_id)


async def _cancel_leftovers(deployment_id: Any) -> list[str]:
    """Cancel this deployment's runs that are in flight or queued now that nobody serves them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    cancelled = []
    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType(s) for s in ACTIVE_STATES]))))
        for run in runs:
            queued_for_later = run.state_type == StateType.SCHEDULED and run.state_name == "Scheduled" \
                and run.expected_start_time and run.expected_start_time > datetime.now(timezone.utc)
            if queued_for_later:  # future cron runs: the paused schedule already owns them
                continue
            await client.set_flow_run_state(run.id, Cancelled(message="litops deploy stopped"), force=True)
            cancelled.append(run.name)
    return cancelled


def serve_until_stopped(deployment: Any, heartbeat_seconds: int, crashed_after_seconds: int) -> list[str]:
    """Serve until SIGINT/SIGTERM; returns the names of the runs cancelled on the way out.

    Its runs send a heartbeat every `heartbeat_seconds`; one silent for `crashed_after_seconds` is
    marked Crashed (flows/crash_watch.py)."""
    _quiet_runner_logs()
    return asyncio.run(_serve(deployment, heartbeat_seconds, crashed_after_seconds))
