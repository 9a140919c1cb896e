"""What a locked image tower's features say about the embedded benchmark: linear probes per input size.

    python tests/benchmarks/locked_probe.py [--sizes 64,128,224] [--n-train 3000]

Prints one JSON line per input size: {"input_size", "probe_colour", "probe_shape",
"probe_colour_heldout", "probe_shape_heldout", "encode_img_per_s", ...}.

The image tower is EfficientNet-Lite0 with its ImageNet weights, locked (eval mode), fed the
embedded images streamed from their shards and decoded straight to `input_size`, as the trainer
does (litops.core.stream); features are gathered batch by batch, never the images of a split.
A probe is multinomial logistic regression (L-BFGS, a small L2 penalty) on standardised
pre-logits features of single-object train images, scored on the single-object images of the
val split (seen colour x shape combinations) and of the test split (`_heldout`: combinations
never in train, so a probe must read colour apart from shape). The probes bound what a LiT readout (`Lu`) of the same features can reach; they
explain the orderings of tests/benchmarks/lit_orderings.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def single_object_labels(metas: list[dict], attribute: str, classes: list[str]):
    import torch

    rows = [i for i, m in enumerate(metas) if len(m.get("objects", [])) == 1]
    labels = [classes.index(metas[i]["objects"][0][attribute]) for i in rows]
    return torch.tensor(rows), torch.tensor(labels)


def split_features(tower, dataset_dir: Path, split: str, limit: int | None = None, batch_size: int = 16):
    """(pre-logits features [N, F], metas) of a split's first `limit` samples, streamed in shard order.
    16 images per forward: larger CPU batches are slower (litops.core.model.CPU_IMAGE_CHUNK)."""
    import torch

    from litops.core.stream import SplitStream

    feats, metas = [], []
    with torch.no_grad():
        for batch in SplitStream.open(dataset_dir, split).one_pass(batch_size, tower.input_size, with_metas=True):
            feats.append(tower(tower.preprocess(batch.images)).float())
            metas += batch.metas
            if limit is not None and len(metas) >= limit:
                break
    return torch.cat(feats)[:limit], metas[:limit]


def fit_probe(train_x, train_y, n_classes: int, l2: float = 1e-3):
    """Standardise, fit multinomial logistic regression; returns predict(x) -> class indices."""
    import torch

    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = (train_x - mean) / std
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, train_y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda feats: (((feats - mean) / std) @ w + b).argmax(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="64,128,224", help="image tower input sizes (pixels)")
    p.add_argument("--n-train", type=int, default=3000, help="train samples encoded per size")
    p.add_argument("--home", default=str(ROOT / ".litops-bench"), help="workspace holding the generated dataset")
    args = p.parse_args(argv)

    import torch

    from litops.core.config import LitopsConfig
    from litops.core.pretrained import TimmImageTower
    from litops.core.workspace import Workspace
    from litops.data import synthesize
    from litops.data.synth import COLOUR_NAMES, SHAPES

    ws = Workspace(Path(args.home).resolve())
    cfg = LitopsConfig(home=str(ws.home))
    dataset_dir = Path(synthesize(cfg, ws)["dataset_dir"])
    tasks = {"colour": list(COLOUR_NAMES), "shape": list(SHAPES)}
    for size in (int(s) for s in args.sizes.split(",")):
        tower = TimmImageTower("efficientnet_lite0", pretrained=True, input_size=size)
        tower.requires_grad_(False).eval()
        t0 = time.perf_counter()
        f_train, train_metas = split_features(tower, dataset_dir, "train", args.n_train)
        rate = len(train_metas) / (time.perf_counter() - t0)  # decoding included, as in a training step
        heldout = {"": split_features(tower, dataset_dir, "val"), "_heldout": split_features(tower, dataset_dir, "test")}
        line = {"input_size": size, "tower": "efficientnet_lite0 (ImageNet, locked)"}
        for attribute, classes in tasks.items():
            rows, y = single_object_labels(train_metas, attribute, classes)
            predict = fit_probe(f_train[rows], y, len(classes))
            for suffix, (feats, metas) in heldout.items():
                rows_v, y_v = single_object_labels(metas, attribute, classes)
                line[f"probe_{attribute}{suffix}"] = round(float((predict(feats[rows_v]) == y_v).float().mean()), 4)
        line.update({"probe_mean": round((line["probe_colour"] + line["probe_shape"]) / 2, 4),
                     "n_train": len(rows), "encode_img_per_s": round(rate, 1)})
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
