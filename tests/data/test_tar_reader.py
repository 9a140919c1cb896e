"""One tar reader (litops.core.shard_index) for ingestion, training and evaluation: from the same
tar, pax long names and a truncated tail included, the three keep the same samples."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from litops.core.component_cli import UserError
from litops.core.manifest import ManifestError, index_shard, sample_at
from litops.core.shard_index import index_members, read_member, tar_samples
from litops.data import ingest, shards
from litops.evaluate.suite_images import scan_shards

from data_helpers import jpeg_bytes, small_cfg

ACCEPT_ALL = 0.95  # the cut sample is quarantined; the rest must land
LONG_KEY = "deep/" + "k" * 120  # past tar's 100-byte name field: a pax header carries the name


SAMPLES = [("s000", "jpg", "txt"), (LONG_KEY, "jpg", "txt"), ("s002", "jpeg", "txt"), ("s003", "JPG", "TXT"),
           ("s004", "jpg", "txt")]


def pax_tar() -> tuple[bytes, dict[str, tuple[bytes, bytes]], dict[str, tarfile.TarInfo]]:
    """(a pax tar of SAMPLES, {key: (image, caption)}, {member name: its header as written})."""
    samples, buf = {}, io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i, (key, image_ext, text_ext) in enumerate(SAMPLES):
            image, caption = jpeg_bytes((40 * i, 90, 200 - 30 * i)), f"caption {i} of {key[:8]}".encode()
            for name, data in ((f"{key}.{image_ext}", image), (f"{key}.{text_ext}", caption), (f"{key}.json", b"{}")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            samples[key] = (image, caption)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        members = {m.name: m for m in tf}
    return buf.getvalue(), samples, members


def cut_shard(path: Path, data: bytes, at: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:at])
    return path


def ingested(ws, shard: Path) -> tuple[dict, dict[str, dict[str, bytes]]]:
    """(report, {key: files} of the dataset) after `data add` of the shard."""
    r = ingest(shard, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)
    samples = {s["__key__"]: s for split in shards.SPLITS
               for p in shards.shard_paths(ws.dataset_dir("mine"), split) for s in shards.read_samples(p)}
    return r, samples


def reasons(r: dict) -> dict[str, str]:
    return {s["key"]: s["reason"] for s in json.loads(Path(r["report"]).read_text())["samples"]}


def captions(samples: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    return {key: files["txt"] for key, files in samples.items()}


def test_ingestion_training_and_evaluation_keep_the_same_samples_of_one_tar(tmp_path, ws):
    data, samples, members = pax_tar()
    # a truncated tail: s004 keeps its image only, and the tar has no end-of-archive block
    shard = cut_shard(tmp_path / "src" / "00000.tar", data, members["s004.txt"].offset)
    whole = {k: v for k, v in samples.items() if k != "s004"}
    want_captions = {key: caption for key, (_, caption) in whole.items()}
    want_images = {key: image for key, (image, _) in whole.items()}
    assert LONG_KEY in whole and "s003" in whole

    runs = dict(tar_samples(shard))  # the reader itself: every run, the cut one too
    assert list(runs) == [*whole, "s004"] and set(runs["s004"]) == {"jpg"}
    assert runs["s003"]["jpg"] == samples["s003"][0]  # extensions lower-cased, as webdataset does

    with open(shard, "rb") as f:  # training without an offsets index: the tar headers
        located = index_members(f)
        by_headers = {s.key: {e: read_member(f, span) for e, span in s.members.items()} for s in located}
        images = {s.key: read_member(f, s.members[s.image_ext]) for s in located}
    assert captions(by_headers) == want_captions and images == want_images

    entry, offsets = index_shard(str(shard), name=shard.name)  # `litops data index`, then the stream's reads
    with open(shard, "rb") as f:
        by_offsets = dict(sample_at(f, offsets[i], offsets[i + 1]) for i in range(entry.samples))
    assert by_offsets == by_headers

    scan = scan_shards([shard], ("txt",))  # an evaluation suite
    assert {s.key: s.members["txt"] for s in scan.samples} == want_captions and scan.incomplete == 1
    with open(shard, "rb") as f:
        assert {s.key: read_member(f, s.image.span) for s in scan.samples} == want_images

    r, dataset = ingested(ws, shard)
    assert reasons(r) == {"s004": "shard_truncated"} and r["damaged_shards"] == [shard.name]
    assert captions(dataset) == want_captions


def test_a_tar_cut_inside_a_member_each_user_keeps_its_rule(tmp_path, ws):
    """Ingestion keeps the whole samples before the cut and quarantines the cut one; the offsets
    index, the training reader and evaluation refuse the shard, naming it."""
    data, samples, members = pax_tar()
    shard = cut_shard(tmp_path / "src" / "00000.tar", data, members["s003.TXT"].offset_data + 3)

    r, dataset = ingested(ws, shard)
    assert reasons(r) == {"s003": "shard_truncated"} and r["damaged_shards"] == [shard.name]
    assert captions(dataset) == {key: caption for key, (_, caption) in list(samples.items())[:3]}

    with pytest.raises(ManifestError, match=f"{shard.name} is not a readable tar"):
        index_shard(str(shard), name=shard.name)
    with pytest.raises(UserError, match=f"cannot read shard {shard}"):
        scan_shards([shard], ("txt",))
    with open(shard, "rb") as f, pytest.raises(tarfile.ReadError):
        index_members(f)
