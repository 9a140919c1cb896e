"""The streaming reader's order: a pure function of (seed, epoch, shards), the same global batches
for any number of ranks and reader processes, and a resume that reads only what it needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from litops.core import stream as stream_mod
from litops.core.sample_order import SampleOrder, rank_slots
from litops.core.stream import SplitStream, StepStream, load, max_open_shards
from tests.conftest import _draw, write_shard

SIZES = (10, 8, 9, 10, 11, 0, 7)  # an empty shard too


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    for j, n in enumerate(SIZES):
        samples = [(f"s{j}-{i:03d}", _draw("red" if i % 2 else "blue", "circle", 16), f"caption {j} {i}", {"i": i})
                   for i in range(n)]
        write_shard(root / "train" / f"shard-{j:06d}.tar", samples)
    return root


def global_keys(split: SplitStream, world: int, workers: int, start: int, stop: int, seed: int = 3,
                window: int = 13, batch: int = 8) -> dict[int, list[str]]:
    per_step: dict[int, dict[int, list[str]]] = {}
    for rank in range(world):
        source = split.source(16)
        for b in load(StepStream(source, SampleOrder(split.counts, batch, seed=seed, window=window), start, stop,
                                 rank, world), workers):
            assert b.images.shape == (batch // world, 3, 16, 16)
            per_step.setdefault(b.step, {})[rank] = b.keys
    return {s: sum((v[r] for r in range(world)), []) for s, v in sorted(per_step.items())}


def test_the_global_batch_is_the_same_for_any_ranks_and_workers(shards):
    split = SplitStream.open(shards, "train")
    one = global_keys(split, 1, 0, 0, 10)
    assert list(one) == list(range(10))
    assert global_keys(split, 1, 3, 0, 10) == one
    assert global_keys(split, 2, 2, 0, 10) == one
    assert global_keys(split, 4, 1, 0, 10) == one


def test_a_world_that_does_not_divide_the_partitions_is_a_clear_error(shards):
    split = SplitStream.open(shards, "train")
    order = SampleOrder(split.counts, 24, partitions=24)  # 6 non-empty shards: 8 partitions at most -> 8
    assert order.parts == 8
    with pytest.raises(ValueError, match="3 ranks do not divide this split's 8 partitions"):
        StepStream(split.source(16), order, 0, 1, rank=0, world=3)


def test_every_epoch_visits_each_sample_at_most_once_in_a_new_order(shards):
    split = SplitStream.open(shards, "train")
    order = SampleOrder(split.counts, 8, seed=3, window=13)
    steps = order.samples_per_epoch // order.global_batch
    epochs = [[order.locate(e * steps + s, j) for s in range(steps) for j in range(8)] for e in range(2)]
    every = {(j, i) for j, n in enumerate(SIZES) for i in range(n)}
    for seen in epochs:
        assert len(set(seen)) == len(seen) == order.samples_per_epoch and set(seen) <= every
    assert order.samples_per_epoch > len(every) - order.parts  # at most one sample a partition is left out
    assert epochs[0] != epochs[1]
    assert [order.locate(s, j) for s in range(steps) for j in range(8)] == epochs[0]  # a pure function of the step
    other_seed = SampleOrder(split.counts, 8, seed=4, window=13)
    assert [other_seed.locate(s, j) for s in range(steps) for j in range(8)] != epochs[0]


def test_the_shuffle_is_bounded_by_the_window_inside_a_partition():
    counts = [10, 8, 9, 10, 11, 0, 7]
    order = SampleOrder(counts, 8, seed=0, window=2)
    layout, starts = order._layout(0)
    flat = [(j, i) for j in layout for i in range(counts[j])]
    for step in range(order.part_len // order.per_part):
        for j in range(8):
            slot = order.slot(step, j)
            i = step * order.per_part + j % order.per_part  # the sample's place in its partition, unshuffled
            p = flat.index((slot.shard, slot.sample)) - order.part_start(slot.partition)
            assert p // 2 == i // 2  # a sample never leaves its window of 2


def test_each_shard_is_read_by_one_reader_of_one_rank_per_epoch(tmp_path):
    for j in range(8):
        samples = [(f"e{j}-{i:03d}", _draw("red", "circle", 16), f"c {j} {i}", {}) for i in range(12)]
        write_shard(tmp_path / "train" / f"shard-{j:06d}.tar", samples)
    split = SplitStream.open(tmp_path, "train")
    order = SampleOrder(split.counts, 16, seed=5, window=100)
    readers_of: dict[str, set] = {}
    for rank in range(2):
        for reader in range(2):
            stream = StepStream(split.source(16), order, 0, order.part_len // order.per_part, rank, 2)
            for piece in stream.pieces(reader, 2):
                for key in piece.keys:
                    readers_of.setdefault(key.split("-")[0], set()).add((rank, reader))
    assert len(readers_of) == 8 and all(len(r) == 1 for r in readers_of.values()), readers_of


def test_a_resume_continues_the_sequence_and_decodes_only_its_batches(shards, monkeypatch):
    split = SplitStream.open(shards, "train")
    full = global_keys(split, 1, 0, 0, 12)
    decoded = []
    real = stream_mod.decode_image
    monkeypatch.setattr(stream_mod, "decode_image", lambda data, size: decoded.append(1) or real(data, size))
    resumed = global_keys(split, 2, 0, 7, 12)
    assert resumed == {s: full[s] for s in range(7, 12)}
    assert len(decoded) == 5 * 8  # the 7 skipped batches were never decoded


def test_cursor_names_epoch_and_position():
    order = SampleOrder([4, 6], 2, seed=1, window=3)  # 2 partitions of 5 samples
    assert (order.parts, order.samples_per_epoch) == (2, 10)
    assert order.cursor(11) == {"epoch": 2, "position": 2, "samples_per_epoch": 10}
    assert list(rank_slots(8, rank=1, world=2)) == [4, 5, 6, 7]


def test_one_pass_reads_every_sample_in_shard_order_with_metadata(shards):
    split = SplitStream.open(shards, "train")
    batches = list(split.one_pass(batch_size=6, image_size=None, with_metas=True))
    keys = [k for b in batches for k in b.keys]
    assert keys == [f"s{j}-{i:03d}" for j, n in enumerate(SIZES) for i in range(n)]
    assert all(b.images is None for b in batches)
    assert [m["i"] for b in batches for m in b.metas] == [i for n in SIZES for i in range(n)]
    assert [len(b) for b in batches] == [6] * (split.total // 6) + [split.total % 6]


def test_a_split_without_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shards in .*/train"):
        SplitStream.open(tmp_path, "train")


def test_sample_counts_are_remembered_until_a_shard_changes(shards, tmp_path, monkeypatch):
    memo = tmp_path / "home" / "shard-memo.json"
    first = SplitStream.open(shards, "train", memo_path=memo)
    counted = []
    real = stream_mod.count_samples
    monkeypatch.setattr(stream_mod, "count_samples", lambda url, storage=None: counted.append(url) or real(url, storage))
    assert SplitStream.open(shards, "train", memo_path=memo).counts == first.counts == list(SIZES)
    assert counted == [], "unchanged shards are not read again"
    (shards / "train" / "shard-000002.tar").touch()
    assert SplitStream.open(shards, "train", memo_path=memo).counts == list(SIZES)
    assert [Path(u).name for u in counted] == ["shard-000002.tar"]
    memo.write_text("not json")
    assert SplitStream.open(shards, "train", memo_path=memo).counts == list(SIZES)  # a broken memo is rebuilt


def test_readers_keep_at_most_one_window_of_shards_open():
    assert max_open_shards([1000] * 120, window=10_000) == 12  # not growing with the 120 shards
    assert max_open_shards([1000] * 3, window=10_000) == 3
    assert max_open_shards([1000] * 120, window=10_000, partitions=2) == 24  # a window per partition read


def test_readers_start_from_a_forkserver_beside_prefect(shards):
    """Prefect leaves service threads and thread-exit hooks behind; a reader forked from a process that
    loaded it used to die with code 1 at exit. Readers of such a process start from a forkserver."""
    import subprocess
    import sys

    script = f"""
import prefect
from litops.core.process_start import reader_context
from litops.core.stream import SplitStream
print(reader_context().get_start_method())
print(sum(len(b) for b in SplitStream.open({str(shards)!r}, "train").one_pass(8, 16, workers=2)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["forkserver", str(sum(SIZES))], out.stderr[-2000:]


def largest_shard_share(batches: list[list[int]]) -> float:
    """The median over batches of the largest share of a batch that comes from one shard."""
    from collections import Counter
    from statistics import median

    return median(max(Counter(b).values()) / len(b) for b in batches)


def previous_order_batches(counts: list[int], batch: int, window: int, seed: int) -> list[list[int]]:
    """The order this module replaced: shards in a seeded order, one global sequence shuffled in windows
    of `window` samples, each batch a run of consecutive positions (kept here as the comparison)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    flat = [j for j in rng.permutation(len(counts)) for _ in range(counts[j])]
    shuffled = []
    for w in range(0, len(flat), window):
        part = flat[w:w + window]
        shuffled += [part[i] for i in rng.permutation(len(part))]
    return [shuffled[s:s + batch] for s in range(0, len(shuffled) - batch + 1, batch)]


def test_batches_are_no_more_clustered_than_the_previous_order_or_a_full_shuffle():
    import numpy as np

    counts, batch, window = [100] * 64, 256, 1000
    order = SampleOrder(counts, batch, seed=0, window=window)
    ours = [[order.locate(s, j)[0] for j in range(batch)] for s in range(order.samples_per_epoch // batch)]
    previous = previous_order_batches(counts, batch, window, seed=0)
    flat = np.random.default_rng(0).permutation([j for j, n in enumerate(counts) for _ in range(n)])
    full = [list(flat[s:s + batch]) for s in range(0, len(flat) - batch + 1, batch)]
    shares = {"partitioned": largest_shard_share(ours), "previous": largest_shard_share(previous),
              "full_shuffle": largest_shard_share(full)}
    print(json.dumps({"largest_share_of_a_batch_from_one_shard": shares, "shards": 64, "batch": batch,
                      "window": window, "partitions": order.parts}))
    assert shares["partitioned"] <= shares["previous"]
    assert shares["partitioned"] <= 2 * shares["full_shuffle"]
