"""The LiT and SigLIP orderings on the embedded benchmark, with equal step budgets.

    python tests/benchmarks/lit_orderings.py [--quick] [--steps N] [--configs Lu,Uu,uu,Lu-softmax]

Prints one JSON line per configuration:
    {"config", "zeroshot_top1_seen", "zeroshot_top1_heldout", "retrieval_r1", ...}
and draws them as grouped bars in a PNG (`--plot`, default <home>/lit_orderings.png).

Configurations (all: image tower EfficientNet-Lite0 fed the 64 px images resized to 128 px, the
embedded small text tower from scratch, sigmoid loss, batch 128, the embedded defaults for
everything else, no tuning):
- `Lu`: image tower locked (ImageNet weights; trains on cached features), text from scratch (LiT);
- `Uu`: image tower pretrained and unlocked; `uu`: image tower from scratch;
- `Lu-softmax`: `Lu` with the softmax (CLIP) loss instead of sigmoid (SigLIP), batch 128;
- `Lu-sigmoid-dupaware`: `Lu` whose sigmoid loss counts pairs with word-for-word equal captions as
  positives (`loss.duplicates=positive`); `Lu-sigmoid-dupignore` leaves them out of the loss.

Metrics come from `litops.evaluate.evaluate_model` (the flow's evaluator): zero-shot top-1 on
single-object images of the val split (seen colour x shape combinations) and of the test split
(held-out combinations), and retrieval R@1 (mean of both directions) on the val split.

`--quick` (<= 10 min on a quiet 2-core CPU): 50 steps per configuration instead of 300.
The dataset is the embedded one (data defaults), generated once under `--home`.

Input size. 128 px was fixed before any ordering was run at that size, from linear probes of the locked
tower (tests/benchmarks/locked_probe.py): at 64 px its features hold colour 0.66 / shape 0.75,
at 128 px 0.87 / 0.96, at 224 px 0.87 / 0.98, so 64 px starved the locked tower. 224 px costs
3-4x more per unlocked (Uu, uu) step on the CPU than 128 px; `--input-size 224` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONFIGS = {
    "Lu": {"lock": "Lu", "loss": "sigmoid"},
    "Uu": {"lock": "Uu", "loss": "sigmoid"},
    "uu": {"lock": "uu", "loss": "sigmoid"},
    "Lu-softmax": {"lock": "Lu", "loss": "softmax"},
    "Lu-sigmoid-dupaware": {"lock": "Lu", "loss": "sigmoid", "duplicates": "positive"},
    "Lu-sigmoid-dupignore": {"lock": "Lu", "loss": "sigmoid", "duplicates": "ignore"},
}


def build_config(name: str, steps: int, home: str, batch_size: int = 128, input_size: int = 128):
    from litops.core.config import LitopsConfig, validate

    cfg = LitopsConfig(home=home)
    spec = CONFIGS[name]
    cfg.model.image_tower = "efficientnet_lite0"
    cfg.model.image_input_size = input_size
    cfg.model.lock = spec["lock"]
    cfg.loss.name = spec["loss"]
    cfg.loss.duplicates = spec.get("duplicates", "negative")
    cfg.train.steps = steps
    cfg.train.batch_size = batch_size
    cfg.train.warmup_steps = max(1, steps * cfg.train.warmup_steps // 300)  # the default's 40/300 share
    cfg.train.checkpoint_every = steps
    return validate(cfg)


PLOTTED = (("zeroshot_top1_seen", "zero-shot top-1, seen"), ("zeroshot_top1_heldout", "zero-shot top-1, held-out"),
           ("retrieval_r1", "retrieval R@1"))


def plot_orderings(lines: list[dict], path: Path) -> Path:
    """Grouped bars: one group per configuration, one bar per headline metric."""
    from matplotlib.figure import Figure

    from litops.evaluate.plots import save_figure  # headless (Agg), no pyplot state

    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    width = 0.8 / len(PLOTTED)
    for j, (key, label) in enumerate(PLOTTED):
        xs = [i + (j - (len(PLOTTED) - 1) / 2) * width for i in range(len(lines))]
        bars = ax.bar(xs, [l[key] for l in lines], width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(lines)), [l["config"] for l in lines])
    ax.set_ylim(0, 1.05)
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    ax.set_title(f"LiT orderings, {lines[0]['steps']} steps, batch {lines[0]['batch_size']}, "
                 f"{lines[0]['input_size']} px" if lines else "LiT orderings")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(PLOTTED), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="50 steps per configuration (<= 10 min on 2 CPU cores)")
    p.add_argument("--steps", type=int, default=0, help="steps per configuration (default 300, --quick 50)")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--home", default=str(ROOT / ".litops-bench"), help="workspace holding the generated dataset")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--input-size", type=int, default=128, help="image tower input size in pixels")
    p.add_argument("--plot", default="", help="PNG of the results (default: <home>/lit_orderings.png)")
    args = p.parse_args(argv)
    steps = args.steps or (50 if args.quick else 300)

    import torch

    from litops.core.checkpoint import load_model
    from litops.core.workspace import Workspace
    from litops.data import synthesize
    from litops.evaluate import evaluate_model
    from litops.train.logger import JsonlLogger
    from litops.train.loop import train

    if args.threads:
        torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    ws = Workspace(Path(args.home).resolve())
    first = build_config("uu", steps, str(ws.home), input_size=args.input_size)
    dataset_dir = Path(synthesize(first, ws)["dataset_dir"])
    lines = []
    with tempfile.TemporaryDirectory(prefix="lit-orderings-") as tmp:
        for name in args.configs.split(","):
            cfg = build_config(name, steps, str(ws.home), input_size=args.input_size)
            ckpt = Path(tmp) / name
            t0 = time.perf_counter()
            result = train(cfg, dataset_dir, ckpt, JsonlLogger(ckpt / "metrics.jsonl"))
            train_s = time.perf_counter() - t0
            model, _ = load_model(result.model_path)
            t1 = time.perf_counter()
            m = evaluate_model(model, dataset_dir, cfg)
            line = {"config": name, "zeroshot_top1_seen": round(m["zeroshot_top1"], 4),
                    "zeroshot_top1_heldout": round(m["zeroshot_top1_heldout"], 4),
                    "retrieval_r1": round(m["retrieval_mean_r1"], 4),
                    "retrieval_r1_heldout": round(m["retrieval_mean_r1_heldout"], 4),
                    "zeroshot_colour_seen": round(m["zeroshot_colour_top1"], 4),
                    "zeroshot_shape_seen": round(m["zeroshot_shape_top1"], 4),
                    "zeroshot_colour_heldout": round(m["zeroshot_colour_top1_heldout"], 4),
                    "zeroshot_shape_heldout": round(m["zeroshot_shape_top1_heldout"], 4),
                    "final_loss": round(result.final_loss, 4), "steps": steps, "batch_size": cfg.train.batch_size,
                    "input_size": cfg.model.image_input_size, "train_s": round(train_s, 1), "eval_s": round(time.perf_counter() - t1, 1)}
            print(json.dumps(line), flush=True)
            lines.append(line)
    plot = plot_orderings(lines, Path(args.plot or ws.home / "lit_orderings.png"))
    print(f"plot: {plot}", file=sys.stderr)
    print(f"total {time.perf_counter() - t_all:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
