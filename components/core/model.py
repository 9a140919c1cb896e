"""The LiT model: two towers, linear projections to a shared space, a learnable scale and bias."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from litops.core.config import ModelConfig
from litops.core.lock import load_scratch_weights, lock_tower, parse_lock  # LiT notation (Lu, Uu, uu, ...)
from litops.core.towers import build_image_tower, build_text_tower

CPU_IMAGE_CHUNK = 16  # images per no-grad forward on a CPU: larger batches of 224 px activations page-fault
# afresh on every call (2-3x slower measured on the 2-core machine); on a GPU the caller's batch size holds
LOCK_MODES = ("locked", "unlocked", "scratch")  # legacy names (old checkpoints); see litops.core.lock


def image_chunk(batch_size: int, device: torch.device) -> int:
    """Images per no-grad image-tower forward: the caller's batch size, capped on a CPU."""
    return min(batch_size, CPU_IMAGE_CHUNK) if device.type == "cpu" else batch_size


class LiTModel(nn.Module):
    def __init__(self, cfg: ModelConfig, image_size: int):
        super().__init__()
        self.image_mode, self.text_mode = parse_lock(cfg.lock)
        self.cfg = cfg
        self.image_tower = build_image_tower(cfg, image_size)
        self.text_tower = build_text_tower(cfg)
        self.image_proj = nn.Linear(self.image_tower.output_dim, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text_tower.output_dim, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        load_scratch_weights(self.image_tower, self.image_mode, cfg.pretrained_path, "image")
        load_scratch_weights(self.text_tower, self.text_mode, cfg.text_pretrained_path, "text")
        self.towers_in_eval_mode: tuple[nn.Module, ...] = ()  # towers locked whole, once `lock` has run

    def lock(self) -> "LiTModel":
        """Freeze what `cfg.lock` locks: an L tower all but its last `unlocked_groups` parameter groups
        (`text_unlocked_groups` for the text tower); one locked whole also keeps eval mode in `train()`
        (frozen BatchNorm statistics, no dropout). Until this runs every parameter is trainable. The
        trainer calls it where it builds the model, before the optimizer sees the parameters;
        `checkpoint.load_model` too, since a partly locked tower's frozen BatchNorm layers are part of
        the saved weights."""
        image_whole = lock_tower(self.image_tower, self.image_mode, self.cfg.unlocked_groups, "image")
        text_whole = lock_tower(self.text_tower, self.text_mode, self.cfg.text_unlocked_groups, "text")
        self.towers_in_eval_mode = tuple(t for t, whole in ((self.image_tower, image_whole), (self.text_tower, text_whole))
                                         if whole)
        return self

    @property
    def image_locked(self) -> bool:
        return self.image_mode == "L"

    @property
    def image_input_size(self) -> int:
        """Pixels per side the image tower takes: the size readers decode images to."""
        return int(self.image_tower.input_size)

    @property
    def image_fully_locked(self) -> bool:  # its outputs never change during training (feature cache)
        return self.image_mode == "L" and self.cfg.unlocked_groups == 0

    def train(self, mode: bool = True) -> "LiTModel":
        super().train(mode)
        for tower in self.towers_in_eval_mode:  # frozen BatchNorm statistics, no dropout
            tower.eval()
        return self

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels -> L2-normalised embeddings."""
        return F.normalize(self.image_proj(self.image_tower(pixels)), dim=-1)

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenized text -> L2-normalised embeddings."""
        return F.normalize(self.text_proj(self.text_tower(**tokens)), dim=-1)

    def forward(self, pixels: torch.Tensor | None, tokens: dict[str, torch.Tensor],
                image_features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if image_features is not None:  # cached outputs of a locked image tower
            return F.normalize(self.image_proj(image_features), dim=-1), self.encode_text(tokens)
        return self.encode_image(pixels), self.encode_text(tokens)

    # Convenience for inference: raw inputs in, embeddings out.
    @torch.no_grad()
    def embed_images(self, images_uint8: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        device = self.logit_scale.device
        batch_size = image_chunk(batch_size, device)
        out = [self.encode_image(self.image_tower.preprocess(images_uint8[i : i + batch_size].to(device)))
               for i in range(0, len(images_uint8), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.cfg.embed_dim)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        device = self.logit_scale.device
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = {k: v.to(device) for k, v in self.text_tower.tokenize(texts[i : i + batch_size]).items()}
            out.append(self.encode_text(tokens))
        return torch.cat(out) if out else torch.empty(0, self.cfg.embed_dim)
