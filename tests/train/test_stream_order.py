"""The streaming reader's order: a pure function of (seed, epoch, shards), the same global batches
for any number of ranks and reader processes, and a resume that reads only what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from litops.core import stream as stream_mod
from litops.core.sample_order import SampleOrder, batch_positions
from litops.core.stream import SampleSource, SplitStream, StepStream, load, max_open_shards
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
        source = SampleSource(split.urls, 16)
        for b in load(StepStream(source, SampleOrder(split.counts, seed, window), batch, start, stop, rank, world),
                      workers):
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


def test_every_epoch_visits_every_sample_once_in_a_new_order(shards):
    split = SplitStream.open(shards, "train")
    order = SampleOrder(split.counts, seed=3, window=13)
    epochs = [[order.locate(e * order.total + p) for p in range(order.total)] for e in range(2)]
    every = {(j, i) for j, n in enumerate(SIZES) for i in range(n)}
    assert set(epochs[0]) == every and len(epochs[0]) == order.total
    assert set(epochs[1]) == every and epochs[0] != epochs[1]
    assert [order.locate(p) for p in range(order.total)] == epochs[0]  # a pure function of the position
    other_seed = SampleOrder(split.counts, seed=4, window=13)
    assert [other_seed.locate(p) for p in range(order.total)] != epochs[0]


def test_the_shuffle_is_bounded_by_the_window(shards):
    counts = list(SIZES)
    order = SampleOrder(counts, seed=0, window=5)
    shard_order, starts = order._epoch_layout(0)
    flat = [(j, i) for j in shard_order for i in range(counts[j])]
    for p in range(order.total):
        q = flat.index(order.locate(p))
        assert q // 5 == p // 5  # a sample leaves its window of 5 never


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
    order = SampleOrder([4, 6], seed=1, window=3)
    assert order.cursor(23) == {"epoch": 2, "position": 3, "samples_per_epoch": 10}
    assert list(batch_positions(5, 8, rank=1, world=2)) == [44, 45, 46, 47]


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
    urls = [f"/data/train/{j:05d}.tar" for j in range(120)]
    assert max_open_shards(urls, [1000] * 120, window=10_000) == 12  # not growing with the 120 shards
    assert max_open_shards(urls[:3], [1000] * 3, window=10_000) == 3


def test_readers_survive_thread_exit_hooks_of_their_parent(shards):
    """Prefect registers thread-exit hooks for its service threads; a reader forked from such a
    process must not run them (they fail there, and the reader used to die with code 1)."""
    import subprocess
    import sys

    script = f"""
import threading
def gone():
    raise RuntimeError("a service thread this process never had")
threading._register_atexit(gone)
from litops.core.stream import SplitStream
print(sum(len(b) for b in SplitStream.open({str(shards)!r}, "train").one_pass(8, 16, workers=2)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == str(sum(SIZES)), out.stderr[-2000:]
