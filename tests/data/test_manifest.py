"""The shard manifest and offset indexes: counts agree with the tar headers, offsets give back each
sample's exact bytes, digests follow content not location, img2dataset's stats are cross-checked, a
dataset without a manifest says so once, `data add` / `data synth` keep it current, and
`litops data index` works on an S3 prefix served by moto on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))

from s3_helpers import bucket, s3_env, s3_server  # noqa: E402,F401 - pytest fixtures

from litops.core.component_cli import UserError  # noqa: E402
from litops.core.manifest import (MANIFEST_NAME, DatasetManifest, ManifestError, ShardEntry,  # noqa: E402
                                  index_shard, load_split, read_manifest, read_offsets,
                                  read_sample, sample_at, write_offsets)
from litops.core.shard_index import StorageOptions, index_members, read_member  # noqa: E402
from litops.data import ingest, synthesize  # noqa: E402
from litops.data.indexing import index_source  # noqa: E402
from litops.data.shards import write_tar  # noqa: E402

from data_helpers import jpeg_bytes, make_tar, png_bytes, small_cfg  # noqa: E402


def img2dataset_shard(path: Path, first: int, n: int, image_ext: str = "jpg", caption: bool = True) -> Path:
    """An img2dataset shard: key.<image>, key.json (url, caption, width, height), key.txt."""
    members = []
    for i in range(first, first + n):
        key, text = f"{i:09d}", f"caption of sample {i}"
        meta = {"url": f"https://example.com/{i}.jpg", "caption": text, "width": 24, "height": 20, "key": key}
        members += [(f"{key}.{image_ext}", jpeg_bytes((i % 250, 40, 90))), (f"{key}.json", json.dumps(meta).encode())]
        if caption:
            members.append((f"{key}.txt", text.encode()))
    write_tar(path, members)
    return path


def stats_file(shard: Path, successes: int) -> None:
    stats = {"count": successes + 1, "successes": successes, "failed_to_download": 1, "failed_to_resize": 0,
             "duration": 1.5, "status_dict": {}}
    shard.with_name(shard.stem + "_stats.json").write_text(json.dumps(stats))


def hostile_shard(path: Path, fmt: int) -> Path:
    """Stray and partial samples between complete ones, every image kind, links, folders, long names."""
    def add(tf, name, data=b"", kind=tarfile.REGTYPE):
        info = tarfile.TarInfo(name)
        info.type, info.size = kind, (len(data) if kind == tarfile.REGTYPE else 0)
        if kind == tarfile.SYMTYPE:
            info.linkname = "elsewhere"
        tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    long_key = "deep/" + "k" * 120  # past tar's 100-byte name field: GNU long name or pax header
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=fmt) as tf:
        add(tf, "000.jpg", jpeg_bytes()); add(tf, "000.txt", b"whole"); add(tf, "000.json", b"{}")
        add(tf, "001.jpg", jpeg_bytes((1, 2, 3)))  # no caption
        add(tf, "002.txt", b"caption without image")
        add(tf, "003.png", png_bytes()); add(tf, "003.txt", b"a png")
        add(tf, "README", b"no extension: not a member of any sample")
        add(tf, "004.jpeg", b"jpeg bytes"); add(tf, "dir", kind=tarfile.DIRTYPE); add(tf, "004.txt", b"a jpeg")
        add(tf, "005.WEBP", b"webp bytes"); add(tf, "005.TXT", b"upper-case extensions")
        add(tf, "006.jpg", b"six"); add(tf, "006.txt", b"six"); add(tf, "007.json", b"{}"); add(tf, "006.json", b"{}")
        add(tf, f"{long_key}.jpg", b"long"); add(tf, f"{long_key}.txt", b"a long name")
        add(tf, "café-008.webp", b"accent"); add(tf, "café-008.txt", "un café".encode())
        add(tf, "009.jpg", b"linked caption"); add(tf, "009.txt", kind=tarfile.SYMTYPE)
        add(tf, "010.txt", b"trailing, incomplete")
    return path


def assert_index_matches_headers(path: Path, entry: ShardEntry, offsets: np.ndarray) -> None:
    with open(path, "rb") as f:
        expected = index_members(f)
        assert entry.samples == len(expected) == len(offsets) - 1
        for i, s in enumerate(expected):
            key, files = sample_at(f, offsets[i], offsets[i + 1])
            assert key == s.key
            assert files == {ext: read_member(f, span) for ext, span in s.members.items()}
    data = path.read_bytes()
    assert entry.bytes == len(data) and entry.sha256 == hashlib.sha256(data).hexdigest()
    assert offsets[-1] % 512 == 0 and offsets[-1] <= len(data)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_hostile_shards_count_as_index_members_does_and_offsets_give_back_exact_members(tmp_path, fmt):
    path = hostile_shard(tmp_path / "hostile.tar", fmt)
    entry, offsets = index_shard(str(path))
    assert entry.name == "hostile.tar" and entry.etag == "" and entry.version_id == ""
    assert_index_matches_headers(path, entry, offsets)
    with open(path, "rb") as f:
        keys = [sample_at(f, offsets[i], offsets[i + 1])[0] for i in range(entry.samples)]
        assert keys == ["000", "003", "004", "005", "006", "deep/" + "k" * 120, "café-008"]
        assert read_sample(f, offsets[4], offsets[5]) == {"jpg": b"six", "txt": b"six"}  # not the later 006.json


@pytest.mark.parametrize("image_ext", ["jpg", "jpeg", "png", "webp"])
def test_img2dataset_shards_index_in_one_pass(tmp_path, image_ext):
    path = img2dataset_shard(tmp_path / "00000.tar", 0, 7, image_ext)
    entry, offsets = index_shard(str(path), name="train/00000.tar")
    assert entry.name == "train/00000.tar" and entry.samples == entry.usable == 7
    assert_index_matches_headers(path, entry, offsets)
    idx = write_offsets(tmp_path, entry, offsets)
    assert idx == str(tmp_path / "train/00000.tar.idx")
    with open(idx, "rb") as f:
        assert read_offsets(idx).tolist() == offsets.tolist() == read_offsets(f).tolist()
    assert len(Path(idx).read_bytes()) == 8 * 8  # samples + 1 little-endian uint64


def test_a_shard_without_complete_samples_and_broken_inputs(tmp_path):
    empty = img2dataset_shard(tmp_path / "nocaps.tar", 0, 3, caption=False)
    entry, offsets = index_shard(str(empty))
    assert entry.samples == 0 and offsets.tolist() == [0]
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(ManifestError, match="junk.tar is not a readable tar"):
        index_shard(str(tmp_path / "junk.tar"))
    (tmp_path / "bad.idx").write_bytes(b"\x01" * 7)
    with pytest.raises(ManifestError, match="bad.idx is not an offset index"):
        read_offsets(tmp_path / "bad.idx")
    with pytest.raises(ManifestError, match="no offset index at"):
        read_offsets(str(tmp_path / "missing.tar.idx"))


def split_dataset(root: Path) -> Path:
    img2dataset_shard(root / "train" / "00000.tar", 0, 5)
    img2dataset_shard(root / "train" / "00001.tar", 5, 4)
    hostile_shard(root / "val" / "00000.tar", tarfile.GNU_FORMAT)
    (root / "dataset.json").write_text("{}")
    return root


def test_index_writes_manifest_and_indexes_and_the_digest_follows_content(tmp_path):
    root = split_dataset(tmp_path / "a")
    r = index_source(str(root))
    assert r["splits"] == {"train": {"shards": 2, "samples": 9, "bytes": r["splits"]["train"]["bytes"]},
                           "val": {"shards": 1, "samples": 7, "bytes": (root / "val/00000.tar").stat().st_size}}
    assert r["indexed"] == 3 and r["written"] and r["manifest"] == str(root / MANIFEST_NAME)
    doc = json.loads((root / MANIFEST_NAME).read_text())
    assert doc["root"] == "." and doc["digest"] == r["digest"]
    m = read_manifest(root)
    assert m.root == str(root) and m.url(m.splits["train"][1]) == str(root / "train/00001.tar")
    assert DatasetManifest.from_json(m.to_json()).digest() == m.digest()
    for entries in m.splits.values():
        for e in entries:
            assert_index_matches_headers(root / e.name, e, read_offsets(m.index_url(e)))

    again = index_source(str(root))  # a local index re-reads every shard; the same bytes, the same file
    assert again["indexed"] == 3 and not again["written"] and again["digest"] == r["digest"]
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(root, moved)
    assert read_manifest(moved).digest() == r["digest"]
    img2dataset_shard(moved / "train" / "00001.tar", 100, 4)
    assert index_source(str(moved))["digest"] != r["digest"]


def test_layouts_flat_folder_split_and_ambiguity(tmp_path):
    flat = tmp_path / "flat"
    for i in range(2):
        stats_file(img2dataset_shard(flat / f"{i:05d}.tar", 10 * i, 3), 3)
    (flat / "00000.parquet").write_bytes(b"img2dataset's metadata: not a shard")
    r = index_source(str(flat), split="val")
    assert r["splits"] == {"val": {"shards": 2, "samples": 6, "bytes": r["splits"]["val"]["bytes"]}}
    assert [e.name for e in read_manifest(flat).splits["val"]] == ["00000.tar", "00001.tar"]
    assert (flat / "00001.tar.idx").is_file()
    with pytest.raises(UserError, match="--split names the split of a flat folder"):
        index_source(str(split_dataset(tmp_path / "splits")), split="train")
    img2dataset_shard(flat / "train" / "00000.tar", 0, 1)
    with pytest.raises(UserError, match="holds both .tar shards and split folders"):
        index_source(str(flat))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .tar shards in"):
        index_source(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no such folder or S3 prefix"):
        index_source(str(tmp_path / "missing"))


def test_img2dataset_stats_that_disagree_with_the_tar_fail_naming_the_shard(tmp_path):
    flat = tmp_path / "out"
    stats_file(img2dataset_shard(flat / "00000.tar", 0, 4), 4)
    stats_file(img2dataset_shard(flat / "00001.tar", 4, 4), 5)
    with pytest.raises(UserError) as e:
        index_source(str(flat))
    assert str(e.value) == (f"{flat / '00001.tar'}: 00001_stats.json counts 5 samples, the tar headers hold 4 "
                            "complete samples (image + .txt)")
    assert not (flat / MANIFEST_NAME).exists()
    stats_file(img2dataset_shard(flat / "00001.tar", 4, 5, caption=False), 5)  # written without captions
    with pytest.raises(UserError, match="counts 5 samples, the tar headers hold 0 complete"):
        index_source(str(flat))


def test_load_split_reads_only_the_manifest_and_says_once_when_there_is_none(tmp_path, capsys):
    root = split_dataset(tmp_path / "ds")
    counted = load_split(root, "train")
    err = capsys.readouterr().err
    assert err == f"litops: no manifest at {root}: counting samples in 2 shards (litops data index {root} writes one)\n"
    assert counted.counts == [5, 4] and counted.entries == [] and counted.urls[0] == str(root / "train/00000.tar")
    index_source(str(root))
    capsys.readouterr()
    for tar in root.rglob("*.tar"):
        tar.unlink()  # the manifest alone answers: no shard is opened, listed or stat'ed
    listed = load_split(root, "train")
    assert capsys.readouterr().err == ""
    assert listed.urls == counted.urls and listed.counts == [5, 4] and listed.total == 9
    assert listed.index_urls == [u + ".idx" for u in listed.urls] and [e.samples for e in listed.entries] == [5, 4]
    assert load_split(root, "test").urls == []


def test_excluded_samples_leave_the_usable_count(tmp_path):
    entry = ShardEntry("train/00000.tar", 10, 5120, excluded=(2, 7))
    m = DatasetManifest(str(tmp_path), {"train": [entry]}, {"image_undecodable": 2})
    back = DatasetManifest.from_json(m.to_json(), root=str(tmp_path))
    assert back.splits["train"][0] == entry and entry.usable == 8 and back.exclusions_by_reason == {"image_undecodable": 2}
    assert DatasetManifest(str(tmp_path), {"train": [ShardEntry("train/00000.tar", 10, 5120)]}).digest() != m.digest()
    with pytest.raises(ManifestError, match="is not a litops manifest"):
        DatasetManifest.from_json('{"splits": {}}')
    bad = json.loads(m.to_json())
    bad["splits"]["train"][0]["excluded"] = [7, 10]
    with pytest.raises(ManifestError, match="train/00000.tar: excluded must be distinct sample indices in 0..9"):
        DatasetManifest.from_json(json.dumps(bad))


def test_reindexing_keeps_exclusions_of_unchanged_shards_only(tmp_path, capsys):
    from dataclasses import replace

    from litops.core.manifest import write_manifest

    root = split_dataset(tmp_path / "ds")
    index_source(str(root))
    m = read_manifest(root)
    m.splits["train"] = [replace(e, excluded=(1,)) for e in m.splits["train"]]
    write_manifest(replace(m, exclusions_by_reason={"image_undecodable": 2}))
    img2dataset_shard(root / "train" / "00001.tar", 50, 4)  # new bytes
    capsys.readouterr()
    r = index_source(str(root))
    assert r["splits"]["train"]["samples"] == 9 - 1
    assert [e.excluded for e in read_manifest(root).splits["train"]] == [(1,), ()]
    assert "litops: train/00001.tar changed: its 1 excluded samples no longer apply" in capsys.readouterr().err


def test_synth_and_add_keep_the_manifest_current(ws, tmp_path):
    cfg = small_cfg(ws.home, workers=0)
    synthesize(cfg, ws)
    d = ws.dataset_dir("embedded")
    m = read_manifest(d)
    assert {s: sum(e.samples for e in es) for s, es in m.splits.items()} == {"train": 48, "val": 12, "test": 24}
    last = m.splits["train"][2]
    assert_index_matches_headers(d / last.name, last, read_offsets(d / last.index_name))

    (d / MANIFEST_NAME).unlink()  # a dataset made before manifests gets one on the next (fast) synth
    assert not synthesize(cfg, ws)["generated"] and read_manifest(d).to_json() == m.to_json()

    src = tmp_path / "mine"
    members = []
    for i in range(6):
        members += [(f"user-{i}.jpg", jpeg_bytes((30 * i, 90, 20))), (f"user-{i}.txt", f"user sample {i}".encode())]
    make_tar(src / "part.tar", members)
    idx_before = {p: p.stat().st_mtime_ns for p in d.rglob("*.idx")}
    ingest(src, cfg, ws, quiet=True)
    after = read_manifest(d)
    new = [e for es in after.splits.values() for e in es if e.name.startswith(("train/ingest-", "val/ingest-"))]
    assert sum(e.samples for e in new) == 6
    assert {p: p.stat().st_mtime_ns for p in idx_before} == idx_before  # unchanged shards were not re-read
    for e in new:
        assert_index_matches_headers(d / e.name, e, read_offsets(d / e.index_name))

    cfg.data.n_train = 10  # regenerated: one train synth shard; stale indexes go with their shards
    synthesize(cfg, ws)
    names = [e.name for e in read_manifest(d).splits["train"]]
    assert [n for n in names if n.startswith("train/shard-")] == ["train/shard-000000.tar"]
    assert sorted(p.name for p in (d / "train").glob("shard-*.idx")) == ["shard-000000.tar.idx"]
    assert read_manifest(d).splits["train"][names.index("train/shard-000000.tar")].samples == 10


# --------------------------------------------------------------------------- S3 (moto on 127.0.0.1)


def upload_flat(tmp_path: Path, s3_env: dict, bucket: str, prefix: str = "laion") -> list[Path]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    local = []
    for i in range(2):
        shard = img2dataset_shard(tmp_path / "made" / f"{i:05d}.tar", 10 * i, 4 + i)
        stats_file(shard, 4 + i)
        for p in (shard, shard.with_name(shard.stem + "_stats.json")):
            client.upload_file(str(p), bucket, f"{prefix}/{p.name}")
        local.append(shard)
    client.put_object(Bucket=bucket, Key=f"{prefix}/notes.md", Body=b"not a shard")
    return local


def test_index_an_s3_prefix_then_read_samples_by_range(tmp_path, s3_env, bucket):
    import boto3

    local = upload_flat(tmp_path, s3_env, bucket)
    storage = StorageOptions(s3_env["AWS_ENDPOINT_URL"])
    root = f"s3://{bucket}/laion"
    r = index_source(root + "/", storage)
    assert r["manifest"] == f"{root}/manifest.json" and r["indexed"] == 2
    assert r["splits"] == {"train": {"shards": 2, "samples": 9, "bytes": sum(p.stat().st_size for p in local)}}
    assert r["digest"] == index_source(str(upload_local_copy(tmp_path, local)))["digest"]  # content, not location

    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    split = load_split(root, "train", storage)
    assert split.urls == [f"{root}/00000.tar", f"{root}/00001.tar"] and split.counts == [4, 5]
    fs = storage.filesystem()
    for entry, url, idx_url, path in zip(split.entries, split.urls, split.index_urls, local):
        head = client.head_object(Bucket=bucket, Key=url.split(f"{bucket}/", 1)[1])
        assert entry.etag == head["ETag"].strip('"') and entry.version_id == ""
        assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        offsets = read_offsets(idx_url, storage)
        with fs.open(url, "rb", cache_type="none") as f, open(path, "rb") as g:
            expected = index_members(g)
            for i, s in enumerate(expected):
                assert read_sample(f, offsets[i], offsets[i + 1]) == {e: read_member(g, sp) for e, sp in s.members.items()}

    again = index_source(root, storage)  # unchanged ETags: nothing is read again
    assert (again["indexed"], again["reused"], again["written"]) == (0, 2, False)


def upload_local_copy(tmp_path: Path, local: list[Path]) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in local:
        shutil.copy(p, copy / p.name)
    return copy


def test_a_versioned_bucket_records_each_shards_version(tmp_path, s3_env, bucket):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    upload_flat(tmp_path, s3_env, bucket, prefix="v")
    index_source(f"s3://{bucket}/v", StorageOptions(s3_env["AWS_ENDPOINT_URL"]))
    m = read_manifest(f"s3://{bucket}/v", StorageOptions(s3_env["AWS_ENDPOINT_URL"]))
    for e in m.splits["train"]:
        assert e.version_id == client.head_object(Bucket=bucket, Key=f"v/{e.name}")["VersionId"]


def test_litops_data_index_on_an_s3_prefix_from_the_command_line(tmp_path, s3_env, bucket, capsys):
    import boto3

    from litops.core.component_cli import EXIT_BAD_INPUT, run_main
    from litops.core.config import LitopsConfig, to_dict
    from litops.data.cli import main as data_main

    upload_flat(tmp_path, s3_env, bucket)
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    client.put_object(Bucket=bucket, Key="laion/00001_stats.json", Body=json.dumps({"successes": 7}).encode())
    cfg = LitopsConfig()
    cfg.storage.endpoint_url = s3_env["AWS_ENDPOINT_URL"]
    (tmp_path / "cfg.json").write_text(json.dumps(to_dict(cfg)))
    with pytest.raises(SystemExit) as e:  # the component, in this process: its one-line error
        run_main(data_main, "data", ["index", f"s3://{bucket}/laion", "--config", str(tmp_path / "cfg.json")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("litops")]
    assert e.value.code == EXIT_BAD_INPUT and errors == [
        f"litops data: error: s3://{bucket}/laion/00001.tar: 00001_stats.json counts 7 samples, "
        "the tar headers hold 5 complete samples (image + .txt)"]

    client.put_object(Bucket=bucket, Key="laion/00001_stats.json", Body=json.dumps({"successes": 5}).encode())
    env = {**os.environ, "LITOPS_HOME": str(tmp_path / "home")}
    env.pop("AWS_ENDPOINT_URL")  # the endpoint comes from the config, as in production
    cmd = [str(Path(sys.executable).with_name("litops")), "data", "index", f"s3://{bucket}/laion", "--split", "train",
           f"storage.endpoint_url={s3_env['AWS_ENDPOINT_URL']}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"indexed s3://{bucket}/laion (train=2 shards/9 samples" in out.stdout
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="laion/")["Contents"]}
    assert {"laion/manifest.json", "laion/00000.tar.idx", "laion/00001.tar.idx"} <= keys
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in out.stdout + out.stderr
