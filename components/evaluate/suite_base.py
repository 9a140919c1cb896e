"""What every evaluation suite kind shares: its result, how it embeds, and reading its text files.

A suite kind (suite_zeroshot, suite_retrieval, suite_compositional) is prepared once from its
files, without decoding an image, and scored per model through a `Scorer`, which embeds texts
and streams the suite's images batch by batch, so only [N, D] embeddings stay in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from litops.core.component_cli import UserError
from litops.core.progress import Progress

from .suite_images import ImageRef, decoded_batches


@dataclass
class SuiteResult:
    metrics: dict[str, float]  # unprefixed: the caller names them `<suite>/<metric>`
    plot: dict[str, Any]  # what the suite's plot needs (suites.suite_plot)
    counts: dict[str, int]  # images, unreadable, ...
    notes: list[str] = field(default_factory=list)


class Suite(Protocol):
    name: str
    kind: str
    notes: list[str]  # what preparing it skipped

    def texts(self) -> list[str]: ...

    def images(self) -> list[ImageRef]: ...

    def score(self, scorer: "Scorer") -> SuiteResult: ...


@dataclass
class EmbeddedImages:
    embeddings: torch.Tensor  # [n, D], rows of the images that decoded
    rows: torch.Tensor  # long [n]: their positions in the suite's image list
    unreadable: int


@dataclass
class Scorer:
    """One model's embeddings of a suite's texts and images; progress moves per embedded batch."""

    model: Any
    batch_size: int
    image_size: int
    workers: int
    bar: Progress

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = texts[i : i + self.batch_size]
            out.append(self.model.embed_texts(batch, batch_size=self.batch_size).detach().float().cpu())
            self.bar.update(len(batch))
        return torch.cat(out) if out else torch.empty(0, 0)

    def embed_images(self, refs: list[ImageRef]) -> EmbeddedImages:
        embeddings, rows, unreadable = [], [], 0
        for batch in decoded_batches(refs, self.batch_size, self.image_size, self.workers):
            if len(batch.rows):
                embeddings.append(self.model.embed_images(batch.images, batch_size=self.batch_size).detach().float().cpu())
                rows.append(batch.rows)
            unreadable += len(batch.unreadable)
            self.bar.update(len(batch.rows) + len(batch.unreadable))
        if not embeddings:
            return EmbeddedImages(torch.empty(0, 0), torch.empty(0, dtype=torch.long), unreadable)
        return EmbeddedImages(torch.cat(embeddings), torch.cat(rows), unreadable)


def unreadable_note(suite: str, unreadable: int, total: int) -> list[str]:
    return [f"suite '{suite}': {unreadable} of {total} images unreadable, skipped"] if unreadable else []


def incomplete_note(suite: str, incomplete: int, needs: str) -> list[str]:
    return [f"suite '{suite}': {incomplete} shard samples without {needs} skipped"] if incomplete else []


def read_lines(path: Path, what: str) -> list[str]:
    """Non-empty lines of a UTF-8 text file, stripped; a one-line UserError naming the file otherwise."""
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} file {path}: {e}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise UserError(f"{what} file {path} is empty")
    return lines


def require_folder(path: Path, suite: str) -> None:
    if not path.is_dir():
        raise UserError(f"suite '{suite}': folder not found: {path}")
