"""Evaluation plots: training loss curve, zero-shot confusion matrices, R@K bars.

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
