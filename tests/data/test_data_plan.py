"""`litops data plan`: the capacity plan follows the training stream's own order."""

from __future__ import annotations

import json
import random
import time

import pytest

from litops.core.manifest import DatasetManifest, ShardEntry, write_manifest
from litops.core.sample_order import SampleOrder
from litops.data import plan_cli
from litops.data.plan import plan

SHAPE = {"gpus_per_node": 8, "readers": 4, "global_batch": 1024, "step_seconds": 0.5}


def synthetic(shards: int = 10_000, seed: int = 0) -> tuple[list[int], list[int]]:
    """Shards of 80-120 samples at ~50 kB a sample (never one sample: a shard of one can fall in the
    sample an uneven partition split drops)."""
    rng = random.Random(seed)
    counts = [rng.randint(80, 120) for _ in range(shards)]
    return counts, [c * 50_000 + rng.randint(0, 9_999) for c in counts]


@pytest.mark.parametrize("nodes", [4, 32])  # 32 and 256 GPUs
def test_each_shard_leaves_s3_about_once_an_epoch(nodes):
    counts, sizes = synthetic()
    p = plan(counts, sizes, nodes, **SHAPE)
    assert p["error"] is None and p["world"] == nodes * 8 and p["parts"] == 1024
    assert 1.0 <= p["egress_x"] <= 1.05
    assert p["egress_bound_x"] >= p["egress_x"]
    assert p["previous_design_x"] == nodes * 8 * 4  # min(ranks x readers, shards)


def test_one_node_downloads_exactly_the_dataset():
    counts, sizes = synthetic(2_000, seed=1)
    for epoch in (0, 3):
        p = plan(counts, sizes, 1, epoch=epoch, **SHAPE)
        assert p["egress_bytes"] == p["dataset_bytes"] == sum(sizes)


def test_the_bound_counts_each_partitions_shards_once():
    counts, sizes = synthetic(300, seed=2)
    p = plan(counts, sizes, 1, epoch=1, **SHAPE)
    order = SampleOrder(counts, SHAPE["global_batch"])
    expected = sum(sizes[j] for q in range(order.parts) for j in order.part_shards(1, q))
    assert p["egress_bound_bytes"] == expected
    assert all(order.shards_after(1, q, j) == order.part_shards(1, q)[i + 1:i + 3]  # prefetch stays inside
               for q in range(order.parts) for i, j in enumerate(order.part_shards(1, q)))


def test_a_world_that_does_not_divide_the_partitions_is_a_one_line_error(capsys):
    counts, sizes = synthetic(1_000)
    p = plan(counts, sizes, 3, **SHAPE)  # 24 ranks; 512 partitions: the largest divisor of 1024 up to 1000 shards
    assert p["parts"] == 512 and p["world"] == 24
    assert "24 ranks do not divide" in p["error"] and "\n" not in p["error"]
    assert "egress_bytes" not in p
    code = plan_cli.main(["--samples", "1e6", "--shards", "1000", "--shard-mb", "5", "--nodes", "3",
                          "--gpus-per-node", "8", "--readers", "4", "--batch", "1024", "--step-seconds", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("litops data plan: error: 3 nodes x 8 GPUs: 24 ranks")


def test_the_cli_prints_one_table_row_per_cluster_shape(capsys):
    args = ["--samples", "1e7", "--shards", "10000", "--shard-mb", "500", "--nodes", "4", "32", "--gpus-per-node", "8",
            "--readers", "4", "--batch", "32768", "--step-seconds", "0.5", "--feature-dim", "1280"]
    assert plan_cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["GPUs", "nodes", "parts"] and "first batch" in lines[0]
    assert [line.split()[:2] for line in lines[2:4]] == [["32", "4"], ["256", "32"]]
    assert "51.2 GB, 10,000 files" in lines[2]  # 1e7 samples x 1280 float32


def test_litops_data_plan_runs_in_process(capsys):
    from litops.flows.cli import main

    with pytest.raises(SystemExit) as done:
        main(["data", "plan", "--samples", "1e6", "--shards", "1000", "--shard-mb", "5", "--nodes", "1",
              "--gpus-per-node", "8", "--readers", "2", "--batch", "1024", "--step-seconds", "1", "--format", "json"])
    assert done.value.code == 0
    p = json.loads(capsys.readouterr().out)
    assert p["egress_bytes"] == p["dataset_bytes"] == 1000 * 5_000_000


def test_a_manifest_gives_the_shards_usable_samples_and_bytes(tmp_path, capsys):
    entries = [ShardEntry(f"train/shard-{i:04d}.tar", 100, 4_000_000 + i, excluded=(0, 1) if i == 3 else ())
               for i in range(200)]
    write_manifest(DatasetManifest(str(tmp_path), {"train": entries}))
    common = ["--nodes", "1", "--gpus-per-node", "8", "--readers", "2", "--batch", "256", "--step-seconds", "1",
              "--format", "json"]
    assert plan_cli.main(["--manifest", str(tmp_path / "manifest.json"), *common]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["samples"] == 200 * 100 - 2 and p["dataset_bytes"] == sum(e.bytes for e in entries)
    assert plan_cli.main(["--manifest", str(tmp_path), "--split", "val", *common]) == 1
    assert "no shards in split 'val' (splits: train)" in capsys.readouterr().err


def test_a_billion_samples_in_100_000_shards_plan_in_seconds():
    started = time.monotonic()
    p = plan([10_000] * 100_000, [500_000_000] * 100_000, 128, 8, 4, 32_768, 0.5, feature_dim=1280)
    assert time.monotonic() - started < 15  # about half a second alone; the margin is for a loaded machine
    assert p["parts"] == 1024 and p["egress_x"] <= 1.01 and p["feature_cache_bytes"] == 10**9 * 1280 * 4
