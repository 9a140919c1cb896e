"""`python -m litops.train`: train one model from a resolved config."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from litops.core.component_cli import emit_result
from litops.core.config import LitopsConfig, config_hash, read_config_file, to_dict
from litops.core.shard_index import is_s3
from litops.core.step_results import TrainResult
from litops.core.storage import dvc_remote
from litops.core.workspace import Workspace, resolve_home
from litops.train.logger import FanOutLogger, JsonlLogger, MetricLogger, flatten


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m litops.train", description=__doc__)
    p.add_argument("--config", help="resolved LitopsConfig as JSON (default: built-in defaults)")
    p.add_argument("--dataset-dir", required=True, help="folder or s3://bucket/prefix holding train/*.tar shards "
                   "(streamed; S3 through storage.endpoint_url with credentials from the environment)")
    p.add_argument("--checkpoint-dir", required=True, help="checkpoints go here; an existing one is resumed "
                   "(an s3://bucket/prefix URI: a local scratch folder mirrored there)")
    p.add_argument("--checkpoint-mirror", default=os.environ.get("LITOPS_CHECKPOINT_MIRROR", ""),
                   help="s3://bucket/prefix to mirror checkpoints to and resume from (default: from storage.kind=s3)")
    p.add_argument("--data-version", default="", help="DVC data version ('<md5>.dir'): a run tag and the run's "
                   "dataset input")
    p.add_argument("--git-sha", default="", help="code version, recorded as the run's git_sha tag (default: unknown)")
    p.add_argument("--tracking-uri", default="", help="MLflow tracking URI; empty: JSON lines only")
    p.add_argument("--experiment", default="litops")
    p.add_argument("--artifact-location", default="")
    return p


def make_logger(args: argparse.Namespace, cfg: LitopsConfig, ckpt_dir: Path) -> tuple[MetricLogger, str | None]:
    jsonl = JsonlLogger(ckpt_dir / "metrics.jsonl")
    if not args.tracking_uri:
        return jsonl, None
    from litops.train.mlflow_logger import MLflowLogger  # only when tracking is asked for

    tags = {"config_hash": config_hash(cfg), "data_version": args.data_version, "litops.step": "train",
            "git_sha": args.git_sha or "unknown"}
    mlf = MLflowLogger(args.tracking_uri, args.experiment, ckpt_dir, f"train-{config_hash(cfg)[:8]}", tags,
                       args.artifact_location)
    mlf.log_config_file(to_dict(cfg))
    if args.data_version:
        mlf.log_dataset(cfg.data.name, args.data_version, dataset_source(cfg, args.dataset_dir))
    return FanOutLogger(jsonl, mlf), mlf.run_id


def dataset_source(cfg: LitopsConfig, dataset: str) -> dict[str, str]:
    """Where a data version lives: the folder or URL, its DVC data repo and remote. Built from the config
    alone (the remote's URL, never its options), so nothing from the environment is recorded."""
    ws = Workspace(resolve_home(cfg.home))
    if is_s3(dataset):
        return {"uri": dataset, "dvc_remote": dvc_remote(cfg, str(ws.dvc_remote))["url"]}
    dataset_dir = Path(dataset).resolve()
    source = {"uri": str(dataset_dir), "dvc_remote": dvc_remote(cfg, str(ws.dvc_remote))["url"]}
    if dataset_dir.is_relative_to(ws.data_repo):
        source["data_repo"] = str(ws.data_repo)
    return source


class NullLogger:  # ranks > 0 of a DDP run
    def log_params(self, params) -> None: ...
    def log_metrics(self, metrics, step: int) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


def checkpoint_target(args: argparse.Namespace, cfg: LitopsConfig):
    """(local checkpoint folder, S3 mirror or None). `--checkpoint-dir s3://...` works in a
    scratch folder; otherwise `--checkpoint-mirror`, else storage.kind=s3 mirrors to the config's bucket."""
    from litops.core.s3_retries import S3Retries
    from litops.train.remote_checkpoints import S3CheckpointMirror, scratch_dir_for

    endpoint, region, retries = cfg.storage.endpoint_url or None, cfg.storage.region, S3Retries.from_config(cfg)
    if args.checkpoint_dir.startswith("s3://"):
        return scratch_dir_for(args.checkpoint_dir), S3CheckpointMirror(args.checkpoint_dir, endpoint, region,
                                                                        retries=retries)
    ckpt_dir = Path(args.checkpoint_dir)
    if args.checkpoint_mirror:
        uri = args.checkpoint_mirror.rstrip("/") + "/" + ckpt_dir.name
        return ckpt_dir, S3CheckpointMirror(uri, endpoint, region, retries=retries)
    return ckpt_dir, S3CheckpointMirror.for_run(cfg, ckpt_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = read_config_file(args.config) if args.config else LitopsConfig()
    ckpt_dir, mirror = checkpoint_target(args, cfg)  # local folder + optional S3 mirror
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 logs and reports
    logger, run_id = make_logger(args, cfg, ckpt_dir) if main_rank else (NullLogger(), None)
    logger.log_params(flatten(to_dict(cfg)))

    from litops.train.loop import train  # torch import after argument errors are reported

    try:
        result = train(cfg, args.dataset_dir, ckpt_dir, logger, mirror=mirror,
                       data_version=args.data_version)  # recorded beside the feature cache
    except BaseException:
        logger.close("FAILED")
        raise
    logger.close("FINISHED")
    if not main_rank:
        return 0
    emit_result(TrainResult(**result.as_dict(), run_id=run_id, config_hash=config_hash(cfg)))
    return 0
