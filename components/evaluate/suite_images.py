"""Where an evaluation suite's images are, and reading them back in decoded batches.

Two layouts:
- an ImageFolder-style tree (`list_class_folders`): one subfolder per class, sorted by name
  (the class index, as torchvision's ImageFolder), image files found recursively under each;
- a folder of webdataset shards (`scan_shards`): samples grouped by the tar reader
  (`litops.core.shard_index`) as training groups them, small members (`txt`, `cls`) read during
  the scan, image members only located (offset, size) and seeked over.

`ImageBatches` then decodes the located images batch by batch, straight to the model's input
size, in this process or in reader processes; an image that does not decode is counted and
left out of its batch, never fatal. Nothing here holds more than one batch of pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from litops.core.component_cli import UserError
from litops.core.shard_index import TAR_ERRORS, open_shard, open_tar, read_member, sample_runs, tar_members
from litops.core.shards import decode_image

# torchvision's ImageFolder extensions: everything PIL decodes that a labelled folder usually holds
FOLDER_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageRef:
    """One image: a whole file (`span` None) or a member of a shard at `span` = (offset, size)."""

    location: str
    span: tuple[int, int] | None = None


@dataclass
class ShardSample:
    key: str
    image: ImageRef
    members: dict[str, bytes]  # the small members asked for, e.g. {"txt": b"a cat"}


@dataclass
class ShardScan:
    samples: list[ShardSample] = field(default_factory=list)
    incomplete: int = 0  # samples without an image or without a member asked for


def shard_files(path: str | Path) -> list[Path]:
    """The folder's *.tar shards in name order (the suite's sample order)."""
    return sorted(p for p in Path(path).glob("*.tar") if p.is_file())


def scan_shards(urls: list[Path], members: tuple[str, ...]) -> ShardScan:
    """Every sample with an image and all of `members`, in shard order; no image is read."""
    scan = ShardScan()
    for url in urls:
        try:
            with open_shard(str(url)) as f, open_tar(f) as tar:
                _scan_one(tar, str(url), members, scan)
        except TAR_ERRORS as e:
            raise UserError(f"cannot read shard {url}: {e}") from None
    return scan


def _scan_one(tar, url: str, wanted: tuple[str, ...], scan: ShardScan) -> None:
    """The tar's samples as the training stream groups them (`sample_runs`); the image is the one
    training reads (`image_ext`), located, not read."""
    for run in sample_runs(tar_members(tar), read=wanted.__contains__):
        if not run.has_image or any(m not in run.members for m in wanted):
            scan.incomplete += 1
            continue
        small = dict(run.data)
        scan.samples.append(ShardSample(run.key, ImageRef(url, run.members[run.image_ext]), {m: small[m] for m in wanted}))


def list_class_folders(path: str | Path) -> tuple[list[str], list[ImageRef], list[int]]:
    """(class folder names sorted, image files, class index per file) of an ImageFolder tree."""
    root = Path(path)
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    refs, labels = [], []
    for index, name in enumerate(folders):
        for dirpath, _, filenames in sorted(os.walk(root / name, followlinks=True)):
            for filename in sorted(filenames):
                if filename.lower().endswith(FOLDER_IMAGE_EXTS):
                    refs.append(ImageRef(str(Path(dirpath) / filename)))
                    labels.append(index)
    return folders, refs, labels


@dataclass
class DecodedBatch:
    rows: torch.Tensor  # long [b]: positions in the ref list of the images that decoded
    images: torch.Tensor  # uint8 [b, 3, S, S]
    unreadable: list[int]  # positions of the images that did not decode


class ImageBatches(IterableDataset):
    """The refs in batches of `batch_size`, decoded to `image_size`; reader k of K reads batches k, k+K, ..."""

    def __init__(self, refs: list[ImageRef], batch_size: int, image_size: int):
        super().__init__()
        self.refs, self.batch_size, self.image_size = refs, batch_size, image_size

    def __len__(self) -> int:
        return -(-len(self.refs) // self.batch_size)

    def __iter__(self) -> Iterator[DecodedBatch]:
        info = get_worker_info()
        k, n = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = _RefReader()
        try:
            for b in range(k, len(self), n):
                yield self._batch(reader, range(b * self.batch_size, min((b + 1) * self.batch_size, len(self.refs))))
        finally:
            reader.close()

    def _batch(self, reader: "_RefReader", positions: range) -> DecodedBatch:
        rows, images, unreadable = [], [], []
        for i in positions:
            try:
                images.append(decode_image(reader.read(self.refs[i]), self.image_size))
                rows.append(i)
            except Exception:  # any undecodable or unreadable image: counted, never fatal
                unreadable.append(i)
        pixels = torch.stack(images) if images else torch.empty(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
        return DecodedBatch(torch.tensor(rows, dtype=torch.long), pixels, unreadable)


class _RefReader:
    """Reads refs' bytes, keeping the current shard open (refs come in shard order)."""

    def __init__(self) -> None:
        self.location, self.file = None, None

    def read(self, ref: ImageRef) -> bytes:
        if ref.span is None:
            return Path(ref.location).read_bytes()
        if ref.location != self.location:
            self.close()
            self.file, self.location = open_shard(ref.location), ref.location
        return read_member(self.file, ref.span)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.location, self.file = None, None


def decoded_batches(refs: list[ImageRef], batch_size: int, image_size: int, workers: int = 0) -> Iterator[DecodedBatch]:
    """ImageBatches read in this process (`workers` 0) or by reader processes."""
    batches = ImageBatches(refs, batch_size, image_size)
    workers = min(workers, len(batches))
    if workers <= 0:
        return iter(batches)
    from litops.core.stream import reader_loader

    return reader_loader(batches, workers)
