"""One AdamW step over a real text tower's parameters: fused kernel against the per-tensor loop.

    python tests/benchmarks/optimizer_step.py [--model minilm|small] [--repeats 10]

Prints one JSON line per implementation: {"impl", "ms_per_step", "ratio_to_loop", "params_m", ...}.
`loop` (foreach=False, torch's CPU default) is the reference, `foreach` and `fused` are measured in
the same run on the same parameters and gradients. The trainer uses `fused` (litops.train.loop).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", choices=("minilm", "small"))
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)

    import torch

    from litops.core.config import ModelConfig
    from litops.core.model import LiTModel
    from litops.train.loop import param_groups

    cfg = ModelConfig(text_tower="minilm", lock="uU") if args.model == "minilm" else ModelConfig()
    model = LiTModel(cfg, 64)
    torch.manual_seed(0)
    for q in model.parameters():
        q.grad = torch.randn_like(q) * 1e-3
    n_params = sum(q.numel() for q in model.parameters() if q.requires_grad)
    times = {}
    for impl, kw in (("loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, **kw)
        for _ in range(2):  # state allocation
            opt.step()
        samples = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            opt.step()
            samples.append(time.perf_counter() - t0)
        times[impl] = statistics.median(samples)
    for impl, t in times.items():
        print(json.dumps({"impl": impl, "model": args.model, "params_m": round(n_params / 1e6, 2),
                          "ms_per_step": round(t * 1000, 1), "ratio_to_loop": round(t / times["loop"], 3),
                          "threads": torch.get_num_threads(), "device": "cpu"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
