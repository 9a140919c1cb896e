"""`python -m litops.register`: register, gate, promote, roll back and list LiT models in MLflow.

Every subcommand ends with its typed result (litops.core.step_results) as a `LITOPS_RESULT {json}` line. An unreachable tracking store is
reported in one line naming its URI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from litops.core.component_cli import UserError, emit_result
from litops.core.config import LitopsConfig, read_config_file
from litops.core.step_results import (ChampionResult, GateDecision, GateMetricsResult, LookupResult, ModelsResult,
                                      PromoteResult, RegisterResult, RollbackResult)

SUBCOMMANDS = ("gate-metrics", "lookup", "log", "gate", "champion", "promote", "rollback", "models")
RESULT_TYPES = {"lookup": LookupResult, "log": RegisterResult, "gate": GateDecision, "champion": ChampionResult,
                "promote": PromoteResult, "rollback": RollbackResult, "models": ModelsResult}


class StoreError(UserError):
    """The MLflow tracking store cannot be reached or is broken."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="resolved LitopsConfig as JSON (default: built-in defaults)")
    common.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: from the config)")
    common.add_argument("--model-name", default="", help="registered model name (default: registry.model_name)")

    p = argparse.ArgumentParser(prog="python -m litops.register", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")

    s = sub.add_parser("gate-metrics", help="the metrics the gate will decide on for this dataset and eval.suites; "
                                            "refuses one the evaluation will not report (no MLflow needed)")
    s.add_argument("--config", help="resolved LitopsConfig as JSON (default: built-in defaults)")
    s.add_argument("--dataset-dir", default=None,
                   help="the dataset the built-in benchmark evaluates (none: suites only)")

    s = sub.add_parser("lookup", parents=[common], help="find a version trained on this data + config, and the champion")
    s.add_argument("--data-version", required=True)
    s.add_argument("--config-hash", required=True)

    s = sub.add_parser("log", parents=[common], help="log the pyfunc into a run and register a version")
    s.add_argument("--run-id", required=True, help="the training run to log the model into")
    s.add_argument("--model-file", required=True, help="exported model file (torch)")
    s.add_argument("--data-version", required=True)
    s.add_argument("--config-hash", required=True)
    s.add_argument("--git-sha", default="")

    s = sub.add_parser("gate", parents=[common], help="decide on a challenger version, apply the decision and "
                                                      "log the challenger's metrics to its LoggedModel")
    s.add_argument("--version", required=True, type=int)
    s.add_argument("--challenger-metrics", required=True, help="JSON file of the challenger's metrics")
    s.add_argument("--champion-metrics", help="JSON file of the champion's metrics (default: its recorded tags)")
    s.add_argument("--champion-version", type=int, help="default: the version the 'champion' alias points at")
    s.add_argument("--force", action="store_true", help="decide again even if the version was already gated")

    sub.add_parser("champion", parents=[common], help="the current champion version")

    s = sub.add_parser("promote", parents=[common], help="make version N the champion (manual override)")
    s.add_argument("--version", required=True, type=int)
    s.add_argument("--reason", default="")

    sub.add_parser("rollback", parents=[common], help="move the champion back to the previous one")
    sub.add_parser("models", parents=[common], help="list the registered versions")
    return p


def load_config(path: str | None) -> LitopsConfig:
    if not path:
        return LitopsConfig()
    if not Path(path).is_file():
        raise UserError(f"config file not found: {path}")
    try:
        return read_config_file(path)
    except json.JSONDecodeError as e:
        raise UserError(f"config file {path} is not valid JSON: {e}") from None


def read_metrics(path: str, what: str) -> dict[str, Any]:
    """A JSON metrics file: a flat {name: number} mapping, or {"metrics": {...}, ...}."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} metrics file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{what} metrics file {path} is not valid JSON: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
        data = data["metrics"]
    if not isinstance(data, dict):
        raise UserError(f"{what} metrics file {path} must hold a JSON object of metric values")
    return data


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (None for other stores or in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def connect(uri: str):
    """An MlflowClient whose store answered one request; else StoreError naming the URI."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        # MLflow would silently create the folder (as root); a wrong path should fail instead.
        raise StoreError(f"MLflow tracking store {uri} is unreachable: folder {db.parent} does not exist")
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_registered_models(max_results=1)
    except Exception as e:  # any failure here means the store is unusable
        raise StoreError(f"MLflow tracking store {uri} is unreachable or broken: {_first_line(e)}") from None
    return client


def tracking_uri_for(args: argparse.Namespace, cfg: LitopsConfig) -> str:
    from litops.core.workspace import Workspace, resolve_home, tracking_uri

    if args.tracking_uri:
        return args.tracking_uri
    uri = tracking_uri(cfg)
    if not cfg.mlflow.tracking_uri:  # the workspace's own SQLite file: make sure its folder exists
        Workspace(resolve_home(cfg.home)).create()
    return uri


def client_for(cfg: LitopsConfig, tracking_uri: str = ""):
    """For in-process callers (`litops promote/rollback/models`): a checked client for a config."""
    return connect(tracking_uri_for(argparse.Namespace(tracking_uri=tracking_uri), cfg))


def lookup(client, name: str, data_version: str, config_hash: str) -> dict[str, Any]:
    """The version trained on this data + config with its gate state, and the champion it is gated against
    (one call). A version that holds the alias itself has none: a killed gate moved it, the gate only finishes."""
    from litops.register import registry as reg
    from litops.register.gate_states import CHAMPION_ALIAS, is_decided, state_of

    mv = reg.find_version(client, name, data_version, config_hash)
    champ = reg.champion_version(client, name)
    if mv is not None and champ is not None and champ.version == mv.version:
        champ = None
    state = state_of(mv) if mv else None
    return {"version": int(mv.version) if mv else None,
            "model_uri": f"models:/{name}/{mv.version}" if mv else None,
            "state": state.value if state else None,
            "decided": is_decided(state) if state else None,
            "train_run_id": ((mv.tags or {}).get(reg.TRAIN_RUN_TAG) or mv.run_id) if mv else None,
            "champion_version": int(champ.version) if champ else None,
            "champion_uri": f"models:/{name}@{CHAMPION_ALIAS}" if champ else None}


def run_command(args: argparse.Namespace, cfg: LitopsConfig, client) -> dict[str, Any]:
    from litops.register import registry as reg
    from litops.register.gate_states import CHAMPION_ALIAS

    name = args.model_name or cfg.registry.model_name
    cmd = args.command
    if cmd == "lookup":
        return lookup(client, name, args.data_version, args.config_hash)
    if cmd == "log":
        if not Path(args.model_file).is_file():
            raise UserError(f"model file not found: {args.model_file}")
        tags = {"data_version": args.data_version, "config_hash": args.config_hash, "git_sha": args.git_sha}
        return reg.register_version(client, name, args.run_id, args.model_file, tags)
    if cmd == "gate":
        challenger = read_metrics(args.challenger_metrics, "challenger")
        champion = read_metrics(args.champion_metrics, "champion") if args.champion_metrics else None
        return reg.gate_version(client, name, args.version, challenger, cfg.registry, champion,
                                args.champion_version, force=args.force)
    if cmd == "champion":
        mv = reg.champion_version(client, name)
        return {"version": int(mv.version) if mv else None,
                "model_uri": f"models:/{name}@{CHAMPION_ALIAS}" if mv else None}
    if cmd == "promote":
        return reg.promote(client, name, args.version, args.reason)
    if cmd == "rollback":
        return reg.rollback(client, name)
    if cmd == "models":
        rows = reg.list_models(client, name, cfg.registry)
        print(f"{name} @ {client.tracking_uri}")
        print(reg.format_table(rows, cfg.registry))
        return {"model_name": name, "rows": rows}
    raise UserError(f"unknown subcommand {cmd}")  # argparse prevents this


def gate_metrics_for(cfg: LitopsConfig, dataset_dir: str | None) -> dict[str, Any]:
    """The gate's metrics for this config and dataset, from the names the evaluate step will report."""
    from litops.evaluate.metric_names import reported_metrics
    from litops.register.gate_metrics import resolve

    reported = reported_metrics(cfg, dataset_dir)
    source = f"dataset '{Path(dataset_dir).name}'" if dataset_dir else "no dataset"
    if cfg.eval.suites:
        source += f" and suites {', '.join(s.name for s in cfg.eval.suites)}"
    metrics = resolve(cfg.registry, reported, source)
    print(metrics.line(), file=sys.stderr)
    return {**metrics.as_dict(), "reported": reported}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config)
    if args.command == "gate-metrics":  # before any MLflow import: it runs before training, in a second
        emit_result(GateMetricsResult.from_fields(gate_metrics_for(cfg, args.dataset_dir)))
        return 0
    uri = tracking_uri_for(args, cfg)
    client = connect(uri)

    from mlflow.exceptions import MlflowException

    from litops.register.gate import GateError
    from litops.register.registry import RegistryError

    try:
        result = RESULT_TYPES[args.command].from_fields(run_command(args, cfg, client))
    except (RegistryError, GateError) as e:
        raise UserError(str(e)) from None
    except MlflowException as e:
        raise UserError(f"MLflow request to {uri} failed: {_first_line(e)}") from None
    if isinstance(result, GateDecision) and result.markdown:
        print(result.markdown)
    emit_result(result)
    return 0
