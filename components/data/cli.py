"""`python -m litops.data {synth,add,index,version,pull,checkout}`; ends with a LITOPS_RESULT line."""

from __future__ import annotations

import argparse
import sys

from litops.core.component_cli import emit_result
from litops.core.config import LitopsConfig, read_config_file
from litops.core.step_results import CheckoutResult, DataVersionResult, IndexResult, StepResult

VERSION_FIELDS = ("name", "data_version", "dataset_dir", "git_sha", "splits", "seconds")


def _load_cfg(path: str | None) -> LitopsConfig:
    if not path:
        return LitopsConfig()
    try:
        return read_config_file(path)
    except FileNotFoundError:
        from litops.core.config import ConfigError

        raise ConfigError(f"config file not found: {path}") from None
    except ValueError as e:
        from litops.core.config import ConfigError

        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path} is not valid JSON: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="litops data", description="Build, ingest and version litops datasets.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", help="resolved LitopsConfig as JSON (default: built-in defaults)")
        return sp

    s = with_config(sub.add_parser("synth", help="generate the embedded benchmark (if needed) and version it"))
    s.add_argument("--force", action="store_true", help="regenerate even if the dataset is current")
    a = with_config(sub.add_parser("add", help="validate and add user shards or image+caption pairs, then version"))
    a.add_argument("path", help="a .tar shard, a folder of shards, or a folder of image + .txt pairs")
    a.add_argument("--in-place", action="store_true", help="s3:// shards only: check and index them where they "
                   "are (bad samples excluded, nothing rewritten) and version just their manifest")
    ix = with_config(sub.add_parser("index", help="write the shard manifest and offset indexes of shards in a "
                                    "folder or an s3:// prefix"))
    ix.add_argument("source", help="<SOURCE>/<split>/*.tar, or a flat img2dataset folder (00000.tar, ...)")
    ix.add_argument("--split", default=None, help="the split a flat folder's shards form (default: train)")
    with_config(sub.add_parser("version", help="synth if needed (synth source), then version the dataset"))
    pl = with_config(sub.add_parser("pull", help="restore the dataset from the DVC remote"))
    pl.add_argument("--data-version", default=None, help="a '<md5>.dir' data version to restore")
    co = with_config(sub.add_parser("checkout", help="restore a data version into its own folder "
                                    "(<home>/data-checkouts/<md5>/<name>); the data repo is not changed"))
    co.add_argument("--version", required=True, help="'<md5>.dir', or a registered model: MODEL@ALIAS "
                    "(lit-embedded@champion) or MODEL/N (lit-embedded/3) for the data it was trained on")
    co.add_argument("--tracking-uri", default="", help="MLflow registry of model references "
                    "(default: mlflow.tracking_uri, else <home>/mlflow.db)")
    return p


def _summary(r: dict) -> str:
    if r["command"] == "index":
        splits = ", ".join(f"{k}={v['shards']} shards/{v['samples']} samples" for k, v in r["splits"].items())
        state = "written" if r["written"] else "unchanged"
        return (f"indexed {r['source']} ({splits}; {r['indexed']} shards read, {r['reused']} reused): "
                f"{r['manifest']} {state}, digest {r['digest'][:12]}")
    if r["command"] == "checkout":
        model = f" (the data of {r['model']}/{r['model_version']})" if "model" in r else ""
        return f"checked out {r['data_version']}{model} into {r['dataset_dir']}"
    if "committed" not in r:
        return f"restored {r['name']} {r['data_version']} into {r['dataset_dir']}"
    splits = ", ".join(f"{k}={v}" for k, v in r.get("splits", {}).items())
    state = "new commit" if r.get("committed") else "unchanged"
    if r.get("already_ingested"):
        state = f"already ingested as {r['ingest_id']}, unchanged"
    return f"dataset {r['name']} ({splits}) at {r['dataset_dir']}: data version {r['data_version']} ({state})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = _load_cfg(args.config)
    from . import api

    if args.command == "synth":
        r = api.synth_and_version(cfg, force=args.force)
    elif args.command == "add":
        r = (api.add_in_place_and_version if args.in_place else api.add_and_version)(args.path, cfg)
    elif args.command == "index":
        r = api.index_dataset(args.source, cfg, split=args.split)
    elif args.command == "version":
        r = api.prepare(cfg)
    elif args.command == "checkout":
        r = api.checkout(cfg, args.version, tracking_uri=args.tracking_uri)
    else:
        r = api.pull(cfg, data_version=args.data_version)
    r["command"] = args.command
    print(_summary(r), file=sys.stderr)
    emit_result(typed_result(r))
    return 0


def typed_result(r: dict) -> StepResult:
    """A command's report as its step result; a version's command-specific keys go in its details."""
    command = r.pop("command")
    if command == "index":
        return IndexResult.from_fields(r)
    if command == "checkout":
        return CheckoutResult.from_fields(r)
    details = {k: v for k, v in r.items() if k not in (*VERSION_FIELDS, "committed")}
    return DataVersionResult(command=command, committed=r.get("committed"), details=details,
                             **{k: r[k] for k in VERSION_FIELDS})
