"""The metric names an evaluation will report, known before any model exists.

The promotion gate's metrics are checked against them before training (litops.register.gate_metrics),
so this module reads files only (no torch, no image). The built-in benchmark's names follow from
the dataset's dataset.json: its splits, and the attribute vocabulary that object metadata gave it;
each configured suite's from its kind and, for a compositional suite, the swap types of its triples.
The scorers (evaluate.py, suite_*.py) report exactly these names; tests/evaluate/test_metric_names.py
holds them to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

SPLITS = (("val", ""), ("test", "_heldout"))  # split folder, metric-name suffix
ZEROSHOT_ATTRIBUTES = ("colour", "shape")
DATASET_JSON = "dataset.json"
ZEROSHOT_SUITE_METRICS = ("zeroshot_top1", "zeroshot_top5", "mean_per_class_recall")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def metric_word(text: str) -> str:
    """`text` made safe inside a metric name and a file name."""
    return _UNSAFE.sub("_", text.strip()).strip("_") or "none"


def retrieval_names(ks: Iterable[int]) -> list[str]:
    """R@K both ways, then their mean at K=1 (metrics.retrieval_metrics)."""
    ks = sorted({int(k) for k in ks})
    names = [f"retrieval_{d}_r{k}" for k in ks for d in ("i2t", "t2i")]
    return names + (["retrieval_mean_r1"] if 1 in ks else [])


def compositional_names(swap_types: Iterable[str]) -> list[str]:
    return ["compositional_acc"] + [f"compositional_acc_{metric_word(t)}" for t in sorted(set(swap_types) - {""})]


# --------------------------------------------------------------------------- the built-in benchmark


def read_dataset_meta(dataset_dir: str | Path) -> dict[str, Any]:
    """dataset.json as a dict; {} when it is missing or unreadable (the benchmark then has no metadata either)."""
    path = Path(dataset_dir) / DATASET_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def split_present(dataset_dir: str | Path, meta: dict[str, Any], split: str) -> bool:
    """dataset.json's sample count when it has one (a dataset in place on S3 has no local shards);
    else shards on disk."""
    counts = meta.get("splits")
    if isinstance(counts, dict):
        return isinstance(counts.get(split), int) and counts[split] > 0
    folder = Path(dataset_dir) / split
    return folder.is_dir() and any(folder.glob("*.tar"))


def benchmark_names(dataset_dir: str | Path, ks: Sequence[int]) -> list[str]:
    """What evaluate.score_model reports on the dataset: per split, retrieval always; zero-shot per
    attribute with two or more values, and the compositional probe, only when object metadata gave
    the dataset an attribute vocabulary. The binding swap needs two-object images: known only for
    the embedded benchmark (its `two_object_fraction`)."""
    meta = read_dataset_meta(dataset_dir)
    attrs = meta.get("attributes") if isinstance(meta.get("attributes"), dict) else {}
    attrs = {k: v for k, v in attrs.items() if isinstance(v, list) and v}
    params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
    two_objects = float(params.get("two_object_fraction") or 0.0) if meta.get("source") == "synth" else 0.0
    zeroshot = [a for a in ZEROSHOT_ATTRIBUTES if len(attrs.get(a, [])) >= 2] if two_objects < 1 else []
    per_split = retrieval_names(ks)
    for attr in zeroshot:
        per_split += [f"zeroshot_{attr}_top1", f"zeroshot_{attr}_top5"]
    if zeroshot:
        per_split += ["zeroshot_top1", "zeroshot_top5"]
    if attrs:
        per_split += ["compositional_acc"] + (["compositional_acc_binding"] if two_objects > 0 else [])
    return [name + suffix for split, suffix in SPLITS if split_present(dataset_dir, meta, split) for name in per_split]


# --------------------------------------------------------------------------- configured suites


def triple_types(path: str | Path) -> list[str]:
    """The swap types a triples file names; a file the suite cannot read is reported when it is prepared."""
    from .triples import read_triples

    return [t.type for t in read_triples(Path(path).expanduser())]


def suite_names(suite, ks: Sequence[int]) -> list[str]:
    """A configured suite's metrics, `<suite>/<metric>` (suites.prefixed)."""
    if suite.kind == "zeroshot":
        names = list(ZEROSHOT_SUITE_METRICS)
    elif suite.kind == "retrieval":
        names = retrieval_names(ks)
    else:
        names = compositional_names(triple_types(suite.triples))
    return [f"{suite.name}/{name}" for name in names]


def reported_metrics(cfg, dataset_dir: str | Path | None) -> list[str]:
    """Every metric the evaluate step will report for this config: the benchmark on `dataset_dir`
    (None: none), then each suite of `eval.suites`."""
    names = benchmark_names(dataset_dir, cfg.eval.recall_ks) if dataset_dir is not None else []
    for suite in cfg.eval.suites:
        names += suite_names(suite, cfg.eval.recall_ks)
    return names
