"""The locked-tower feature cache: a locked image tower's outputs, one file per shard, computed once.

When the image tower is fully locked (`model.lock=L?`, `model.unlocked_groups=0`) its output
for an image never changes during training, so training streams cached `[n, D]` features per
shard (`litops.core.stream.SampleSource(feature_files=...)`) instead of decoding images and
running the tower every step.

Key. One file per shard, valid for exactly one
- shard: the sha256 of the shard's bytes (what the features are computed from),
- tower fingerprint: a digest of the image tower's class, parameters and buffers,
- preprocessing: the tower's input size, the resize (centre square crop, bicubic, straight to the
  input size), mean, std, dtype, the cache format, and the tower's pooled stages when it has any.
`key = sha256(json(those three))[:24]`; changing any of them picks another file, so a stale file
is never read, and adding a shard to a dataset encodes that shard alone.

Files. `<cache dir>/<key>.pt` holds {"keys", "features"} (plus small provenance, all loadable with
`weights_only=True`), written atomically; `<key>.json` beside it says the same for a person
(shard name, data version, tower, samples).

Where. Beside the data (litops.core.feature_store): a dataset at `<data repo>/datasets/<name>`
caches under `<data repo>/features/<name>/` (any other dataset folder `D`: `D/../features/<D.name>/`),
which the data component versions with DVC like a dataset (`features/<name>.dvc`, pushed to the
same remote; litops.data.versioning), so a fresh machine pulls the features with the data. A
dataset whose shards stay in S3 caches in the same bucket, `s3://bucket/<parent>/features/<name>/`,
and readers fetch the files through the node's shard cache.

Augmentations that change the pixels the tower sees (`train.augment != none`) would change its
outputs, so they disable the cache, and the run says so.
"""

from __future__ import annotations

import hashlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch

from litops.core.config import LitopsConfig, resolve_workers
from litops.core.feature_store import (BUILT, CACHE_FORMAT, DISABLED, HIT, NOT_APPLICABLE, OFF, FeatureCache,
                                       FeatureStore, features_root, preprocessing_spec, shard_key)
from litops.core.model import image_chunk
from litops.core.pretrained import fingerprint
from litops.core.progress import start as start_progress
from litops.core.shard_index import S3_SCHEME, ShardMemo, StorageOptions, is_s3
from litops.core.stream import ShardRef, SplitStream  # noqa: F401 - ShardRef: FeatureCache's files
from litops.core.workspace import resolve_home
from litops.train.feature_encoding import ShardImages, encode_shards, tower_features

ENCODE_BATCH = 256  # capped on a CPU by litops.core.model.image_chunk
DIGEST_CHUNK = 1 << 20


def say(msg: str) -> None:
    print(f"feature cache: {msg}", file=sys.stderr, flush=True)


def cache_dir_for(dataset_dir: str | Path) -> str:
    """The folder (or s3:// prefix) of a dataset's feature files (see the module docstring)."""
    return features_root(dataset_dir)


def shard_digest(url: str, storage: StorageOptions | None = None) -> str:
    """sha256 of a shard's bytes, read in 1 MiB chunks (a local file or an s3:// object)."""
    h = hashlib.sha256()
    if is_s3(url):
        fs = (storage or StorageOptions()).filesystem()
        f = fs.open(url[len(S3_SCHEME):], "rb", block_size=DIGEST_CHUNK)
    else:
        f = open(url, "rb")
    with f:
        for chunk in iter(lambda: f.read(DIGEST_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


SHARD_MEMO = "shard-memo.json"  # counts and digests of unchanged shards, under the home: reruns read no shard bytes


def shard_memo_path(cfg: LitopsConfig) -> Path | None:
    """The workspace's shard memo; None when there is no workspace (a bare trainer call): nothing is remembered."""
    home = resolve_home(cfg.home)
    return home / SHARD_MEMO if home.is_dir() else None


def shard_digests(urls: list[str], storage: StorageOptions | None, threads: int, memo_path: Path | None = None) -> list[str]:
    """sha256 of every shard, reusing the digests remembered in `memo_path` for unchanged shards."""
    memo = ShardMemo(memo_path, storage)
    with ThreadPoolExecutor(max(1, threads)) as pool:  # hashing and I/O release the GIL
        digests = list(pool.map(lambda u: memo.get(u, "sha256", lambda url: shard_digest(url, storage)), urls))
    memo.save()
    return digests


def disabled_reason(cfg: LitopsConfig, model) -> tuple[str, str] | None:
    """(status, why) when the cache cannot be used for this run; None when it can."""
    if not cfg.train.feature_cache:
        return OFF, "off (train.feature_cache=false)"
    if not model.image_locked:
        return None  # nothing to cache: the image tower trains; not worth a message
    if cfg.model.unlocked_groups:
        return DISABLED, (f"disabled: model.unlocked_groups={cfg.model.unlocked_groups} unlocks part of the image "
                          "tower, so its outputs change during training")
    if cfg.train.augment != "none":
        return DISABLED, (f"disabled: train.augment={cfg.train.augment} changes the pixels the locked image tower "
                          "sees, so its outputs differ from any cached ones")
    return None


@torch.no_grad()
def encode(tower, images: torch.Tensor, device: torch.device, batch_size: int = 0) -> torch.Tensor:
    """The tower's outputs for images held in memory (benchmarks, probes)."""
    batch_size = batch_size or image_chunk(ENCODE_BATCH, device)
    was_training = tower.training
    tower.eval()
    out = []
    with start_progress("feature cache", len(images), unit="img") as bar:
        for i in range(0, len(images), batch_size):
            out.append(tower_features(tower, images[i : i + batch_size], device))
            bar.update(len(out[-1]))
    tower.train(was_training)
    return torch.cat(out)


def not_applied(cfg: LitopsConfig, model, rank: int, log: Callable[[str], None]) -> FeatureCache | None:
    """The result when the cache does not apply to this run, else None."""
    disabled = disabled_reason(cfg, model)
    if disabled is None and model.image_fully_locked:
        return None
    if disabled is not None and rank == 0:
        log(disabled[1])
    return FeatureCache(None, NOT_APPLICABLE if disabled is None else disabled[0], 0, 0)


def feature_names(split: SplitStream, tower_fp: str, prep: dict[str, Any], threads: int,
                  memo_path: Path | None = None) -> list[str]:
    known = [r.sha256 for r in split.shards]
    digests = known if all(known) else shard_digests(split.urls, split.storage, threads, memo_path)
    return [f"{shard_key(d, tower_fp, prep)}.pt" for d in digests]


def missing_shards(store: FeatureStore, names: list[str], split: SplitStream, log: Callable[[str], None]) -> list[int]:
    """Shards without a feature file holding their samples."""
    holding = store.holding(names, split.counts)
    missing = [j for j, held in enumerate(holding) if not held]
    stale = len(store.present([names[j] for j in missing]))
    if stale:
        log(f"re-encoding {stale} shard(s) whose feature files do not hold their samples")
    return missing


def require_present(store: FeatureStore, names: list[str]) -> list[ShardRef]:
    present = store.present(names)
    absent = [store.url(n) for n in names if n not in present]
    if absent:
        raise FileNotFoundError(f"feature files missing after encoding (is {store.root} shared by all ranks?): "
                                f"{', '.join(absent[:3])}")
    return store.refs(names)


def prepare(cfg: LitopsConfig, model, dataset_dir: str | Path, split: SplitStream, device: torch.device,
            data_version: str = "", rank: int = 0, world: int = 1, barrier: Callable[[], None] = lambda: None,
            log: Callable[[str], None] = say) -> FeatureCache:
    """The feature file of every shard of `split`, encoding those that are missing.

    Every rank names all files; rank r encodes the missing shards j with j % world == r, then all
    wait at `barrier` (the cache folder must be shared by the ranks).
    """
    skipped = not_applied(cfg, model, rank, log)
    if skipped is not None:
        return skipped
    t0 = time.perf_counter()
    tower, workers = model.image_tower, resolve_workers(cfg.data.workers, beside_compute=True)
    store = FeatureStore(cache_dir_for(split.root or dataset_dir), split.storage)
    tower_fp, prep = fingerprint(tower), preprocessing_spec(tower)
    names = feature_names(split, tower_fp, prep, workers, shard_memo_path(cfg))
    missing = missing_shards(store, names, split, log if rank == 0 else lambda m: None)
    mine = [j for j in missing if j % world == rank]
    if mine:
        provenance = {"format": CACHE_FORMAT, "data_version": data_version, "tower": type(tower).__name__,
                      "image_tower": cfg.model.image_tower, "tower_fingerprint": tower_fp, "preprocessing": prep}
        encode_missing(tower, split, mine, store, names, device, workers, provenance, silent=rank != 0)
    barrier()
    refs = require_present(store, names)
    if rank == 0:
        log(f"{len(missing)} of {len(names)} shards encoded, {len(names) - len(missing)} reused "
            f"in {store.root} ({time.perf_counter() - t0:.1f} s)")
    return FeatureCache(refs, BUILT if missing else HIT, len(missing), len(names) - len(missing))


def encode_missing(tower, split: SplitStream, shards: list[int], store: FeatureStore, names: list[str],
                   device: torch.device, workers: int, provenance: dict[str, Any], silent: bool = False) -> None:
    """Encode `shards` (indices into split.urls) and write their files `names[j]` into `store`."""
    images = ShardImages(split, shards, int(tower.input_size), image_chunk(ENCODE_BATCH, device))

    def store_one(j: int, keys: list[str], features: torch.Tensor) -> None:
        store.store(names[j], keys, features, {**provenance, "shard": Path(split.urls[j]).name})

    total = sum(split.counts[j] for j in shards)
    with start_progress("feature cache", total, unit="img", silent=silent) as bar:
        encode_shards(tower, images, device, workers, bar, store_one)
