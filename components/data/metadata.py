"""dataset.json: the manifest at a dataset's root (read by the evaluate component)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DATASET_JSON = "dataset.json"


def read_dataset_json(dataset_dir: Path) -> dict[str, Any] | None:
    p = Path(dataset_dir) / DATASET_JSON
    if not p.is_file():
        return None
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_dataset_json(dataset_dir: Path, meta: dict[str, Any]) -> Path:
    """Write deterministically (sorted keys, fixed indent), atomically."""
    p = Path(dataset_dir) / DATASET_JSON
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".partial")
    tmp.write_text(json.dumps(meta, sort_keys=True, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p
