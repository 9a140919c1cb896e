"""A compositional probe on a user's triples, in SugarCrepe's style.

Triples: a JSON-lines file, one object per line, `{"key", "caption", "swapped", "type"}`
(`type` optional, e.g. replace_att, swap_obj). `key` names a sample of the shards under the
suite's path, whose image is scored against the true caption and the swapped (hard negative)
one; the image wins the pair when the true caption scores strictly higher. An image used by
several triples is embedded once.

Metrics: `compositional_acc` over all triples, `compositional_acc_<type>` per swap type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from litops.core.component_cli import UserError

from . import metrics as M
from .metric_names import metric_word
from .suite_base import Scorer, SuiteResult, require_folder, unreadable_note
from .suite_images import ImageRef, scan_shards, shard_files
from .triples import Triple, read_triples


@dataclass
class CompositionalSuite:
    name: str
    triples: list[Triple]
    refs: list[ImageRef]  # one per distinct key
    image_of: torch.Tensor  # per triple: its image's position in `refs`
    kind: str = "compositional"
    notes: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        return list(dict.fromkeys(t for triple in self.triples for t in (triple.caption, triple.swapped)))

    def images(self) -> list[ImageRef]:
        return self.refs

    def score(self, scorer: Scorer) -> SuiteResult:
        texts = self.texts()
        row = {t: i for i, t in enumerate(texts)}
        text_emb = scorer.embed_texts(texts)
        embedded = scorer.embed_images(self.refs)
        position = torch.full((len(self.refs),), -1, dtype=torch.long)
        position[embedded.rows] = torch.arange(len(embedded.rows))
        kept = [i for i, img in enumerate(self.image_of.tolist()) if position[img] >= 0]
        if not kept:
            raise UserError(f"suite '{self.name}': none of its {len(self.refs)} images could be decoded")
        images = embedded.embeddings[position[self.image_of[kept]]]
        true = text_emb[[row[self.triples[i].caption] for i in kept]]
        swapped = text_emb[[row[self.triples[i].swapped] for i in kept]]
        correct = M.compositional_accuracy(images, true, swapped)
        metrics, accuracy, per_type = {"compositional_acc": float(correct.mean())}, {}, {}
        for kind in sorted({self.triples[i].type for i in kept} - {""}):
            mask = torch.tensor([self.triples[i].type == kind for i in kept])
            accuracy[kind], per_type[kind] = float(correct[mask].mean()), int(mask.sum())
            metrics[f"compositional_acc_{metric_word(kind)}"] = accuracy[kind]
        counts = {"images": len(self.refs), "unreadable": embedded.unreadable, "triples": len(self.triples),
                  "triples_scored": len(kept)}
        plot = {"accuracy": accuracy or {"all": metrics["compositional_acc"]}, "counts": per_type or {"all": len(kept)}}
        return SuiteResult(metrics, plot, counts, unreadable_note(self.name, embedded.unreadable, len(self.refs)))


def prepare_compositional(suite) -> CompositionalSuite:
    """The triples and, for each distinct key, where its image is in the suite's shards (no pixels read)."""
    root = Path(suite.path).expanduser()
    require_folder(root, suite.name)
    triples_path = Path(suite.triples).expanduser()
    triples = read_triples(triples_path)
    shards = shard_files(root)
    if not shards:
        raise UserError(f"suite '{suite.name}': no *.tar shards in {root}")
    keys = list(dict.fromkeys(t.key for t in triples))
    wanted = set(keys)
    found: dict[str, ImageRef] = {}
    for sample in scan_shards(shards, ()).samples:
        if sample.key in wanted:
            found.setdefault(sample.key, sample.image)
    missing = [k for k in keys if k not in found]
    if missing:
        raise UserError(f"triples file {triples_path}: key {missing[0]!r} ({len(missing)} keys in all) "
                        f"has no image in the shards of {root}")
    position = {k: i for i, k in enumerate(keys)}
    image_of = torch.tensor([position[t.key] for t in triples], dtype=torch.long)
    return CompositionalSuite(suite.name, triples, [found[k] for k in keys], image_of)
