"""`litops data add PATH`: validate user image-caption pairs and add the good ones.

Input: a .tar shard, a folder of .tar shards, or a folder of `x.jpg|jpeg|png|webp` +
`x.txt` (+ optional `x.json`) pairs (subfolders included; both kinds may be mixed).

Every sample is checked; bad ones go to a quarantine shard with a report, outside the
dataset (`<data_repo>/quarantine/<dataset>/<ingest_id>/`), so they never change the data
version. If the bad share exceeds `data.max_bad_fraction`, nothing is added.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from litops.core import progress
from litops.core.component_cli import UserError
from litops.core.config import LitopsConfig
from litops.core.workspace import Workspace, resolve_home

from . import shards
from .metadata import read_dataset_json, write_dataset_json

REASONS = (
    "image_undecodable",
    "image_empty",
    "caption_empty",
    "caption_not_utf8",
    "caption_too_long",
    "missing_image",
    "missing_caption",
    "duplicate_key",
)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
KNOWN_EXTS = IMAGE_EXTS + ("txt", "json")
INGEST_PREFIX = "ingest"
REENCODE_QUALITY = 95


def quarantine_root(ws: Workspace, dataset_name: str) -> Path:
    """Quarantine lives beside the datasets, never inside a tracked dataset dir."""
    return ws.data_repo / "quarantine" / dataset_name


@dataclass
class RawSample:
    key: str
    origin: str  # where it came from (file path or tar:member prefix), for the report
    files: dict[str, bytes] = field(default_factory=dict)  # normalised ext -> bytes
    names: dict[str, str] = field(default_factory=dict)  # normalised ext -> original name
    duplicate: bool = False


def _norm_ext(ext: str) -> str | None:
    e = ext.lower()
    if e in IMAGE_EXTS:
        return "image"
    if e in ("txt", "json"):
        return e
    return None


class _Collector:
    """Groups files into samples by key, in input order; repeated keys become duplicates."""

    def __init__(self) -> None:
        self.samples: list[RawSample] = []
        self.seen: set[str] = set()
        self.ignored: list[str] = []
        self._open: dict[str, RawSample] = {}  # samples of the current source, by key

    def new_source(self) -> None:
        for k in self._open:
            self.seen.add(k)
        self._open = {}

    def add(self, name: str, data: bytes, origin: str) -> None:
        kx = shards.split_key(name)
        slot = _norm_ext(kx[1]) if kx else None
        if kx is None or slot is None:
            self.ignored.append(f"{origin}:{name}" if origin != name else name)
            return
        key = kx[0]
        s = self._open.get(key)
        if s is None or slot in s.files:
            # A new sample: a key seen in an earlier source, or a second image/caption for
            # a key of this source, is a duplicate key.
            s = RawSample(key=key, origin=origin, duplicate=(key in self.seen or s is not None))
            self.samples.append(s)
            self._open[key] = s  # later members of this key attach to the newest sample
        s.files[slot] = data
        s.names[slot] = name


def collect(path: Path) -> _Collector:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file or folder: {path}")
    col = _Collector()
    if path.is_file():
        if not _is_tar(path):
            raise UserError(f"{path} is not a .tar shard or a folder")
        _read_tar(col, path, path.name)
        return col
    files = sorted(p for p in path.rglob("*") if p.is_file())
    tars = [p for p in files if _is_tar(p)]
    loose = [p for p in files if not _is_tar(p)]
    for t in tars:
        _read_tar(col, t, str(t.relative_to(path)))
    col.new_source()
    for p in loose:
        rel = p.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue  # hidden files (e.g. .DS_Store)
        col.add(rel, p.read_bytes(), rel)
    col.new_source()
    return col


def _is_tar(p: Path) -> bool:
    n = p.name.lower()
    return n.endswith((".tar", ".tar.gz", ".tgz"))


def _read_tar(col: _Collector, path: Path, label: str) -> None:
    col.new_source()
    try:
        for name, data in shards.iter_tar_members(path):
            col.add(name, data, f"{label}:{name}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"cannot read tar shard {label}: {e}") from None
    col.new_source()


# --------------------------------------------------------------------------- checks


def check_image(data: bytes) -> tuple[str | None, str | None, str]:
    """(reason or None, PIL format, detail). Decodes the whole image (catches truncation)."""
    if len(data) == 0:
        return "image_empty", None, "zero-byte image"
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()
            if im.width < 1 or im.height < 1:
                return "image_undecodable", fmt, "image has no pixels"
    except Exception as e:  # noqa: BLE001 - any decoder failure means undecodable
        return "image_undecodable", None, f"{type(e).__name__}: {e}"[:200]
    return None, fmt, ""


def check_caption(data: bytes, max_chars: int) -> tuple[str | None, str, str]:
    """(reason or None, cleaned caption, detail)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return "caption_not_utf8", "", str(e)[:200]
    text = text.lstrip("\ufeff").strip()
    if not text:
        return "caption_empty", "", "empty caption"
    if len(text) > max_chars:
        return "caption_too_long", "", f"{len(text)} > {max_chars} characters"
    return None, text, ""


def reencode_jpeg(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGB", rgba.size, (255, 255, 255))
            bg.paste(rgba, mask=rgba.split()[-1])
            rgb = bg
        else:
            rgb = im.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=REENCODE_QUALITY, optimize=False)
    return buf.getvalue()


def route_split(key: str, val_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return "val" if h / 2**64 < val_fraction else "train"


# --------------------------------------------------------------------------- ingest


def _progress(samples: list, desc: str):
    bar = progress.start(desc, len(samples), unit="sample")
    for s in samples:
        yield s
        bar.update()
    bar.close()


def ingest_id_of(samples: list[RawSample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(s.key.encode("utf-8", "surrogateescape") + b"\0")
        for slot in sorted(s.files):
            h.update(slot.encode() + b"\0" + hashlib.sha256(s.files[slot]).digest())
    return h.hexdigest()[:12]


def format_report_table(report: dict[str, Any]) -> str:
    lines = [
        f"ingest {report['source']}: {report['total']} samples, {report['good']} good, "
        f"{report['bad']} bad ({report['bad_fraction']:.1%}, limit {report['max_bad_fraction']:.1%})",
    ]
    if report["bad"]:
        lines.append(f"  {'reason':<20} {'count':>7}")
        for r in REASONS:
            if report["by_reason"].get(r):
                lines.append(f"  {r:<20} {report['by_reason'][r]:>7}")
        lines.append(f"  quarantine: {report['quarantine']}")
    return "\n".join(lines)


def ingest(path: str | Path, cfg: LitopsConfig, ws: Workspace | None = None, quiet: bool = False) -> dict[str, Any]:
    """Validate and add the samples at `path` to dataset cfg.data.name.

    Returns {"name", "dataset_dir", "ingest_id", "total", "good", "bad", "bad_fraction",
    "by_reason", "added": {"train": n, "val": n}, "reencoded", "quarantine", "report",
    "splits"}. Raises UserError (nothing added) if the bad share is over the limit.
    """
    ws = ws or Workspace(resolve_home(cfg.home))
    data = cfg.data
    src = Path(path).expanduser().resolve()
    dataset_dir = ws.dataset_dir(data.name)

    # The dataset must exist first (keys already in it count as duplicates).
    meta = read_dataset_json(dataset_dir)
    if meta is None and data.source == "synth":
        from .synth import synthesize

        synthesize(cfg, ws)
        meta = read_dataset_json(dataset_dir)
    existing = shards.dataset_keys(dataset_dir) if meta is not None else set()

    col = collect(src)
    samples = col.samples
    if not samples:
        raise UserError(f"no samples found in {src} (expected .tar shards or image + .txt pairs)")
    ingest_id = ingest_id_of(samples)

    by_reason = {r: 0 for r in REASONS}
    bad: list[tuple[RawSample, str, str]] = []
    good: list[tuple[str, dict[str, bytes]]] = []
    reencoded = json_replaced = 0
    attr_values: dict[str, list[str]] = {}
    for s in _progress(samples, f"ingest {src.name}"):
        reason, detail = None, ""
        if s.duplicate or s.key in existing:
            reason, detail = "duplicate_key", ("key already in the dataset" if s.key in existing else "key repeated in the input")
        elif "image" not in s.files:
            reason, detail = "missing_image", "no image for this key"
        elif "txt" not in s.files:
            reason, detail = "missing_caption", "no .txt caption for this key"
        if reason is None:
            reason, fmt, detail = check_image(s.files["image"])
        if reason is None:
            reason, caption, detail = check_caption(s.files["txt"], data.max_caption_chars)
        if reason is not None:
            by_reason[reason] += 1
            bad.append((s, reason, detail))
            continue
        split = route_split(s.key, data.val_fraction)
        img = s.files["image"]
        if fmt != "JPEG":
            img = reencode_jpeg(img)
            reencoded += 1
        meta_json: dict[str, Any] = {}
        if "json" in s.files:
            try:
                obj = json.loads(s.files["json"].decode("utf-8"))
                if isinstance(obj, dict):
                    meta_json = obj
                else:
                    json_replaced += 1
            except (UnicodeDecodeError, ValueError):
                json_replaced += 1
        for o in meta_json.get("objects", []) if isinstance(meta_json.get("objects"), list) else []:
            if isinstance(o, dict):
                for k, v in o.items():
                    if isinstance(v, str) and v not in attr_values.setdefault(k, []):
                        attr_values[k].append(v)
        meta_json["split"] = split
        meta_json.setdefault("source", "user")
        good.append((split, {"__key__": s.key, "jpg": img, "txt": caption.encode("utf-8"), "json": shards.dump_json(meta_json)}))

    total, n_bad = len(samples), len(bad)
    frac = n_bad / total
    qdir = quarantine_root(ws, data.name) / ingest_id
    report = {
        "ingest_id": ingest_id,
        "source": str(src),
        "dataset": data.name,
        "total": total,
        "good": len(good),
        "bad": n_bad,
        "bad_fraction": round(frac, 6),
        "max_bad_fraction": data.max_bad_fraction,
        "by_reason": by_reason,
        "reencoded": reencoded,
        "json_replaced": json_replaced,
        "ignored_files": sorted(col.ignored)[:100],
        "n_ignored_files": len(col.ignored),
        "accepted": frac <= data.max_bad_fraction,
        "quarantine": str(qdir / "quarantine.tar") if n_bad else None,
        "samples": [{"key": s.key, "reason": r, "detail": d, "origin": s.origin} for s, r, d in bad],
        "added": {"train": 0, "val": 0},
    }
    qdir.mkdir(parents=True, exist_ok=True)
    if n_bad:
        members, used = [], set()
        for i, (s, r, _) in enumerate(bad):
            for slot in sorted(s.files):
                name = f"{r}/{i:06d}/{s.names[slot]}"
                if name not in used:
                    used.add(name)
                    members.append((name, s.files[slot]))
        shards.write_tar(qdir / "quarantine.tar", members)

    def write_report() -> None:
        (qdir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")

    if not quiet:
        print(format_report_table(report), file=sys.stderr)
    if not report["accepted"]:
        write_report()
        counts = ", ".join(f"{r}={n}" for r, n in by_reason.items() if n)
        raise UserError(
            f"{n_bad} of {total} samples in {src} are bad ({frac:.1%} > max_bad_fraction {data.max_bad_fraction:.1%}): "
            f"{counts}; nothing was added; quarantine and report in {qdir}"
        )

    # Accepted: write the good samples as new shards of the dataset.
    if meta is None:
        meta = {
            "name": data.name,
            "source": "path",
            "params": {},
            "attributes": {},
            "heldout_combinations": [],
            "splits": {s: 0 for s in shards.SPLITS},
            "ingested": [],
        }
    added = {"train": 0, "val": 0}
    for split in ("train", "val"):
        rows = [(f["__key__"], {k: v for k, v in f.items() if k != "__key__"}) for sp, f in good if sp == split]
        rows.sort(key=lambda kv: kv[0])
        if rows:
            shards.write_shards(dataset_dir / split, rows, data.shard_size, prefix=f"{INGEST_PREFIX}-{ingest_id}")
        added[split] = len(rows)
    for split, n in added.items():
        meta["splits"][split] = meta["splits"].get(split, 0) + n
    meta.setdefault("ingested", []).append({"id": ingest_id, "source": src.name, "splits": added})
    if meta.get("source") == "path" and attr_values:
        attrs = meta.setdefault("attributes", {})
        for k, vals in attr_values.items():
            attrs.setdefault(k, [])
            attrs[k] += [v for v in vals if v not in attrs[k]]
    write_dataset_json(dataset_dir, meta)
    report["added"] = added
    write_report()
    return {
        "name": data.name,
        "dataset_dir": str(dataset_dir),
        "ingest_id": ingest_id,
        "total": total,
        "good": len(good),
        "bad": n_bad,
        "bad_fraction": report["bad_fraction"],
        "by_reason": {r: n for r, n in by_reason.items() if n},
        "added": added,
        "reencoded": reencoded,
        "quarantine": report["quarantine"],
        "report": str(qdir / "report.json"),
        "splits": meta["splits"],
    }
