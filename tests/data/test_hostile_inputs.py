"""`data add` on hostile input: unsafe names, links, damaged shards, odd captions and images.

Every input here is a real file, folder or tar made on disk. Each test checks that a bad
sample is quarantined with its reason, that every good sample lands in the dataset, and that
nothing is written outside the workspace.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litops.data import ingest, shards
from litops.data.ingestion import val_quota

from data_helpers import jpeg_bytes, make_tar, png_bytes, small_cfg, truncated_jpeg

ACCEPT_ALL = 0.95  # these tests look at what is quarantined, not at the rejection rule


# --------------------------------------------------------------------------- helpers


def dataset_samples(ws, name: str = "mine") -> dict[str, dict]:
    """Every ingested sample in the dataset, by key."""
    d = ws.dataset_dir(name)
    out = {}
    for split in shards.SPLITS:
        for p in shards.shard_paths(d, split):
            out.update({s["__key__"]: s for s in shards.read_samples(p)})
    return out


def reasons_by_key(result: dict) -> dict[str, str]:
    report = json.loads(Path(result["report"]).read_text())
    return {s["key"]: s["reason"] for s in report["samples"]}


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


class OutsideWatch:
    """Snapshot of the test tree's parent and of every folder up to /, so a write that escapes
    the workspace (a `..` key, a followed link) shows up as a difference."""

    def __init__(self, tmp_path: Path, home: Path):
        self.tmp_path, self.home = tmp_path, home
        self.parent_before = listing(tmp_path.parent)
        self.ancestors_before = {a: set(os.listdir(a)) for a in tmp_path.parent.parents}

    def assert_untouched(self) -> None:
        created = listing(self.tmp_path.parent) - self.parent_before
        outside = [c for c in created if not (self.tmp_path.parent / c).resolve().is_relative_to(self.home)]
        assert outside == [], f"written outside the workspace: {outside}"
        for a, before in self.ancestors_before.items():
            assert not [n for n in set(os.listdir(a)) - before if n.startswith("evil")], a
        assert not list(self.tmp_path.parent.rglob("evil*"))


def good_members(n: int, prefix: str = "g") -> list[tuple[str, bytes]]:
    return [(f"{prefix}{i:03d}.{ext}", data) for i in range(n)
            for ext, data in (("jpg", jpeg_bytes((i * 20 % 255, 60, 90))), ("txt", f"caption {prefix} {i}".encode()))]


def good_folder(root: Path, n: int, prefix: str = "g") -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in good_members(n, prefix):
        (root / name).write_bytes(data)


def tar_with_links(path: Path, members: list[tuple[str, bytes]], links: list[tuple[str, str, bytes]]) -> None:
    """A tar of regular members plus (name, target, type) link members."""
    make_tar(path, members)
    with tarfile.open(path, "a") as tf:
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)


def member_offsets(path: Path) -> list[tuple[str, int, int]]:
    """(name, header offset, data offset) of each member."""
    with tarfile.open(path) as tf:
        return [(m.name, m.offset, m.offset_data) for m in tf]


def image_bytes(mode: str, fmt: str, size=(12, 10)) -> bytes:
    if mode == "I;16":
        im = Image.fromarray(np.full(size[::-1], 40000, dtype=np.uint16))
    else:
        im = Image.new(mode, size, {"CMYK": (0, 200, 200, 0), "RGBA": (10, 200, 30, 128)}.get(mode, 128))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height 1-bit grey pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- keys


def test_unsafe_tar_names_are_quarantined_and_nothing_escapes(ws, tmp_path):
    src = tmp_path / "src"
    hostile = [("../../evil.jpg", jpeg_bytes()), ("../../evil.txt", b"escape"),
               ("/tmp/evil_abs.jpg", jpeg_bytes()), ("/tmp/evil_abs.txt", b"absolute"),
               ("evil\x1bctl.jpg", jpeg_bytes()), ("evil\x1bctl.txt", b"control char"),
               ("sub\\evil_bs.jpg", jpeg_bytes()), ("sub\\evil_bs.txt", b"backslash"),
               ("./dot/./n1.jpg", jpeg_bytes()), ("./dot/./n1.txt", b"a normalised name"),
               ("cafe\u0301.jpg", jpeg_bytes()), ("caf\u00e9.txt", b"one key in NFD and NFC")]
    make_tar(src / "a.tar", good_members(10) + hostile)
    watch = OutsideWatch(tmp_path, ws.home)
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)

    assert r["by_reason"] == {"key_unsafe": 4}
    assert r["good"] == 12
    got = dataset_samples(ws)
    assert set(got) == {f"g{i:03d}" for i in range(10)} | {"dot/n1", "caf\u00e9"}
    with tarfile.open(r["quarantine"]) as tf:
        names = tf.getnames()
    assert len(names) == 8 and all(not n.startswith("/") and ".." not in n.split("/") for n in names)
    watch.assert_untouched()


def test_a_folder_file_with_a_control_character_in_its_name_is_unsafe(ws, tmp_path):
    src = tmp_path / "src"
    good_folder(src, 4)
    (src / "bad\x07bell.jpg").write_bytes(jpeg_bytes())
    (src / "bad\x07bell.txt").write_text("bell")
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)
    assert r["by_reason"] == {"key_unsafe": 1} and r["good"] == 4


# --------------------------------------------------------------------------- links


def test_links_in_a_folder_are_never_followed(ws, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    outside_image = tmp_path / "outside.jpg"
    outside_image.write_bytes(jpeg_bytes())
    outside_dir = tmp_path / "outside_dir"
    good_folder(outside_dir, 3, prefix="o")
    src = tmp_path / "src"
    good_folder(src, 6)
    (src / "x.jpg").write_bytes(jpeg_bytes())
    (src / "x.txt").symlink_to(secret)
    (src / "y.jpg").symlink_to(outside_image)
    (src / "y.txt").write_text("image is a link")
    (src / "z.jpg").write_bytes(jpeg_bytes())
    os.link(secret, src / "z.txt")
    (src / "linked_dir").symlink_to(outside_dir, target_is_directory=True)
    (src / "linked.tar").symlink_to(make_tar(tmp_path / "other.tar", good_members(2, "t")))
    os.mkfifo(src / "pipe.txt")  # opening it would block: it must never be read

    watch = OutsideWatch(tmp_path, ws.home)
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)
    assert r["by_reason"] == {"link": 5}
    reasons = reasons_by_key(r)
    linked = ("x", "y", "z", "linked_dir")
    assert {k: reasons[k] for k in linked} == dict.fromkeys(linked, "link")
    got = dataset_samples(ws)
    assert set(got) == {f"g{i:03d}" for i in range(6)}
    assert all(b"host secret" not in s["txt"] for s in got.values())
    assert json.loads(Path(r["report"]).read_text())["ignored_files"] == ["pipe.txt (not a regular file)"]
    with tarfile.open(r["quarantine"]) as tf:
        assert all(b"host secret" not in tf.extractfile(m).read() for m in tf if m.isfile())
    watch.assert_untouched()


def test_link_members_of_a_tar_are_reported_as_links(ws, tmp_path):
    src = tmp_path / "src"
    # l.jpg is a link with a caption of its own: the sample is a link, not missing_image
    tar_with_links(src / "a.tar", good_members(5) + [("s.jpg", jpeg_bytes()), ("h.jpg", jpeg_bytes()),
                                                     ("l.txt", b"link caption")],
                   [("s.txt", "/etc/hostname", tarfile.SYMTYPE), ("h.txt", "g000.txt", tarfile.LNKTYPE),
                    ("l.jpg", "../../etc/passwd", tarfile.SYMTYPE)])
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)
    assert r["by_reason"] == {"link": 3}
    assert reasons_by_key(r) == {"s": "link", "h": "link", "l": "link"}
    assert set(dataset_samples(ws)) == {f"g{i:03d}" for i in range(5)}


# --------------------------------------------------------------------------- damaged shards


def test_a_tar_cut_inside_a_member_keeps_everything_before_and_other_shards(ws, tmp_path):
    src = tmp_path / "src"
    make_tar(src / "a.tar", good_members(10, "a"))
    make_tar(src / "b.tar", good_members(10, "b"))
    whole = (src / "a.tar").read_bytes()
    name, _, data_at = member_offsets(src / "a.tar")[13]  # a006.txt
    (src / "a.tar").write_bytes(whole[: data_at + 3])
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)

    assert name == "a006.txt"
    assert r["by_reason"] == {"shard_truncated": 1} and reasons_by_key(r) == {"a006": "shard_truncated"}
    assert set(dataset_samples(ws)) == {f"a{i:03d}" for i in range(6)} | {f"b{i:03d}" for i in range(10)}
    assert r["damaged_shards"] == ["a.tar"]


def test_a_tar_cut_between_members_keeps_whole_samples_and_quarantines_the_partial_one(ws, tmp_path):
    src = tmp_path / "src"
    make_tar(src / "a.tar", good_members(10))
    whole = (src / "a.tar").read_bytes()
    name, header_at, _ = member_offsets(src / "a.tar")[13]  # cut right before g006.txt: g006 has no caption
    (src / "a.tar").write_bytes(whole[:header_at])
    r = ingest(src / "a.tar", small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)

    assert name == "g006.txt"
    assert reasons_by_key(r) == {"g006": "shard_truncated"}
    assert set(dataset_samples(ws)) == {f"g{i:03d}" for i in range(6)}
    assert r["damaged_shards"] == ["a.tar"]


def test_a_garbage_header_and_a_non_tar_never_refuse_the_good_shards(ws, tmp_path):
    src = tmp_path / "src"
    make_tar(src / "a.tar", good_members(6, "a"))
    make_tar(src / "b.tar", good_members(4, "b"))
    (src / "c.tar").write_bytes(b"this is not a tar at all\n" * 40)
    raw = bytearray((src / "a.tar").read_bytes())
    _, header_at, _ = member_offsets(src / "a.tar")[8]  # a004.jpg's header
    raw[header_at: header_at + 512] = bytes(range(256)) * 2
    (src / "a.tar").write_bytes(bytes(raw))
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)

    assert r["by_reason"] == {"shard_unreadable": 1}
    assert set(dataset_samples(ws)) == {f"a{i:03d}" for i in range(4)} | {f"b{i:03d}" for i in range(4)}
    assert r["damaged_shards"] == ["a.tar", "c.tar"]


# --------------------------------------------------------------------------- two images for one key


def test_two_images_for_one_key_are_one_duplicate_image_sample(ws, tmp_path):
    src = tmp_path / "src"
    good_folder(src, 5)
    (src / "x.jpg").write_bytes(jpeg_bytes())
    (src / "x.png").write_bytes(png_bytes())
    (src / "x.txt").write_text("which image?")
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)

    assert r["by_reason"] == {"duplicate_image": 1} and r["total"] == 6
    report = json.loads(Path(r["report"]).read_text())
    (x,) = report["samples"]
    assert x["key"] == "x" and "x.jpg" in x["detail"] and "x.png" in x["detail"]
    with tarfile.open(r["quarantine"]) as tf:
        assert sorted(n.rsplit("/", 1)[1] for n in tf.getnames()) == ["x.jpg", "x.png", "x.txt"]
    assert set(dataset_samples(ws)) == {f"g{i:03d}" for i in range(5)}


# --------------------------------------------------------------------------- captions


def test_hostile_captions(ws, tmp_path):
    src = tmp_path / "src"
    good_folder(src, 5)
    captions = {
        "nul": ("caption with a \x00 NUL".encode(), "caption_control_chars"),
        "esc": ("colour \x1b[31m red".encode(), "caption_control_chars"),
        "huge": (b"word " * 400_000, "caption_too_long"),  # 2 MB
        "latin1": ("une forêt rouge".encode("latin-1"), "caption_not_utf8"),
        "blank": (b" \t\n \r\n ", "caption_empty"),
    }
    for key, (data, _) in captions.items():
        (src / f"{key}.jpg").write_bytes(jpeg_bytes())
        (src / f"{key}.txt").write_bytes(data)
    (src / "multi.jpg").write_bytes(jpeg_bytes())
    (src / "multi.txt").write_bytes(b"a red square\r\non the left\tof a blue one\r\n")
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)

    assert reasons_by_key(r) == {k: reason for k, (_, reason) in captions.items()}
    got = dataset_samples(ws)
    assert set(got) == {f"g{i:03d}" for i in range(5)} | {"multi"}
    assert got["multi"]["txt"] == b"a red square\non the left\tof a blue one"


# --------------------------------------------------------------------------- images


def test_hostile_images_are_quarantined_and_odd_good_images_become_rgb(ws, tmp_path):
    src = tmp_path / "src"
    bad = {
        "zero": (b"", "jpg", "image_empty"),
        "trunc": (truncated_jpeg(), "jpg", "image_undecodable"),
        "text": (b"just some words, not an image\n", "jpg", "image_undecodable"),
        "bomb": (png_declaring(40000, 40000), "png", "image_too_large"),
        "eps": (image_bytes("RGB", "EPS"), "jpg", "image_undecodable"),  # never handed to Ghostscript
    }
    good = {
        "png_as_jpg": (png_bytes(), "jpg"),
        "cmyk": (image_bytes("CMYK", "JPEG"), "jpg"),
        "grey16": (image_bytes("I;16", "PNG"), "png"),
        "rgba": (image_bytes("RGBA", "PNG"), "png"),
        "webp": (image_bytes("RGB", "WEBP"), "webp"),
        "one_px": (image_bytes("RGB", "PNG", size=(1, 1)), "png"),
        "plain": (jpeg_bytes(), "jpg"),
    }
    src.mkdir()
    for key, (data, ext, *_) in {**bad, **good}.items():
        (src / f"{key}.{ext}").write_bytes(data)
        (src / f"{key}.txt").write_text(f"caption of {key}")
    assert len(bad["bomb"][0]) < 200
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)

    assert reasons_by_key(r) == {k: v[2] for k, v in bad.items()}
    assert r["good"] == len(good) and r["reencoded"] == len(good) - 1
    got = dataset_samples(ws)
    assert set(got) == set(good)
    assert got["plain"]["jpg"] == good["plain"][0]  # an RGB JPEG keeps its bytes
    for key, s in got.items():
        with Image.open(io.BytesIO(s["jpg"])) as im:
            assert im.format == "JPEG" and im.mode == "RGB", key
    with Image.open(io.BytesIO(got["grey16"]["jpg"])) as im:
        assert 140 < im.getpixel((0, 0))[0] < 170  # 40000/65535 of full scale, not clipped to white


def test_an_image_over_the_pixel_limit_but_under_pils_hard_limit_is_too_large(ws, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 is over it, under 2x it
    src = tmp_path / "src"
    good_folder(src, 3)
    (src / "big.png").write_bytes(image_bytes("RGB", "PNG", size=(40, 40)))
    (src / "big.txt").write_text("big")
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", max_bad_fraction=ACCEPT_ALL), ws)
    assert reasons_by_key(r) == {"big": "image_too_large"} and r["good"] == 3


# --------------------------------------------------------------------------- splits and paths


@pytest.mark.parametrize("n_good,fraction,want", [(1, 0.05, 1), (2, 0.05, 1), (26, 0.05, 2), (26, 0.5, 13),
                                                  (300, 0.05, 15), (10_000, 0.05, 50), (10_000, 0.0, 1)])
def test_val_quota(n_good, fraction, want):
    assert val_quota(n_good, fraction) == want


def test_a_small_user_set_gets_a_val_split(ws, tmp_path):
    src = tmp_path / "src"
    good_folder(src, 26)
    r = ingest(src, small_cfg(ws.home, source="path", name="mine", val_fraction=0.05), ws)
    assert r["added"]["val"] >= val_quota(26, 0.05) and r["added"]["train"] + r["added"]["val"] == 26
    val_keys = {s["__key__"] for p in shards.shard_paths(ws.dataset_dir("mine"), "val") for s in shards.read_samples(p)}
    assert len(val_keys) == r["added"]["val"]
    assert all(json.loads(s["json"])["split"] == "val" for p in shards.shard_paths(ws.dataset_dir("mine"), "val")
               for s in shards.read_samples(p))


def test_a_bad_path_fails_before_anything_is_created(tmp_path):
    from litops.core.component_cli import UserError
    from litops.data import add_and_version

    home = tmp_path / "home"
    cfg = small_cfg(home)  # synth source: a good path would generate the benchmark first
    (tmp_path / "notes.md").write_text("not a shard")
    for bad in (tmp_path / "nope", tmp_path / "notes.md"):
        with pytest.raises(UserError, match=str(bad.name)):
            add_and_version(str(bad), cfg)
    assert not home.exists()
