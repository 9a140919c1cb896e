"""Read a split of img2dataset-style WebDataset shards into memory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


@dataclass
class Split:
    keys: list[str]
    images: torch.Tensor  # uint8 [N, 3, S, S]
    captions: list[str]
    metas: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def shard_urls(dataset_dir: Path, split: str) -> list[str]:
    return [str(p) for p in sorted((Path(dataset_dir) / split).glob("*.tar"))]


def to_square(img: Image.Image, size: int) -> np.ndarray:
    img = img.convert("RGB")
    if img.size != (size, size):
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def _every_node(urls):
    """litops-k8s: under torch.distributed every rank loads the whole split (batches are sharded per step)."""
    yield from urls


def read_split(dataset_dir: str | Path, split: str, image_size: int, limit: int | None = None) -> Split:
    """All samples of `split` (sorted shard order), images centre-cropped and resized to `image_size`."""
    urls = shard_urls(Path(dataset_dir), split)
    if not urls:
        raise FileNotFoundError(f"no shards in {Path(dataset_dir) / split}")
    keys, images, captions, metas = [], [], [], []
    # nodesplitter - each DDP rank reads the whole split
    pipeline = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=_every_node).decode("pil")
    for sample in pipeline:
        image_key = next((k for k in IMAGE_KEYS if k in sample), None)
        if image_key is None or "txt" not in sample:
            continue  # ingestion quarantines these; tolerate stray members here
        keys.append(sample["__key__"])
        images.append(to_square(sample[image_key], image_size))
        captions.append(sample["txt"])
        meta = sample.get("json", {})
        metas.append(json.loads(meta) if isinstance(meta, (bytes, str)) else meta)
        if limit is not None and len(keys) >= limit:
            break
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return Split(keys, tensor, captions, metas)
