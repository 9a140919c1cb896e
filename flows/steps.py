"""The retrain flow's steps as Prefect tasks. Each one builds a JobSpec, runs it through the launcher
and returns the component's typed result (litops.core.step_results)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from litops.core.step_results import (DataVersionResult, EvaluateResult, GateDecision, GateMetricsResult,
                                      LookupResult, RegisterResult, StepResult, TrainResult, UnreadableRecord, expect)
from litops.flows.launcher import ComponentFailed, JobSpec, Launcher

R = TypeVar("R", bound=StepResult)


def _retry_unless_user_error(task, task_run, state) -> bool:
    """Retry transient failures only: a bad config or bad data fails the same way every time, and a
    result this flow cannot read (a component of another version) reads the same way again."""
    try:
        state.result()
    except ComponentFailed as e:
        return e.retried
    except UnreadableRecord:
        return False
    except Exception:
        return True
    return False


TRANSIENT = dict(retries=2, retry_delay_seconds=3, retry_condition_fn=_retry_unless_user_error, cache_policy=NO_CACHE)


def run_component(launcher: Launcher, result_type: type[R], name: str, component: str, args: list[str],
                  gpus: int = 0, light: bool = False) -> R:
    """The step's result, of `result_type`; ComponentFailed when it printed none, UnreadableRecord when another kind."""
    logger = get_run_logger()
    job = launcher.run(JobSpec(name=name, component=component, args=args, gpus=gpus, light=light), log=logger.info)
    if job.result is None:
        raise ComponentFailed(JobSpec(name, component, args), job.exit_code, job.log_tail, "no LITOPS_RESULT line")
    return expect(job.result, result_type)


@task(name="version-data", **TRANSIENT)
def version_data(launcher: Launcher, cfg_path: Path) -> DataVersionResult:
    return run_component(launcher, DataVersionResult, "data-version", "data", ["version", "--config", str(cfg_path)],
                         light=True)


@task(name="gate-metrics", **TRANSIENT)
def gate_metrics(launcher: Launcher, cfg_path: Path, dataset_dir: str) -> GateMetricsResult:
    """The metrics the gate will decide on for this dataset and eval.suites (`auto` resolved), before
    training; one the evaluation will not report is a config error, not retried."""
    return run_component(launcher, GateMetricsResult, "register-gate-metrics", "register",
                         ["gate-metrics", "--config", str(cfg_path), "--dataset-dir", dataset_dir], light=True)


@task(name="lookup-registered", **TRANSIENT)
def lookup_registered(launcher: Launcher, cfg_path: Path, data_version: str, config_hash: str) -> LookupResult:
    """The version already trained on this data + config (if any, and whether it was gated), and the champion."""
    return run_component(launcher, LookupResult, "register-lookup", "register",
                         ["lookup", "--config", str(cfg_path), "--data-version", data_version, "--config-hash", config_hash],
                         light=True)


@task(name="train", retries=1, retry_delay_seconds=3, retry_condition_fn=_retry_unless_user_error, cache_policy=NO_CACHE)
def train_model(launcher: Launcher, cfg_path: Path, dataset_dir: str, ckpt_dir: Path, data_version: str,
                tracking: dict[str, str], gpus: int, git_sha: str) -> TrainResult:
    """Retrying is safe: the trainer resumes from the latest checkpoint in ckpt_dir."""
    args = ["--config", str(cfg_path), "--dataset-dir", dataset_dir, "--checkpoint-dir", str(ckpt_dir),
            "--data-version", data_version, "--tracking-uri", tracking["uri"], "--experiment", tracking["experiment"],
            "--artifact-location", tracking["artifact_location"], "--git-sha", git_sha]
    return run_component(launcher, TrainResult, f"train-{ckpt_dir.name[:20]}", "train", args, gpus=gpus)


@task(name="evaluate", **TRANSIENT)
def evaluate(launcher: Launcher, cfg_path: Path, dataset_dir: str, out_dir: Path, models: dict[str, str],
             run_id: str | None, tracking_uri: str) -> EvaluateResult:
    args = ["--config", str(cfg_path), "--dataset-dir", dataset_dir, "--out", str(out_dir), "--tracking-uri", tracking_uri]
    for label, ref in models.items():
        args += ["--model", f"{label}={ref}"]
    if run_id:
        args += ["--run-id", run_id]
    return run_component(launcher, EvaluateResult, "evaluate", "evaluate", args)


@task(name="register", **TRANSIENT)
def register(launcher: Launcher, cfg_path: Path, run_id: str, model_file: str, data_version: str, config_hash: str,
             git_sha: str) -> RegisterResult:
    """Idempotent: the register component returns the existing version of a train run."""
    return run_component(launcher, RegisterResult, "register-log", "register",
                         ["log", "--config", str(cfg_path), "--run-id", run_id, "--model-file", model_file,
                          "--data-version", data_version, "--config-hash", config_hash, "--git-sha", git_sha])


@task(name="gate", **TRANSIENT)
def gate(launcher: Launcher, cfg_path: Path, out_dir: Path, version: int, challenger: dict[str, float],
         champion: dict[str, float] | None, champion_version: int | None) -> GateDecision:
    """Idempotent: a decided version returns its decision; a recorded, unapplied promotion is finished."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chal_file = out_dir / "challenger_metrics.json"
    chal_file.write_text(json.dumps(challenger))
    args = ["gate", "--config", str(cfg_path), "--version", str(version), "--challenger-metrics", str(chal_file)]
    if champion is not None:
        champ_file = out_dir / "champion_metrics.json"
        champ_file.write_text(json.dumps(champion))
        args += ["--champion-metrics", str(champ_file), "--champion-version", str(champion_version)]
    return run_component(launcher, GateDecision, "register-gate", "register", args)
