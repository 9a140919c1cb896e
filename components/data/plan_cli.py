"""`litops data plan` (also `python -m litops.data.plan_cli`): the data stream's capacity plan, one row
per cluster shape. Needs no config or workspace: a manifest, or the dataset's size, and the shapes."""

from __future__ import annotations

import argparse
import json
import sys

from litops.core.component_cli import UserError
from litops.core.sample_order import DEFAULT_PARTITIONS

BOTO3_CHUNK_MB = 8  # boto3's download_file (the node cache's downloader) fetches ranged GETs of 8 MiB
DESCRIPTION = """\
What streaming a sharded dataset from S3 asks of S3 and of each node, per epoch, for each cluster
shape: egress (and the previous design's estimate), GET/s against S3's 5 500 per prefix, the
bandwidth and cache disk a node needs, the time to the first batch, the feature cache's size.
The figures come from the training stream's own sample order (partitions, shard layout, ranks
placed on nodes contiguously, one node-local cache per node).

Egress is a range: the floor downloads each shard once per node; the bound once per partition that
reads it (a shard cut by a partition boundary is read at the epoch's start and at its end, and a
cache smaller than the node's share of the epoch has evicted it in between). Rates use the bound."""
EXAMPLES = """\
examples:
  litops data plan --samples 1e9 --shards 100000 --shard-mb 500 --nodes 4 32 128 --gpus-per-node 8 \\
      --readers 4 --batch 32768 --step-seconds 0.5 --feature-dim 1280
  litops data plan --manifest s3://bucket/laion --nodes 16 --gpus-per-node 8 --readers 4 --batch 32768 \\
      --step-seconds 0.5 --format json"""


def build_parser(prog: str = "litops data plan") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("the dataset: a manifest, or --samples, --shards and --shard-mb")
    data.add_argument("--manifest", metavar="PATH_OR_URL",
                      help="a dataset root (folder or s3://bucket/prefix) holding manifest.json, or that file")
    data.add_argument("--split", default="train", help="the manifest's split to plan (default: train)")
    data.add_argument("--endpoint-url", default=None, help="S3 endpoint of an s3:// manifest (MinIO...)")
    data.add_argument("--region", default="us-east-1", help="S3 region of an s3:// manifest (default: us-east-1)")
    data.add_argument("--samples", type=float, help="samples in the split, e.g. 1e9 (split evenly over the shards)")
    data.add_argument("--shards", type=int, help="shards in the split, e.g. 100000")
    data.add_argument("--shard-mb", type=float, help="bytes of one shard in MB (1e6 bytes), e.g. 500")
    shape = p.add_argument_group("the cluster and the training run")
    shape.add_argument("--nodes", type=int, nargs="+", required=True, metavar="N",
                       help="nodes; several give one row each, e.g. --nodes 4 32 128")
    shape.add_argument("--gpus-per-node", type=int, required=True, metavar="G", help="GPUs (ranks) per node")
    shape.add_argument("--readers", type=int, required=True, metavar="K",
                       help="reader processes per rank (data.workers)")
    shape.add_argument("--batch", type=int, required=True, metavar="B", help="the global batch size")
    shape.add_argument("--step-seconds", type=float, required=True, metavar="S", help="seconds per training step")
    shape.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS, metavar="P",
                       help=f"data.partitions (default: {DEFAULT_PARTITIONS})")
    shape.add_argument("--window", type=int, default=10_000, help="the shuffle window in samples (default: 10000)")
    shape.add_argument("--feature-dim", type=int, default=0, metavar="D",
                       help="the locked image tower's output size, for the feature cache (default: 0, none)")
    shape.add_argument("--get-mb", type=float, default=BOTO3_CHUNK_MB,
                       help=f"MiB per ranged GET of a shard download (default: {BOTO3_CHUNK_MB}, boto3's); "
                            "0: one GET a shard")
    shape.add_argument("--node-gbps", type=float, default=10.0,
                       help="a node's download bandwidth in Gbit/s, for the time to the first batch (default: 10)")
    shape.add_argument("--epoch", type=int, default=0, help="the epoch to plan (default: 0)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or JSON lines")
    return p


def load_dataset(args: argparse.Namespace) -> tuple[list[int], list[int], int, str]:
    """(usable samples per shard, bytes per shard, manifest bytes or 0, a one-line description)."""
    if args.manifest:
        return _from_manifest(args)
    if args.samples is None or args.shards is None or args.shard_mb is None:
        raise ValueError("give --manifest, or all of --samples, --shards and --shard-mb")
    samples, shards = int(args.samples), args.shards
    if shards < 1 or samples < 1 or args.shard_mb <= 0:
        raise ValueError(f"--samples, --shards and --shard-mb must be > 0, got {samples}, {shards}, {args.shard_mb}")
    counts = [samples // shards + (1 if i < samples % shards else 0) for i in range(shards)]
    size = round(args.shard_mb * 1e6)
    return counts, [size] * shards, 0, f"{samples:,} samples in {shards:,} shards of {args.shard_mb:g} MB"


def _from_manifest(args: argparse.Namespace) -> tuple[list[int], list[int], int, str]:
    from litops.core.manifest import MANIFEST_NAME, read_manifest
    from litops.core.shard_index import StorageOptions

    root = args.manifest.rstrip("/")
    if root.endswith(MANIFEST_NAME):  # the file itself: read_manifest takes the folder holding it
        root = root[: -len(MANIFEST_NAME)].rstrip("/") or "."
    manifest = read_manifest(root, StorageOptions(args.endpoint_url, args.region))
    if manifest is None:
        raise ValueError(f"no {MANIFEST_NAME} at {root} (`litops data index {root}` writes one)")
    entries = manifest.splits.get(args.split)
    if not entries:
        raise ValueError(f"{root}/{MANIFEST_NAME} has no shards in split {args.split!r} "
                         f"(splits: {', '.join(sorted(manifest.splits)) or 'none'})")
    counts, sizes = [e.usable for e in entries], [e.bytes for e in entries]
    about = f"{root} {args.split}: {sum(counts):,} samples in {len(entries):,} shards"
    return counts, sizes, len(manifest.to_json()), about


def plans(args: argparse.Namespace, counts: list[int], sizes: list[int], manifest_bytes: int) -> list[dict]:
    from litops.data.plan import plan

    return [plan(counts, sizes, nodes, args.gpus_per_node, args.readers, args.batch, args.step_seconds,
                 partitions=args.partitions, window=args.window, feature_dim=args.feature_dim,
                 get_bytes=round(args.get_mb * 2**20), epoch=args.epoch, node_gbps=args.node_gbps,
                 manifest_bytes=manifest_bytes) for nodes in args.nodes]


def _size(n: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


COLUMNS = ("GPUs", "nodes", "parts", "egress/epoch", "x dataset", "previous design", "GET/s total", "GET/s/node",
           "S3 prefixes", "Gbit/s/node", "cache/node", "first batch", "feature cache")


def row(p: dict) -> list[str]:
    """One table row of a plan without an error."""
    feature = f"{_size(p['feature_cache_bytes'])}, {p['feature_cache_files']:,} files" if p["feature_dim"] else "-"
    return [str(p["world"]), str(p["nodes"]), str(p["parts"]),
            f"{_size(p['egress_bytes'])}-{_size(p['egress_bound_bytes'])}",
            f"{p['egress_x']:.3f}-{p['egress_bound_x']:.3f}x", f"{p['previous_design_x']}x (est.)",
            f"{p['gets_per_s']:.0f}", f"{p['gets_per_s_node_max']:.1f}", str(p["s3_prefixes"]),
            f"{p['bandwidth_node_gbps']:.2f}",
            f"{_size(p['cache_working_set_node_bytes'])} (limit {p['cache_limit']})",
            f"{_seconds(p['first_batch_seconds'])} ({_size(p['first_batch_node_bytes'])})", feature]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    lines = [COLUMNS, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def notes(ok: list[dict], args: argparse.Namespace, about: str) -> str:
    p = ok[0]
    gets = f"ranged GETs of {args.get_mb:g} MiB" if p["get_bytes"] else "one GET per shard"
    return "\n".join([
        f"dataset: {about}, {_size(p['dataset_bytes'])}; batch {p['global_batch']:,}, {p['steps_per_epoch']:,} steps "
        f"of {args.step_seconds:g} s = {_seconds(p['epoch_seconds'])} an epoch; {args.readers} readers per GPU",
        "egress: floor (each shard once per node) - bound (once per partition; rates use the bound); previous "
        "design: min(ranks x readers, shards) x dataset, an estimate",
        f"GET/s: {gets}, spread over the epoch; S3 prefixes: GET + HEAD/s (plus 2 HEADs per download and the "
        f"shard's .idx) over 5 500 per prefix; '/node' and 'Gbit/s/node': the busiest node",
        "cache/node: the shards one window + 2 prefetched span per partition the node reads; limit: the "
        "recommended data.cache_limit (1.5x that)",
        f"first batch: each rank's manifest + the shards its first batch reads, at {args.node_gbps:g} Gbit/s per node",
    ])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        counts, sizes, manifest_bytes, about = load_dataset(args)
        results = plans(args, counts, sizes, manifest_bytes)
    except (ValueError, UserError, OSError) as e:  # ManifestError is a UserError
        print(f"litops data plan: error: {e}", file=sys.stderr)
        return 1
    ok = [p for p in results if not p["error"]]
    if args.format == "json":
        for p in results:
            print(json.dumps(p, sort_keys=True))
    elif ok:
        print(table([row(p) for p in ok]))
        print()
        print(notes(ok, args, about))
    for p in results:
        if p["error"]:
            print(f"litops data plan: error: {p['nodes']} nodes x {p['gpus_per_node']} GPUs: {p['error']}",
                  file=sys.stderr)
    return 1 if len(ok) < len(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
