"""Serve the retrain flow as a Prefect deployment: on a cron schedule, and when new data lands.

One concurrent run per model: a run that fires while another is active waits its turn.
"""

from __future__ import annotations

import os
from pathlib import Path

from litops.core.config import LitopsConfig, to_dict
from litops.flows import server
from litops.flows.events import data_trigger


def deployment_name(cfg: LitopsConfig) -> str:
    return f"{cfg.schedule.deployment_name}-{cfg.registry.model_name}"


def build_deployment(cfg: LitopsConfig):
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    from litops.flows.retrain import retrain

    name = deployment_name(cfg)
    return retrain.to_deployment(
        name=name,
        schedules=[Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone)],
        triggers=[data_trigger(cfg.home, cfg.data.name, name)],
        parameters={"config": to_dict(cfg)},  # composed once, at deploy time: the UI shows it as a form
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=["litops", f"model:{cfg.registry.model_name}"],
        description=f"Retrain {cfg.registry.model_name} on cron '{cfg.schedule.cron}' ({cfg.schedule.timezone}) "
                    f"and when `litops data add` commits new data to '{cfg.data.name}'.",
    )


def ensure_server(home: Path, say=print) -> str:
    """The workspace's server URL; starts the server when none is up (a served run needs one that outlives it)."""
    if url := server.use_if_running(home):
        return url
    say(f"starting the Prefect server for {home} (stop it with `litops server stop`) ...")
    state, _ = server.start(home)
    os.environ["PREFECT_API_URL"] = state.api_url
    return state.api_url


def deploy(cfg: LitopsConfig, apply_only: bool = False):
    home = Path(cfg.home)
    os.environ["LITOPS_HOME"] = str(home)  # served runs are child processes: same workspace
    url = ensure_server(home)
    deployment = build_deployment(cfg)
    full_name = f"litops-retrain/{deployment.name}"
    if apply_only:
        deployment_id = deployment.apply()
        print(f"deployment '{full_name}' registered ({deployment_id}) on {url}; cron '{cfg.schedule.cron}'")
        return deployment_id
    from litops.flows.serving import serve_until_stopped

    print(f"serving '{full_name}' on {url}\n"
          f"  cron '{cfg.schedule.cron}' ({cfg.schedule.timezone}), and on new data (`litops data add`)\n"
          f"  one run at a time; run now: PREFECT_API_URL={url} prefect deployment run '{full_name}'\n"
          f"  a run silent for {cfg.schedule.crashed_after_seconds} s (its process died) is marked Crashed\n"
          f"  Ctrl-C (or SIGTERM) stops serving and pauses the schedule", flush=True)
    cancelled = serve_until_stopped(deployment, cfg.schedule.heartbeat_seconds, cfg.schedule.crashed_after_seconds)
    note = f"; cancelled {len(cancelled)} unfinished run(s): {', '.join(cancelled)}" if cancelled else ""
    print(f"stopped serving '{full_name}': schedule paused{note}; `litops deploy` resumes it", flush=True)
