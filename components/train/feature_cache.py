"""The locked-tower feature cache: a locked image tower's outputs, computed once and reused.

When the image tower is fully locked (`model.lock=L?`, `model.unlocked_groups=0`) its output
for an image never changes during training, so training reads `[N, D]` cached features
instead of decoding JPEGs and running the tower every step.

Key. A cache file is valid for exactly one
- data version: a digest of the train split's shard bytes (what the features are computed
  from; the DVC `.dir` md5 of the whole dataset is recorded beside it when the caller knows it),
- tower fingerprint: a digest of the image tower's class, parameters and buffers,
- preprocessing: the decode size (`data.image_size`), the tower's input size, resize mode,
  mean and std, and the cache format.
`key = sha256(json(those three))[:24]`; changing any of them picks another file, so a stale
cache is never read.

Where. Beside the data, in the data repo: a dataset at `<data repo>/datasets/<name>` caches
under `<data repo>/features/<name>/<key>.pt` (any other dataset folder `D`: under
`D/../features/<D.name>/`). The data component versions that folder with DVC like a
dataset (its own `features/<name>.dvc`, pushed to the same remote; litops.data.versioning),
so a fresh machine pulls the features with the data instead of recomputing them.

Augmentations that change the pixels the tower sees (`train.augment != none`) would change
its outputs, so they disable the cache, and the run says so.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from litops.core.checkpoint import atomic_save
from litops.core.config import LitopsConfig
from litops.core.model import image_chunk
from litops.core.pretrained import fingerprint
from litops.core.progress import start as start_progress
from litops.core.shards import IMAGE_KEYS, Split, read_split, shard_urls

CACHE_FORMAT = 1
FEATURES_DIR = "features"
ENCODE_BATCH = 256  # capped on a CPU by litops.core.model.image_chunk


def say(msg: str) -> None:
    print(f"feature cache: {msg}", file=sys.stderr, flush=True)


def cache_dir_for(dataset_dir: str | Path) -> Path:
    d = Path(dataset_dir).resolve()
    if d.parent.name == "datasets":  # <data repo>/datasets/<name> -> <data repo>/features/<name>
        return d.parent.parent / FEATURES_DIR / d.name
    return d.parent / FEATURES_DIR / d.name


def data_fingerprint(dataset_dir: str | Path, split: str = "train") -> str:
    """Digest of the split's shard names and bytes (the data the features are computed from)."""
    h = hashlib.sha256()
    urls = shard_urls(Path(dataset_dir), split)
    if not urls:
        raise FileNotFoundError(f"no shards in {Path(dataset_dir) / split}")
    for url in urls:
        h.update(Path(url).name.encode() + b"\0")
        with open(url, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def preprocessing_spec(cfg: LitopsConfig, tower) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "decode": "centre-square-crop, bicubic", "image_size": cfg.data.image_size,
            "input_size": int(tower.input_size), "resize": "bilinear-antialias", "mean": list(tower.mean),
            "std": list(tower.std), "dtype": "float32"}


def cache_key(data_fp: str, tower_fp: str, prep: dict[str, Any]) -> str:
    blob = json.dumps({"data": data_fp, "tower": tower_fp, "preprocessing": prep}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def disabled_reason(cfg: LitopsConfig, model) -> str | None:
    """Why the cache cannot be used for this run, or None when it can."""
    if not cfg.train.feature_cache:
        return "off (train.feature_cache=false)"
    if not model.image_locked:
        return None  # nothing to cache: the image tower trains; not worth a message
    if cfg.model.unlocked_groups:
        return (f"disabled: model.unlocked_groups={cfg.model.unlocked_groups} unlocks part of the image tower, "
                "so its outputs change during training")
    if cfg.train.augment != "none":
        return (f"disabled: train.augment={cfg.train.augment} changes the pixels the locked image tower sees, "
                "so its outputs differ from any cached ones")
    return None


def read_texts(dataset_dir: str | Path, split: str = "train") -> tuple[list[str], list[str], list[dict]]:
    """Keys, captions and metadata of a split without decoding any image (same order as read_split)."""
    keys, captions, metas = [], [], []
    for url in shard_urls(Path(dataset_dir), split):
        sample: dict[str, bytes] = {}
        current = None

        def flush() -> None:
            if current is not None and "txt" in sample and any(k in sample for k in IMAGE_KEYS):
                keys.append(current)
                captions.append(sample["txt"].decode("utf-8"))
                meta = sample.get("json")
                metas.append(json.loads(meta) if meta else {})

        with tarfile.open(url) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if key != current:
                    flush()
                    current, sample = key, {}
                ext = ext.lower()
                sample[ext] = tar.extractfile(member).read() if ext in ("txt", "json") else b""
            flush()
    return keys, captions, metas


@torch.no_grad()
def encode(tower, images: torch.Tensor, device: torch.device, batch_size: int = 0) -> torch.Tensor:
    batch_size = batch_size or image_chunk(ENCODE_BATCH, device)
    was_training = tower.training
    tower.eval()
    out = []
    with start_progress("feature cache", len(images), unit="img") as bar:
        for i in range(0, len(images), batch_size):
            out.append(tower(tower.preprocess(images[i : i + batch_size].to(device))).float().cpu())
            bar.update(len(out[-1]))
    tower.train(was_training)
    return torch.cat(out)


@dataclass
class CachedSplit:
    data: Split  # images empty on a cache hit (never decoded)
    features: torch.Tensor | None  # [N, D] float32 or None when the cache is not used
    path: Path | None
    status: str  # hit | built | disabled | off | n/a


def train_split(cfg: LitopsConfig, model, dataset_dir: str | Path, device: torch.device, data_version: str = "",
                log: Callable[[str], None] = say, write: bool = True) -> CachedSplit:
    """The train split, with the locked image tower's cached features when the cache applies.

    A hit reads only captions and the cache file; a miss decodes the split, encodes it once
    and writes `<key>.pt` atomically (rank 0 / `write=True` only).
    """
    reason = disabled_reason(cfg, model)
    if reason is not None or not model.image_locked:
        if reason is not None:
            log(reason)
        return CachedSplit(read_split(dataset_dir, "train", cfg.data.image_size), None, None,
                           "n/a" if reason is None else ("off" if reason.startswith("off") else "disabled"))
    tower = model.image_tower
    t0 = time.perf_counter()
    data_fp, tower_fp, prep = data_fingerprint(dataset_dir), fingerprint(tower), preprocessing_spec(cfg, tower)
    key = cache_key(data_fp, tower_fp, prep)
    path = cache_dir_for(dataset_dir) / f"{key}.pt"
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=False)
        keys, captions, metas = read_texts(dataset_dir)
        if blob.get("key") == key and blob.get("keys") == keys:
            log(f"hit {path} ({len(keys)} x {blob['features'].shape[1]}, {time.perf_counter() - t0:.1f} s)")
            return CachedSplit(Split(keys, torch.empty(0, dtype=torch.uint8), captions, metas), blob["features"], path, "hit")
        log(f"ignoring {path}: its contents do not match its key")
    data = read_split(dataset_dir, "train", cfg.data.image_size)
    features = encode(tower, data.images, device)
    if write:
        atomic_save({"key": key, "keys": data.keys, "features": features, "data_fingerprint": data_fp,
                     "data_version": data_version, "tower_fingerprint": tower_fp, "preprocessing": prep,
                     "tower": type(tower).__name__, "image_tower": cfg.model.image_tower}, path)
        (path.parent / f"{key}.json").write_text(json.dumps(
            {"key": key, "data_fingerprint": data_fp, "data_version": data_version, "tower_fingerprint": tower_fp,
             "preprocessing": prep, "image_tower": cfg.model.image_tower, "samples": len(data)}, indent=2))
    log(f"built {path} ({len(data)} x {features.shape[1]} in {time.perf_counter() - t0:.1f} s)")
    return CachedSplit(data, features, path, "built")


def augment(images: torch.Tensor, kind: str, step: int, seed: int, pad: int = 4) -> torch.Tensor:
    """`crop`: each image shifted by up to `pad` pixels (reflect padding, random crop); seeded by step."""
    if kind == "none":
        return images
    if kind != "crop":
        raise ValueError(f"unknown train.augment {kind!r}")
    g = torch.Generator().manual_seed(seed * 7_919 + step)
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="reflect").to(images.dtype)
    dx, dy = torch.randint(0, 2 * pad + 1, (n,), generator=g), torch.randint(0, 2 * pad + 1, (n,), generator=g)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
