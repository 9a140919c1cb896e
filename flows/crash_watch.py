"""A served run whose process died is marked Crashed, which frees its concurrency slot.

A SIGKILLed `litops deploy` or a dead machine leaves its run "Running", holding the deployment's
one slot until the lease expires, and nothing says the run is gone. While a served run is alive,
its engine emits `prefect.flow-run.heartbeat` every `schedule.heartbeat_seconds`. A proactive
automation on the server watches this deployment's runs: after a heartbeat it expects another
heartbeat, or a final state, within `schedule.crashed_after_seconds`; silence marks the run Crashed.
The server does it, so it works with the serving process (or its machine) gone. Leaving Running
releases the slot (Prefect's orchestration does), so the next run proceeds and resumes training
from its checkpoints. The change is not forced: a run that has already ended refuses it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

HEARTBEAT = "prefect.flow-run.heartbeat"
FINAL_STATES = ("Completed", "Failed", "Cancelled", "Crashed", "TimedOut")


def automation_name(deployment_name: str) -> str:
    return f"{deployment_name}: mark silent runs Crashed"


def crash_automation(deployment_id: Any, deployment_name: str, crashed_after_seconds: int):
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    silence = f"no heartbeat for {crashed_after_seconds} s: its process or machine died"
    return Automation(
        name=automation_name(deployment_name),
        description=f"Marks a run of deployment '{deployment_name}' Crashed after {silence}.",
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect={HEARTBEAT, *(f"prefect.flow-run.{state}" for state in FINAL_STATES)},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.deployment.{deployment_id}",
                           "prefect.resource.role": "deployment"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crashed_after_seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"litops: {silence}")],
    )


def _same(a: Any, b: Any) -> bool:
    fields = {"description", "enabled", "trigger", "actions"}  # as Python values: sets compare unordered
    return a.model_dump(include=fields) == b.model_dump(include=fields)


async def watch_for_crashes(deployment_id: Any, deployment_name: str, crashed_after_seconds: int) -> str:
    """Create the deployment's crash automation, or update it when its settings changed; returns its id.

    An unchanged automation is left alone: an update gives its trigger a new id, the server forgets
    the silences it was timing, and a run that died before this restart would never be marked."""
    from prefect.automations import Automation

    wanted = crash_automation(deployment_id, deployment_name, crashed_after_seconds)
    try:
        existing = await Automation.aread(name=wanted.name)
    except ValueError:  # none yet
        return str((await wanted.acreate()).id)
    if not _same(existing, wanted):
        wanted.id = existing.id
        await wanted.aupdate()
    return str(existing.id)
