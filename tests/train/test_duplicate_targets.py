"""The trainer passes caption groups to the loss when `loss.duplicates` asks for them."""

from __future__ import annotations

import json
import math

import pytest
import torch

from litops.core.config import DataConfig, LitopsConfig, LossConfig, ModelConfig, TrainConfig
from litops.core.stream import StreamBatch
from litops.train.logger import JsonlLogger
from litops.train.loop import train
from litops.train.step import Stepper



def tiny_config(**train_kw) -> LitopsConfig:
    return LitopsConfig(data=DataConfig(image_size=32),
                        model=ModelConfig(image_width=16, text_width=32, text_layers=1, text_heads=2, embed_dim=32,
                                          vocab_size=512),
                        train=TrainConfig(**{"steps": 12, "batch_size": 16, "warmup_steps": 2, **train_kw}))


def _first_losses(path) -> list[float]:
    records = [json.loads(l) for l in path.read_text().splitlines()]
    return [r["metrics"]["train/loss"] for r in records if "metrics" in r and "train/loss" in r["metrics"]]


@pytest.mark.parametrize("loss_name", ["sigmoid", "softmax"])
def test_duplicate_modes_change_the_trained_loss(tiny_dataset, tmp_path, loss_name):
    """The tiny set has 8 distinct captions, so a batch of 16 always holds equal captions: the
    first step's loss (same weights, same batch) must move with the mode, except softmax
    'positive', which equals 'negative' when equal captions embed identically."""
    first = {}
    for mode in ("negative", "positive", "ignore"):
        cfg = tiny_config(steps=2, checkpoint_every=2)
        cfg.loss = LossConfig(name=loss_name, duplicates=mode)
        out = tmp_path / mode
        train(cfg, tiny_dataset, out, JsonlLogger(out / "metrics.jsonl"))
        first[mode] = _first_losses(out / "metrics.jsonl")[0]
    assert all(math.isfinite(v) for v in first.values()), first
    assert first["ignore"] < first["negative"], first  # fewer negative pairs contribute
    if loss_name == "sigmoid":
        assert first["positive"] != pytest.approx(first["negative"], rel=1e-4), first
    else:
        assert first["positive"] == pytest.approx(first["negative"], rel=1e-5), first


def test_caption_groups_follow_the_text_and_the_mode():
    stepper = Stepper.__new__(Stepper)
    stepper.device = torch.device("cpu")
    batch = StreamBatch(step=0, keys=["a", "b", "c"], captions=["a red circle", "a blue star", "a red circle"])
    for mode in ("positive", "ignore"):
        stepper.cfg = type("C", (), {"loss": LossConfig(duplicates=mode)})()
        ids = stepper.caption_groups(batch)
        assert ids.dtype == torch.int64 and ids[0] == ids[2] and ids[0] != ids[1]
    stepper.cfg = type("C", (), {"loss": LossConfig(duplicates="negative")})()
    assert stepper.caption_groups(batch) is None
