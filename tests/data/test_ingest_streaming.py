"""Streaming, parallel `data add`: the output does not depend on the worker count, brace
lists name shards, and adding the same content again is a no-op."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from litops.data import add_and_version, ingest, shards
from litops.data.metadata import read_dataset_json
from litops.core.component_cli import UserError
from litops.core.workspace import Workspace

from data_helpers import jpeg_bytes, make_tar, small_cfg, tree_digest, truncated_jpeg

ACCEPT = 0.5


def _shard_members(i: int) -> list[tuple[str, bytes]]:
    good = [(f"s{i}k{j:02d}.{ext}", data) for j in range(9)
            for ext, data in (("jpg", jpeg_bytes((20 * i, 8 * j, 90))), ("txt", f"shard {i} sample {j}".encode()))]
    bad = [(f"s{i}bad.jpg", truncated_jpeg()), (f"s{i}bad.txt", b"cut image")]
    repeated = [("s0k01.jpg", jpeg_bytes()), ("s0k01.txt", b"a key of shard 0 again")] if i == 2 else []
    return good + bad + repeated


def _input_folder(root: Path, n_shards: int = 4) -> Path:
    for i in range(n_shards):
        make_tar(root / f"{i:05d}.tar", _shard_members(i))
    for j in range(5):  # loose pairs beside the shards: chunks of shard_size keys
        (root / f"loose{j}.jpg").write_bytes(jpeg_bytes((5, 5, 40 * j)))
        (root / f"loose{j}.txt").write_text(f"a loose pair {j}")
    return root


def _cfg(home: Path, workers: int):
    return small_cfg(home, name="mine", source="path", shard_size=4, val_fraction=0.2,
                     max_bad_fraction=ACCEPT, workers=workers)


def _comparable_report(path: str) -> dict:
    report = json.loads(Path(path).read_text())
    report.pop("quarantine")  # the only field naming the workspace
    return report


@pytest.fixture
def source(tmp_path) -> Path:
    return _input_folder(tmp_path / "src")


def test_one_and_two_workers_write_identical_shards_quarantine_and_report(tmp_path, source):
    results = {}
    for workers in (1, 2):
        ws = Workspace(tmp_path / f"home{workers}")
        r = ingest(source, _cfg(ws.home, workers), ws, quiet=True)
        dataset = tree_digest(ws.dataset_dir("mine"))
        quarantine = Path(r["quarantine"]).read_bytes()
        results[workers] = (r["ingest_id"], dataset, quarantine, _comparable_report(r["report"]))
    assert results[1] == results[2]

    ingest_id, dataset, _, report = results[1]
    assert report["total"] == 4 * 10 + 1 + 5 and report["good"] == 4 * 9 + 5
    assert report["by_reason"]["image_undecodable"] == 4 and report["by_reason"]["duplicate_key"] == 1
    assert any(p.startswith("train/ingest-") for p in dataset) and any(p.startswith("val/ingest-") for p in dataset)


def test_output_shards_hold_shard_size_samples_in_input_order(tmp_path, source):
    ws = Workspace(tmp_path / "home")
    ingest(source, _cfg(ws.home, 2), ws, quiet=True)
    written = [[s["__key__"] for s in shards.read_samples(p)]
               for p in shards.shard_paths(ws.dataset_dir("mine"), "train")]
    input_order = [f"s{i}k{j:02d}" for i in range(4) for j in range(9)] + [f"loose{j}" for j in range(5)]
    train = [k for k in input_order if any(k in shard for shard in written)]
    # shards take the train keys in input order, 4 at a time; members inside a shard are sorted
    assert written == [sorted(train[i:i + 4]) for i in range(0, len(train), 4)]


def test_adding_the_same_content_again_says_already_ingested(tmp_path, source):
    ws = Workspace(tmp_path / "home")
    cfg = _cfg(ws.home, 2)
    first = add_and_version(str(source), cfg, ws)
    before = tree_digest(ws.dataset_dir("mine"))
    again = add_and_version(str(source), cfg, ws)
    assert again["already_ingested"] is True and first["already_ingested"] is False
    assert again["ingest_id"] == first["ingest_id"] and again["added"] == {"train": 0, "val": 0}
    assert again["good"] == first["good"] and again["bad"] == first["bad"]
    assert again["data_version"] == first["data_version"] and not again["committed"]
    assert tree_digest(ws.dataset_dir("mine")) == before
    assert len(read_dataset_json(ws.dataset_dir("mine"))["ingested"]) == 1


def test_new_content_is_a_new_ingest(tmp_path, source):
    ws = Workspace(tmp_path / "home")
    cfg = _cfg(ws.home, 1)
    first = ingest(source, cfg, ws, quiet=True)
    (source / "extra.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    (source / "extra.txt").write_text("one more pair")
    cfg.data.max_bad_fraction = 0.99  # every earlier key is a duplicate now
    second = ingest(source, cfg, ws, quiet=True)
    assert second["ingest_id"] != first["ingest_id"] and not second["already_ingested"]
    assert second["added"]["train"] + second["added"]["val"] == 1  # the rest are duplicate keys now


def test_brace_expanded_local_shard_list(tmp_path, source):
    ws = Workspace(tmp_path / "home")
    r = ingest(f"{source}/{{00000..00003}}.tar", _cfg(ws.home, 2), ws, quiet=True)
    assert r["good"] == 4 * 9 and r["added"]["train"] + r["added"]["val"] == 4 * 9


def test_a_missing_shard_in_a_brace_list_is_a_one_line_error_before_anything_is_written(tmp_path, source):
    ws = Workspace(tmp_path / "home")
    with pytest.raises(UserError, match="no such file") as e:
        ingest(f"{source}/{{00000..00004}}.tar", _cfg(ws.home, 2), ws, quiet=True)
    assert "\n" not in str(e.value) and not ws.dataset_dir("mine").exists()


def test_workers_below_auto_are_refused(tmp_path, source):
    from litops.core.config import ConfigError

    ws = Workspace(tmp_path / "home")
    with pytest.raises(ConfigError, match="data.workers"):
        ingest(source, _cfg(ws.home, -2), ws, quiet=True)
