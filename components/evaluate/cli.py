"""`python -m litops.evaluate`: evaluate one or more models on the same held-out splits and suites.

    python -m litops.evaluate --config CFG.json [--dataset-dir DIR] --out DIR \
        --model challenger=/path/model.pt [--model champion=models:/lit-embedded@champion] \
        [--suites NAME,NAME] [--tracking-uri URI] [--run-id RUN_ID]

`--dataset-dir` runs the built-in benchmark on that dataset (unprefixed metrics); the suites of
the config's `eval.suites` (all, or those `--suites` names; an empty list: none) add
`<suite>/<metric>` and one plot each. At least one of the two must be there.

Each `--model LABEL=REF` is a local model file (checkpoint.load_model) or an MLflow model URI
(`models:/...`, `runs:/...`), whose pyfunc wrapper exposes the LiTModel as `.lit_model`.
With `--run-id`, the first model's metrics (both splits) and the plots (under `eval/`) are
logged to that run. Writes <out>/metrics.json and the plots as PNG files, and ends with
its EvaluateResult (`LITOPS_RESULT {"kind": "evaluate", "metrics": {label: {...}}, "plots": [...], ...}`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

from litops.core.component_cli import UserError, emit_result
from litops.core.step_results import EvaluateResult

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # scheme of two letters or more: not a drive letter
_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")
PLOT_FILES = {"loss": "loss_curve.png", "confusion": "zeroshot_confusion.png", "recall": "recall_at_k.png"}
ARTIFACT_DIR = "eval"


def _log(msg: str) -> None:
    print(f"[evaluate] {msg}", file=sys.stderr, flush=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def parse_models(specs: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for spec in specs:
        label, sep, ref = spec.partition("=")
        if not sep or not label or not ref:
            raise UserError(f"--model expects LABEL=REF, got {spec!r}")
        if not _LABEL.match(label):
            raise UserError(f"--model label {label!r} may only use letters, digits, '_', '.', '-'")
        if label in {l for l, _ in out}:
            raise UserError(f"--model label {label!r} given twice")
        out.append((label, ref))
    return out


def is_mlflow_uri(ref: str) -> bool:
    return bool(_URI.match(ref))


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when an HTTP tracking server does not answer (MLflow's own client
    would retry for minutes). Other stores fail on first use and are reported there."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as e:
        raise UserError(f"MLflow tracking store {uri} is unreachable: {_first_line(e)}") from None


def load_any_model(ref: str, tracking_uri: str):
    """A LiTModel in eval mode from a model file or an MLflow model URI."""
    if is_mlflow_uri(ref):
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        try:
            wrapper = mlflow.pyfunc.load_model(ref).unwrap_python_model()
        except Exception as e:  # MlflowException, OSError, missing artifacts: all a user-fixable ref
            raise UserError(f"cannot load model {ref} from MLflow store {tracking_uri}: {_first_line(e)}") from None
        model = getattr(wrapper, "lit_model", None)
        if model is None:
            raise UserError(f"model {ref} from MLflow store {tracking_uri} has no 'lit_model' (not a litops model)")
        return model.eval()
    from litops.core.checkpoint import load_model

    path = Path(ref).expanduser()
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        model, _ = load_model(path)
    except Exception as e:
        raise UserError(f"cannot load model file {path}: {_first_line(e)}") from None
    return model


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def check_run(uri: str, run_id: str) -> None:
    try:
        _client(uri).get_run(run_id)
    except Exception as e:
        raise UserError(f"cannot read run {run_id} from MLflow tracking store {uri}: {_first_line(e)}") from None


def loss_history(uri: str, run_id: str, key: str = "train/loss") -> tuple[list[int], list[float]]:
    try:
        hist = _client(uri).get_metric_history(run_id, key)
    except Exception as e:
        raise UserError(f"cannot read metric history of run {run_id} from {uri}: {_first_line(e)}") from None
    hist = sorted(hist, key=lambda m: (m.step, m.timestamp))
    return [m.step for m in hist], [m.value for m in hist]


def log_to_run(uri: str, run_id: str, metrics: dict[str, float], plots: list[Path]) -> None:
    from mlflow.entities import Metric

    client = _client(uri)
    now = int(time.time() * 1000)
    try:
        logged = set(client.get_run(run_id).data.metrics)  # a resumed gate evaluates again: no second point
        items = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items()) if k not in logged]
        for i in range(0, len(items), 500):
            client.log_batch(run_id, metrics=items[i : i + 500], synchronous=True)
        for p in plots:
            client.log_artifact(run_id, str(p), artifact_path=ARTIFACT_DIR)
    except Exception as e:
        raise UserError(f"cannot log to run {run_id} in MLflow tracking store {uri}: {_first_line(e)}") from None


def make_plots(out: Path, label: str, report, uri: str | None, run_id: str | None, notes: list[str],
               evalset) -> list[Path]:
    """The loss curve (with a run), the built-in benchmark's plots (when it ran) and one plot per suite."""
    from . import plots
    from .suites import suite_plot

    made = []
    if run_id:
        steps, values = loss_history(uri, run_id)
        if steps:
            made.append(plots.loss_curve(steps, values, out / PLOT_FILES["loss"], f"Training loss (run {run_id[:8]})"))
        else:
            notes.append(f"loss curve skipped: run {run_id} has no 'train/loss' history")
    if evalset.splits:
        made += benchmark_plots(out, label, report, notes)
    for suite in evalset.suites:
        made.append(suite_plot(out, suite.name, suite.kind, report.suites[suite.name], label))
    return made


def benchmark_plots(out: Path, label: str, report, notes: list[str]) -> list[Path]:
    from . import plots

    made = []
    conf_sfx = "" if report.confusion.get("") else next((s for s, c in report.confusion.items() if c), None)
    if conf_sfx is not None:
        split = "val" if conf_sfx == "" else "heldout"
        made.append(plots.confusion_matrices(report.confusion[conf_sfx], out / PLOT_FILES["confusion"],
                                             f"Zero-shot confusion, {split} split ({label})"))
    else:
        notes.append("confusion matrix skipped: no zero-shot task")
    if report.recalls:
        made.append(plots.recall_bars(report.recalls, out / PLOT_FILES["recall"], f"Retrieval recall@K ({label})"))
    return made


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m litops.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="resolved config JSON")
    p.add_argument("--dataset-dir", default=None,
                   help="dataset root (val/ and test/ shards, dataset.json) of the built-in benchmark; none: suites only")
    p.add_argument("--suites", default=None, metavar="NAME,NAME",
                   help="configured suites (eval.suites) to evaluate; default all, '' none")
    p.add_argument("--out", required=True, help="output folder: metrics.json and the plots")
    p.add_argument("--model", action="append", required=True, metavar="LABEL=REF",
                   help="model file or MLflow model URI; repeatable; the first is logged to --run-id")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: from the config)")
    p.add_argument("--run-id", default=None, help="MLflow run to log the first model's metrics and plots to")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from litops.core.config import ConfigError, read_config_file
    from litops.core.workspace import tracking_uri

    try:
        cfg = read_config_file(args.config)
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read config {args.config}: {_first_line(e)}") from None
    models = parse_models(args.model)
    dataset_dir = Path(args.dataset_dir) if args.dataset_dir is not None else None
    if dataset_dir is not None and not dataset_dir.is_dir():
        raise UserError(f"dataset folder not found: {dataset_dir}")
    suite_names = None if args.suites is None else [n.strip() for n in args.suites.split(",") if n.strip()]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    for label, ref in models:  # fail fast, before any work
        if not is_mlflow_uri(ref) and not Path(ref).expanduser().is_file():
            raise UserError(f"model file not found for --model {label}: {Path(ref).expanduser()}")

    uses_mlflow = bool(args.run_id) or any(is_mlflow_uri(r) for _, r in models)
    uri = (args.tracking_uri or tracking_uri(cfg)) if uses_mlflow else None
    if uses_mlflow:
        check_store(uri)
        if args.run_id:
            check_run(uri, args.run_id)

    from .evaluate import prepare_from_config, score_model

    t0 = time.perf_counter()
    evalset = prepare_from_config(dataset_dir, cfg, suite_names)
    if not evalset.splits and not evalset.suites:
        where = f"in {dataset_dir}: " + "; ".join(evalset.notes) if dataset_dir else "(no --dataset-dir, no suite)"
        raise UserError(f"nothing to evaluate {where}")
    prepared = [f"{p.name}={len(p.split)}" for p in evalset.splits] + [f"{s.name}={len(s.images())}" for s in evalset.suites]
    _log(f"prepared {', '.join(prepared)} in {time.perf_counter() - t0:.1f}s")

    results: dict[str, dict[str, float]] = {}
    reports = {}
    for label, ref in models:
        t1 = time.perf_counter()
        model = load_any_model(ref, uri or "")
        reports[label] = score_model(model, evalset, label)
        results[label] = reports[label].metrics
        _log(f"{label}: {len(results[label])} metrics in {time.perf_counter() - t1:.1f}s")

    notes = list(evalset.notes)
    for report in reports.values():  # each model meets the same unreadable images: one note each
        notes += [n for result in report.suites.values() for n in result.notes if n not in notes]
    first = models[0][0]
    plot_paths = make_plots(out, first, reports[first], uri, args.run_id, notes, evalset)
    if args.run_id:
        log_to_run(uri, args.run_id, results[first], plot_paths)

    result = EvaluateResult(
        metrics=results,
        models={label: ref for label, ref in models},
        splits={p.name: p.counts() for p in evalset.splits},
        suites={s.name: {"kind": s.kind, **reports[first].suites[s.name].counts} for s in evalset.suites},
        plots=[str(p) for p in plot_paths],
        artifacts=[f"{ARTIFACT_DIR}/{p.name}" for p in plot_paths] if args.run_id else [],
        logged_model=first if args.run_id else None,
        run_id=args.run_id,
        skipped=notes,
        seconds=round(time.perf_counter() - t0, 2),
    )
    (out / "metrics.json").write_text(json.dumps(dataclasses.asdict(result), indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")
    emit_result(result)
    return 0
