"""Shared fixtures: a tiny image–caption dataset in the img2dataset shard layout."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.pop("LITOPS_WEBHOOK_URL", None)  # flow tests never post to a developer's real webhook

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")


def _draw(colour: str, shape: str, size: int) -> bytes:
    img = Image.new("RGB", (size, size), (128, 128, 128))
    d = ImageDraw.Draw(img)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shard(path: Path, samples: list[tuple[str, bytes, str, dict]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, jpg, caption, meta in samples:
            for ext, payload in (("jpg", jpg), ("txt", caption.encode()), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def make_tiny_dataset(root: Path, per_split: dict[str, int] | None = None, size: int = 32) -> Path:
    """Coloured circles and squares; every (colour, shape) appears in every split."""
    per_split = per_split or {"train": 64, "val": 16, "test": 16}
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    for split, n in per_split.items():
        samples = []
        for i in range(n):
            colour, shape = combos[i % len(combos)]
            meta = {"objects": [{"colour": colour, "shape": shape, "size": "large", "position": "centre"}]}
            samples.append((f"{split}-{i:05d}", _draw(colour, shape, size), f"a {colour} {shape}", meta))
        write_shard(root / split / "shard-000000.tar", samples)
    attrs = {"colour": list(COLOURS), "shape": list(SHAPES), "size": ["large"], "position": ["centre"]}
    (root / "dataset.json").write_text(json.dumps({"name": root.name, "attributes": attrs}))
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "tiny")

