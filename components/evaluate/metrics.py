"""Metric kernels on embeddings, and the attribute-swapped captions of the compositional probe.

Everything here is pure (tensors and strings in, numbers and strings out), so it can be
tested on hand-built embeddings with known answers.

Ties are scored pessimistically throughout: an item that scores exactly as high as the
correct one counts as ranked above it. A degenerate model whose embeddings are all equal
therefore gets R@1 = 0 and top-1 = 0, never a perfect score.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

import torch

_BLOCK_FLOATS = 1 << 22  # scores per retrieval block (16 MB of float32), whatever the split size


def _block_rows(n_cols: int) -> int:
    """Query rows per block so that a [rows, n_cols] score block holds at most `_BLOCK_FLOATS` values."""
    return max(1, _BLOCK_FLOATS // max(n_cols, 1))


# --------------------------------------------------------------------------- retrieval


def caption_index(captions: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct captions (first-seen order) and, per sample, the index of its caption among them."""
    unique: dict[str, int] = {}
    ids = [unique.setdefault(c, len(unique)) for c in captions]
    return list(unique), torch.tensor(ids, dtype=torch.long)


def retrieval_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample 0-based ranks of the first correct item, image->text and text->image.

    image_emb: [N, D], one row per sample. text_emb: [T, D], one row per *distinct* caption.
    caption_ids: [N], the row of text_emb that holds sample i's caption.

    The gallery is every sample of the split (N captions for i2t, N images for t2i). A
    retrieved item is a hit when its caption text equals the query's ground-truth caption:
    captions repeat word for word in the benchmark, and identical texts are
    indistinguishable, so any sample carrying the same caption is a correct answer.

    - i2t, query image i: rank = number of caption slots j (of N) whose text differs from
      caption i and whose score is >= the score of caption i.
    - t2i, query caption of sample i: rank = number of images whose caption differs from
      caption i and whose score is >= the best score of an image that carries caption i.

    Scores are computed in row blocks of at most `_BLOCK_FLOATS` values; no N×N matrix is ever built.
    """
    image_emb = image_emb.float()
    text_emb = text_emb.float()
    caption_ids = caption_ids.long()
    per_text = _text_to_image_ranks(image_emb, text_emb, caption_ids)
    return _image_to_text_ranks(image_emb, text_emb, caption_ids), per_text[caption_ids]


def _image_to_text_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
    """i2t ranks, one block of images against every distinct caption at a time."""
    n, t = image_emb.shape[0], text_emb.shape[0]
    counts = torch.bincount(caption_ids, minlength=t).float()  # caption slots per distinct text
    ranks = torch.empty(n, dtype=torch.long)
    step = _block_rows(t)
    for s in range(0, n, step):
        scores = image_emb[s : s + step] @ text_emb.T  # [b, T]
        ids = caption_ids[s : s + step]
        gt = scores.gather(1, ids[:, None])
        at_least = (scores >= gt).float() @ counts  # slots scoring >= gt, the correct ones included
        ranks[s : s + step] = (at_least - counts[ids]).round().long()
    return ranks


def _text_to_image_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
    """t2i rank per distinct caption, one block of captions against every image at a time.

    The images that carry a block's captions are read off by index (samples sorted by caption),
    so no [b, N] mask is built: the block's only [b, N] tensors are its scores and one comparison.
    """
    n, t = image_emb.shape[0], text_emb.shape[0]
    by_caption = torch.argsort(caption_ids, stable=True)
    sorted_ids = caption_ids[by_caption]
    bounds = torch.searchsorted(sorted_ids, torch.arange(t + 1))  # samples of caption c: bounds[c]..bounds[c+1]
    ranks = torch.empty(t, dtype=torch.long)
    step = _block_rows(n)
    for s in range(0, t, step):
        e = min(s + step, t)
        scores = text_emb[s:e] @ image_emb.T  # [b, N]
        own = by_caption[bounds[s] : bounds[e]]  # images carrying one of the block's captions
        row = sorted_ids[bounds[s] : bounds[e]] - s
        own_scores = scores[row, own]
        best = torch.full((e - s,), float("-inf")).scatter_reduce(0, row, own_scores, "amax")
        at_least = (scores >= best[:, None]).sum(1)  # images scoring >= best, the correct ones included
        own_at_least = torch.zeros(e - s, dtype=torch.long).index_add_(0, row, (own_scores >= best[row]).long())
        ranks[s:e] = at_least - own_at_least
    return ranks


def recall_at_k(ranks: torch.Tensor, ks: Iterable[int]) -> dict[int, float]:
    if len(ranks) == 0:
        return {}
    return {int(k): float((ranks < k).double().mean()) for k in ks}


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor,
                      ks: Sequence[int]) -> dict[str, float]:
    """{"retrieval_i2t_r1": ..., "retrieval_t2i_r1": ..., ..., "retrieval_mean_r1": ...}."""
    i2t, t2i = retrieval_ranks(image_emb, text_emb, caption_ids)
    out: dict[str, float] = {}
    r_i2t, r_t2i = recall_at_k(i2t, ks), recall_at_k(t2i, ks)
    for k in ks:
        out[f"retrieval_i2t_r{k}"] = r_i2t[k]
        out[f"retrieval_t2i_r{k}"] = r_t2i[k]
    if 1 in r_i2t:
        out["retrieval_mean_r1"] = (r_i2t[1] + r_t2i[1]) / 2
    return out


# --------------------------------------------------------------------------- zero-shot


def fill_template(template: str, name: str) -> str:
    return template.replace("{}", name)


def check_templates(templates: Sequence[str]) -> None:
    from litops.core.config import ConfigError

    if not templates:
        raise ConfigError("eval.prompt_templates must not be empty")
    for t in templates:
        if t.count("{}") != 1:
            raise ConfigError(f"eval.prompt_templates entry {t!r} must contain exactly one '{{}}'")


def prompts_for(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major: all templates of class 0, then of class 1, ..."""
    return [fill_template(t, c) for c in classes for t in templates]


def zeroshot_classifier(prompt_emb: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[C*P, D] class-major prompt embeddings -> [C, D]: mean over templates, re-normalised."""
    w = prompt_emb.float().reshape(n_classes, -1, prompt_emb.shape[-1]).mean(1)
    return torch.nn.functional.normalize(w, dim=-1)


def zeroshot_eval(image_emb: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor,
                  topk: int = 5) -> tuple[float, float, torch.Tensor]:
    """(top-1, top-k with k clipped to the class count, confusion matrix [C, C] rows=true, cols=pred)."""
    c = classifier.shape[0]
    labels = labels.long()
    logits = image_emb.float() @ classifier.T  # [M, C]
    true = logits.gather(1, labels[:, None])
    rank = (logits >= true).sum(1) - 1  # pessimistic on ties
    k = min(topk, c)
    top1 = float((rank < 1).double().mean()) if len(labels) else 0.0
    topk_acc = float((rank < k).double().mean()) if len(labels) else 0.0
    pred = logits.argmax(1)
    confusion = torch.bincount(labels * c + pred, minlength=c * c).reshape(c, c)
    return top1, topk_acc, confusion


# --------------------------------------------------------------------------- compositional probe


def replace_words(text: str, mapping: Mapping[str, str]) -> str:
    """Replace whole words (case-insensitively, all at once, so {a: b, b: a} swaps them).

    A replaced word that started with a capital letter keeps it.
    """
    if not mapping:
        return text
    lower = {k.lower(): v for k, v in mapping.items()}
    alternation = "|".join(re.escape(k) for k in sorted(lower, key=len, reverse=True))
    pattern = re.compile(rf"\b(?:{alternation})\b", re.IGNORECASE)

    def sub(m: re.Match) -> str:
        new = lower[m.group(0).lower()]
        return new[:1].upper() + new[1:] if m.group(0)[:1].isupper() else new

    return pattern.sub(sub, text)


def contains_word(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) is not None


def binding_swap(caption: str, objects: Sequence[Mapping[str, str]]) -> str | None:
    """Two objects: swap their colour words in the caption; None if the colours are equal or absent."""
    if len(objects) != 2:
        return None
    a, b = objects[0].get("colour"), objects[1].get("colour")
    if not a or not b or a.lower() == b.lower():
        return None
    if not (contains_word(caption, a) and contains_word(caption, b)):
        return None
    swapped = replace_words(caption, {a: b, b: a})
    return swapped if swapped != caption else None


def attribute_swap(caption: str, obj: Mapping[str, str], vocab: Mapping[str, Sequence[str]], index: int) -> str | None:
    """One object: replace its colour word (even `index`) or shape word (odd `index`) with another value.

    The replacement cycles deterministically through the other values of the attribute
    (by `index`), and skips values that already occur in the caption. Falls back to the other
    attribute when the first cannot be swapped; None when neither can.
    """
    order = ("colour", "shape") if index % 2 == 0 else ("shape", "colour")
    for attr in order:
        value, values = obj.get(attr), list(vocab.get(attr) or [])
        if not value or value not in values or not contains_word(caption, value):
            continue
        others = [v for v in values if v != value and not contains_word(caption, v)]
        if not others:
            continue
        new = others[(index // 2) % len(others)]
        swapped = replace_words(caption, {value: new})
        if swapped != caption:
            return swapped
    return None


def swap_caption(caption: str, meta: Mapping | None, vocab: Mapping[str, Sequence[str]], index: int) -> tuple[str, str] | None:
    """(kind, swapped caption) for one sample, kind "binding" (two objects) or "attribute" (one)."""
    objects = (meta or {}).get("objects") if isinstance(meta, Mapping) else None
    if not isinstance(objects, list) or not all(isinstance(o, Mapping) for o in objects):
        return None
    if len(objects) == 2:
        s = binding_swap(caption, objects)
        return ("binding", s) if s is not None else None
    if len(objects) == 1:
        s = attribute_swap(caption, objects[0], vocab, index)
        return ("attribute", s) if s is not None else None
    return None


def compositional_accuracy(image_emb: torch.Tensor, true_emb: torch.Tensor, swap_emb: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 if the true caption scores strictly higher than the swapped one."""
    s_true = (image_emb.float() * true_emb.float()).sum(-1)
    s_swap = (image_emb.float() * swap_emb.float()).sum(-1)
    return (s_true > s_swap).double()
