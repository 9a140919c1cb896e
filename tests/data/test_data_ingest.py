from __future__ import annotations

import json
import tarfile

import pytest
import webdataset as wds

from litops.core.component_cli import UserError
from litops.data import REASONS, ingest, shards
from litops.data.ingestion import assign_splits, quarantine_root, route_split
from litops.data.metadata import read_dataset_json

from data_helpers import jpeg_bytes, make_tar, png_bytes, small_cfg, tree_digest, truncated_jpeg


def _good_folder(root, n, prefix="g"):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{prefix}{i:03d}.jpg").write_bytes(jpeg_bytes((10 * i % 255, 40, 90)))
        (root / f"{prefix}{i:03d}.txt").write_text(f"a user caption number {i}\n")


def _bad_folder_samples(root):
    (root / "bad_trunc.jpg").write_bytes(truncated_jpeg())
    (root / "bad_trunc.txt").write_text("truncated jpeg")
    (root / "bad_zero.jpg").write_bytes(b"")
    (root / "bad_zero.txt").write_text("zero-byte image")
    (root / "bad_emptycap.jpg").write_bytes(jpeg_bytes())
    (root / "bad_emptycap.txt").write_text("  \n")
    (root / "bad_latin1.jpg").write_bytes(jpeg_bytes())
    (root / "bad_latin1.txt").write_bytes("une forêt rouge".encode("latin-1"))
    (root / "bad_long.jpg").write_bytes(jpeg_bytes())
    (root / "bad_long.txt").write_text("x" * 301)
    (root / "bad_nocap.jpg").write_bytes(jpeg_bytes())
    (root / "bad_noimg.txt").write_text("caption without image")


def test_folder_ingest_quarantines_by_reason_and_keeps_good(ws, tmp_path):
    src = tmp_path / "src"
    _good_folder(src, 40)
    (src / "sub").mkdir()
    (src / "sub" / "p1.png").write_bytes(png_bytes())
    (src / "sub" / "p1.txt").write_text("a blue png")
    (src / "sub" / "p1.json").write_text('{"objects": [{"colour": "blue", "shape": "square"}]}')
    _bad_folder_samples(src)
    cfg = small_cfg(ws.home, max_bad_fraction=0.2, val_fraction=0.25)
    before = tree_digest(src)
    r = ingest(src, cfg, ws)
    assert tree_digest(src) == before  # the source is never modified

    assert r["total"] == 48 and r["good"] == 41 and r["bad"] == 7
    assert r["by_reason"] == {
        "image_undecodable": 1,
        "image_empty": 1,
        "caption_empty": 1,
        "caption_not_utf8": 1,
        "caption_too_long": 1,
        "missing_caption": 1,
        "missing_image": 1,
    }
    assert r["reencoded"] == 1 and r["added"]["train"] + r["added"]["val"] == 41
    keys = [f"g{i:03d}" for i in range(40)] + ["sub/p1"]
    assert r["added"]["val"] == sum(split == "val" for split in assign_splits(keys, 0.25).values())
    assert r["added"]["val"] >= sum(route_split(k, 0.25) == "val" for k in keys)  # the hash's choices stand

    # quarantine + report, outside the dataset dir
    qtar, report = r["quarantine"], json.loads(open(r["report"]).read())
    assert str(quarantine_root(ws, "embedded")) in qtar
    assert not qtar.startswith(str(ws.dataset_dir("embedded")))
    assert set(report["by_reason"]) == set(REASONS) and report["by_reason"]["missing_image"] == 1
    assert {s["reason"] for s in report["samples"]} == set(r["by_reason"])
    with tarfile.open(qtar) as tf:
        qnames = tf.getnames()
    assert "image_empty/000001/bad_zero.jpg" in qnames or any(n.endswith("bad_zero.jpg") for n in qnames)

    # good samples are readable; original JPEG bytes kept, PNG re-encoded to JPEG
    d = ws.dataset_dir("embedded")
    ingested = [p for split in ("train", "val") for p in shards.shard_paths(d, split) if p.name.startswith("ingest-")]
    assert ingested
    seen = {}
    for s in wds.WebDataset([str(p) for p in ingested], shardshuffle=False, empty_check=False):
        seen[s["__key__"]] = s
    assert len(seen) == 41
    assert seen["g007"]["jpg"] == (src / "g007.jpg").read_bytes()
    assert seen["g007"]["txt"] == b"a user caption number 7"
    assert seen["sub/p1"]["jpg"][:2] == b"\xff\xd8"
    assert json.loads(seen["sub/p1"]["json"])["objects"][0]["colour"] == "blue"
    decoded = next(iter(wds.WebDataset([str(ingested[0])], shardshuffle=False, empty_check=False).decode("pil")))
    assert decoded["jpg"].size[0] > 0
    meta = read_dataset_json(d)
    assert meta["splits"]["train"] == 48 + r["added"]["train"]
    assert meta["ingested"][-1]["id"] == r["ingest_id"]


def test_shard_ingest_with_duplicates_and_corrupt_members(ws, tmp_path):
    cfg = small_cfg(ws.home, max_bad_fraction=0.4)
    shards_dir = tmp_path / "shards"
    good = [(f"u{i:04d}.{ext}", data) for i in range(20) for ext, data in (("jpg", jpeg_bytes()), ("txt", f"caption {i}".encode()))]
    make_tar(shards_dir / "a-000.tar", good + [
        ("bad1.jpg", truncated_jpeg()), ("bad1.txt", b"truncated"),
        ("bad2.jpg", b""), ("bad2.txt", b"zero"),
        ("bad3.jpg", jpeg_bytes()), ("bad3.txt", b""),
        ("bad4.jpg", jpeg_bytes()), ("bad4.txt", b"\xc3\x28 invalid utf8"),
        ("lonely.jpg", jpeg_bytes()),
        ("orphan.txt", b"no image"),
        ("u0003.jpg", jpeg_bytes()), ("u0003.txt", b"same key twice in one shard"),
    ])
    make_tar(shards_dir / "b-000.tar", [
        ("u0005.jpg", jpeg_bytes()), ("u0005.txt", b"same key in another shard"),
        ("train-0000001.jpg", jpeg_bytes()), ("train-0000001.txt", b"key already in the dataset"),
        ("v1.webp", b""),  # unused extension check below: webp but empty -> image_empty
        ("v1.txt", b"empty webp"),
        ("v2.jpg", jpeg_bytes()), ("v2.txt", "ünïcödé caption ✓".encode()),
    ])
    r = ingest(shards_dir, cfg, ws)
    assert r["by_reason"] == {
        "image_undecodable": 1,
        "image_empty": 2,
        "caption_empty": 1,
        "caption_not_utf8": 1,
        "missing_caption": 1,
        "missing_image": 1,
        "duplicate_key": 3,
    }
    assert r["good"] == 21 and r["total"] == 31
    d = ws.dataset_dir("embedded")
    got = {}
    for p in shards.shard_paths(d, "train") + shards.shard_paths(d, "val"):
        if p.name.startswith("ingest-"):
            got.update({s["__key__"]: s for s in shards.read_samples(p)})
    assert got["v2"]["txt"].decode() == "ünïcödé caption ✓"
    assert got["u0003"]["txt"] == b"caption 3"  # the first occurrence wins
    # a single .tar file is accepted too; re-adding the same keys is all duplicates -> rejected
    with pytest.raises(UserError, match="duplicate_key=21"):
        ingest(shards_dir / "a-000.tar", cfg, ws)


def test_too_many_bad_samples_fails_and_leaves_dataset_untouched(ws, tmp_path):
    cfg = small_cfg(ws.home, max_bad_fraction=0.05)
    src = tmp_path / "src"
    _good_folder(src, 10)
    _bad_folder_samples(src)
    from litops.data import synthesize

    synthesize(cfg, ws)
    d = ws.dataset_dir("embedded")
    before = tree_digest(d)
    with pytest.raises(UserError) as ei:
        ingest(src, cfg, ws)
    msg = str(ei.value)
    assert "\n" not in msg
    assert "7 of 17 samples" in msg and "max_bad_fraction 5.0%" in msg and "image_empty=1" in msg
    assert "nothing was added" in msg
    assert tree_digest(d) == before
    qdir = quarantine_root(ws, "embedded")
    (report_path,) = qdir.glob("*/report.json")
    report = json.loads(report_path.read_text())
    assert report["accepted"] is False and report["bad"] == 7
    assert (report_path.parent / "quarantine.tar").is_file()


def test_path_source_creates_dataset_from_user_data(ws, tmp_path):
    cfg = small_cfg(ws.home, source="path", name="mine")
    src = tmp_path / "src"
    _good_folder(src, 5)
    (src / "x.jpg").write_bytes(jpeg_bytes())
    (src / "x.txt").write_text("x")
    (src / "x.json").write_text(json.dumps({"objects": [{"colour": "teal", "shape": "blob"}]}))
    r = ingest(src, cfg, ws)
    meta = read_dataset_json(ws.dataset_dir("mine"))
    assert meta["source"] == "path" and meta["splits"]["train"] + meta["splits"]["val"] == 6 == r["good"]
    assert meta["attributes"] == {"colour": ["teal"], "shape": ["blob"]}
    assert not shards.shard_paths(ws.dataset_dir("mine"), "test")


def test_missing_or_empty_input_is_a_user_error(ws, tmp_path):
    cfg = small_cfg(ws.home, source="path")
    with pytest.raises(UserError, match="no such file"):
        ingest(tmp_path / "nope", cfg, ws)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no samples"):
        ingest(tmp_path / "empty", cfg, ws)
