"""Evaluate image-text models on a dataset's held-out splits.

Metrics per split (the `val` split unsuffixed, the `test` split with suffix `_heldout`; a
dataset without `test`, such as a user's own, is evaluated on `val` alone and the notes name
the `*_heldout` metrics left out):

- Zero-shot classification of single-object images, per attribute task (colour, shape):
  class names x `cfg.eval.prompt_templates` are embedded, averaged per class and
  re-normalised into a classifier. `zeroshot_<attr>_top1`, `zeroshot_<attr>_top5` (k clipped
  to the class count) and their means over tasks, `zeroshot_top1` / `zeroshot_top5`. Only
  images with exactly one object take part: an attribute of a two-object image is ambiguous.
- Retrieval R@K (`cfg.eval.recall_ks`) both ways over all samples of the split:
  `retrieval_i2t_r<K>`, `retrieval_t2i_r<K>`, `retrieval_mean_r1`. Captions repeat word for
  word in the benchmark, so a retrieved item counts as a hit when its caption text equals the
  query's ground-truth caption (see `metrics.retrieval_ranks`).
- Compositional probe: each image scores its true caption against an attribute-swapped one
  (two objects: their colour words swapped; one object: the colour or shape word replaced,
  alternating). `compositional_acc` over all pairs, `compositional_acc_binding` over the
  two-object swaps only.

These built-in metrics keep their unprefixed names. The suites configured under `eval.suites`
(litops.evaluate.suites: the user's own zero-shot, retrieval and compositional data) are scored
for the same models and join the same dict as `<suite>/<metric>`; without a dataset folder only
the suites are evaluated.

Work is shared across models: captions, metadata and swapped captions (and the suites' files)
are read once, without decoding any image (`prepare_from_config`). Per model (`score_model`)
every distinct text is embedded once, and each split's (and suite's) images are streamed in
batches, decoded straight to that model's input size and embedded batch by batch: only the
[N, D] embeddings stay in memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import torch

from litops.core.progress import Progress, start as start_progress
from litops.core.stream import SplitStream, StreamBatch

from . import metrics as M
from .metric_names import DATASET_JSON, SPLITS, ZEROSHOT_ATTRIBUTES
from .suite_base import Scorer, Suite, SuiteResult
from .suites import prefixed, prepare_suite, select_suites


class Embedder(Protocol):
    """Anything that embeds uint8 images and texts; an `image_input_size` attribute, when present,
    is the pixels per side its images are decoded to."""

    def embed_images(self, images_uint8: torch.Tensor, batch_size: int = ...) -> torch.Tensor: ...

    def embed_texts(self, texts: list[str], batch_size: int = ...) -> torch.Tensor: ...


@dataclass
class SplitSamples:
    """A split's keys, captions and metadata in shard order, and the stream that re-reads its images."""

    name: str
    stream: SplitStream
    keys: list[str]
    captions: list[str]
    metas: list[dict]

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def read(cls, stream: SplitStream, name: str, batch_size: int, workers: int = 0) -> "SplitSamples":
        """Texts and metadata only: no image is decoded."""
        keys, captions, metas = [], [], []
        for batch in stream.one_pass(batch_size, None, reader_workers(stream.total, batch_size, workers), with_metas=True):
            keys += batch.keys
            captions += batch.captions
            metas += batch.metas
        return cls(name, stream, keys, captions, metas)

    def image_batches(self, batch_size: int, image_size: int, workers: int = 0) -> Iterator[StreamBatch]:
        """The split's images in shard order, uint8 [b, 3, image_size, image_size] per batch."""
        return self.stream.one_pass(batch_size, image_size, reader_workers(len(self), batch_size, workers))


def reader_workers(samples: int, batch_size: int, workers: int) -> int:
    """Reader processes for one pass: a process without a batch to read would only cost its start."""
    return max(0, min(workers, math.ceil(samples / batch_size)))


@dataclass
class ZeroShotTask:
    attribute: str
    classes: list[str]
    sample_idx: torch.Tensor  # rows of the split
    labels: torch.Tensor  # class index per row


@dataclass
class PreparedSplit:
    name: str  # split folder: val | test
    suffix: str  # metric-name suffix: "" | "_heldout"
    split: SplitSamples
    captions: list[str]  # distinct captions
    caption_ids: torch.Tensor  # [N] -> captions
    zeroshot: list[ZeroShotTask] = field(default_factory=list)
    swap_idx: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    swap_texts: list[str] = field(default_factory=list)
    swap_binding: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    notes: list[str] = field(default_factory=list)  # what was skipped and why

    def counts(self) -> dict[str, Any]:
        return {
            "samples": len(self.split),
            "distinct_captions": len(self.captions),
            "zeroshot": {t.attribute: len(t.labels) for t in self.zeroshot},
            "compositional_pairs": len(self.swap_texts),
            "binding_pairs": int(self.swap_binding.sum()),
        }


@dataclass
class EvalSet:
    splits: list[PreparedSplit]
    attributes: dict[str, list[str]]
    templates: list[str]
    ks: list[int]
    batch_size: int
    notes: list[str] = field(default_factory=list)
    image_size: int = 0  # decode size for a model without `image_input_size`
    workers: int = 0  # reader processes per pass over a split; 0: in this process
    suites: list[Suite] = field(default_factory=list)  # configured suites (eval.suites) to score too

    def texts(self) -> list[str]:
        """Every distinct text any metric needs: captions, swapped captions, prompts."""
        seen: dict[str, None] = {}
        for p in self.splits:
            seen.update(dict.fromkeys(p.captions))
            seen.update(dict.fromkeys(p.swap_texts))
            for t in p.zeroshot:
                seen.update(dict.fromkeys(M.prompts_for(t.classes, self.templates)))
        return list(seen)

    def items(self) -> int:
        """Texts and images one model embeds: the work `score_model` reports progress over."""
        builtin = len(self.texts()) + sum(len(p.split) for p in self.splits)
        return builtin + sum(len(s.texts()) + len(s.images()) for s in self.suites)


@dataclass
class ModelReport:
    metrics: dict[str, float]
    confusion: dict[str, dict[str, Any]]  # suffix -> attribute -> {"classes", "matrix"}
    recalls: dict[str, dict[str, dict[int, float]]]  # suffix -> {"i2t": {k: r}, "t2i": {k: r}}
    suites: dict[str, SuiteResult] = field(default_factory=dict)  # suite name -> its result (metrics unprefixed)


# --------------------------------------------------------------------------- preparation


def read_attributes(dataset_dir: str | Path) -> tuple[dict[str, list[str]], list[str]]:
    """The attribute vocabulary from dataset.json (empty when absent), and notes."""
    p = Path(dataset_dir) / DATASET_JSON
    if not p.is_file():
        return {}, [f"no {DATASET_JSON} in {dataset_dir}: zero-shot and single-object swaps skipped"]
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return {}, [f"unreadable {p} ({e}): zero-shot and single-object swaps skipped"]
    attrs = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(attrs, dict):
        return {}, [f"{p} has no 'attributes': zero-shot and single-object swaps skipped"]
    clean = {str(k): [str(v) for v in vs] for k, vs in attrs.items() if isinstance(vs, list) and vs}
    return clean, []


def _objects(meta: Any) -> list[dict] | None:
    objs = meta.get("objects") if isinstance(meta, dict) else None
    return objs if isinstance(objs, list) and all(isinstance(o, dict) for o in objs) else None


def prepare_split(split: SplitSamples, name: str, suffix: str, attributes: dict[str, list[str]],
                  zeroshot_attributes: Sequence[str] = ZEROSHOT_ATTRIBUTES) -> PreparedSplit:
    captions, caption_ids = M.caption_index(split.captions)
    prep = PreparedSplit(name, suffix, split, captions, caption_ids)
    metas = split.metas if len(split.metas) == len(split) else [{}] * len(split)
    objects = [_objects(m) for m in metas]
    if not any(o is not None for o in objects):
        prep.notes.append(f"{name}: no sample has object metadata (key.json 'objects'): zero-shot and compositional probe skipped")
        return prep

    for attr in zeroshot_attributes:
        classes = attributes.get(attr)
        if not classes or len(classes) < 2:
            prep.notes.append(f"{name}: zero-shot '{attr}' skipped: dataset.json lists no '{attr}' values")
            continue
        pos = {c: i for i, c in enumerate(classes)}
        idx, labels = [], []
        for i, objs in enumerate(objects):
            if objs is not None and len(objs) == 1 and objs[0].get(attr) in pos:
                idx.append(i)
                labels.append(pos[objs[0][attr]])
        if not idx:
            prep.notes.append(f"{name}: zero-shot '{attr}' skipped: no single-object sample has a known '{attr}'")
            continue
        prep.zeroshot.append(ZeroShotTask(attr, list(classes), torch.tensor(idx), torch.tensor(labels)))

    idx, texts, binding = [], [], []
    for i, (caption, meta) in enumerate(zip(split.captions, metas)):
        swap = M.swap_caption(caption, meta, attributes, i)
        if swap is not None:
            idx.append(i)
            texts.append(swap[1])
            binding.append(swap[0] == "binding")
    if idx:
        prep.swap_idx, prep.swap_texts = torch.tensor(idx), texts
        prep.swap_binding = torch.tensor(binding, dtype=torch.bool)
    else:
        prep.notes.append(f"{name}: compositional probe skipped: no caption could be attribute-swapped")
    return prep


def prepare_eval(dataset_dir: str | Path, image_size: int, templates: Sequence[str], ks: Sequence[int],
                 batch_size: int = 256, splits: Sequence[tuple[str, str]] = SPLITS, workers: int = 0,
                 storage=None, cache=None) -> EvalSet:
    """Read the captions and metadata of the splits that exist (no pixels) and build everything
    the metrics need that no model changes. `image_size` is the decode size for models that do
    not name their own input size; `workers` reader processes stream each split. `storage` (endpoint,
    region) and `cache` (the node-local shard cache) serve shards on S3, including those a local
    manifest names in a bucket."""
    M.check_templates(templates)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        from litops.core.config import ConfigError

        raise ConfigError(f"eval.recall_ks must be positive integers, got {list(ks)}")
    attributes, notes = read_attributes(dataset_dir) if splits else ({}, [])
    prepared = []
    for name, suffix in splits:
        split = _split_metadata(dataset_dir, name, suffix, batch_size, workers, notes, storage, cache)
        if split is None:
            continue
        prep = prepare_split(split, name, suffix, attributes)
        notes += prep.notes
        prepared.append(prep)
    return EvalSet(prepared, attributes, list(templates), ks, batch_size, notes, int(image_size or 0), workers)


def _split_metadata(dataset_dir: str | Path, name: str, suffix: str, batch_size: int, workers: int,
                    notes: list[str], storage=None, cache=None) -> SplitSamples | None:
    """The split's keys, captions and metadata (streamed, no pixels), or None with a note saying why
    it is skipped."""
    try:
        stream = SplitStream.open(dataset_dir, name, storage, cache=cache)
    except FileNotFoundError:
        notes.append(f"split '{name}' skipped: no shards in {Path(dataset_dir) / name}"
                     + (f" (metrics *{suffix} not reported)" if suffix else ""))
        return None
    if stream.total == 0:
        notes.append(f"split '{name}' skipped: no readable samples (no shard holds an image with a caption)")
        return None
    return SplitSamples.read(stream, name, batch_size, workers)


def prepare_from_config(dataset_dir: str | Path | None, cfg, suites: Sequence[str] | None = None) -> EvalSet:
    """The built-in benchmark on `dataset_dir` (None: none) and the configured suites named in
    `suites` (None: all of `cfg.eval.suites`)."""
    from litops.core.config import resolve_workers
    from litops.core.shard_index import StorageOptions
    from litops.train.data_stream import shard_cache_spec

    evalset = prepare_eval(dataset_dir, cfg.data.image_size, cfg.eval.prompt_templates, cfg.eval.recall_ks,
                           cfg.eval.batch_size, splits=SPLITS if dataset_dir is not None else (),
                           workers=resolve_workers(cfg.data.workers, beside_compute=True),
                           storage=StorageOptions.from_config(cfg), cache=shard_cache_spec(cfg))
    for config in select_suites(cfg.eval.suites, suites):
        suite = prepare_suite(config, evalset.ks)
        evalset.suites.append(suite)
        evalset.notes += suite.notes
    return evalset


# --------------------------------------------------------------------------- scoring


def _embed_texts(model: Embedder, texts: list[str], batch_size: int, bar: Progress) -> torch.Tensor:
    """The texts one batch at a time, so progress moves between batches."""
    out = []
    for i in range(0, len(texts), batch_size):
        batch = texts[i : i + batch_size]
        out.append(model.embed_texts(batch, batch_size=batch_size).detach().float().cpu())
        bar.update(len(batch))
    return torch.cat(out) if out else torch.empty(0, 0)


def _image_size(model: Embedder, evalset: EvalSet) -> int:
    """The pixels per side the model's images are decoded to."""
    size = getattr(model, "image_input_size", None) or evalset.image_size
    if not size:
        raise ValueError("no image size: the model has no image_input_size and prepare_eval got none")
    return size


def _embed_split_images(model: Embedder, evalset: EvalSet, split: SplitSamples, bar: Progress) -> torch.Tensor:
    """Stream the split's images at the model's input size and embed them batch by batch: [N, D]."""
    size = _image_size(model, evalset)
    out = []
    for batch in split.image_batches(evalset.batch_size, size, evalset.workers):
        out.append(model.embed_images(batch.images, batch_size=evalset.batch_size).detach().float().cpu())
        bar.update(len(batch))
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def score_model(model: Embedder, evalset: EvalSet, label: str = "model") -> ModelReport:
    """All metrics of one model on a prepared EvalSet; progress is reported as `evaluate <label>`."""
    with start_progress(f"evaluate {label}", evalset.items(), unit="item") as bar:
        return _score(model, evalset, bar)


def _score(model: Embedder, evalset: EvalSet, bar: Progress) -> ModelReport:
    """score_model's work; each embedded batch of texts or images moves `bar`."""
    texts = evalset.texts()
    row = {t: i for i, t in enumerate(texts)}
    text_emb = _embed_texts(model, texts, evalset.batch_size, bar)

    def rows(ts: Sequence[str]) -> torch.Tensor:
        return text_emb[torch.tensor([row[t] for t in ts], dtype=torch.long)]

    out: dict[str, float] = {}
    confusion: dict[str, dict[str, Any]] = {}
    recalls: dict[str, dict[str, dict[int, float]]] = {}
    for p in evalset.splits:
        img = _embed_split_images(model, evalset, p.split, bar)
        sfx = p.suffix

        r = M.retrieval_metrics(img, rows(p.captions), p.caption_ids, evalset.ks)
        out.update({k + sfx: v for k, v in r.items()})
        recalls[sfx] = {d: {k: r[f"retrieval_{d}_r{k}"] for k in evalset.ks} for d in ("i2t", "t2i")}

        top1s, top5s = [], []
        confusion[sfx] = {}
        for task in p.zeroshot:
            clf = M.zeroshot_classifier(rows(M.prompts_for(task.classes, evalset.templates)), len(task.classes))
            top1, top5, conf = M.zeroshot_eval(img[task.sample_idx], clf, task.labels, topk=5)
            out[f"zeroshot_{task.attribute}_top1{sfx}"] = top1
            out[f"zeroshot_{task.attribute}_top5{sfx}"] = top5
            top1s.append(top1)
            top5s.append(top5)
            confusion[sfx][task.attribute] = {"classes": task.classes, "matrix": conf.tolist()}
        if top1s:
            out[f"zeroshot_top1{sfx}"] = sum(top1s) / len(top1s)
            out[f"zeroshot_top5{sfx}"] = sum(top5s) / len(top5s)

        if p.swap_texts:
            im = img[p.swap_idx]
            correct = M.compositional_accuracy(im, text_emb[[row[p.split.captions[i]] for i in p.swap_idx.tolist()]],
                                               rows(p.swap_texts))
            out[f"compositional_acc{sfx}"] = float(correct.mean())
            if p.swap_binding.any():
                out[f"compositional_acc_binding{sfx}"] = float(correct[p.swap_binding].mean())
    suites = _score_suites(model, evalset, bar)
    for name, result in suites.items():
        out.update(prefixed(name, result.metrics))
    return ModelReport(out, confusion, recalls, suites)


def _score_suites(model: Embedder, evalset: EvalSet, bar: Progress) -> dict[str, SuiteResult]:
    if not evalset.suites:
        return {}
    scorer = Scorer(model, evalset.batch_size, _image_size(model, evalset), evalset.workers, bar)
    return {suite.name: suite.score(scorer) for suite in evalset.suites}


def evaluate_model(model: Embedder, dataset_dir: str | Path, cfg) -> dict[str, float]:
    """Every metric of one model (anything with embed_images/embed_texts) on a dataset folder."""
    return score_model(model, prepare_from_config(dataset_dir, cfg)).metrics
