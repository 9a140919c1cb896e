"""The per-shard feature cache: incremental, equal to the tower's outputs, keyed on weights and preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from litops.core.config import DataConfig, LitopsConfig, ModelConfig, TrainConfig
from litops.core.model import LiTModel
from litops.core.shard_index import index_members, read_member
from litops.core.shards import decode_image
from litops.core.stream import SampleSource, SplitStream
from litops.train import feature_cache as fc
from litops.train.augment import augment
from tests.conftest import COLOURS, SHAPES, _draw, write_shard

PER_SHARD = 8
CPU = torch.device("cpu")
COMBOS = [(c, s) for c in COLOURS for s in SHAPES]


def add_shard(dataset: Path, j: int) -> None:
    samples = []
    for i in range(PER_SHARD):
        colour, shape = COMBOS[(i + j) % len(COMBOS)]
        samples.append((f"s{j:02d}-{i:02d}", _draw(colour, shape, 24 + 4 * (i % 3)), f"a {colour} {shape}", {}))
    write_shard(dataset / "train" / f"shard-{j:06d}.tar", samples)


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Ten small shards laid out as in the data repo: <repo>/datasets/<name>."""
    root = tmp_path / "data" / "datasets" / "tiny"
    for j in range(10):
        add_shard(root, j)
    return root


@pytest.fixture(scope="module")
def tower_weights(tmp_path_factory) -> Path:
    """A random scratch CNN's weights: what `L` loads into a scratch tower."""
    path = tmp_path_factory.mktemp("weights") / "cnn.pt"
    torch.manual_seed(0)
    torch.save(LiTModel(ModelConfig(image_width=8), 32).image_tower.state_dict(), path)
    return path


def lit_config(weights: Path, workers: int = 0, **model_kw) -> LitopsConfig:
    return LitopsConfig(
        data=DataConfig(image_size=32, workers=workers),
        model=ModelConfig(**{"image_tower": "scratch_cnn", "lock": "Lu", "pretrained_path": str(weights),
                             "image_width": 8, "embed_dim": 16, "text_width": 16, "text_heads": 2,
                             "vocab_size": 256, **model_kw}),
        train=TrainConfig(steps=2, batch_size=8),
    )


def prepare(cfg: LitopsConfig, dataset: Path, log=lambda m: None, **kw) -> fc.FeatureCache:
    cfg.home = str(dataset.parent.parent / "home")  # the shard memo lives in the workspace
    Path(cfg.home).mkdir(exist_ok=True)
    model = LiTModel(cfg.model, cfg.data.image_size)
    return fc.prepare(cfg, model, dataset, SplitStream.open(dataset, "train"), CPU, log=log, **kw)


def paths(cache: fc.FeatureCache) -> list[str]:
    return [r.url for r in cache.feature_files]


def file_stamps(files: list[str]) -> dict[str, tuple[bytes, int]]:
    return {f: (Path(f).read_bytes(), Path(f).stat().st_mtime_ns) for f in files}


def tower_outputs(model: LiTModel, url: str) -> tuple[list[str], torch.Tensor]:
    """What the locked tower gives for a shard's images, decoded to its input size."""
    with open(url, "rb") as f:
        samples = index_members(f)
        images = torch.stack([decode_image(read_member(f, s.members[s.image_ext]), model.image_input_size)
                              for s in samples])
    tower = model.image_tower.eval()
    with torch.no_grad():
        return [s.key for s in samples], tower(tower.preprocess(images))


def test_adding_a_shard_encodes_that_shard_alone(dataset, tower_weights, tmp_path, capfd, monkeypatch):
    cfg = lit_config(tower_weights, workers=2)  # decoded in two reader processes
    first = prepare(cfg, dataset)
    assert (first.status, first.encoded, first.reused) == ("built", 10, 0)
    cache_dir = tmp_path / "data" / "features" / "tiny"
    assert all(Path(f).parent == cache_dir for f in paths(first)), "beside the data, versioned with it"
    before = file_stamps(paths(first))

    add_shard(dataset, 10)
    capfd.readouterr()  # fd-level: a reader process's own output would show here too
    second = prepare(cfg, dataset, log=fc.say, data_version="abc.dir")
    assert (second.status, second.encoded, second.reused) == ("built", 1, 10)
    assert "feature cache: 1 of 11 shards encoded, 10 reused" in capfd.readouterr().err
    assert paths(second)[:10] == paths(first)
    assert file_stamps(paths(first)) == before, "reused files are neither rewritten nor touched"
    meta = json.loads(Path(paths(second)[10]).with_suffix(".json").read_text())
    assert meta["shard"] == "shard-000010.tar" and meta["data_version"] == "abc.dir" and meta["samples"] == PER_SHARD
    assert meta["tower"] == "ScratchCNN" and meta["preprocessing"]["input_size"] == 32

    hashed = []
    real_digest = fc.shard_digest
    monkeypatch.setattr(fc, "shard_digest", lambda url, storage=None: hashed.append(url) or real_digest(url, storage))
    third = prepare(cfg, dataset)
    assert (third.status, third.encoded, third.reused) == ("hit", 0, 11)
    assert hashed == [], "unchanged shards are not read again to find their digests"
    Path(dataset / "train" / "shard-000003.tar").touch()
    assert prepare(cfg, dataset).status == "hit" and len(hashed) == 1, "a touched shard is hashed again"


def test_features_are_the_towers_outputs_and_stream_by_key(dataset, tower_weights):
    cfg = lit_config(tower_weights, image_input_size=24)  # decoded straight to the tower's 24 px
    cache = prepare(cfg, dataset)
    model = LiTModel(cfg.model, cfg.data.image_size)
    split = SplitStream.open(dataset, "train")
    expected = {}
    for url, path in zip(split.urls, paths(cache)):
        keys, outputs = tower_outputs(model, url)
        blob = torch.load(path, weights_only=True)
        assert blob["keys"] == keys and blob["features"].dtype == torch.float32
        assert torch.allclose(blob["features"], outputs, atol=1e-5)
        expected.update(zip(keys, outputs))

    source = split.source(None, cache.feature_files)
    batch = source.batch(0, [(3, 2), (7, 5), (0, 0), (9, 7)])
    assert batch.keys == ["s03-02", "s07-05", "s00-00", "s09-07"] and batch.images is None
    assert torch.allclose(batch.features, torch.stack([expected[k] for k in batch.keys]), atol=1e-5)


def test_ranks_encode_their_own_shards_then_meet_at_the_barrier(dataset, tower_weights):
    cfg = lit_config(tower_weights)
    files = lambda: sorted(p.name for p in (dataset.parent.parent / "features" / "tiny").glob("*.pt"))  # noqa: E731
    seen_by_rank0 = {}

    def rank1_barrier() -> None:  # rank 1 is done; rank 0 runs its part, which ends at the same barrier
        seen_by_rank0["before"] = files()
        seen_by_rank0["result"] = prepare(cfg, dataset, rank=0, world=2)

    rank1 = prepare(cfg, dataset, rank=1, world=2, barrier=rank1_barrier)
    assert len(seen_by_rank0["before"]) == 5, "rank 1 encodes the odd shards"
    assert seen_by_rank0["result"].feature_files == rank1.feature_files and len(files()) == 10


def test_weights_or_input_size_pick_other_files(dataset, tower_weights, tmp_path):
    base = paths(prepare(lit_config(tower_weights), dataset))

    sd = torch.load(tower_weights, weights_only=True)
    first = next(iter(sd))
    sd[first] = sd[first] * 1.01
    torch.save(sd, tmp_path / "tweaked.pt")
    tweaked = prepare(lit_config(tmp_path / "tweaked.pt"), dataset)
    resized = prepare(lit_config(tower_weights, image_input_size=24), dataset)
    for other in (tweaked, resized):
        assert other.status == "built" and other.encoded == 10
        assert not set(paths(other)) & set(base)
    assert not set(paths(tweaked)) & set(paths(resized))
    assert len(list((tmp_path / "data" / "features" / "tiny").glob("*.pt"))) == 30


def test_a_file_that_does_not_hold_its_shards_samples_is_encoded_again(dataset, tower_weights):
    cfg = lit_config(tower_weights)
    files = paths(prepare(cfg, dataset))
    torch.save({"keys": ["other"], "features": torch.zeros(1, 4)}, files[4])
    messages = []
    again = prepare(cfg, dataset, log=messages.append)
    assert (again.encoded, again.reused) == (1, 9) and torch.load(files[4], weights_only=True)["keys"][0] == "s04-00"
    assert any("re-encoding 1 shard" in m for m in messages)


def test_augmentation_or_unlocking_disables_the_cache_and_says_so(dataset, tower_weights, tmp_path):
    cfg = lit_config(tower_weights)
    cfg.train.augment = "crop"
    messages = []
    got = prepare(cfg, dataset, log=messages.append)
    assert (got.status, got.feature_files) == ("disabled", None)
    assert messages and messages[0].startswith("disabled: train.augment=crop")
    assert not (tmp_path / "data" / "features").exists()

    unlocked = lit_config(tower_weights, image_tower="efficientnet_lite0", pretrained_path="", unlocked_groups=1)
    messages.clear()
    got = fc.prepare(unlocked, LiTModel(unlocked.model, 32), dataset, SplitStream.open(dataset, "train"), CPU,
                     log=messages.append)
    assert got.status == "disabled" and "model.unlocked_groups=1" in messages[0]
    off = lit_config(tower_weights)
    off.train.feature_cache = False
    assert prepare(off, dataset).status == "off"
    trained = lit_config(tower_weights, lock="uu", pretrained_path="")
    assert fc.disabled_reason(trained, LiTModel(trained.model, 32)) is None
    assert prepare(trained, dataset) == fc.FeatureCache(None, fc.NOT_APPLICABLE, 0, 0)


def test_crop_augmentation_shifts_images_deterministically():
    imgs = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    a, b = augment(imgs, "crop", 5, 0), augment(imgs, "crop", 5, 0)
    assert torch.equal(a, b) and a.shape == imgs.shape and a.dtype == torch.uint8
    assert not torch.equal(a, augment(imgs, "crop", 6, 0))
