"""Serve the retrain flow as a scheduled Prefect deployment: one concurrent run per model."""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from litops.core.config import LitopsConfig
from litops.flows.retrain import retrain


def build_deployment(cfg: LitopsConfig, overrides: list[str]):
    return retrain.to_deployment(
        name=f"{cfg.schedule.deployment_name}-{cfg.registry.model_name}",
        schedules=[Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone)],
        parameters={"overrides": list(overrides)},
        # A run that fires while another is active waits its turn instead of racing on the registry.
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=["litops", f"model:{cfg.registry.model_name}"],
        description=f"Retrain {cfg.registry.model_name} on schedule '{cfg.schedule.cron}' ({cfg.schedule.timezone}).",
    )


def deploy(cfg: LitopsConfig, overrides: list[str], apply_only: bool = False):
    deployment = build_deployment(cfg, overrides)
    if apply_only:
        deployment_id = deployment.apply()
        print(f"deployment '{deployment.name}' registered ({deployment_id}); cron '{cfg.schedule.cron}'")
        return deployment_id
    serve(deployment)  # blocks: runs scheduled flow runs until interrupted
