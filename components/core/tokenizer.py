"""A vocabulary-free word tokenizer for the scratch text tower: words hash into buckets."""

from __future__ import annotations

import re
import zlib

import torch

PAD_ID = 0
_WORD = re.compile(r"[a-z0-9]+")


class HashWordTokenizer:
    def __init__(self, vocab_size: int, context_length: int):
        if vocab_size < 16:
            raise ValueError(f"vocab_size must be >= 16, got {vocab_size}")
        self.vocab_size = vocab_size
        self.context_length = context_length

    def word_id(self, word: str) -> int:
        return 1 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 1)

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        rows = [_WORD.findall(text.lower())[: self.context_length] for text in texts]
        width = max((len(r) for r in rows), default=0) or 1  # pad to the longest text only
        ids = torch.full((len(texts), width), PAD_ID, dtype=torch.long)
        for row, words in enumerate(rows):
            if words:
                ids[row, : len(words)] = torch.tensor([self.word_id(w) for w in words])
        mask = ids != PAD_ID
        mask[:, 0] = True  # a text without words attends to one pad token: an all-masked row gives NaN
        return {"input_ids": ids, "attention_mask": mask.long()}
