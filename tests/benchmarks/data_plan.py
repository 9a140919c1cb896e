"""The data stream's capacity plan at LAION scale, one JSON line per cluster shape.

    python tests/benchmarks/data_plan.py [any `litops data plan` argument, replacing the defaults]

Defaults: 1B image-text pairs in 100 000 shards of 10 000 samples (~500 MB a shard: img2dataset at
256 px), global batch 32 768, 8 GPUs per node, 4 readers per GPU, a 0.5 s step, on 32, 256 and
1 024 GPUs, a 1280-wide locked image tower's feature cache. A thin wrapper of litops.data.plan_cli.
"""

from __future__ import annotations

import sys

from litops.data import plan_cli

LAION_1B = ["--samples", "1e9", "--shards", "100000", "--shard-mb", "500", "--nodes", "4", "32", "128",
            "--gpus-per-node", "8", "--readers", "4", "--batch", "32768", "--step-seconds", "0.5",
            "--feature-dim", "1280", "--format", "json"]

if __name__ == "__main__":
    # argparse keeps an option's last value, so arguments given here replace the defaults
    raise SystemExit(plan_cli.main(LAION_1B + sys.argv[1:]))
