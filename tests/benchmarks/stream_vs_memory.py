"""`litops run` on the embedded default: the streaming data path against the in-memory one it replaced.

    python tests/benchmarks/stream_vs_memory.py [--old-rev 302cf78] [--repeats 2] [--work /tmp/stream_vs_memory]

The in-memory path is the code at `--old-rev` (the last commit whose trainer and evaluator loaded
whole splits), checked out as a git worktree and imported through PYTHONPATH ahead of this
checkout's editable install; the same venv runs both. Each repeat runs the old and the new code,
alternating, each with a fresh LITOPS_HOME (data generation, training, evaluation, registration).
Prints JSON lines: one per run ({"path", "wall_s", "zeroshot_top1", ...}) and a summary with the
medians, the wall-time ratio (target <= 1.1) and the zeroshot_top1 difference (target <= 0.02).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"core": "components/core", "data": "components/data", "train": "components/train",
            "evaluate": "components/evaluate", "register": "components/register", "flows": "flows",
            "configs": "configs"}
METRICS = ("zeroshot_top1", "retrieval_i2t_r1", "retrieval_t2i_r1", "compositional_acc")


def old_source(rev: str, work: Path) -> Path:
    """A `litops` package folder built from `rev`'s tree (symlinks into a worktree)."""
    tree = work / f"tree-{rev}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
    src = work / f"src-{rev}" / "litops"
    if not src.exists():
        src.mkdir(parents=True)
        (src / "__init__.py").write_text("")
        for name, folder in PACKAGES.items():
            (src / name).symlink_to(tree / folder)
    return src.parent


def run_once(path: str, work: Path, pythonpath: str | None, index: int) -> dict:
    home = work / f"home-{path}-{index}"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "LITOPS_HOME": str(home), "LITOPS_PROGRESS": "lines"}
    env.pop("PREFECT_API_URL", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    t0 = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).with_name("litops")), "run"], capture_output=True, text=True,
                         env=env, cwd=work, timeout=1800)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{path} run failed:\n{out.stderr[-3000:]}")
    metrics = {k: float(v) for k, v in re.findall(r"(\w+)=(\d+\.\d+)", out.stdout) if k in METRICS}
    steps = {k.strip(): float(v) for k, v in re.findall(r"^\s+([a-z][a-z ]*?)\s+([\d.]+) s$", out.stdout + out.stderr, re.M)}
    return {"path": path, "run": index, "wall_s": round(wall, 1), **metrics, "step_s": steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-rev", default="302cf78")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--work", default="/tmp/stream_vs_memory")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    old = str(old_source(args.old_rev, work))
    runs = []
    for i in range(args.repeats):
        for path, pythonpath in (("in-memory", old), ("streaming", None)):
            runs.append(run_once(path, work, pythonpath, i))
            print(json.dumps(runs[-1]), flush=True)
    med = {path: {k: statistics.median(r[k] for r in runs if r["path"] == path) for k in ("wall_s", *METRICS)}
           for path in ("in-memory", "streaming")}
    print(json.dumps({"summary": med, "wall_ratio": round(med["streaming"]["wall_s"] / med["in-memory"]["wall_s"], 3),
                      "target_wall_ratio": 1.1,
                      "zeroshot_top1_diff": round(med["streaming"]["zeroshot_top1"] - med["in-memory"]["zeroshot_top1"], 4),
                      "target_zeroshot_diff": 0.02}))


if __name__ == "__main__":
    main()
