"""The locked-tower feature cache: same training, reused, invalidated by data, weights and preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from litops.core.config import DataConfig, LitopsConfig, ModelConfig, TrainConfig
from litops.core.model import LiTModel
from litops.core.pretrained import efficientnet_lite0_weights
from litops.train import feature_cache as fc
from litops.train.logger import JsonlLogger
from litops.train.loop import train
from tests.conftest import make_tiny_dataset


def lit_config(**model_kw) -> LitopsConfig:
    return LitopsConfig(
        data=DataConfig(image_size=32),
        model=ModelConfig(**{"image_tower": "efficientnet_lite0", "lock": "Lu", "image_input_size": 32, "embed_dim": 32,
                             "text_width": 32, "text_heads": 2, "vocab_size": 512, **model_kw}),
        train=TrainConfig(steps=4, batch_size=16, checkpoint_every=4, warmup_steps=1, lr=1e-3),
    )


@pytest.fixture
def repo_dataset(tmp_path) -> Path:
    """A dataset laid out as in the data repo: <repo>/datasets/<name>."""
    return make_tiny_dataset(tmp_path / "data" / "datasets" / "tiny")


def test_cached_training_matches_uncached_and_is_reused(repo_dataset, tmp_path, monkeypatch, capsys):
    cfg = lit_config()
    uncached = train(LitopsConfig(**{**cfg.__dict__, "train": TrainConfig(**{**cfg.train.__dict__, "feature_cache": False})}),
                     repo_dataset, tmp_path / "u", JsonlLogger(tmp_path / "u.jsonl"))
    built = train(cfg, repo_dataset, tmp_path / "b", JsonlLogger(tmp_path / "b.jsonl"), data_version="abc.dir")
    files = list((tmp_path / "data" / "features" / "tiny").glob("*.pt"))
    assert len(files) == 1, "stored beside the data: <data repo>/features/<dataset>/<key>.pt"
    meta = json.loads(files[0].with_suffix(".json").read_text())
    assert meta["data_version"] == "abc.dir" and meta["samples"] == 64
    a = torch.load(uncached.model_path, weights_only=False)["model"]
    b = torch.load(built.model_path, weights_only=False)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit must not decode images")

    monkeypatch.setattr(fc, "read_split", no_decoding)
    capsys.readouterr()
    hit = train(cfg, repo_dataset, tmp_path / "h", JsonlLogger(tmp_path / "h.jsonl"))
    assert "feature cache: hit" in capsys.readouterr().err
    c = torch.load(hit.model_path, weights_only=False)["model"]
    assert all(torch.equal(b[k], c[k]) for k in b)


def _key(cfg: LitopsConfig, dataset: Path) -> tuple[str, str]:
    model = LiTModel(cfg.model, cfg.data.image_size)
    got = fc.train_split(cfg, model, dataset, torch.device("cpu"), log=lambda m: None)
    return got.status, got.path.name


def test_changes_to_data_weights_or_preprocessing_invalidate(repo_dataset, tmp_path):
    cfg = lit_config()
    status, key = _key(cfg, repo_dataset)
    assert status == "built"
    assert _key(cfg, repo_dataset) == ("hit", key)

    # weights: another pretrained file for the same architecture
    sd = torch.load(efficientnet_lite0_weights(), weights_only=True)
    first = next(iter(sd))
    sd[first] = sd[first] * 1.01
    torch.save(sd, tmp_path / "tweaked.pth")
    status, key_w = _key(lit_config(pretrained_path=str(tmp_path / "tweaked.pth")), repo_dataset)
    assert status == "built" and key_w != key

    # preprocessing: the tower's input size, or the decode size
    status, key_p = _key(lit_config(image_input_size=48), repo_dataset)
    assert status == "built" and key_p not in (key, key_w)
    cfg_decode = lit_config()
    cfg_decode.data.image_size = 24
    status, key_d = _key(cfg_decode, repo_dataset)
    assert status == "built" and key_d not in (key, key_w, key_p)

    # data: one training sample changes -> another data version
    make_tiny_dataset(repo_dataset, per_split={"train": 63, "val": 16, "test": 16})
    status, key_x = _key(cfg, repo_dataset)
    assert status == "built" and key_x not in (key, key_w, key_p, key_d)
    assert len(list((tmp_path / "data" / "features" / "tiny").glob("*.pt"))) == 5


def test_augmentation_or_unlocking_disables_the_cache_and_says_so(repo_dataset, tmp_path, capsys):
    cfg = lit_config()
    cfg.train.augment = "crop"
    cfg.train.steps = 2
    train(cfg, repo_dataset, tmp_path / "a", JsonlLogger(tmp_path / "a.jsonl"))
    err = capsys.readouterr().err
    assert "feature cache: disabled: train.augment=crop" in err
    assert not (tmp_path / "data" / "features").exists()
    records = [json.loads(l) for l in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert any(r.get("params", {}).get("feature_cache") == "disabled" for r in records)

    model = LiTModel(lit_config(unlocked_groups=1).model, 32)
    assert "unlocked_groups=1" in fc.disabled_reason(lit_config(unlocked_groups=1), model)
    assert fc.disabled_reason(lit_config(lock="Uu"), LiTModel(lit_config(lock="Uu").model, 32)) is None  # n/a


def test_crop_augmentation_shifts_images_deterministically():
    imgs = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    a, b = fc.augment(imgs, "crop", 5, 0), fc.augment(imgs, "crop", 5, 0)
    assert torch.equal(a, b) and a.shape == imgs.shape and a.dtype == torch.uint8
    assert not torch.equal(a, fc.augment(imgs, "crop", 6, 0))
