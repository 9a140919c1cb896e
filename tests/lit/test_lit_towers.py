"""Pretrained towers (timm by name, transformers by path) and lock modes in the LiT notation."""

from __future__ import annotations

import os

import pytest
import torch

from litops.core.config import ConfigError, LitopsConfig, ModelConfig, validate
from litops.core.lock import parse_lock
from litops.core.model import LiTModel
from litops.core.pretrained import HFTextTower, TimmImageTower, efficientnet_lite0_weights, minilm_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _chelsea_uint8() -> torch.Tensor:
    from skimage.data import chelsea

    return torch.from_numpy(chelsea().copy()).permute(2, 0, 1).unsqueeze(0)  # [1, 3, 300, 451]


def test_efficientnet_lite0_ranks_chelsea_as_a_cat():
    tower = TimmImageTower("efficientnet_lite0", pretrained=True, keep_classifier=True).eval()
    assert tower.input_size == 224 and tower.mean == (0.485, 0.456, 0.406)
    img = _chelsea_uint8()
    side = min(img.shape[-2:])  # centre crop, then the tower's own resize + ImageNet normalisation
    top, left = (img.shape[-2] - side) // 2, (img.shape[-1] - side) // 2
    pixels = tower.preprocess(img[..., top : top + side, left : left + side])
    with torch.no_grad():
        top3 = tower.classify(pixels).topk(3).indices[0].tolist()
    assert any(281 <= c <= 285 for c in top3), top3  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert set(top3) & {281, 282, 285}, top3


def test_timm_tower_loads_any_local_pretrained_path(tmp_path):
    """Any timm model from a local state dict: by key, and an order+shape mapping for foreign names."""
    import timm

    src = timm.create_model("resnet10t", pretrained=False, num_classes=7)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "w.pth")
    tower = TimmImageTower("resnet10t", pretrained=True, pretrained_path=str(tmp_path / "w.pth"), input_size=32)
    got, want = tower.trunk.state_dict(), src.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in got)  # the 7-class head is dropped (num_classes=0)
    assert tower(torch.zeros(2, 3, 32, 32)).shape == (2, tower.output_dim)
    with pytest.raises(ValueError, match="pretrained_path"):
        TimmImageTower("resnet10t", pretrained=True)  # no hub: a pretrained timm tower needs a local file


def test_minilm_text_tower_mean_and_cls_pooling():
    mean = HFTextTower(minilm_path(), pretrained=True, pooling="mean").eval()
    cls = HFTextTower(minilm_path(), pretrained=True, pooling="cls").eval()
    cls.model.load_state_dict(mean.model.state_dict())
    texts = ["a red circle", "a small blue square at the top", "a red circle"]
    with torch.no_grad():
        em, ec = mean(**mean.tokenize(texts)), cls(**cls.tokenize(texts))
    assert em.shape == (3, 384) and ec.shape == (3, 384)
    assert torch.allclose(em[0], em[2], atol=1e-5) and not torch.allclose(em, ec)
    sim = torch.nn.functional.normalize(em, dim=-1) @ torch.nn.functional.normalize(em, dim=-1).T
    assert sim[0, 2] > sim[0, 1]
    # u (from scratch): same architecture, random weights
    scratch = HFTextTower(minilm_path(), pretrained=False)
    assert not torch.equal(scratch.model.embeddings.word_embeddings.weight, mean.model.embeddings.word_embeddings.weight)


def test_lock_notation_in_config():
    assert parse_lock("Lu") == ("L", "u") and parse_lock("scratch") == ("u", "u")  # legacy checkpoints still load
    for ok in ("Lu", "Uu", "uu", "LU", "UL"):
        validate(LitopsConfig(model=ModelConfig(lock=ok)))
    for bad in ("locked", "LX", "l", ""):
        with pytest.raises(ConfigError, match="model.lock"):
            validate(LitopsConfig(model=ModelConfig(lock=bad)))
    with pytest.raises(ConfigError, match="model.text_pooling"):
        validate(LitopsConfig(model=ModelConfig(text_pooling="max")))


def _built(lock: str, unlocked_groups: int = 0, text_unlocked_groups: int = 0) -> LiTModel:
    return LiTModel(ModelConfig(image_tower="efficientnet_lite0", text_tower="minilm", lock=lock, embed_dim=16,
                                image_input_size=32, unlocked_groups=unlocked_groups,
                                text_unlocked_groups=text_unlocked_groups), 32)


def _lit(lock: str, unlocked_groups: int = 0, text_unlocked_groups: int = 0) -> LiTModel:
    """The model as the trainer has it: built, then locked."""
    return _built(lock, unlocked_groups, text_unlocked_groups).lock()


def test_lock_modes_gradients_eval_mode_and_batchnorm():
    pretrained = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    first = next(iter(pretrained.values()))
    lu = _lit("Lu")
    assert torch.equal(lu.image_tower.trunk.conv_stem.weight, first)  # L: pretrained weights
    assert not any(p.requires_grad for p in lu.image_tower.parameters())
    assert all(p.requires_grad for p in lu.text_tower.parameters())
    lu.train()
    assert not lu.image_tower.training and lu.text_tower.training
    bn = lu.image_tower.trunk.bn1
    before = bn.running_mean.clone()
    lu(torch.randn(4, 3, 32, 32), lu.text_tower.tokenize(["a"] * 4))
    assert torch.equal(bn.running_mean, before)  # frozen BatchNorm statistics

    uu = _lit("uu")
    assert not torch.equal(uu.image_tower.trunk.conv_stem.weight, first)  # u: random init
    assert all(p.requires_grad for p in uu.parameters())
    Uu = _lit("Uu")
    assert torch.equal(Uu.image_tower.trunk.conv_stem.weight, first) and all(p.requires_grad for p in Uu.parameters())

    part = _lit("LL", unlocked_groups=2, text_unlocked_groups=1)
    trunk = part.image_tower.trunk
    assert not trunk.conv_stem.weight.requires_grad and trunk.conv_head.weight.requires_grad
    assert trunk.blocks[-1][0].conv_pwl.weight.requires_grad and not trunk.blocks[-2][0].conv_pwl.weight.requires_grad
    assert type(trunk.bn1).__name__.startswith("FrozenBatchNorm")  # locked part: statistics frozen
    assert isinstance(trunk.bn2, torch.nn.BatchNorm2d)  # unlocked head keeps a trainable BatchNorm
    layers = part.text_tower.model.encoder.layer
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not any(p.requires_grad for p in layers[-2].parameters())
    part.train()
    assert trunk.bn2.training and not trunk.blocks[0][0].bn1.training
    assert layers[-1].training and not layers[0].attention.self.dropout.training


@pytest.mark.parametrize("lock", ["Lu", "LU", "UL", "Uu", "uu"])
def test_building_freezes_nothing_and_lock_freezes_the_towers_its_letters_lock(lock):
    model = _built(lock)
    assert all(p.requires_grad for p in model.parameters())  # nothing hidden in the constructor
    model.train()
    assert model.image_tower.training and model.text_tower.training
    assert model.lock() is model
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    towers = {"image_tower": lock[0], "text_tower": lock[1]}
    assert frozen == {n for n, _ in model.named_parameters() if towers.get(n.split(".")[0]) == "L"}
    model.train()  # a tower locked whole keeps eval mode; the rest trains
    assert model.image_tower.training == (lock[0] != "L") and model.text_tower.training == (lock[1] != "L")
    assert model.image_proj.training and model.text_proj.training


def test_partial_lock_applies_at_lock_and_a_saved_partly_locked_model_loads_back(tmp_path):
    from litops.core.checkpoint import export_model, load_model
    from litops.core.config import to_dict

    model = _built("LL", unlocked_groups=2, text_unlocked_groups=1)
    assert all(p.requires_grad for p in model.parameters())
    assert isinstance(model.image_tower.trunk.bn1, torch.nn.BatchNorm2d)  # frozen BatchNorm comes with the lock
    model.lock()
    assert not model.image_tower.trunk.conv_stem.weight.requires_grad and model.image_tower.trunk.conv_head.weight.requires_grad
    cfg = LitopsConfig(model=model.cfg)
    export_model({"config": to_dict(cfg), "image_size": 32, "model": model.state_dict(), "step": 0}, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt")  # the saved weights hold the frozen BatchNorm layers' buffers
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_scratch_towers_need_weights_for_pretrained_modes(tmp_path):
    with pytest.raises(ValueError, match="pretrained_path"):
        LiTModel(ModelConfig(lock="Lu"), 32)
    src = LiTModel(ModelConfig(), 32)
    torch.save(src.image_tower.state_dict(), tmp_path / "cnn.pt")
    m = LiTModel(ModelConfig(lock="Lu", pretrained_path=str(tmp_path / "cnn.pt")), 32)
    assert all(torch.equal(a, b) for a, b in zip(m.image_tower.state_dict().values(), src.image_tower.state_dict().values()))
    m.lock()
    assert not any(p.requires_grad for p in m.image_tower.parameters())


def test_cpu_image_embedding_in_chunks_equals_one_batch(monkeypatch):
    """On a CPU, embed_images and the feature cache's encode run CPU_IMAGE_CHUNK images at a time
    (large 224 px batches page-fault on every call); the embeddings are those of one whole batch."""
    import litops.core.model as core_model
    from litops.train.feature_cache import encode

    monkeypatch.setattr(core_model, "CPU_IMAGE_CHUNK", 3)
    lu = _lit("Lu").eval()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        whole = lu.encode_image(lu.image_tower.preprocess(images))
        features = lu.image_tower(lu.image_tower.preprocess(images))
    calls = []
    real_forward = lu.image_tower.forward
    monkeypatch.setattr(lu.image_tower, "forward", lambda x: calls.append(len(x)) or real_forward(x))
    assert torch.allclose(lu.embed_images(images, batch_size=256), whole, atol=1e-5)
    assert calls == [3, 3, 2]
    calls.clear()
    assert torch.allclose(encode(lu.image_tower, images, torch.device("cpu"), batch_size=4), features, atol=1e-5)
    assert calls == [4, 4]


def test_pooled_stages_append_earlier_blocks_to_the_head_features():
    from litops.train.feature_cache import preprocessing_spec

    plain = TimmImageTower("efficientnet_lite0", pretrained=True, input_size=64).eval()
    pooled = TimmImageTower("efficientnet_lite0", pretrained=True, input_size=64, pooled_stages=(3,)).eval()
    assert plain.output_dim == 1280 and pooled.output_dim == 1280 + 80
    pixels = plain.preprocess(_chelsea_uint8()[..., :300, :300])
    with torch.no_grad():
        head, both = plain(pixels), pooled(pixels)
        block3 = pooled.trunk.blocks[:4](pooled.trunk.bn1(pooled.trunk.conv_stem(pixels))).mean((2, 3))
    assert both.shape == (1, 1360)
    torch.testing.assert_close(both[:, :1280], head)  # the head's features are untouched
    torch.testing.assert_close(both[:, 1280:], block3)
    assert "pooled_stages" not in preprocessing_spec(plain)  # caches written before the option stay valid
    assert preprocessing_spec(pooled)["pooled_stages"] == [3]  # other features: another cache key
    with pytest.raises(ValueError, match=r"\[7\] out of range: efficientnet_lite0 has blocks 0..6"):
        TimmImageTower("efficientnet_lite0", pretrained=False, pooled_stages=(7,))
    model = LiTModel(ModelConfig(image_tower="efficientnet_lite0", lock="Lu", image_input_size=64,
                                 image_pooled_stages=[3]), 64)
    assert model.image_proj.in_features == 1360
