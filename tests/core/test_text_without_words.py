"""A caption or query with no words (empty, punctuation only) still embeds to a unit vector."""

from __future__ import annotations

import torch

from litops.core.config import ModelConfig
from litops.core.model import LiTModel


def test_texts_without_words_embed_to_finite_unit_vectors():
    torch.manual_seed(0)
    model = LiTModel(ModelConfig(embed_dim=32, text_width=32, text_heads=2, image_width=8), 32).eval()
    with torch.no_grad():
        emb = model.embed_texts(["", "!!!", "a red circle"])
    assert torch.isfinite(emb).all(), emb
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(emb[0], emb[2])
