from __future__ import annotations

import json
import re
import tarfile

import webdataset as wds

from litops.data import shards, synth
from litops.data.metadata import read_dataset_json
from litops.data.synth import HELDOUT, SEEN, synthesize

from data_helpers import small_cfg, tree_digest


def _all_samples(dataset_dir, split):
    out = []
    for p in shards.shard_paths(dataset_dir, split):
        out += list(shards.read_samples(p))
    return out


def test_vocabulary_and_heldout_design():
    attrs = synth.attributes()
    assert len(attrs["colour"]) == 8 and len(attrs["shape"]) == 5
    assert {"red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan"} == set(attrs["colour"])
    assert {"circle", "square", "triangle"} <= set(attrs["shape"])
    assert attrs["size"] == ["small", "large"]
    assert len(HELDOUT) == 6 and len(set(HELDOUT)) == 6 and len(SEEN) == 34
    # every colour and every shape still occurs in training
    assert {c for c, _ in SEEN} == set(attrs["colour"])
    assert {s for _, s in SEEN} == set(attrs["shape"])


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = small_cfg(tmp_path / "a")
    b = small_cfg(tmp_path / "b")
    c = small_cfg(tmp_path / "c", seed=1)
    from litops.core.workspace import Workspace

    ra = synthesize(a, Workspace(tmp_path / "a"))
    rb = synthesize(b, Workspace(tmp_path / "b"), workers=2)  # a process pool gives the same bytes
    rc = synthesize(c, Workspace(tmp_path / "c"))
    da, db, dc = (tree_digest(tmp_path / x / "data/datasets/embedded") for x in "abc")
    assert ra["generated"] and rb["generated"]
    assert da == db
    assert set(da) == set(dc)
    assert all(da[k] != dc[k] for k in da if k.endswith(".tar"))


def test_fast_path_skips_regeneration_and_params_change_regenerates(ws):
    cfg = small_cfg(ws.home)
    r1 = synthesize(cfg, ws)
    d = ws.dataset_dir("embedded")
    before = tree_digest(d)
    mtimes = {p: p.stat().st_mtime_ns for p in d.rglob("*.tar")}
    r2 = synthesize(cfg, ws)
    assert r1["generated"] and not r2["generated"]
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*.tar")} == mtimes
    # fewer samples: stale shards are removed, dataset.json updated
    cfg.data.n_train = 10
    r3 = synthesize(cfg, ws)
    assert r3["generated"] and r3["splits"]["train"] == 10
    assert [p.name for p in shards.shard_paths(d, "train")] == ["shard-000000.tar"]
    assert tree_digest(d) != before


def test_layout_dataset_json_and_tar_determinism(ws):
    cfg = small_cfg(ws.home)
    synthesize(cfg, ws)
    d = ws.dataset_dir("embedded")
    meta = read_dataset_json(d)
    assert meta["name"] == "embedded" and meta["source"] == "synth"
    assert meta["splits"] == {"train": 48, "val": 12, "test": 24}
    assert meta["params"]["seed"] == 0 and meta["params"]["image_size"] == 32
    assert meta["attributes"]["colour"] == synth.attributes()["colour"]
    assert sorted(map(tuple, meta["heldout_combinations"])) == sorted(HELDOUT)
    assert [p.name for p in shards.shard_paths(d, "train")] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(d / "train" / "shard-000000.tar") as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:3] == ["train-0000000.jpg", "train-0000000.json", "train-0000000.txt"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)


def test_heldout_absent_from_train_val_and_only_in_test(ws):
    cfg = small_cfg(ws.home, n_train=200, n_val=40, n_test=60, two_object_fraction=0.5)
    synthesize(cfg, ws)
    d = ws.dataset_dir("embedded")
    heldout = set(HELDOUT)
    seen_colours, seen_shapes, test_combos = set(), set(), set()
    keys = set()
    for split in ("train", "val", "test"):
        for s in _all_samples(d, split):
            assert s["__key__"] not in keys
            keys.add(s["__key__"])
            meta = json.loads(s["json"])
            assert meta["split"] == split
            assert re.fullmatch(rf"{split}-\d{{7}}", s["__key__"])
            combos = {(o["colour"], o["shape"]) for o in meta["objects"]}
            if split == "test":
                assert combos <= heldout
                test_combos |= combos
            else:
                assert not combos & heldout, (s["__key__"], combos)
                if split == "train":
                    seen_colours |= {c for c, _ in combos}
                    seen_shapes |= {sh for _, sh in combos}
    assert test_combos == heldout
    assert seen_colours == set(synth.COLOUR_NAMES) and seen_shapes == set(synth.SHAPES)


def test_webdataset_reads_shards_and_captions_name_objects(ws):
    cfg = small_cfg(ws.home, two_object_fraction=0.5)
    synthesize(cfg, ws)
    d = ws.dataset_dir("embedded")
    urls = [str(p) for split in ("train", "val", "test") for p in shards.shard_paths(d, split)]
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
    n = n_pairs = 0
    templates = set()
    for sample in ds:
        n += 1
        img, caption, meta = sample["jpg"], sample["txt"], sample["json"]
        assert img.size == (32, 32) and img.mode == "RGB"
        assert isinstance(caption, str) and caption
        for o in meta["objects"]:
            assert o["size"] in ("small", "large")
            assert o["position"] in synth.POSITIONS
            # canonical colour and shape words, as whole words
            assert re.search(rf"\b{o['colour']} {o['shape']}\b", caption), (caption, o)
        if len(meta["objects"]) == 2:
            n_pairs += 1
            assert meta["relation"] in ("left_of", "above")
        templates.add(meta["template"])
    assert n == 48 + 12 + 24
    assert n_pairs > 10
    assert len(templates) >= 8  # several templates / paraphrases are in use


def test_image_shows_the_colour(ws):
    """The object's colour dominates the non-background pixels (sanity of the renderer)."""
    import numpy as np

    rng, spec = synth.sample_spec(0, "train", 3, 0.0)
    obj = dict(spec["meta"]["objects"][0], size="large", position="centre")
    img = np.asarray(synth.render(rng, [obj], 64)).astype(int)
    target = np.array(synth.COLOURS[obj["colour"]])
    close = np.abs(img - target).sum(-1) < 60
    assert close.sum() > 100  # a large shape covers > 100 px at 64 px


def test_fast_tar_writer_is_byte_identical_to_tarfile(tmp_path):
    import random

    rnd = random.Random(0)
    for trial in range(40):
        members = []
        for i in range(rnd.randint(0, 10)):
            name = rnd.choice([f"train-{i:07d}.jpg", f"sub/dir/k{i}.txt", f"ü-key{i}.json", "x" * rnd.choice([5, 98, 99, 100, 150]) + f"{i}.jpg"])
            members.append((name, rnd.randbytes(rnd.choice([0, 1, 511, 512, 513, 3000]))))
        shards.write_tar(tmp_path / "a.tar", members, sort=False)
        shards.write_tar_with_tarfile(tmp_path / "b.tar", members)
        assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes(), trial
