"""`litops data add PATH`: validate user image-caption pairs and add the good ones.

Input: a .tar shard, a folder of .tar shards, or a folder of `x.jpg|jpeg|png|webp` +
`x.txt` (+ optional `x.json`) pairs (subfolders included; both kinds may be mixed); a
brace-expanded shard list; `s3://bucket/prefix` (see `sources`). The input is checked
before anything is created or generated.

Streaming: the input is cut into units (one tar, or `data.shard_size` loose keys), checked
in `data.workers` processes (`unit_pool`), each unit's samples spooled to disk; the parent
keeps keys and verdicts only (`unit_merge`) and then writes the output shards in input order
(`ingest_output`). Peak memory is about workers x one input shard. The ingest id is the
content's hash, so adding the same content again is a no-op ("already ingested").

Every sample is checked; bad ones go to a quarantine shard with a report, outside the
dataset (`<data_repo>/quarantine/<dataset>/<ingest_id>/`), so they never change the data
version. If the bad share exceeds `data.max_bad_fraction`, nothing is added.

Hard rules (reasons in REASONS): keys are normalised (`./a//b` -> `a/b`) and a key with
`..`, an absolute path, a backslash, a NUL or control character is `key_unsafe`; links in
folders and tars are never followed (`link`); a damaged tar keeps every whole sample read
before the damage (`shard_truncated` for the partial one, `shard_unreadable` when nothing
could be read) and never refuses the other shards. Name rules live in `reading` and
`sample_checks`; caption and image rules in `sample_checks`.

Splits: a key's hash routes it to val with probability `data.val_fraction`; when that gives
fewer than `val_quota(n)` = min(50, ceil(val_fraction * n)) (at least 1, leaving 1 for
train) of an ingest's n good samples, the train keys hashed nearest the threshold move to val.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from litops.core import progress
from litops.core.component_cli import UserError
from litops.core.config import LitopsConfig
from litops.core.workspace import Workspace, resolve_home

from . import shards
from .indexing import refresh_manifest
from .ingest_output import GoodWriter, write_quarantine
from .metadata import read_dataset_json, write_dataset_json
from .sources import Unit, plan_units, source_name, source_path
from .splits import MIN_VAL_SAMPLES, assign_splits, route_split, val_quota  # noqa: F401 - the ingest's split rule
from .unit_merge import Merged
from .unit_pool import resolve_workers, run_units, spool_path

REASONS = (
    "key_unsafe",
    "link",
    "shard_truncated",
    "shard_unreadable",
    "image_undecodable",
    "image_empty",
    "image_too_large",
    "caption_empty",
    "caption_not_utf8",
    "caption_control_chars",
    "caption_too_long",
    "missing_image",
    "missing_caption",
    "duplicate_image",
    "duplicate_key",
)
INGEST_PREFIX = "ingest"
def quarantine_root(ws: Workspace, dataset_name: str) -> Path:
    """Quarantine lives beside the datasets, never inside a tracked dataset dir."""
    return ws.data_repo / "quarantine" / dataset_name


def format_report_table(report: dict[str, Any]) -> str:
    lines = [
        f"ingest {report['source']}: {report['total']} samples, {report['good']} good, "
        f"{report['bad']} bad ({report['bad_fraction']:.1%}, limit {report['max_bad_fraction']:.1%})",
    ]
    if report["bad"]:
        lines.append(f"  {'reason':<22} {'count':>7}")
        for r in REASONS:
            if report["by_reason"].get(r):
                lines.append(f"  {r:<22} {report['by_reason'][r]:>7}")
        lines.append(f"  quarantine: {report['quarantine']}")
    for shard in report.get("damaged_shards", []):
        lines.append(f"  damaged shard (samples after the damage are not counted): {shard}")
    return "\n".join(lines)


def _new_dataset_meta(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "source": "path",
        "params": {},
        "attributes": {},
        "heldout_combinations": [],
        "splits": {s: 0 for s in shards.SPLITS},
        "ingested": [],
    }


def _update_meta(meta: dict[str, Any], added: dict[str, int], ingest_id: str, src: str,
                 attr_values: dict[str, list[str]]) -> None:
    for split, n in added.items():
        meta["splits"][split] = meta["splits"].get(split, 0) + n
    meta.setdefault("ingested", []).append({"id": ingest_id, "source": src, "splits": added})
    if meta.get("source") == "path" and attr_values:
        attrs = meta.setdefault("attributes", {})
        for k, vals in attr_values.items():
            attrs.setdefault(k, [])
            attrs[k] += [v for v in vals if v not in attrs[k]]


def _printable(text: str) -> str:
    """Text a UTF-8 report can hold: undecodable file-name bytes are shown as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _existing_dataset(cfg: LitopsConfig, ws: Workspace, dataset_dir: Path) -> tuple[dict | None, set[str]]:
    """The dataset's metadata and keys (keys already in it count as duplicates); a synth
    dataset is generated first."""
    meta = read_dataset_json(dataset_dir)
    if meta is None and cfg.data.source == "synth":
        from .synth import synthesize

        synthesize(cfg, ws)
        meta = read_dataset_json(dataset_dir)
    return meta, (shards.dataset_keys(dataset_dir) if meta is not None else set())



def _check_all(units: list[Unit], merged: Merged, writer: GoodWriter, cfg: LitopsConfig, spool_dir: Path,
               label: str) -> None:
    """Check every unit in `data.workers` processes and write its good samples as it arrives;
    a bar shows shards, samples/s and bad samples so far."""
    bar = progress.start(f"ingest {label}", len(units), unit="shard")
    t0 = time.monotonic()
    for unit, result in enumerate(run_units(units, cfg.data.max_caption_chars, spool_dir, cfg.data.workers)):
        n_bad = len(merged.bad)
        merged.add_unit(result)
        spool = spool_path(spool_dir, unit)
        writer.add_unit(spool, merged.dropped.get(unit, set()))
        if len(merged.bad) == n_bad:
            spool.unlink()  # nothing of this unit goes to the quarantine
        rate = merged.total / max(time.monotonic() - t0, 1e-9)
        bar.update(1, samples=merged.total, samples_per_s=round(rate, 1), bad=len(merged.bad))
    bar.close()


def _build_report(src: str, cfg: LitopsConfig, ingest_id: str, merged: Merged, qdir: Path) -> dict[str, Any]:
    by_reason = {r: 0 for r in REASONS}
    for b in merged.bad:
        by_reason[b["reason"]] += 1
    frac = len(merged.bad) / merged.total
    return {
        "ingest_id": ingest_id,
        "source": src,
        "dataset": cfg.data.name,
        "total": merged.total,
        "good": merged.good,
        "bad": len(merged.bad),
        "bad_fraction": round(frac, 6),
        "max_bad_fraction": cfg.data.max_bad_fraction,
        "by_reason": by_reason,
        "reencoded": merged.reencoded,
        "json_replaced": merged.json_replaced,
        "ignored_files": sorted(merged.ignored)[:100],
        "n_ignored_files": len(merged.ignored),
        "damaged_shards": sorted(set(merged.damaged)),
        "accepted": frac <= cfg.data.max_bad_fraction,
        "quarantine": str(qdir / "quarantine.tar") if merged.bad else None,
        "samples": [{k: _printable(b[k]) for k in ("key", "reason", "detail", "origin")} for b in merged.bad],
        "added": {"train": 0, "val": 0},
    }


def _result(cfg: LitopsConfig, dataset_dir: Path, report: dict[str, Any], qdir: Path, splits: dict,
            already: bool) -> dict[str, Any]:
    return {
        "name": cfg.data.name,
        "dataset_dir": str(dataset_dir),
        "ingest_id": report["ingest_id"],
        "already_ingested": already,
        "total": report["total"],
        "good": report["good"],
        "bad": report["bad"],
        "bad_fraction": report["bad_fraction"],
        "by_reason": {r: n for r, n in report["by_reason"].items() if n},
        "added": {"train": 0, "val": 0} if already else report["added"],
        "reencoded": report["reencoded"],
        "damaged_shards": report["damaged_shards"],
        "quarantine": report["quarantine"],
        "report": str(qdir / "report.json"),
        "splits": splits,
    }


def _already_ingested(meta: dict | None, ingest_id: str) -> bool:
    return meta is not None and any(e.get("id") == ingest_id for e in meta.get("ingested", []))


def _write_report(qdir: Path, report: dict[str, Any]) -> None:
    text = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (qdir / "report.json").write_text(text, encoding="utf-8")


def _reject(src: str, cfg: LitopsConfig, report: dict[str, Any], qdir: Path) -> UserError:
    counts = ", ".join(f"{r}={n}" for r, n in report["by_reason"].items() if n)
    return UserError(
        f"{report['bad']} of {report['total']} samples in {src} are bad ({report['bad_fraction']:.1%} > "
        f"max_bad_fraction {cfg.data.max_bad_fraction:.1%}): {counts}; nothing was added; "
        f"quarantine and report in {qdir}"
    )


def _no_op(cfg: LitopsConfig, dataset_dir: Path, meta: dict, ingest_id: str, qdir: Path, quiet: bool) -> dict[str, Any]:
    """The result of adding content that is already in the dataset: the first add's report."""
    report = json.loads((qdir / "report.json").read_text(encoding="utf-8"))
    if not quiet:
        print(f"already ingested: this content was added to {cfg.data.name} as ingest {ingest_id} "
              f"(from {report['source']}); nothing added", file=sys.stderr)
    return _result(cfg, dataset_dir, report, qdir, meta["splits"], already=True)


def ingest(path: str | Path, cfg: LitopsConfig, ws: Workspace | None = None, quiet: bool = False) -> dict[str, Any]:
    """Validate and add the samples at `path` to dataset cfg.data.name.

    Returns {"name", "dataset_dir", "ingest_id", "already_ingested", "total", "good", "bad",
    "bad_fraction", "by_reason", "added": {"train": n, "val": n}, "reencoded", "quarantine",
    "report", "splits"}. Raises UserError (nothing added) if the bad share is over the limit.
    """
    units = plan_units(path, cfg)  # before anything is created or generated
    resolve_workers(cfg.data.workers)
    src = source_name(path)
    ws = ws or Workspace(resolve_home(cfg.home))
    dataset_dir = ws.dataset_dir(cfg.data.name)
    meta, existing = _existing_dataset(cfg, ws, dataset_dir)
    spool_dir = quarantine_root(ws, cfg.data.name) / f".spool-{uuid.uuid4().hex}"
    try:
        return _ingest_units(units, source_path(path), src, cfg, dataset_dir, meta, existing, spool_dir, quiet)
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)


def _ingest_units(units: list[Unit], spec: str, src: str, cfg: LitopsConfig, dataset_dir: Path, meta: dict | None,
                  existing: set[str], spool_dir: Path, quiet: bool) -> dict[str, Any]:
    merged = Merged(existing=existing)
    writer = GoodWriter(spool_dir / "out", cfg.data.shard_size, cfg.data.val_fraction, MIN_VAL_SAMPLES)
    _check_all(units, merged, writer, cfg, spool_dir, src)
    if not merged.total:
        raise UserError(f"no samples found in {spec} (expected .tar shards or image + .txt pairs)")
    ingest_id = merged.ingest_id
    qdir = spool_dir.parent / ingest_id
    if _already_ingested(meta, ingest_id) and (qdir / "report.json").is_file():
        return _no_op(cfg, dataset_dir, meta, ingest_id, qdir, quiet)
    report = _build_report(spec, cfg, ingest_id, merged, qdir)
    qdir.mkdir(parents=True, exist_ok=True)
    if merged.bad:
        write_quarantine(qdir / "quarantine.tar", merged, spool_dir)
    if not quiet:
        print(format_report_table(report), file=sys.stderr)
    if not report["accepted"]:
        _write_report(qdir, report)
        raise _reject(spec, cfg, report, qdir)
    meta = meta if meta is not None else _new_dataset_meta(cfg.data.name)
    report["added"] = writer.finish(dataset_dir, prefix=f"{INGEST_PREFIX}-{ingest_id}")
    refresh_manifest(dataset_dir)  # new shards have new names; the others keep their entries
    _update_meta(meta, report["added"], ingest_id, src, merged.attributes)
    write_dataset_json(dataset_dir, meta)
    _write_report(qdir, report)
    return _result(cfg, dataset_dir, report, qdir, meta["splits"], already=False)
