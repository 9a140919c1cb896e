"""Evaluation plots: training loss curve, zero-shot confusion matrices, per-class recall, R@K bars,
compositional accuracy by swap type.

Uses matplotlib's object API (Figure + Agg canvas), never pyplot's global state, so it runs
headless and in threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

SPLIT_LABELS = {"": "val", "_heldout": "heldout"}


def save_figure(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def loss_curve(steps: Sequence[int], values: Sequence[float], path: Path, title: str = "Training loss") -> Path:
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    ax.plot(list(steps), list(values), lw=1.5, color="tab:blue", marker="o" if len(steps) < 30 else None, ms=3)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("train/loss")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def confusion_matrices(confusion: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """One panel per attribute task; rows are true classes, columns predictions, cells row-normalised."""
    tasks = list(confusion.items())
    fig = Figure(figsize=(4.6 * len(tasks), 4.6))
    for i, (attr, c) in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        classes, counts = c["classes"], c["matrix"]
        rows = [sum(r) for r in counts]
        norm = [[v / n if n else 0.0 for v in r] for r, n in zip(counts, rows)]
        im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        acc = sum(counts[j][j] for j in range(len(classes))) / max(1, sum(rows))
        ax.set_title(f"{attr} (top-1 {acc:.2f}, n={sum(rows)})")
        for y, r in enumerate(counts):
            for x, v in enumerate(r):
                if v:
                    ax.text(x, y, str(v), ha="center", va="center", fontsize=7,
                            color="white" if norm[y][x] > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def recall_bars(recalls: dict[str, dict[str, dict[int, float]]], path: Path, title: str) -> Path:
    """Grouped bars: for each K, i2t and t2i of every split evaluated."""
    series = [(f"{d} {SPLIT_LABELS.get(sfx, sfx)}", r[d]) for sfx, r in recalls.items() for d in ("i2t", "t2i")]
    ks = sorted({k for _, r in series for k in r})
    fig = Figure(figsize=(6.8, 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    colours = ["tab:blue", "tab:orange", "lightsteelblue", "navajowhite"]
    for j, (label, r) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(ks))]
        vals = [r.get(k, 0.0) for k in ks]
        bars = ax.bar(xs, vals, width, label=label, color=colours[j % len(colours)],
                      hatch="//" if "heldout" in label else None, edgecolor="grey")
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(range(len(ks)), [f"R@{k}" for k in ks])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("recall")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def per_class_recall(classes: Sequence[str], recalls: Sequence[float | None], path: Path, title: str) -> Path:
    """Top-1 recall of every class, sorted from worst to best; too many classes for a confusion matrix."""
    ranked = sorted(((r, c) for c, r in zip(classes, recalls) if r is not None), key=lambda rc: rc[0])
    fig = Figure(figsize=(max(6.4, min(24.0, 0.12 * len(ranked))), 4.2))
    ax = fig.add_subplot()
    ax.bar(range(len(ranked)), [r for r, _ in ranked], width=1.0, color="tab:blue", edgecolor="none")
    if len(ranked) <= 60:
        ax.set_xticks(range(len(ranked)), [c for _, c in ranked], rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
        worst = ", ".join(c for _, c in ranked[:5])
        ax.set_xlabel(f"{len(ranked)} classes, worst first (worst: {worst})")
    mean = sum(r for r, _ in ranked) / max(1, len(ranked))
    ax.axhline(mean, color="tab:orange", lw=1, label=f"mean per-class recall {mean:.2f}")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("top-1 recall")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def accuracy_bars(accuracy: dict[str, float], counts: dict[str, int], path: Path, title: str) -> Path:
    """One bar per swap type: accuracy, with the number of pairs under the label; 0.5 is chance."""
    names = list(accuracy)
    fig = Figure(figsize=(max(4.8, 1.1 * len(names) + 2), 4.2))
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), [accuracy[n] for n in names], color="tab:green", edgecolor="grey")
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=1)
    ax.set_xticks(range(len(names)), [f"{n}\n(n={counts.get(n, 0)})" for n in names], fontsize=8)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy (true caption beats swapped)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)
