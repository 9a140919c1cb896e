"""A capacity plan for streaming a sharded dataset from S3: egress, requests, cache disk, start-up.

`plan(...)` answers, for one cluster shape and one epoch, what the training data stream will ask of
S3 and of each node. It runs the stream's own order (`litops.core.sample_order.SampleOrder`), so
the figures follow the partitions, shard layout and rank placement that training really uses:

- rank r of R reads partitions [r*parts/R, (r+1)*parts/R) and ranks fill nodes contiguously
  (torchrun: node = rank // gpus_per_node), so node n reads partitions
  [n*parts/nodes, (n+1)*parts/nodes);
- a node downloads a shard into its node-local cache once, for all its ranks and readers.

Egress is given as a range. The floor counts each shard once per node that reads it: what a cache
holding a shard until every partition of the node is done with it downloads. The bound counts it
once per partition that reads it: partitions advance in lockstep, so a shard cut by a partition
boundary is read at the epoch's start by one partition and at its end by the other, and a cache
smaller than the node's share of the epoch (LRU) has evicted it in between. The stream prefetches
only a partition's own next shards (SampleOrder.shards_after), so prefetch adds nothing. Bandwidth
and request rates are planned on the bound.

No sample is visited: the work is O(shards + partitions + one global batch).
"""

from __future__ import annotations

import math

from litops.core.sample_order import DEFAULT_PARTITIONS, SampleOrder, rank_slots

S3_GETS_PER_PREFIX = 5_500  # S3's documented GET/HEAD requests per second per partitioned prefix
MANIFEST_BYTES_PER_SHARD = 150  # one shard's manifest entry (name, counts, sha256, ETag) as JSON
PREFETCH_SHARDS = 2  # the stream prefetches this many of a partition's shards past each one it opens
HEADS_PER_DOWNLOAD = 2  # the node cache compares size and ETag before and after each download
INDEX_GETS_PER_SHARD = 1  # the shard's small .idx offset index, one whole-object GET
FEATURE_BYTES = 4  # the feature cache stores float32 rows
CACHE_HEADROOM = 1.5  # prefetched shards wait in the LRU before use; a path handed out must not be evicted
GIB = 2**30


def plan(counts: list[int], shard_bytes: list[int], nodes: int, gpus_per_node: int, readers: int,
         global_batch: int, step_seconds: float, partitions: int = DEFAULT_PARTITIONS, window: int = 10_000,
         feature_dim: int = 0, get_bytes: int = 0, epoch: int = 0, node_gbps: float = 10.0,
         manifest_bytes: int = 0) -> dict:
    """The plan of one cluster shape (see the module docstring); `error` is set, and the per-epoch
    figures left out, when the world does not divide the split's partitions.

    counts / shard_bytes: usable samples and bytes of each shard, in the manifest's order.
    get_bytes: the size of the ranged GETs a shard is downloaded with (0: one GET per shard).
    node_gbps: a node's download bandwidth for the time to the first batch, in Gbit/s.
    manifest_bytes: the manifest's size (0: about MANIFEST_BYTES_PER_SHARD per shard)."""
    _check_inputs(counts, shard_bytes, nodes, gpus_per_node, readers, step_seconds, get_bytes, node_gbps)
    order = SampleOrder(counts, global_batch, partitions, window=window)
    world = nodes * gpus_per_node
    shards = sum(1 for c in counts if c)
    dataset_bytes = sum(shard_bytes)
    out = {"nodes": nodes, "gpus_per_node": gpus_per_node, "world": world, "readers": readers,
           "global_batch": global_batch, "parts": order.parts, "shards": shards, "samples": order.total,
           "dataset_bytes": dataset_bytes, "epoch": epoch, "error": None}
    try:
        order.check_world(world)
    except ValueError as e:
        return {**out, "error": str(e)}
    steps = order.samples_per_epoch // global_batch
    if steps == 0:
        return {**out, "error": f"an epoch of {order.samples_per_epoch} samples is less than one global batch "
                                f"of {global_batch}: lower the batch size"}
    epoch_seconds = steps * step_seconds

    part_lists = [order.part_shards(epoch, q) for q in range(order.parts)]
    node_parts = [range(n * order.parts // nodes, (n + 1) * order.parts // nodes) for n in range(nodes)]

    floor = [sum(shard_bytes[j] for j in {j for q in qs for j in part_lists[q]}) for qs in node_parts]
    fetched = [[j for q in qs for j in dict.fromkeys(part_lists[q])] for qs in node_parts]
    bound = [sum(shard_bytes[j] for j in js) for js in fetched]

    def gets(j: int) -> int:
        return 1 if get_bytes == 0 else max(1, math.ceil(shard_bytes[j] / get_bytes))

    node_gets = [sum(gets(j) for j in js) for js in fetched]
    node_requests = [g + len(js) * (INDEX_GETS_PER_SHARD + 2 * HEADS_PER_DOWNLOAD) for g, js in zip(node_gets, fetched)]
    requests_per_s = sum(node_requests) / epoch_seconds

    working_set = [min(sum(_window_bytes(order, part_lists[q], counts, shard_bytes) for q in qs), b)
                   for qs, b in zip(node_parts, bound)]
    cache_limit = math.ceil(CACHE_HEADROOM * max(working_set) / GIB) * GIB

    manifest = manifest_bytes or MANIFEST_BYTES_PER_SHARD * len(counts)
    first = [_first_batch_bytes(order, counts, shard_bytes, n, gpus_per_node, world, manifest) for n in range(nodes)]
    node_bytes_per_s = node_gbps * 1e9 / 8

    previous_x = min(world * readers, shards)
    return {**out,
            "per_part": order.per_part, "steps_per_epoch": steps, "epoch_seconds": epoch_seconds,
            "egress_bytes": sum(floor), "egress_x": sum(floor) / dataset_bytes,
            "egress_bound_bytes": sum(bound), "egress_bound_x": sum(bound) / dataset_bytes,
            "egress_node_max_bytes": max(bound),
            "previous_design_x": previous_x, "previous_design_bytes": previous_x * dataset_bytes,
            "get_bytes": get_bytes,
            "gets_per_s": sum(node_gets) / epoch_seconds, "gets_per_s_node_max": max(node_gets) / epoch_seconds,
            "requests_per_s": requests_per_s, "requests_per_s_node_max": max(node_requests) / epoch_seconds,
            "s3_prefixes": max(1, math.ceil(requests_per_s / S3_GETS_PER_PREFIX)),
            "bandwidth_node_bytes_per_s": max(bound) / epoch_seconds,
            "bandwidth_node_gbps": max(bound) * 8 / epoch_seconds / 1e9,
            "cache_working_set_node_bytes": max(working_set),
            "cache_limit_bytes": cache_limit, "cache_limit": f"{cache_limit // GIB}GiB",
            "manifest_bytes": manifest, "node_gbps": node_gbps,
            "first_batch_node_bytes": max(first), "first_batch_seconds": max(first) / node_bytes_per_s,
            "feature_dim": feature_dim, "feature_cache_bytes": order.total * feature_dim * FEATURE_BYTES,
            "feature_cache_files": shards if feature_dim > 0 else 0}


def _check_inputs(counts: list[int], shard_bytes: list[int], nodes: int, gpus_per_node: int, readers: int,
                  step_seconds: float, get_bytes: int, node_gbps: float) -> None:
    if len(counts) != len(shard_bytes):
        raise ValueError(f"{len(counts)} shard sample counts but {len(shard_bytes)} shard sizes")
    for name, value in (("nodes", nodes), ("gpus per node", gpus_per_node), ("readers", readers)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if step_seconds <= 0 or node_gbps <= 0:
        raise ValueError(f"step seconds and node bandwidth must be > 0, got {step_seconds} and {node_gbps}")
    if get_bytes < 0:
        raise ValueError(f"GET size must be >= 0 bytes (0: one GET per shard), got {get_bytes}")


def _window_bytes(order: SampleOrder, shards: list[int], counts: list[int], shard_bytes: list[int]) -> int:
    """The most bytes one partition holds at once: the shards one shuffle window spans plus the
    prefetched ones, the largest run of that many consecutive shards of the partition."""
    mean_samples = sum(counts[j] for j in shards) / len(shards)
    k = min(len(shards), math.ceil(order.window / mean_samples) + PREFETCH_SHARDS)
    run = best = sum(shard_bytes[j] for j in shards[:k])
    for i in range(k, len(shards)):
        run += shard_bytes[shards[i]] - shard_bytes[shards[i - k]]
        best = max(best, run)
    return best


def _first_batch_bytes(order: SampleOrder, counts: list[int], shard_bytes: list[int], node: int,
                       gpus_per_node: int, world: int, manifest: int) -> int:
    """What node `node` downloads before its first batch: each rank reads the manifest, and the node
    fetches the shards (and their .idx) that the first global batch's slots of its ranks name."""
    ranks = range(node * gpus_per_node, (node + 1) * gpus_per_node)
    first = {order.slot(0, j).shard for r in ranks for j in rank_slots(order.global_batch, r, world)}
    return gpus_per_node * manifest + sum(shard_bytes[j] + 8 * (counts[j] + 1) for j in first)
