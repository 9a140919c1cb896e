"""Image-text retrieval on a user's folder of image-caption shards (the dataset splits' format).

Every sample with an image and a `txt` caption takes part; the gallery is the whole suite, both
ways. As in the built-in benchmark, a retrieved item whose caption text equals the query's
counts as a hit (metrics.retrieval_ranks), and scores are computed blockwise.

Metrics: `retrieval_i2t_r<K>`, `retrieval_t2i_r<K>` for K in `eval.recall_ks`, `retrieval_mean_r1`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from litops.core.component_cli import UserError

from . import metrics as M
from .suite_base import Scorer, SuiteResult, incomplete_note, require_folder, unreadable_note
from .suite_images import ImageRef, scan_shards, shard_files


@dataclass
class RetrievalSuite:
    name: str
    refs: list[ImageRef]
    captions: list[str]  # distinct captions
    caption_ids: torch.Tensor  # per image: its caption's row in `captions`
    ks: list[int]
    kind: str = "retrieval"
    notes: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        return self.captions

    def images(self) -> list[ImageRef]:
        return self.refs

    def score(self, scorer: Scorer) -> SuiteResult:
        text_emb = scorer.embed_texts(self.captions)
        embedded = scorer.embed_images(self.refs)
        if not len(embedded.rows):
            raise UserError(f"suite '{self.name}': none of its {len(self.refs)} images could be decoded")
        # captions of skipped images keep their rows but no slot in the gallery (zero count)
        metrics = M.retrieval_metrics(embedded.embeddings, text_emb, self.caption_ids[embedded.rows], self.ks)
        recalls = {d: {k: metrics[f"retrieval_{d}_r{k}"] for k in self.ks} for d in ("i2t", "t2i")}
        counts = {"images": len(self.refs), "unreadable": embedded.unreadable, "distinct_captions": len(self.captions)}
        return SuiteResult(metrics, {"recalls": recalls}, counts, unreadable_note(self.name, embedded.unreadable, len(self.refs)))


def prepare_retrieval(suite, ks: list[int]) -> RetrievalSuite:
    """The suite's image list and captions, read from its shards' headers and `txt` members."""
    root = Path(suite.path).expanduser()
    require_folder(root, suite.name)
    shards = shard_files(root)
    if not shards:
        raise UserError(f"suite '{suite.name}': no *.tar shards in {root}")
    scan = scan_shards(shards, ("txt",))
    if not scan.samples:
        raise UserError(f"suite '{suite.name}': no sample with an image and a 'txt' caption in the shards of {root}")
    captions, caption_ids = M.caption_index([s.members["txt"].decode("utf-8", "replace") for s in scan.samples])
    return RetrievalSuite(suite.name, [s.image for s in scan.samples], captions, caption_ids, list(ks),
                          notes=incomplete_note(suite.name, scan.incomplete, "an image and a 'txt' caption"))
