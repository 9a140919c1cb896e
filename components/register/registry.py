"""Model registry operations: register, look up, gate, promote, roll back, list.

Everything takes an `MlflowClient` so the flow, the CLI and the top-level `litops` commands
can call these in-process. The gate's states, its tags and the `champion` alias change only
through `gate_states.transition`.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Mapping

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from litops.core.config import RegistryConfig
from litops.register import gate_metrics
from litops.register.gate import Decision, decide, key_metrics, render_markdown
from litops.register.gate_states import (CHAMPION_ALIAS, CHAMPION_VERSION_TAG, DECISION_TAG, METRIC_TAG_PREFIX,
                                         REASON_TAG, REPORT_TAG, TIME_TAG, Event, GateState, RegistryError,
                                         champion_version, is_decided, not_found, state_of, transition)

DATA_VERSION_TAG = "data_version"
GIT_SHA_TAG = "git_sha"
CONFIG_HASH_TAG = "config_hash"
TRAIN_RUN_TAG = "train_run_id"
REQUIRED_TAGS = (DATA_VERSION_TAG, GIT_SHA_TAG, CONFIG_HASH_TAG)


# ---------------------------------------------------------------- helpers


def _quote(value: str, what: str) -> str:
    value = str(value)
    if "'" in value:
        raise RegistryError(f"{what} must not contain a single quote: {value!r}")
    return f"'{value}'"


def get_version(client: MlflowClient, model_name: str, version: int | str) -> ModelVersion:
    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as e:
        if not_found(e):
            raise RegistryError(f"model '{model_name}' has no version {version}") from None
        raise


def model_exists(client: MlflowClient, model_name: str) -> bool:
    try:
        client.get_registered_model(model_name)
        return True
    except MlflowException as e:
        if not_found(e):
            return False
        raise


def ensure_registered_model(client: MlflowClient, model_name: str) -> None:
    if model_exists(client, model_name):
        return
    try:
        client.create_registered_model(
            model_name, description="LiT image-text embedder trained and promoted by litops")
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _search(client: MlflowClient, filter_string: str) -> list[ModelVersion]:
    out, token = [], None
    while True:
        page = client.search_model_versions(filter_string, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def version_metrics(mv: ModelVersion) -> dict[str, float]:
    """The metrics recorded on a version as `metric.<name>` tags."""
    out = {}
    for k, v in (mv.tags or {}).items():
        if k.startswith(METRIC_TAG_PREFIX):
            try:
                out[k[len(METRIC_TAG_PREFIX):]] = float(v)
            except ValueError:
                pass
    return out


def run_info_text(client: MlflowClient, run_id: str | None) -> str:
    """Where to look at the run: a UI link for an HTTP server, else the run id and `mlflow ui` command."""
    if not run_id:
        return ""
    uri = str(client.tracking_uri)
    try:
        exp = client.get_run(run_id).info.experiment_id
    except MlflowException:
        exp = None
    if uri.startswith(("http://", "https://")) and exp is not None:
        return f"MLflow run: {uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
    where = f"experiment {exp}, " if exp is not None else ""
    return (f"MLflow run: `{run_id}` ({where}store `{uri}`); browse with "
            f"`mlflow ui --backend-store-uri {uri}`")


# ---------------------------------------------------------------- registration


def find_by_run(client: MlflowClient, model_name: str, run_id: str) -> ModelVersion | None:
    found = _search(client, f"name={_quote(model_name, 'model name')} and "
                            f"tags.{TRAIN_RUN_TAG}={_quote(run_id, 'run id')}")
    return min(found, key=lambda mv: int(mv.version)) if found else None


def find_version(client: MlflowClient, model_name: str, data_version: str, config_hash: str) -> ModelVersion | None:
    """The newest version trained on this data version with this config hash (None: none yet)."""
    if not model_exists(client, model_name):
        return None
    found = _search(client, f"name={_quote(model_name, 'model name')} and "
                            f"tags.{DATA_VERSION_TAG}={_quote(data_version, 'data version')} and "
                            f"tags.{CONFIG_HASH_TAG}={_quote(config_hash, 'config hash')}")
    return max(found, key=lambda mv: int(mv.version)) if found else None


def check_model_file(model_file: str) -> None:
    """Refuse to register a file the pyfunc could not load."""
    from pathlib import Path

    if not Path(model_file).is_file():
        raise RegistryError(f"model file not found: {model_file}")
    from litops.core.checkpoint import load_model

    try:
        load_model(model_file)
    except Exception as e:  # a torch pickle error, a missing key, a config error...
        raise RegistryError(f"model file {model_file} cannot be loaded as a LiT model: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def register_version(client: MlflowClient, model_name: str, run_id: str, model_file: str,
                     tags: Mapping[str, Any]) -> dict[str, Any]:
    """Log the pyfunc into run `run_id` and register it as a new version of `model_name`.

    Idempotent per run: a version already tagged `train_run_id=run_id` is returned as is
    (`created: False`), so a retried task never makes a duplicate.
    """
    missing = [k for k in REQUIRED_TAGS if k not in tags]
    if missing:
        raise RegistryError(f"register_version: missing tags {missing} (need {list(REQUIRED_TAGS)})")
    ensure_registered_model(client, model_name)
    existing = find_by_run(client, model_name, run_id)
    if existing is not None:
        return _version_result(model_name, existing, created=False)

    import mlflow

    from litops.register.pyfunc import log_pyfunc

    t_start = time.perf_counter()
    check_model_file(model_file)
    run = client.get_run(run_id)  # raises for an unknown run before anything is logged
    status = run.info.status
    t0 = time.perf_counter()
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    all_tags = {k: str(v) for k, v in tags.items()}
    all_tags[TRAIN_RUN_TAG] = run_id
    try:
        with mlflow.start_run(run_id=run_id):
            info = log_pyfunc(model_file)
        t_log = time.perf_counter() - t0
        # The SQL registry resolves a `models:/<model_id>` source through the global tracking URI,
        # so this must run while it still points at this store.
        mv = client.create_model_version(model_name, source=f"models:/{info.model_id}", run_id=run_id,
                                         tags=all_tags, model_id=info.model_id)
    finally:
        # start_run resumed the run (RUNNING) and its exit marked it FINISHED (FAILED on an
        # error): the training run keeps the status it had.
        client.update_run(run_id, status=status)
        mlflow.set_tracking_uri(previous_uri)
    result = _version_result(model_name, mv, created=True)
    result["log_seconds"] = round(t_log, 3)  # log_model only
    result["total_seconds"] = round(time.perf_counter() - t_start, 3)  # + model check + registration
    return result


def _model_id(mv: ModelVersion) -> str | None:
    model_id = getattr(mv, "model_id", None)  # the SQL store leaves it empty; the source names it
    if not model_id and str(mv.source).startswith("models:/m-"):
        model_id = str(mv.source)[len("models:/"):]
    return model_id or None


def _version_result(model_name: str, mv: ModelVersion, created: bool) -> dict[str, Any]:
    return {"version": int(mv.version), "created": created, "model_uri": f"models:/{model_name}/{mv.version}",
            "model_id": _model_id(mv), "run_id": mv.run_id}


# ---------------------------------------------------------------- gate, promote, rollback


def apply_decision(client: MlflowClient, model_name: str, version: int | str, decision: Decision,
                   challenger_metrics: Mapping[str, Any], cfg: RegistryConfig,
                   champion_version_number: int | str | None = None, run_id: str | None = None,
                   champion_source: str = "") -> dict[str, Any]:
    """Record `decision` on the version (tags), move `champion` when promoting; returns a result + markdown.

    A promotion is two transitions: recorded (`promoting`), then the alias moves (`promoted`), so a
    killed gate leaves the version undecided or resumable (`gate_version` finishes it).
    """
    mv = get_version(client, model_name, version)
    v = str(mv.version)
    report = render_markdown(decision, model_name, v, champion_version_number,
                             run_info_text(client, run_id or mv.run_id), champion_source)
    log_model_metrics(client, mv, challenger_metrics)
    details = {
        REASON_TAG: decision.reason,
        CHAMPION_VERSION_TAG: "" if champion_version_number is None else str(champion_version_number),
        TIME_TAG: datetime.now(timezone.utc).isoformat(timespec="seconds"),
        REPORT_TAG: report,
    }
    for name in key_metrics(cfg):
        if name in challenger_metrics:
            details[METRIC_TAG_PREFIX + name] = f"{float(challenger_metrics[name]):.6g}"
    if decision.promote:
        transition(client, model_name, v, Event.RECORD_PROMOTION, details)
        transition(client, model_name, v, Event.MOVE_ALIAS)
    else:
        transition(client, model_name, v, Event.REJECT, details)
    return _decision_result(client, model_name, get_version(client, model_name, v))


def log_model_metrics(client: MlflowClient, mv: ModelVersion, metrics: Mapping[str, Any]) -> None:
    """The challenger's eval metrics on the version's LoggedModel (MLflow 3's model page and search)."""
    model_id = _model_id(mv)
    if not model_id or not mv.run_id:  # a version registered without a LoggedModel
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(val), _run_point_time(client, mv.run_id, k, float(val)) or now, 0, model_id=model_id)
             for k, val in sorted(metrics.items()) if isinstance(val, (int, float)) and not isinstance(val, bool)]
    if items:
        client.log_batch(mv.run_id, metrics=items, synchronous=True)


def _run_point_time(client: MlflowClient, run_id: str, key: str, value: float) -> int | None:
    """The timestamp of the run's step-0 point with this value (the evaluate step logged it).

    MLflow keys a run's metric point by (key, timestamp, step, value): reusing the timestamp links
    the LoggedModel without adding a second point to the run's history."""
    for point in client.get_metric_history(run_id, key):
        if point.step == 0 and point.value == value:
            return point.timestamp
    return None


def _decision_result(client: MlflowClient, model_name: str, mv: ModelVersion) -> dict[str, Any]:
    tags = mv.tags or {}
    current = champion_version(client, model_name)
    return {"promoted": state_of(mv) is GateState.PROMOTED, "reason": tags.get(REASON_TAG, ""),
            "markdown": tags.get(REPORT_TAG, ""), "version": int(mv.version),
            "champion_version": int(current.version) if current is not None else None}


def recorded_decision(client: MlflowClient, model_name: str, version: int | str) -> dict[str, Any] | None:
    """The result recorded on a decided version (a retried gate step returns it unchanged); None if undecided."""
    mv = get_version(client, model_name, version)
    if not is_decided(state_of(mv)):
        return None
    return {**_decision_result(client, model_name, mv), "already_decided": True}


def resume_promotion(client: MlflowClient, model_name: str, version: int | str) -> dict[str, Any] | None:
    """Finish a promotion a killed gate recorded but did not apply, if the champion it beat still holds.

    None when nothing is pending, or when the champion changed since (then the gate decides again).
    """
    mv = get_version(client, model_name, version)
    if state_of(mv) is not GateState.PROMOTING:
        return None
    current = champion_version(client, model_name)
    holder = "" if current is None else str(current.version)
    if holder not in ((mv.tags or {}).get(CHAMPION_VERSION_TAG, ""), str(mv.version)):
        return None
    transition(client, model_name, mv.version, Event.MOVE_ALIAS)
    return {**_decision_result(client, model_name, get_version(client, model_name, version)), "resumed": True}


def gate_version(client: MlflowClient, model_name: str, version: int | str, challenger_metrics: Mapping[str, Any],
                 cfg: RegistryConfig, champion_metrics: Mapping[str, Any] | None = None,
                 champion_version_number: int | str | None = None, force: bool = False) -> dict[str, Any]:
    """Decide and apply. The champion defaults to the current alias; its metrics default to its tags.
    `force` decides again on a decided version."""
    if not force:
        if (done := recorded_decision(client, model_name, version)) is not None:
            return done
        if (finished := resume_promotion(client, model_name, version)) is not None:
            return finished
    if champion_version_number is None:
        current = champion_version(client, model_name)
        champion_version_number = int(current.version) if current is not None else None
    source = ""
    if champion_version_number is not None and int(champion_version_number) == int(version):
        raise RegistryError(f"version {version} of '{model_name}' is already the champion; nothing to gate")
    if champion_version_number is None:
        champion_metrics = None
    elif champion_metrics is None:
        champion_metrics = version_metrics(get_version(client, model_name, champion_version_number))
        source = f"recorded on v{champion_version_number} when it was gated (not re-evaluated)"
    else:
        source = "re-evaluated on the current test set"
    cfg = gate_metrics.resolved(cfg, challenger_metrics, "the challenger")  # `auto` the flow left (a gate run by hand)
    decision = decide(challenger_metrics, champion_metrics, cfg)
    if is_decided(state_of(get_version(client, model_name, version))):
        transition(client, model_name, version, Event.REOPEN)
    return apply_decision(client, model_name, version, decision, challenger_metrics, cfg,
                          champion_version_number, champion_source=source)


def promote(client: MlflowClient, model_name: str, version: int | str, reason: str = "") -> dict[str, Any]:
    """Human override: make version N the champion."""
    mv = get_version(client, model_name, version)
    before = champion_version(client, model_name)
    text = reason or f"manual promotion (champion was {f'v{before.version}' if before else 'none'})"
    transition(client, model_name, mv.version, Event.PROMOTE_MANUALLY, {REASON_TAG: text})
    return {"version": int(mv.version), "previous_champion": int(before.version) if before else None,
            "model_uri": f"models:/{model_name}@{CHAMPION_ALIAS}"}


def rollback(client: MlflowClient, model_name: str) -> dict[str, Any]:
    """Move `champion` back to the previous champion; the demoted version becomes `rolled_back`."""
    if not model_exists(client, model_name):
        raise RegistryError(f"model '{model_name}' is not registered; nothing to roll back")
    current = champion_version(client, model_name)
    if current is None:
        raise RegistryError(f"model '{model_name}' has no champion; nothing to roll back")
    transition(client, model_name, current.version, Event.ROLL_BACK)
    previous = champion_version(client, model_name)
    tags = previous.tags or {}
    return {"version": int(previous.version), "rolled_back_from": int(current.version),
            "model_uri": f"models:/{model_name}@{CHAMPION_ALIAS}", "data_version": tags.get(DATA_VERSION_TAG, ""),
            "run_id": tags.get(TRAIN_RUN_TAG) or previous.run_id, "metrics": version_metrics(previous),
            "rolled_back_metrics": version_metrics(current)}


# ---------------------------------------------------------------- listing


def list_models(client: MlflowClient, model_name: str, cfg: RegistryConfig | None = None) -> list[dict[str, Any]]:
    """All versions, newest first, with aliases, key metrics, data version and gate decision."""
    if not model_exists(client, model_name):
        return []
    cfg = cfg or RegistryConfig()
    aliases: dict[int, list[str]] = {}  # search results carry no aliases in the SQL store
    for alias, v in (client.get_registered_model(model_name).aliases or {}).items():
        aliases.setdefault(int(v), []).append(alias)
    rows = []
    for mv in sorted(_search(client, f"name={_quote(model_name, 'model name')}"), key=lambda m: -int(m.version)):
        tags = mv.tags or {}
        metrics = version_metrics(mv)
        rows.append({
            "version": int(mv.version),
            "aliases": sorted(set(mv.aliases or []) | set(aliases.get(int(mv.version), []))),
            "metrics": {k: metrics[k] for k in key_metrics(cfg) if k in metrics},
            "data_version": tags.get(DATA_VERSION_TAG, ""),
            "config_hash": tags.get(CONFIG_HASH_TAG, ""),
            "git_sha": tags.get(GIT_SHA_TAG, ""),
            "decision": tags.get(DECISION_TAG, ""),
            "rolled_back": state_of(mv) is GateState.ROLLED_BACK,
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc)
            .isoformat(timespec="seconds"),
            "run_id": mv.run_id,
        })
    return rows


def format_table(rows: list[dict[str, Any]], cfg: RegistryConfig | None = None) -> str:
    """A plain-text table for the terminal."""
    if not rows:
        return "(no registered versions)"
    cfg = cfg or RegistryConfig()
    metric_names = [m for m in key_metrics(cfg) if any(m in r["metrics"] for r in rows)]
    header = ["version", "aliases", *metric_names, "data_version", "decision", "created"]
    table = []
    for r in rows:
        decision = r["decision"] + (" (rolled back)" if r["rolled_back"] else "")
        table.append([f"v{r['version']}", ",".join(r["aliases"]) or "-",
                      *[f"{r['metrics'][m]:.4f}" if m in r["metrics"] else "-" for m in metric_names],
                      (r["data_version"] or "-")[:12], decision or "-", r["created"].replace("+00:00", "Z")])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*row) for row in table]
    return "\n".join(lines)
