"""Tower interface and the registry that builds towers by name.

An image tower maps uint8 images [B,3,H,W] (after its own `preprocess`) to features [B, output_dim].
A text tower maps strings (after its own `tokenize`) to features [B, output_dim].
Pretrained towers plug in by registering a builder under a new name.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from litops.core.config import ModelConfig
from litops.core.tokenizer import HashWordTokenizer


class ImageTower(nn.Module):
    output_dim: int
    input_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,H,W] -> normalised float at the tower's input size."""
        x = images.float().div_(255.0)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


class TextTower(nn.Module):
    output_dim: int

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class ScratchCNN(ImageTower):
    """Four strided conv blocks; a 2×2 pooled grid keeps coarse position information."""

    def __init__(self, width: int, input_size: int):
        super().__init__()
        self.input_size = input_size
        chans = [3, width // 2, width, 2 * width, 2 * width]
        blocks = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            blocks += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.output_dim = chans[-1] * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


class ScratchTransformer(TextTower):
    """A small pre-norm transformer over hashed word tokens, mean-pooled over real tokens."""

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int):
        super().__init__()
        self.tokenizer = HashWordTokenizer(vocab_size, context_length)
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.randn(context_length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.output_dim = width

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.pos[: input_ids.shape[1]]
        pad = attention_mask == 0
        x = self.encoder(x, src_key_padding_mask=pad)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        return self.norm((x * mask).sum(1) / mask.sum(1).clamp_min(1.0))


ImageTowerBuilder = Callable[[ModelConfig, int], ImageTower]
TextTowerBuilder = Callable[[ModelConfig], TextTower]

IMAGE_TOWERS: dict[str, ImageTowerBuilder] = {
    "scratch_cnn": lambda cfg, image_size: ScratchCNN(cfg.image_width, cfg.image_input_size or image_size),
}
TEXT_TOWERS: dict[str, TextTowerBuilder] = {
    "scratch_transformer": lambda cfg: ScratchTransformer(
        cfg.vocab_size, cfg.context_length, cfg.text_width, cfg.text_layers, cfg.text_heads
    ),
}


def build_image_tower(cfg: ModelConfig, image_size: int) -> ImageTower:
    if cfg.image_tower not in IMAGE_TOWERS:  # timm towers (efficientnet_lite0, timm:<name>)
        from litops.core.pretrained import build_image

        tower = build_image(cfg, image_size)
        if tower is not None:
            return tower
        raise ValueError(f"unknown model.image_tower {cfg.image_tower!r}; known: "
                         f"{', '.join(sorted(IMAGE_TOWERS))}, efficientnet_lite0, timm:<name>")
    return IMAGE_TOWERS[cfg.image_tower](cfg, image_size)


def build_text_tower(cfg: ModelConfig) -> TextTower:
    if cfg.text_tower not in TEXT_TOWERS:  # transformers towers (minilm, hf)
        from litops.core.pretrained import build_text

        tower = build_text(cfg)
        if tower is not None:
            return tower
        raise ValueError(f"unknown model.text_tower {cfg.text_tower!r}; known: "
                         f"{', '.join(sorted(TEXT_TOWERS))}, minilm, hf")
    return TEXT_TOWERS[cfg.text_tower](cfg)
