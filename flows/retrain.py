"""The retraining flow: version data → train → evaluate → register → gate/promote."""

from __future__ import annotations

import fcntl
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from litops.core.config import LitopsConfig, config_hash
from litops.core.workspace import Workspace, artifact_location, tracking_uri
from litops.flows import steps
from litops.flows.config import load_config, write_config
from litops.flows.launcher import make_launcher


class RunInProgress(RuntimeError):
    pass


@contextmanager
def model_lock(ws: Workspace, model_name: str) -> Iterator[None]:
    """At most one retrain per model and workspace at a time."""
    path = ws.home / "locks" / f"{model_name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgress(f"another retrain of '{model_name}' is running in {ws.home}") from None
        yield


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
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t0, 2)

    def table(self) -> str:
        rows = [f"  {name:<18} {secs:>8.1f} s" for name, secs in self.times.items()]
        return "\n".join(["step wall times:", *rows, f"  {'total':<18} {sum(self.times.values()):>8.1f} s"])


def gate_markdown_key(model_name: str) -> str:
    return "litops-gate-" + "".join(c if c.isalnum() else "-" for c in model_name.lower())


@flow(name="litops-retrain", log_prints=True)
def retrain(overrides: list[str] | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    cfg: LitopsConfig = load_config(overrides)
    ws = Workspace(Path(cfg.home)).create()
    run_dir = ws.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    cfg_path = write_config(cfg, run_dir / "config.json")
    launcher = make_launcher(cfg.launcher.kind, cfg=cfg)
    chash = config_hash(cfg)
    timer = StepTimer()
    summary: dict[str, Any] = {"config_hash": chash, "run_dir": str(run_dir)}

    with model_lock(ws, cfg.registry.model_name):
        with timer.step("version data"):
            data = steps.version_data(launcher, cfg_path)
        dv = data["data_version"]
        summary["data_version"] = dv
        with timer.step("lookup"):
            lookup = steps.lookup_registered(launcher, cfg_path, dv, chash)
        if (existing := lookup.get("version")) is not None:
            logger.info(f"up to date: version {existing} of '{cfg.registry.model_name}' was trained on data {dv} "
                        f"with config {chash}; skipping training")
            summary.update(status="up_to_date", version=existing, timings=timer.times)
            logger.info(timer.table())
            return summary

        tracking = {"uri": tracking_uri(cfg), "experiment": cfg.mlflow.experiment,
                    "artifact_location": artifact_location(cfg)}
        ckpt_dir = ws.checkpoints / f"{chash}-{dv.split('.')[0][:12]}"
        with timer.step("train"):
            trained = steps.train_model(launcher, cfg_path, data["dataset_dir"], ckpt_dir, dv, tracking, gpus=0)
        models = {"challenger": trained["model_path"]}
        if lookup.get("champion_version") is not None:  # re-evaluated now, on the same split
            models["champion"] = lookup["champion_uri"]
        with timer.step("evaluate"):
            evaluation = steps.evaluate(launcher, cfg_path, data["dataset_dir"], run_dir / "eval", models,
                                        trained["run_id"], tracking["uri"])
        with timer.step("register"):
            registered = steps.register(launcher, cfg_path, trained["run_id"], trained["model_path"], dv, chash, code_version())
        with timer.step("gate"):
            decision = steps.gate(launcher, cfg_path, run_dir / "gate", registered["version"],
                                  evaluation["metrics"]["challenger"], evaluation["metrics"].get("champion"),
                                  lookup.get("champion_version"))
        create_markdown_artifact(markdown=decision["markdown"], key=gate_markdown_key(cfg.registry.model_name),
                                 description=f"Promotion gate for {cfg.registry.model_name} v{registered['version']}")
        logger.info(("PROMOTED" if decision["promoted"] else "NOT PROMOTED") + f": {decision['reason']}")
        summary.update(status="promoted" if decision["promoted"] else "rejected", version=registered["version"],
                       champion_version=decision.get("champion_version"), run_id=trained["run_id"],
                       metrics=evaluation["metrics"]["challenger"], reason=decision["reason"])
    summary["timings"] = timer.times
    logger.info(timer.table())
    return summary
