"""A compositional suite's triples file: JSON lines `{"key", "caption", "swapped", "type"}`.

Read without torch, so the metric names a suite will report (metric_names) are known before training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from litops.core.component_cli import UserError


@dataclass
class Triple:
    key: str
    caption: str
    swapped: str
    type: str  # "" when the line names none


def read_triples(path: Path) -> list[Triple]:
    """The triples of a JSON-lines file; a one-line UserError naming the file and line otherwise."""
    if not path.is_file():
        raise UserError(f"triples file not found: {path}")
    triples = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read triples file {path}: {e}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise UserError(f"triples file {path} line {number}: not JSON ({e})") from None
        fields = {k: item.get(k) for k in ("key", "caption", "swapped")} if isinstance(item, dict) else {}
        if not fields or not all(isinstance(v, str) and v for v in fields.values()):
            raise UserError(f"triples file {path} line {number}: needs string fields key, caption, swapped")
        kind = item.get("type", "")
        triples.append(Triple(fields["key"], fields["caption"], fields["swapped"], str(kind) if kind else ""))
    if not triples:
        raise UserError(f"triples file {path} has no triples")
    return triples
