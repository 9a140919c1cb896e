"""The retraining flow: version data → train → evaluate → register → gate/promote.

Crash-safe: a version registered but never gated is not "up to date"; the next run evaluates
and gates it ("resuming the gate of version N") instead of skipping it forever.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from litops.core import faults
from litops.core.config import LitopsConfig, config_hash, validate
from litops.core.step_results import EvaluateResult, LookupResult
from litops.core.workspace import Workspace, artifact_location, tracking_uri
from litops.flows import announce, steps
from litops.flows.config import write_config
from litops.flows.launcher import Launcher, make_launcher
from litops.flows.run_lock import RunInProgress, model_lock

__all__ = ["RunInProgress", "retrain"]


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


class StepTimer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Every flow step runs in here: a finished one is the tests' crash point after_<name>."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t0, 2)
        faults.flow_step_done(name)

    def table(self) -> str:
        rows = [f"  {name:<18} {secs:>8.1f} s" for name, secs in self.times.items()]
        return "\n".join(["step wall times:", *rows, f"  {'total':<18} {sum(self.times.values()):>8.1f} s"])


def gate_markdown_key(model_name: str) -> str:
    return "litops-gate-" + "".join(c if c.isalnum() else "-" for c in model_name.lower())


@dataclass
class RunContext:
    """What every step of one flow run needs."""

    cfg: LitopsConfig
    ws: Workspace
    cfg_path: Path
    run_dir: Path
    launcher: Launcher
    chash: str
    timer: StepTimer
    git_sha: str = "unknown"
    dataset_dir: str = ""
    data_version: str = ""
    version: int | None = None  # the registered version, once known (a failure message names it)

    @property
    def model_name(self) -> str:
        return self.cfg.registry.model_name


def new_context(cfg: LitopsConfig) -> RunContext:
    ws = Workspace(Path(cfg.home)).create()
    run_dir = ws.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return RunContext(cfg, ws, write_config(cfg, run_dir / "config.yaml"), run_dir,
                      make_launcher(cfg.launcher.kind, cfg=cfg), config_hash(cfg), StepTimer(), code_version())


@flow(name="litops-retrain", log_prints=True, on_failure=[announce.run_failed], on_crashed=[announce.run_failed],
      on_completion=[announce.run_finished])
def retrain(config: LitopsConfig) -> dict[str, Any]:
    """One retrain on a composed config (`litops run` composes it once; a deployment holds it as its
    parameter, which the Prefect UI shows and edits as a form)."""
    ctx = new_context(validate(config))
    announce.track(ctx)
    faults.mark_flow_process()
    with model_lock(ctx.ws.home, ctx.model_name):  # re-entered when `litops run` already holds it
        summary = {"config_hash": ctx.chash, "run_dir": str(ctx.run_dir), **_retrain_locked(ctx)}
    summary["gate_metrics"] = {"primary": ctx.cfg.registry.primary_metric, "guards": ctx.cfg.registry.guard_metrics}
    summary["timings"] = ctx.timer.times
    get_run_logger().info(ctx.timer.table())
    return summary


def _retrain_locked(ctx: RunContext) -> dict[str, Any]:
    logger = get_run_logger()
    with ctx.timer.step("version data"):
        data = steps.version_data(ctx.launcher, ctx.cfg_path)
    ctx.dataset_dir, ctx.data_version = data.dataset_dir, data.data_version
    settle_gate_metrics(ctx)
    with ctx.timer.step("lookup"):
        lookup = steps.lookup_registered(ctx.launcher, ctx.cfg_path, ctx.data_version, ctx.chash)
    data_version = {"data_version": ctx.data_version}
    if (existing := lookup.version) is None:
        return data_version | _train_and_gate(ctx, lookup)
    if lookup.decided:
        logger.info(f"up to date: version {existing} of '{ctx.model_name}' was trained on data {ctx.data_version} "
                    f"with config {ctx.chash}; skipping training")
        return data_version | {"status": "up_to_date", "version": existing}
    logger.info(f"resuming the gate of version {existing} of '{ctx.model_name}': it was registered but never gated")
    return data_version | _resume_gate(ctx, lookup)


def settle_gate_metrics(ctx: RunContext) -> None:
    """Before anything trains: the gate's metrics for this data (`auto` resolved; one the evaluation will
    not report fails the run here), written into the run's config for the steps that follow."""
    gate = steps.gate_metrics(ctx.launcher, ctx.cfg_path, ctx.dataset_dir)
    ctx.cfg.registry.primary_metric, ctx.cfg.registry.guard_metrics = gate.primary, gate.guards
    write_config(ctx.cfg, ctx.cfg_path)


def _train_and_gate(ctx: RunContext, lookup: LookupResult) -> dict[str, Any]:
    tracking = {"uri": tracking_uri(ctx.cfg), "experiment": ctx.cfg.mlflow.experiment,
                "artifact_location": artifact_location(ctx.cfg)}
    ckpt_dir = ctx.ws.checkpoints / f"{ctx.chash}-{ctx.data_version.split('.')[0][:12]}"
    with ctx.timer.step("train"):
        trained = steps.train_model(ctx.launcher, ctx.cfg_path, ctx.dataset_dir, ckpt_dir, ctx.data_version,
                                    tracking, gpus=0, git_sha=ctx.git_sha)
    evaluation = _evaluate(ctx, trained.model_path, trained.run_id, lookup)
    with ctx.timer.step("register"):
        registered = steps.register(ctx.launcher, ctx.cfg_path, trained.run_id, trained.model_path,
                                    ctx.data_version, ctx.chash, ctx.git_sha)
    ctx.version = registered.version
    return _gate(ctx, registered.version, trained.run_id, evaluation, lookup)


def _resume_gate(ctx: RunContext, lookup: LookupResult) -> dict[str, Any]:
    """Evaluate the registered version from the registry (its model file may be gone) and gate it."""
    version = ctx.version = lookup.version
    evaluation = _evaluate(ctx, lookup.model_uri, lookup.train_run_id, lookup)
    return {**_gate(ctx, version, lookup.train_run_id, evaluation, lookup), "resumed": True}


def _evaluate(ctx: RunContext, challenger_ref: str, run_id: str, lookup: LookupResult) -> EvaluateResult:
    models = {"challenger": challenger_ref}
    if lookup.champion_version is not None:  # re-evaluated now, on the same split
        models["champion"] = lookup.champion_uri
    with ctx.timer.step("evaluate"):
        return steps.evaluate(ctx.launcher, ctx.cfg_path, ctx.dataset_dir, ctx.run_dir / "eval", models,
                              run_id, tracking_uri(ctx.cfg))


def _gate(ctx: RunContext, version: int, run_id: str, evaluation: EvaluateResult,
          lookup: LookupResult) -> dict[str, Any]:
    metrics = evaluation.metrics
    with ctx.timer.step("gate"):
        decision = steps.gate(ctx.launcher, ctx.cfg_path, ctx.run_dir / "gate", version, metrics["challenger"],
                              metrics.get("champion"), lookup.champion_version)
    create_markdown_artifact(markdown=decision.markdown, key=gate_markdown_key(ctx.model_name),
                             description=f"Promotion gate for {ctx.model_name} v{version}")
    get_run_logger().info(("PROMOTED" if decision.promoted else "NOT PROMOTED") + f": {decision.reason}")
    announce.gate_decided(ctx, version, run_id, decision, metrics)
    return {"status": "promoted" if decision.promoted else "rejected", "version": version,
            "champion_version": decision.champion_version, "run_id": run_id,
            "metrics": metrics["challenger"], "reason": decision.reason}
