"""The Prefect event that says "new data landed", and the deployment trigger that listens for it.

`litops data add` emits `litops.data.committed` when it commits a new data version; the retrain
deployment has a trigger on it, so new data starts a run without waiting for the cron.
"""

from __future__ import annotations

import asyncio

from litops.core.step_results import DataVersionResult

DATA_COMMITTED = "litops.data.committed"


def dataset_resource(home: str, dataset: str) -> dict[str, str]:
    """The event's resource: one dataset of one workspace (several workspaces may share a server)."""
    return {"prefect.resource.id": f"litops.dataset.{dataset}", "prefect.resource.name": dataset,
            "litops.home": str(home)}


def data_trigger(home: str, dataset: str, deployment_name: str):
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(name=f"{deployment_name}: new data in {dataset}", expect={DATA_COMMITTED},
                                  match=dataset_resource(home, dataset))


def emit_data_committed(api_url: str, home: str, result: DataVersionResult) -> str:
    """Send the event to the server at `api_url` and wait until it has it; returns the event id."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    event = Event(event=DATA_COMMITTED, resource=dataset_resource(home, result.name),
                  payload={"data_version": result.data_version, "git_sha": result.git_sha,
                           "dataset_dir": result.dataset_dir, "splits": result.splits})

    async def send() -> None:
        async with PrefectEventsClient(api_url) as client:
            await client.emit(event)

    asyncio.run(send())
    return str(event.id)
