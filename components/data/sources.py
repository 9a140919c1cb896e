"""What a `data add` input names, as an ordered list of units of work (one shard each).

Inputs: a local `.tar`; a folder of tars and/or image + caption files; a brace-expanded list
of tars (`shards/{00000..00099}.tar`, img2dataset's naming); `s3://bucket/prefix` (every tar
under the prefix) or `s3://bucket/shards/{00000..00099}.tar`, through `storage.endpoint_url`
and `storage.region`, with credentials only from the environment (as DVC's S3 remote).

A unit is a tar or a chunk of `shard_size` loose keys; every file of one key lands in the
same chunk, so a key repeated inside a folder is still found inside one unit. Units are
small picklable records: a worker process opens one with `unit_entries`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from braceexpand import braceexpand

from litops.core.component_cli import UserError
from litops.core.s3_retries import S3Retries, unavailable
from litops.core.storage import s3_endpoint

from . import shards
from .reading import Entry, folder_entry, folder_files, check_input, is_tar, iter_tar
from .sample_checks import check_name

S3_SCHEME = "s3://"


@dataclass(frozen=True)
class Unit:
    label: str  # names the unit in origins, damaged-shard lists and the progress bar
    kind: str  # tar | loose | s3
    path: str = ""  # tar file, or the folder of loose files
    files: tuple[str, ...] = ()  # loose: the chunk's files, in sorted order
    bucket: str = ""
    key: str = ""
    endpoint: str | None = None
    region: str = ""
    retries: S3Retries = S3Retries()


def is_brace_pattern(spec: str) -> bool:
    return "{" in spec and "}" in spec


def plan_units(spec: str | Path, cfg) -> list[Unit]:
    """The input's units in a fixed order, or a one-line UserError; reads no sample bytes."""
    text = str(spec)
    if text.startswith(S3_SCHEME):
        return _s3_units(text, cfg)
    if is_brace_pattern(text):
        return [_tar_unit(check_input(p), p) for p in braceexpand(text)]
    src = check_input(spec)
    if src.is_file():
        return [_tar_unit(src, src.name)]
    tars, loose = folder_files(src)
    units = [_tar_unit(t, t.relative_to(src).as_posix()) for t in tars]
    return units + _loose_units(src, [p for p in loose if not is_index_file(p.name)], cfg.data.shard_size)


def is_index_file(name: str) -> bool:
    """A manifest, an offset index or an img2dataset stats file: files about the shards beside them
    (`litops data index`, img2dataset), not samples, so never a bad sample."""
    return name == "manifest.json" or name.endswith((".tar.idx", "_stats.json"))


def _is_local_path(text: str) -> bool:
    return not (text.startswith(S3_SCHEME) or is_brace_pattern(text))


def source_name(spec: str | Path) -> str:
    """How the dataset metadata names the input: a local path by its name, else as given."""
    return Path(spec).expanduser().resolve().name if _is_local_path(str(spec)) else str(spec)


def source_path(spec: str | Path) -> str:
    """How the report names the input: a local path resolved, else as given."""
    return str(Path(spec).expanduser().resolve()) if _is_local_path(str(spec)) else str(spec)


def _tar_unit(path: Path, label: str) -> Unit:
    if not path.is_file() or not is_tar(path):
        raise UserError(f"{path} is not a .tar shard")
    return Unit(label=label, kind="tar", path=str(path))


def _loose_key(root: Path, p: Path) -> str:
    """The key a loose file groups under (its normalised name up to the first dot)."""
    rel = p.relative_to(root).as_posix()
    _, _, name = check_name(rel)
    kx = shards.split_key(name)
    return kx[0] if kx else name


def _loose_units(root: Path, loose: list[Path], shard_size: int) -> list[Unit]:
    by_key: dict[str, list[Path]] = {}
    for p in loose:
        by_key.setdefault(_loose_key(root, p), []).append(p)
    keys = list(by_key)
    units = []
    for start in range(0, len(keys), shard_size):
        files = sorted(p for k in keys[start:start + shard_size] for p in by_key[k])
        units.append(Unit(label=root.name, kind="loose", path=str(root), files=tuple(str(p) for p in files)))
    return units


# --------------------------------------------------------------------------- S3


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise UserError(f"{url} names no bucket (expected s3://bucket/prefix)")
    return bucket, key


def _s3_units(url: str, cfg) -> list[Unit]:
    bucket, pattern = _split_s3(url)
    endpoint, region, retries = s3_endpoint(cfg), cfg.storage.region, S3Retries.from_config(cfg)
    client = retries.client(endpoint, region)
    if is_brace_pattern(pattern):
        keys = list(braceexpand(pattern))
        present = set(_list_keys(client, bucket, os.path.commonprefix(keys), url))
        missing = [k for k in keys if k not in present]
        if missing:
            raise UserError(f"{len(missing)} of {len(keys)} shards are missing from s3://{bucket}, first: {missing[0]}")
    else:
        keys = sorted(k for k in _list_keys(client, bucket, pattern, url) if is_tar(Path(k)))
        if not keys:
            raise UserError(f"no .tar shards under {url}")
    return [Unit(label=f"{S3_SCHEME}{bucket}/{k}", kind="s3", bucket=bucket, key=k, endpoint=endpoint, region=region,
                 retries=retries) for k in keys]


def _list_keys(client, bucket: str, prefix: str, url: str) -> list[str]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as e:
        raise unavailable(url, e) or UserError(f"cannot list {url}: {e}") from None


# --------------------------------------------------------------------------- reading a unit


@contextmanager
def unit_entries(unit: Unit, ignored: list[str], scratch: Path) -> Iterator[Iterator[Entry]]:
    """The unit's entries; an S3 shard is first downloaded into `scratch` (one shard on disk)."""
    if unit.kind == "tar":
        yield iter_tar(Path(unit.path), unit.label)
    elif unit.kind == "loose":
        yield _loose_entries(Path(unit.path), unit.files, ignored)
    else:
        fd, tmp = tempfile.mkstemp(suffix=".tar", dir=scratch)
        os.close(fd)
        try:
            _download(unit, tmp)
            yield iter_tar(Path(tmp), unit.label)
        finally:
            os.unlink(tmp)


@functools.lru_cache(maxsize=4)
def _client(endpoint: str | None, region: str, retries: S3Retries):
    """One client per process and store: a boto3 session's first client loads the S3 model (~0.1-0.4 s)."""
    return retries.client(endpoint, region)


def _download(unit: Unit, dest: str) -> None:
    """Retries: botocore's per request, boto3's transfer manager's for a body cut short (litops.core.s3_retries)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _client(unit.endpoint, unit.region, unit.retries).download_file(unit.bucket, unit.key, dest)
    except Exception as e:
        failure = unavailable(unit.label, e)
        if failure is None and not isinstance(e, (BotoCoreError, ClientError)):
            raise
        raise failure or UserError(f"cannot download {unit.label}: {e}") from None


def _loose_entries(root: Path, files: tuple[str, ...], ignored: list[str]) -> Iterator[Entry]:
    for f in files:
        p = Path(f)
        e = folder_entry(root, p)
        if e is None:
            ignored.append(f"{p.relative_to(root).as_posix()} (not a regular file)")
        else:
            yield e
