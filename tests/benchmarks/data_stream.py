"""Streaming training data: memory flat in the dataset's size, loader speed against plain WebDataset.

    python tests/benchmarks/data_stream.py [--samples 120000] [--small 12000] [--shard-size 1000] [--size 128]
        [--input-size 224] [--steps 30] [--batch 64] [--workers -1] [--measure 6400] [--repeats 3]
        [--data DIR] [--reuse] [--jobs 2] [--features [--features-input-size 64]]

Generates `--samples` photo-like `--size` px JPEG + caption pairs in img2dataset-layout tars of
`--shard-size` samples under `<data>/full/train/`; `<data>/small/train/` holds symlinks to the
first `--small / --shard-size` of them (with `--reuse`, shards already there from an earlier run
with the same sizes are kept, and missing ones written). Then, each run in its own process:

1. Memory. `python -m litops.train` (run in-process by a wrapper that reads getrusage after it)
   trains `--steps` steps of a scratch CNN fed `--input-size` px on the small and on the full
   dataset, `train.device=cpu`. Peak RSS: RUSAGE_SELF for the train process, RUSAGE_CHILDREN for
   its largest reader process, and their sum; the bar is that the sum differs by < 200 MB
   between the two datasets. The removed in-memory path held N x 3 x S x S uint8 pixels; that
   figure (pixels only, without decode overheads) is printed for comparison.
2. Speed. Samples/s of litops.core.stream (SplitStream + SampleOrder + SampleSource + StepStream +
   `load`) against a plain `webdataset.WebDataset` pipeline over the same full-dataset shards:
   `split_by_worker`, `.shuffle(--shuffle-buffer)`, the same `litops.core.shards.decode_image` to
   `--input-size`, `.batched(--batch)`, a torch DataLoader with the same workers and prefetch
   factor. Each run skips `--warmup` batches (worker start-up, first reads) and times the next
   `--measure` samples; `--repeats` runs of each, alternating; medians and their ratio (target >= 0.9).

With `--features` (memory part only, no speed runs): the same `--steps` on the same two datasets,
but the scratch CNN is a fully locked image tower (`model.lock=Lu`, `model.pretrained_path` = random
weights saved in this run's temp dir, `model.image_input_size=--features-input-size`), so training
first builds the per-shard feature cache (litops.train.feature_cache.prepare; for a dataset folder D
it lives in D/../features/<D.name>/) and then streams cached features instead of pixels. Per
dataset, each in its own process: a cold run (that cache folder deleted first: encode every shard,
then train) and a warm rerun (cache hit: pure feature streaming). The child times `prepare` and
reads getrusage right after it (the cache build's peaks: its encoding readers are children too), and
again at the end. The bar: the summed peak RSS differs by < 200 MB between the datasets, cold and
warm. `all_features_mb` (N x D float32) is what holding every feature in memory would cost.

Prints JSON lines: the data set, one per measurement, and a summary
({"rss_diff_mb", "target_rss_diff_mb": 200, "loader_vs_wds", "target": 0.9, ...}).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_RSS_DIFF_MB = 200
TARGET_RATIO = 0.9
PREFETCH_FACTOR = 4  # litops.core.stream.load's

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import _jpeg  # noqa: E402 - the same photo-like JPEGs as the ingest benchmark


# ---------------------------------------------------------------------------------------------- data


def _write_shard(job: tuple[str, int, int, int, int]) -> None:
    path, index, first, stop, size = job
    from litops.data import shards

    rng = np.random.default_rng([0, index])  # per shard: the same bytes whatever the number of jobs
    members = [m for k in range(first, stop) for m in ((f"{k:09d}.jpg", _jpeg(rng, size)),
                                                       (f"{k:09d}.txt", f"a generated picture number {k}".encode()))]
    shards.write_tar(Path(path), members)


def generate(data: Path, samples: int, small: int, shard_size: int, size: int, reuse: bool,
             jobs: int) -> tuple[Path, Path]:
    """(full dataset, small dataset): folders holding train/*.tar."""
    full, part = data / "full", data / "small"
    stamp = data / "sizes.json"
    want = {"samples": samples, "shard_size": shard_size, "size": size}
    n_shards = -(-samples // shard_size)
    paths = [full / "train" / f"{i:05d}.tar" for i in range(n_shards)]
    if not (reuse and stamp.is_file() and json.loads(stamp.read_text()) == want):
        for p in (full / "train").glob("*.tar"):
            p.unlink()
    (full / "train").mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(want))  # shards are written atomically: those present are complete
    todo = [(str(p), i, i * shard_size, min((i + 1) * shard_size, samples), size)
            for i, p in enumerate(paths) if not p.is_file()]
    if todo:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(max(1, jobs)) as pool:
            for _ in pool.imap_unordered(_write_shard, todo):
                pass
    small_shards = -(-small // shard_size)
    (part / "train").mkdir(parents=True, exist_ok=True)
    for p in (part / "train").glob("*.tar"):
        p.unlink()
    for p in paths[:small_shards]:
        (part / "train" / p.name).symlink_to(p.resolve())
    return full, part


def _sample_count(dataset: Path) -> int:
    from litops.core.shard_index import count_samples

    return sum(count_samples(str(p)) for p in sorted((dataset / "train").glob("*.tar")))


# ------------------------------------------------------------------------------------------ children


def _rusage_mb() -> tuple[float, float]:
    """(this process's peak RSS, its largest waited-for child's peak RSS) in MB (Linux: ru_maxrss in KiB)."""
    return (round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1))


def _child_train(dataset: str, config: str, ckpt: str) -> None:
    """`python -m litops.train` in this process, then its peak memory as one JSON line."""
    import runpy

    from litops.train import feature_cache

    cache: dict = {}
    prepare = feature_cache.prepare

    def timed_prepare(*a, **kw):  # litops.train.data_stream calls feature_cache.prepare through the module
        t = time.perf_counter()
        r = prepare(*a, **kw)
        main_mb, reader_mb = _rusage_mb()  # peaks so far: the cache build's (its readers are joined children)
        cache.update({"cache_status": r.status, "cache_encoded": r.encoded, "cache_reused": r.reused,
                      "cache_seconds": round(time.perf_counter() - t, 1), "main_peak_rss_after_cache_mb": main_mb,
                      "reader_peak_rss_after_cache_mb": reader_mb})
        return r

    feature_cache.prepare = timed_prepare
    sys.argv = ["litops.train", "--config", config, "--dataset-dir", dataset, "--checkpoint-dir", ckpt]
    t0 = time.perf_counter()
    code = 0
    try:
        runpy.run_module("litops.train", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    seconds = time.perf_counter() - t0
    main_mb, reader_mb = _rusage_mb()
    print(json.dumps({"exit": code, "seconds": round(seconds, 1), "main_peak_rss_mb": main_mb,
                      "reader_peak_rss_mb": reader_mb, **cache}), flush=True)


def _drain(it, warmup: int, batches: int) -> tuple[int, float]:
    """Skip `warmup` batches, then (samples, seconds) over the next `batches`."""
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        b = next(it)
        n += len(b[1]) if isinstance(b, (tuple, list)) else len(b)
    return n, time.perf_counter() - t0


def _child_loader(kind: str, dataset: str, opts: str) -> None:
    """One speed measurement: `kind` litops | wds; prints one JSON line."""
    import gc

    import torch

    o = json.loads(opts)
    torch.set_num_threads(1)  # the main process only hands batches on
    batch, workers, size = o["batch"], o["workers"], o["input_size"]
    steps = o["warmup"] + o["batches"]
    t_open = time.perf_counter()
    if kind == "litops":
        from litops.core.sample_order import SampleOrder
        from litops.core.stream import SplitStream, StepStream, load, max_open_shards

        split = SplitStream.open(dataset, "train")  # the manifest, else counts every shard's samples
        order = SampleOrder(split.counts, batch, seed=0, window=o["shuffle_buffer"])
        per_reader = -(-order.parts // max(1, workers))
        source = split.source(size, max_open=max_open_shards(split.counts, order.window, per_reader))
        it = load(StepStream(source, order, 0, steps), workers)
    else:
        import webdataset as wds
        from torch.utils.data import DataLoader

        from litops.core.shards import decode_image

        urls = [str(p) for p in sorted((Path(dataset) / "train").glob("*.tar"))]

        def decode(sample: dict) -> tuple[torch.Tensor, str]:
            return decode_image(sample["jpg"], size), sample["txt"].decode("utf-8")

        def collate(samples: list) -> tuple[torch.Tensor, list[str]]:
            return torch.stack([s[0] for s in samples]), [s[1] for s in samples]

        ds = (wds.WebDataset(urls, shardshuffle=False, workersplitter=wds.split_by_worker)
              .shuffle(o["shuffle_buffer"]).map(decode).batched(batch, collation_fn=collate, partial=False))
        loader = (DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=PREFETCH_FACTOR)
                  if workers > 0 else ds)
        it = iter(loader)
    open_seconds = time.perf_counter() - t_open
    samples, seconds = _drain(it, o["warmup"], o["batches"])
    del it
    gc.collect()  # DataLoader workers are joined: RUSAGE_CHILDREN covers them
    main_mb, reader_mb = _rusage_mb()
    print(json.dumps({"open_seconds": round(open_seconds, 2), "samples": samples, "seconds": round(seconds, 2),
                      "samples_per_s": round(samples / seconds, 1), "main_peak_rss_mb": main_mb,
                      "reader_peak_rss_mb": reader_mb}), flush=True)


# -------------------------------------------------------------------------------------------- parent


def _env() -> dict:
    return {**os.environ, "LITOPS_PROGRESS": "lines"}


def _run_child(*args: str) -> tuple[dict, list[str]]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=_env())
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"child {args[0]} failed with exit code {out.returncode}")
    return json.loads(lines[-1]), lines


def train_config(args, workers: int, home: str) -> dict:
    return {
        "home": home,
        "data": {"name": "bench", "source": "path", "image_size": args.size, "workers": workers,
                 "shuffle_buffer": args.shuffle_buffer},
        "model": {"image_tower": "scratch_cnn", "text_tower": "scratch_transformer",
                  "image_input_size": args.input_size, "embed_dim": 64, "text_width": 64, "text_layers": 1,
                  "text_heads": 2},
        "train": {"steps": args.steps, "batch_size": args.batch, "warmup_steps": min(5, args.steps),
                  "checkpoint_every": max(1, args.steps) * 10, "device": "cpu", "feature_cache": False},
    }


def features_config(args, workers: int, home: str, weights: str) -> dict:
    """train_config with a fully locked scratch CNN at --features-input-size: training on its cached features."""
    cfg = train_config(args, workers, home)
    cfg["model"].update({"lock": "Lu", "pretrained_path": weights, "image_input_size": args.features_input_size})
    cfg["train"]["feature_cache"] = True
    return cfg


def tower_weights(args, workers: int, path: Path) -> tuple[str, int]:
    """Random (seeded) weights of the features mode's scratch CNN, saved to `path`; (path, feature dim)."""
    import torch

    from litops.core.config import ModelConfig
    from litops.core.model import LiTModel

    model = features_config(args, workers, "", "")["model"]
    model.update({"lock": "uu", "pretrained_path": ""})  # the same architecture, nothing to load
    torch.manual_seed(0)
    tower = LiTModel(ModelConfig(**model), args.size).image_tower
    torch.save(tower.state_dict(), path)
    return str(path), int(tower.output_dim)


def run_train_features(args, dataset: Path, samples: int, workers: int, weights: str, dim: int, cache: str) -> dict:
    """One features-mode run: `cache` cold (the dataset's cache folder deleted first) or warm (kept)."""
    from litops.core.step_results import TrainResult, expect, parse_result
    from litops.train.feature_cache import cache_dir_for

    cache_dir = Path(cache_dir_for(dataset))
    if cache == "cold" and cache_dir.is_dir():
        shutil.rmtree(cache_dir)
    with tempfile.TemporaryDirectory(prefix="litops-stream-bench-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(features_config(args, workers, str(Path(tmp) / "home"), weights)))
        usage, lines = _run_child("--child-train", str(dataset), str(config), str(Path(tmp) / "ckpt"))
    result = expect(parse_result(lines), TrainResult)
    files = list(cache_dir.glob("*.pt"))
    return {"measure": "train_rss", "mode": "features", "cache": cache, "samples": samples,
            "shards": len(list((dataset / "train").glob("*.tar"))), "steps": result.steps, "batch": args.batch,
            "workers": workers, "image_input_size": args.features_input_size, "feature_dim": dim,
            "train_samples_per_s": round(result.samples_per_s, 1), "seconds": usage["seconds"],
            "cache_dir": str(cache_dir), "cache_status": usage.get("cache_status"),
            "cache_encoded": usage.get("cache_encoded"), "cache_reused": usage.get("cache_reused"),
            "cache_seconds": usage.get("cache_seconds"), "cache_files": len(files),
            "cache_mb": round(sum(f.stat().st_size for f in files) / 2**20, 1),
            "main_peak_rss_after_cache_mb": usage.get("main_peak_rss_after_cache_mb"),
            "reader_peak_rss_after_cache_mb": usage.get("reader_peak_rss_after_cache_mb"),
            "main_peak_rss_mb": usage["main_peak_rss_mb"], "reader_peak_rss_mb": usage["reader_peak_rss_mb"],
            "sum_peak_rss_mb": round(usage["main_peak_rss_mb"] + usage["reader_peak_rss_mb"], 1),
            "bound_peak_rss_mb": round(usage["main_peak_rss_mb"] + workers * usage["reader_peak_rss_mb"], 1),
            "all_features_mb": round(samples * dim * 4 / 2**20, 1),
            "all_features_note": f"every feature held in memory: N x {dim} float32"}


def run_features(args, datasets, workers: int) -> dict:
    """Cold and warm feature-cache runs on each dataset; the summary's fields."""
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="litops-stream-bench-weights-") as tmp:
        weights, dim = tower_weights(args, workers, Path(tmp) / "scratch_cnn.pt")
        for cache in ("cold", "warm"):
            for name, dataset, n in datasets:
                runs[f"{name}_{cache}"] = r = run_train_features(args, dataset, n, workers, weights, dim, cache)
                print(json.dumps(r), flush=True)
    summary: dict = {"mode": "features", "target_rss_diff_mb": TARGET_RSS_DIFF_MB}
    for cache in ("cold", "warm"):
        small, full = runs[f"small_{cache}"], runs[f"full_{cache}"]
        summary[f"{cache}_rss_diff_mb"] = round(full["sum_peak_rss_mb"] - small["sum_peak_rss_mb"], 1)
        summary[f"{cache}_main_rss_diff_mb"] = round(full["main_peak_rss_mb"] - small["main_peak_rss_mb"], 1)
        summary[f"{cache}_reader_rss_diff_mb"] = round(full["reader_peak_rss_mb"] - small["reader_peak_rss_mb"], 1)
    summary["rss_diff_mb"] = max(summary["cold_rss_diff_mb"], summary["warm_rss_diff_mb"], key=abs)
    summary["sum_peak_rss_mb"] = {k: r["sum_peak_rss_mb"] for k, r in runs.items()}
    summary["cache_build_seconds"] = {k: runs[f"{k}_cold"]["cache_seconds"] for k in ("small", "full")}
    summary["cache_hit_seconds"] = {k: runs[f"{k}_warm"]["cache_seconds"] for k in ("small", "full")}
    summary["all_features_mb"] = {k: runs[f"{k}_cold"]["all_features_mb"] for k in ("small", "full")}
    return summary


def run_train(args, dataset: Path, samples: int, workers: int) -> dict:
    from litops.core.step_results import TrainResult, expect, parse_result

    with tempfile.TemporaryDirectory(prefix="litops-stream-bench-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(train_config(args, workers, str(Path(tmp) / "home"))))
        usage, lines = _run_child("--child-train", str(dataset), str(config), str(Path(tmp) / "ckpt"))
    result = expect(parse_result(lines), TrainResult)
    old_pixels = samples * 3 * args.input_size * args.input_size
    return {"measure": "train_rss", "samples": samples, "shards": len(list((dataset / "train").glob("*.tar"))),
            "steps": result.steps, "batch": args.batch, "workers": workers, "image_input_size": args.input_size,
            "train_samples_per_s": round(result.samples_per_s, 1), "seconds": usage["seconds"],
            "main_peak_rss_mb": usage["main_peak_rss_mb"], "reader_peak_rss_mb": usage["reader_peak_rss_mb"],
            "sum_peak_rss_mb": round(usage["main_peak_rss_mb"] + usage["reader_peak_rss_mb"], 1),
            "bound_peak_rss_mb": round(usage["main_peak_rss_mb"] + workers * usage["reader_peak_rss_mb"], 1),
            "old_path_pixel_bytes": old_pixels, "old_path_pixel_gb": round(old_pixels / 1e9, 2),
            "old_path_note": f"removed in-memory path: N x 3 x {args.input_size} x {args.input_size} uint8, "
                             "pixels only, without decode overheads"}


def run_loader(args, kind: str, dataset: Path, workers: int, run: int) -> dict:
    opts = {"batch": args.batch, "workers": workers, "input_size": args.input_size,
            "shuffle_buffer": args.shuffle_buffer, "warmup": args.warmup, "batches": -(-args.measure // args.batch)}
    r, _ = _run_child("--child-loader", kind, str(dataset), json.dumps(opts))
    return {"measure": "loader_speed", "loader": kind, "run": run, "workers": workers, "batch": args.batch,
            "image_input_size": args.input_size, "shuffle_buffer": args.shuffle_buffer,
            "warmup_batches": args.warmup, **r}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child-train":
        _child_train(*sys.argv[2:])
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--child-loader":
        _child_loader(*sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=120_000, help="samples of the full dataset")
    p.add_argument("--small", type=int, default=12_000, help="samples of the small dataset (its first shards)")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--size", type=int, default=128, help="generated images' side (data.image_size)")
    p.add_argument("--input-size", type=int, default=224, help="model.image_input_size: images are decoded to it")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=-1, help="data.workers (-1: auto)")
    p.add_argument("--shuffle-buffer", type=int, default=10_000, help="data.shuffle_buffer; wds .shuffle() size")
    p.add_argument("--measure", type=int, default=6400, help="samples timed per speed run")
    p.add_argument("--warmup", type=int, default=5, help="batches read before timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "litops-stream-bench"))
    p.add_argument("--reuse", action="store_true", help="keep shards generated by an earlier run with the same sizes")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes generating shards")
    p.add_argument("--skip-train", action="store_true", help="speed runs only")
    p.add_argument("--skip-speed", action="store_true", help="memory runs only")
    p.add_argument("--features", action="store_true",
                   help="memory runs only, training a locked scratch CNN on its feature cache (cold and warm)")
    p.add_argument("--features-input-size", type=int, default=64,
                   help="with --features: model.image_input_size the cache is encoded at")
    args = p.parse_args()
    if args.features:
        args.skip_speed = True

    from litops.core.config import resolve_workers

    workers = resolve_workers(args.workers, beside_compute=True)
    data = Path(args.data)
    t0 = time.perf_counter()
    full, small = generate(data, args.samples, args.small, args.shard_size, args.size, args.reuse, args.jobs)
    from litops.data.indexing import refresh_manifest

    for dataset in (small, full):  # the shard manifest and offset indexes training reads (as `litops data index`)
        refresh_manifest(dataset)
    n_small, n_full = _sample_count(small), _sample_count(full)
    input_mb = sum(f.stat().st_size for f in (full / "train").glob("*.tar")) / 2**20
    print(json.dumps({"measure": "data", "generated_or_reused_seconds": round(time.perf_counter() - t0, 1),
                      "full": str(full), "small": str(small), "samples_full": n_full, "samples_small": n_small,
                      "shard_size": args.shard_size, "size": args.size, "input_mb_full": round(input_mb, 1),
                      "cpus": os.cpu_count(), "workers": workers}), flush=True)

    summary: dict = {}
    if args.features and not args.skip_train:
        summary.update(run_features(args, (("small", small, n_small), ("full", full, n_full)), workers))
    elif not args.skip_train:
        runs = {}
        for name, dataset, n in (("small", small, n_small), ("full", full, n_full)):
            runs[name] = run_train(args, dataset, n, workers)
            print(json.dumps(runs[name]), flush=True)
        diff = runs["full"]["sum_peak_rss_mb"] - runs["small"]["sum_peak_rss_mb"]
        summary.update({"rss_diff_mb": round(diff, 1), "target_rss_diff_mb": TARGET_RSS_DIFF_MB,
                        "main_rss_diff_mb": round(runs["full"]["main_peak_rss_mb"]
                                                  - runs["small"]["main_peak_rss_mb"], 1),
                        "reader_rss_diff_mb": round(runs["full"]["reader_peak_rss_mb"]
                                                    - runs["small"]["reader_peak_rss_mb"], 1),
                        "sum_peak_rss_mb": {k: r["sum_peak_rss_mb"] for k, r in runs.items()},
                        "old_path_pixel_gb": {k: r["old_path_pixel_gb"] for k, r in runs.items()}})
    if not args.skip_speed:
        speeds: dict[str, list[float]] = {"litops": [], "wds": []}
        for run in range(args.repeats):
            for kind in (("litops", "wds") if run % 2 == 0 else ("wds", "litops")):
                r = run_loader(args, kind, full, workers, run)
                speeds[kind].append(r["samples_per_s"])
                print(json.dumps(r), flush=True)
        med = {k: statistics.median(v) for k, v in speeds.items()}
        summary.update({"loader_samples_per_s_median": med["litops"], "wds_samples_per_s_median": med["wds"],
                        "loader_vs_wds": round(med["litops"] / med["wds"], 3), "target": TARGET_RATIO})
    meets = []
    if "rss_diff_mb" in summary:
        meets.append(abs(summary["rss_diff_mb"]) < TARGET_RSS_DIFF_MB)
    if "loader_vs_wds" in summary:
        meets.append(summary["loader_vs_wds"] >= TARGET_RATIO)
    summary["meets_targets"] = all(meets)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
