"""Evaluation suites on users' own data, configured under `eval.suites` (SuiteConfig).

Each suite is prepared once from its files (class names, templates, captions, triples, image
locations: no pixels) and scored for every model evaluated, challenger and champion alike; its
metrics join the built-in benchmark's in one dict as `<suite>/<metric>`, so the promotion gate
can name any of them. Kinds: zeroshot (suite_zeroshot), retrieval (suite_retrieval),
compositional (suite_compositional). One plot per suite and model: `<suite>_confusion.png`
(`<suite>_per_class_recall.png` from 30 classes on), `<suite>_recall_at_k.png`,
`<suite>_compositional.png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from litops.core.component_cli import UserError

from .suite_base import Suite, SuiteResult

CONFUSION_MAX_CLASSES = 30  # from here on a confusion matrix is unreadable: per-class recall instead


def select_suites(configured: Sequence, names: Sequence[str] | None) -> list:
    """The configured suites named in `names` (None: all of them), in the order named."""
    if names is None:
        return list(configured)
    by_name = {s.name: s for s in configured}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        have = ", ".join(by_name) or "none configured (eval.suites)"
        raise UserError(f"unknown suite {unknown[0]!r} (configured: {have})")
    return [by_name[n] for n in dict.fromkeys(names)]


def prepare_suite(config, ks: Sequence[int]) -> Suite:
    """One suite's texts and image list, checked; a one-line UserError names any bad file."""
    if config.kind == "zeroshot":
        from .suite_zeroshot import prepare_zeroshot

        return prepare_zeroshot(config)
    if config.kind == "retrieval":
        from .suite_retrieval import prepare_retrieval

        return prepare_retrieval(config, list(ks))
    if config.kind == "compositional":
        from .suite_compositional import prepare_compositional

        return prepare_compositional(config)
    from litops.core.config import ConfigError

    raise ConfigError(f"suite {config.name!r}: unknown kind {config.kind!r}")


def prefixed(suite: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{suite}/{k}": v for k, v in metrics.items()}


def suite_plot(out: Path, suite: str, kind: str, result: SuiteResult, label: str) -> Path:
    """The suite's plot for one model, written under `out`."""
    from . import plots

    data = result.plot
    if kind == "zeroshot" and len(data["classes"]) < CONFUSION_MAX_CLASSES:
        return plots.confusion_matrices({suite: data}, out / f"{suite}_confusion.png",
                                        f"Zero-shot confusion, suite {suite} ({label})")
    if kind == "zeroshot":
        return plots.per_class_recall(data["classes"], data["recalls"], out / f"{suite}_per_class_recall.png",
                                      f"Zero-shot per-class recall, suite {suite} ({label})")
    if kind == "retrieval":
        return plots.recall_bars({suite: data["recalls"]}, out / f"{suite}_recall_at_k.png",
                                 f"Retrieval recall@K, suite {suite} ({label})")
    return plots.accuracy_bars(data["accuracy"], data["counts"], out / f"{suite}_compositional.png",
                               f"Compositional accuracy by swap type, suite {suite} ({label})")
