"""Training throughput with and without the locked-tower feature cache.

    python tests/benchmarks/feature_cache.py [--model lit_effnet_minilm|lit_small] [--steps 20]

Prints one JSON line: {"config", "cached_samples_per_s", "uncached_samples_per_s", "ratio", ...}.

Both runs train the same config on the embedded benchmark (generated once under --home) for
the same steps; throughput is the loop's own `train/samples_per_s` at the last step (steady
state: the cache build and the split's decoding happen before the loop's clock starts; the
cache is built once, before the cached run, as a first `litops run` would).

- `lit_effnet_minilm` (default): configs/model/lit_effnet_minilm.yaml, locked EfficientNet-Lite0
  at 224 px and unlocked MiniLM-L6 (the embedded LiT config);
- `lit_small`: locked EfficientNet-Lite0 at 128 px and the embedded small text tower from scratch
  (the `Lu` of tests/benchmarks/lit_orderings.py).

The ratio is bounded by 1 + (locked image forward) / (the rest of the step): the cache removes the
image tower's forward and nothing else, so a large unlocked text tower (MiniLM's 22M parameters,
fwd+bwd+AdamW) caps it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_config(model: str, steps: int, home: str, cache: bool):
    from litops.flows.config import load_config

    overrides = [f"home={home}", f"train.steps={steps}", f"train.checkpoint_every={steps}",
                 f"train.warmup_steps={max(1, steps // 10)}", f"train.feature_cache={str(cache).lower()}"]
    if model == "lit_effnet_minilm":
        overrides.append("experiment=lit_effnet_minilm")
    elif model == "lit_small":
        overrides += ["model.image_tower=efficientnet_lite0", "model.image_input_size=128", "model.lock=Lu"]
    else:
        raise SystemExit(f"unknown --model {model}")
    return load_config(overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lit_effnet_minilm", choices=("lit_effnet_minilm", "lit_small"))
    p.add_argument("--steps", type=int, default=20, help="steps per run (a multiple of 10: the loop logs every 10)")
    p.add_argument("--home", default=str(ROOT / ".litops-bench"))
    args = p.parse_args(argv)

    import torch

    from litops.core.model import LiTModel
    from litops.core.stream import SplitStream
    from litops.core.workspace import Workspace
    from litops.data import synthesize
    from litops.train import feature_cache
    from litops.train.logger import JsonlLogger
    from litops.train.loop import train

    ws = Workspace(Path(args.home).resolve())
    out: dict = {"config": args.model, "steps": args.steps, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="feature-cache-bench-") as tmp:
        rates = {}
        for cache in (False, True):
            cfg = build_config(args.model, args.steps, str(ws.home), cache)
            dataset_dir = Path(synthesize(cfg, ws)["dataset_dir"])
            if cache:  # build (or hit) the cache outside the timed loop
                t0 = time.perf_counter()
                got = feature_cache.prepare(cfg, LiTModel(cfg.model, cfg.data.image_size), dataset_dir,
                                            SplitStream.open(dataset_dir, "train"), torch.device("cpu"))
                out["cache_status"], out["cache_prepare_s"] = got.status, round(time.perf_counter() - t0, 1)
            ckpt = Path(tmp) / f"cache-{cache}"
            train(cfg, dataset_dir, ckpt, JsonlLogger(ckpt / "metrics.jsonl"))
            records = [json.loads(l) for l in (ckpt / "metrics.jsonl").read_text().splitlines()]
            rates[cache] = [r["metrics"]["train/samples_per_s"] for r in records if "metrics" in r][-1]
        out["batch_size"] = cfg.train.batch_size
        out["cached_samples_per_s"] = round(rates[True], 2)
        out["uncached_samples_per_s"] = round(rates[False], 2)
        out["ratio"] = round(rates[True] / rates[False], 2)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
