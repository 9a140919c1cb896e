"""One call per CLI subcommand: what the flows (and `litops data ...`) run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from litops.core.component_cli import UserError
from litops.core.config import LitopsConfig
from litops.core.storage import dvc_remote
from litops.core.workspace import Workspace, resolve_home
from litops.core.workspace import tracking_uri as default_tracking_uri

from .metadata import read_dataset_json
from .versioning import DataRepo


def workspace_of(cfg: LitopsConfig, ws: Workspace | None = None) -> Workspace:
    return ws or Workspace(resolve_home(cfg.home))


def data_repo(cfg: LitopsConfig, ws: Workspace) -> DataRepo:
    """The data repo with the remote the config names: <home>/dvc-remote, or S3 for storage=s3."""
    remote = dvc_remote(cfg, str(ws.dvc_remote))
    url = remote.pop("url")
    return DataRepo(ws, remote_url=url, remote_options=remote)


def _version(cfg: LitopsConfig, ws: Workspace, extra: dict[str, Any], t0: float) -> dict[str, Any]:
    v = data_repo(cfg, ws).version(cfg.data.name)
    meta = read_dataset_json(ws.dataset_dir(cfg.data.name)) or {}
    out = dict(extra)
    out.update(v)
    out["splits"] = meta.get("splits", {})
    out["source"] = meta.get("source")
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def synth_and_version(cfg: LitopsConfig, ws: Workspace | None = None, force: bool = False) -> dict[str, Any]:
    """`data synth`: generate the embedded benchmark (skipped if current), then version it.

    Keys: name, data_version, dataset_dir, committed, git_sha, pushed, generated, splits,
    source, synth_seconds, seconds.
    """
    from .synth import synthesize

    t0 = time.perf_counter()
    ws = workspace_of(cfg, ws)
    s = synthesize(cfg, ws, force=force)
    return _version(cfg, ws, {"generated": s["generated"], "synth_seconds": s["seconds"]}, t0)


def add_in_place_and_version(source: str, cfg: LitopsConfig, ws: Workspace | None = None) -> dict[str, Any]:
    """`data add s3://bucket/prefix --in-place`: check and index the shards where they are, then version
    the dataset folder (manifest.json + dataset.json). Raises UserError above data.max_bad_fraction.

    Keys: those of `synth_and_version` (less generated/synth_seconds) plus manifest, digest, total,
    good, bad, bad_fraction, by_reason, excluded, in_place.
    """
    from litops.core.shard_index import StorageOptions

    from .in_place import add_in_place

    t0 = time.perf_counter()
    ws = workspace_of(cfg, ws)
    r = add_in_place(source, cfg, ws, StorageOptions.from_config(cfg))
    r.pop("splits", None)
    return _version(cfg, ws, r, t0)


def add_and_version(path: str, cfg: LitopsConfig, ws: Workspace | None = None) -> dict[str, Any]:
    """`data add PATH`: ingest user samples, then version. Raises UserError if rejected.

    Keys: those of `synth_and_version` (less generated/synth_seconds) plus ingest_id,
    total, good, bad, bad_fraction, by_reason, added, reencoded, quarantine, report,
    already_ingested (True when the same content was added before: nothing new is written).
    """
    from .ingestion import ingest
    from .sources import plan_units

    t0 = time.perf_counter()
    plan_units(path, cfg)  # a bad path fails before the workspace is touched
    ws = workspace_of(cfg, ws)
    bucket = (read_dataset_json(ws.dataset_dir(cfg.data.name)) or {}).get("in_place")
    if bucket:  # local shards beside a manifest of a bucket's shards: the manifest would drop one set
        raise UserError(f"dataset '{cfg.data.name}' stays in {bucket}: add the shards there and run "
                        f"`litops data add {bucket} --in-place`, or choose another data.name")
    r = ingest(path, cfg, ws)
    r.pop("splits", None)
    return _version(cfg, ws, r, t0)


def prepare(cfg: LitopsConfig, ws: Workspace | None = None) -> dict[str, Any]:
    """`data version`: for a synth source, (re)generate if missing or stale; then version.

    For a path source the dataset must exist (built by `data add`). Keys as
    `synth_and_version` (generated is False for a path source).
    """
    t0 = time.perf_counter()
    ws = workspace_of(cfg, ws)
    extra: dict[str, Any] = {"generated": False}
    if cfg.data.source == "synth":
        from .synth import synthesize

        s = synthesize(cfg, ws)
        extra = {"generated": s["generated"], "synth_seconds": s["seconds"]}
    elif cfg.data.source != "path":
        from litops.core.config import ConfigError

        raise ConfigError(f"data.source must be 'synth' or 'path', got {cfg.data.source!r}")
    elif (meta := read_dataset_json(ws.dataset_dir(cfg.data.name))) is None:
        raise UserError(f"dataset '{cfg.data.name}' does not exist yet: add data with `litops data add PATH`")
    elif meta.get("in_place"):
        from litops.core.shard_index import StorageOptions

        from .in_place import verify_in_place

        # the version names the bucket's objects by ETag: one changed since must not be trained on under it
        verify_in_place(ws.dataset_dir(cfg.data.name), StorageOptions.from_config(cfg))
    return _version(cfg, ws, extra, t0)


def pull(cfg: LitopsConfig, ws: Workspace | None = None, data_version: str | None = None) -> dict[str, Any]:
    """`data pull`: restore the dataset (optionally a given version) from the DVC remote.

    Keys: name, data_version, dataset_dir, fetched, git_sha, splits, seconds.
    """
    ws = workspace_of(cfg, ws)
    r = data_repo(cfg, ws).pull(cfg.data.name, data_version=data_version)
    r["splits"] = (read_dataset_json(ws.dataset_dir(cfg.data.name)) or {}).get("splits", {})
    return r


def index_dataset(source: str, cfg: LitopsConfig, split: str | None = None) -> dict[str, Any]:
    """`data index SOURCE`: write the shard manifest and offset indexes of the shards in a folder or an
    s3:// prefix (through the config's storage endpoint and region). Raises UserError on a bad source or
    an img2dataset stats count that disagrees with a tar.

    Keys: source, manifest (its URL), digest, splits {split: {shards, samples, bytes}}, indexed, reused,
    written, seconds.
    """
    from litops.core.shard_index import StorageOptions

    from .indexing import index_source

    return index_source(source, StorageOptions.from_config(cfg), split)


def checkout(cfg: LitopsConfig, ref: str, ws: Workspace | None = None, tracking_uri: str = "") -> dict[str, Any]:
    """`data checkout --version REF`: restore a data version (`<md5>.dir`), or the one a registered model
    version was trained on (`MODEL@ALIAS`, `MODEL/N`), into its own folder; the data repo is left alone.

    Keys: name, data_version, dataset_dir, fetched, seconds, ref, splits; for a model reference also
    model, model_version, run_id.
    """
    from . import model_refs

    ws = workspace_of(cfg, ws)
    lineage: dict[str, Any] = {"data_version": ref}
    if not model_refs.is_data_version(ref):
        lineage = model_refs.resolve(ref, tracking_uri or default_tracking_uri(cfg))
    r = data_repo(cfg, ws).checkout(cfg.data.name, lineage["data_version"])
    from litops.core.shard_index import StorageOptions

    from .in_place import verify_in_place

    # an in-place version holds only the manifest: its shards must still be the bytes it names
    r["verified_shards"] = verify_in_place(r["dataset_dir"], StorageOptions.from_config(cfg))
    r.update(lineage, ref=ref)
    r["splits"] = (read_dataset_json(Path(r["dataset_dir"])) or {}).get("splits", {})
    return r
