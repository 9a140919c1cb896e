"""`python -m litops.train`: train one model from a resolved config."""

from __future__ import annotations

import argparse
from pathlib import Path

from litops.core.component_cli import emit_result
from litops.core.config import LitopsConfig, config_hash, load_json, to_dict
from litops.train.logger import FanOutLogger, JsonlLogger, MetricLogger, flatten


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m litops.train", description=__doc__)
    p.add_argument("--config", help="resolved LitopsConfig as JSON (default: built-in defaults)")
    p.add_argument("--dataset-dir", required=True, help="folder holding train/*.tar shards")
    p.add_argument("--checkpoint-dir", required=True, help="checkpoints go here; an existing one is resumed")
    p.add_argument("--data-version", default="", help="recorded as a run tag")
    p.add_argument("--tracking-uri", default="", help="MLflow tracking URI; empty: JSON lines only")
    p.add_argument("--experiment", default="litops")
    p.add_argument("--artifact-location", default="")
    return p


def make_logger(args: argparse.Namespace, cfg: LitopsConfig, ckpt_dir: Path) -> tuple[MetricLogger, str | None]:
    jsonl = JsonlLogger(ckpt_dir / "metrics.jsonl")
    if not args.tracking_uri:
        return jsonl, None
    from litops.train.mlflow_logger import MLflowLogger  # only when tracking is asked for

    tags = {"config_hash": config_hash(cfg), "data_version": args.data_version, "litops.step": "train"}
    mlf = MLflowLogger(args.tracking_uri, args.experiment, ckpt_dir, f"train-{config_hash(cfg)[:8]}", tags,
                       args.artifact_location)
    return FanOutLogger(jsonl, mlf), mlf.run_id


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_json(args.config) if args.config else LitopsConfig()
    ckpt_dir = Path(args.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    logger, run_id = make_logger(args, cfg, ckpt_dir)
    logger.log_params(flatten({k: v for k, v in to_dict(cfg).items() if k in ("data", "model", "loss", "train")}))

    from litops.train.loop import train  # torch import after argument errors are reported

    try:
        result = train(cfg, Path(args.dataset_dir), ckpt_dir, logger)
    except BaseException:
        logger.close("FAILED")
        raise
    logger.close("FINISHED")
    emit_result({**result.as_dict(), "run_id": run_id, "config_hash": config_hash(cfg)})
    return 0
