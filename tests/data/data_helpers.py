"""Helpers for the data component's tests (a uniquely named module: test dirs share sys.path)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from PIL import Image

from litops.core.config import DataConfig, LitopsConfig


def small_cfg(home: Path, **data) -> LitopsConfig:
    base = dict(n_train=48, n_val=12, n_test=24, image_size=32, shard_size=20, seed=0)
    base.update(data)
    return LitopsConfig(home=str(home), data=DataConfig(**base))


def tree_digest(d: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under d."""
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(d).rglob("*"))
        if p.is_file()
    }


def jpeg_bytes(colour=(200, 30, 30), size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(colour=(30, 30, 200, 255), size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    # Noise so the entropy-coded data is long; cut it in the middle of the scan.
    import numpy as np

    arr = np.random.default_rng(0).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    return data[: len(data) // 2]


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
