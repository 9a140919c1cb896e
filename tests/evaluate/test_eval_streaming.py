"""Evaluation streams: blockwise retrieval ranks, images decoded per model and embedded batch by batch."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from litops.core import stream as stream_module
from litops.core.config import ModelConfig
from litops.core.model import LiTModel
from litops.core.shards import decode_image
from litops.evaluate import evaluate as E
from litops.evaluate import metrics as M
from tests.conftest import make_tiny_dataset, write_shard

DATA_SIZE = 32
KS = [1, 5, 10]
TEMPLATES = ["a {}", "a photo of a {}"]


# --------------------------------------------------------------------------- blockwise retrieval


def full_matrix_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor):
    """The plain reference: every [N, N] score at once, a hit being any sample with the same caption."""
    slots = text_emb[caption_ids]  # one caption slot per sample
    wrong = caption_ids[None, :] != caption_ids[:, None]
    i2t_scores = image_emb @ slots.T  # [query image, caption slot]
    i2t = ((i2t_scores >= i2t_scores.diagonal()[:, None]) & wrong).sum(1)
    t2i_scores = slots @ image_emb.T  # [query caption, image]
    best = t2i_scores.masked_fill(wrong, float("-inf")).amax(1, keepdim=True)
    t2i = ((t2i_scores >= best) & wrong).sum(1)
    return i2t, t2i


def tied_embeddings(seed: int, n: int, n_texts: int, dim: int = 4):
    """Small-integer embeddings (exact dot products, many exact ties) and repeated captions."""
    g = torch.Generator().manual_seed(seed)
    image_emb = torch.randint(-2, 3, (n, dim), generator=g).float()
    text_emb = torch.randint(-2, 3, (n_texts, dim), generator=g).float()
    image_emb[1::5] = image_emb[0]  # identical images
    text_emb[1] = text_emb[0]  # two distinct captions that embed alike
    caption_ids = torch.randint(0, n_texts, (n,), generator=g)
    caption_ids[:n_texts] = torch.arange(n_texts)  # every distinct caption used
    return image_emb, text_emb, caption_ids


def gaussian_embeddings(seed: int, n: int, n_texts: int, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    image_emb = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    text_emb = F.normalize(torch.randn(n_texts, dim, generator=g), dim=-1)
    caption_ids = torch.randint(0, n_texts, (n,), generator=g)
    caption_ids[:n_texts] = torch.arange(n_texts)
    return image_emb, text_emb, caption_ids


@pytest.fixture
def matmul_sizes(monkeypatch):
    """Elements of every matrix product `@` makes: the retrieval score blocks among them."""
    sizes: list[int] = []
    plain = torch.Tensor.__matmul__

    def recording(a, b):
        out = plain(a, b)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", recording)
    return sizes


@pytest.mark.parametrize("block_floats", [1, 64, 1 << 22])
@pytest.mark.parametrize("make", [tied_embeddings, gaussian_embeddings])
def test_blockwise_ranks_equal_the_full_matrix(make, block_floats, monkeypatch, matmul_sizes):
    image_emb, text_emb, caption_ids = make(seed=block_floats, n=60, n_texts=17)
    ref_i2t, ref_t2i = full_matrix_ranks(image_emb, text_emb, caption_ids)
    matmul_sizes.clear()
    monkeypatch.setattr(M, "_BLOCK_FLOATS", block_floats)
    i2t, t2i = M.retrieval_ranks(image_emb, text_emb, caption_ids)
    assert torch.equal(i2t, ref_i2t) and torch.equal(t2i, ref_t2i)
    assert ref_i2t.max() > 0 and ref_t2i.max() > 0  # not the trivial all-hits case
    # A score block holds at most the limit, or one row when a single row exceeds it.
    assert max(matmul_sizes) <= max(block_floats, 60)


def test_block_rows_bound_the_score_block():
    for n_cols in (1, 17, 4096, 100_000, 10_000_000):
        rows = M._block_rows(n_cols)
        assert rows >= 1 and (rows * n_cols <= M._BLOCK_FLOATS or rows == 1)
    assert M._block_rows(0) == M._BLOCK_FLOATS


# --------------------------------------------------------------------------- streaming evaluation


def _noise_jpg(rng: np.random.Generator, width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_two_shard_dataset(root: Path) -> Path:
    """The tiny dataset, plus a second val shard of non-square noise images (so decoding crops)."""
    make_tiny_dataset(root, {"val": 40, "test": 24}, size=DATA_SIZE)
    rng = np.random.default_rng(0)
    extra = []
    for i in range(12):
        colour, shape = ("red", "blue", "green")[i % 3], ("circle", "square")[i % 2]
        meta = {"objects": [{"colour": colour, "shape": shape, "size": "large", "position": "centre"}]}
        extra.append((f"val-extra-{i:03d}", _noise_jpg(rng, 48 + 4 * i, 40), f"a {colour} {shape}", meta))
    write_shard(root / "val" / "shard-000001.tar", extra)
    return root


def decode_split_up_front(dataset: Path, split: str, size: int) -> torch.Tensor:
    """Every image of a split, read with tarfile in shard and member order: uint8 [N, 3, size, size]."""
    images = []
    for shard in sorted((dataset / split).glob("*.tar")):
        with tarfile.open(shard) as tar:
            images += [decode_image(tar.extractfile(m).read(), size) for m in tar if m.name.endswith(".jpg")]
    return torch.stack(images)


@pytest.fixture(scope="module")
def two_shard_dataset(tmp_path_factory) -> Path:
    return make_two_shard_dataset(tmp_path_factory.mktemp("evalstream") / "ds")


def small_model(seed: int = 0, input_size: int = 0) -> LiTModel:
    torch.manual_seed(seed)
    return LiTModel(ModelConfig(image_input_size=input_size), DATA_SIZE).eval()


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_metrics_equal_those_of_images_decoded_up_front(two_shard_dataset, workers, monkeypatch):
    # 16 images per stream batch = the model's CPU chunk: both paths run the same forwards.
    evalset = E.prepare_eval(two_shard_dataset, DATA_SIZE, TEMPLATES, KS, batch_size=16, workers=workers)
    assert [len(p.split) for p in evalset.splits] == [52, 24]
    model = small_model()
    streamed: dict[str, torch.Tensor] = {}
    embed_split = E._embed_split_images

    def recording(model, evalset, split, bar):
        streamed[split.name] = embed_split(model, evalset, split, bar)
        return streamed[split.name]

    monkeypatch.setattr(E, "_embed_split_images", recording)
    report = E.score_model(model, evalset)

    up_front = {p.name: model.embed_images(decode_split_up_front(two_shard_dataset, p.name, DATA_SIZE), batch_size=16)
                for p in evalset.splits}
    monkeypatch.setattr(E, "_embed_split_images", lambda model, evalset, split, bar: up_front[split.name])
    reference = E.score_model(model, evalset)

    for name, emb in up_front.items():
        assert torch.equal(streamed[name], emb)
    assert report.metrics == reference.metrics and report.confusion == reference.confusion
    expected = {f"retrieval_{d}_r{k}{s}" for d in ("i2t", "t2i") for k in KS for s in ("", "_heldout")}
    assert expected | {"zeroshot_top1", "compositional_acc_heldout"} <= set(report.metrics)


class RecordingEmbedder:
    """Records the image batches it gets; embeds an image as its mean colour, a text as a constant."""

    def __init__(self, image_input_size: int | None = None):
        if image_input_size is not None:
            self.image_input_size = image_input_size
        self.batches: list[torch.Tensor] = []

    def embed_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.batches.append(images.clone())
        return F.normalize(images.float().mean((2, 3)) + 1.0, dim=-1)

    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        return F.normalize(torch.ones(len(texts), 3), dim=-1)


@pytest.mark.parametrize("input_size", [24, 40])
def test_images_are_decoded_at_the_models_input_size(two_shard_dataset, input_size):
    evalset = E.prepare_eval(two_shard_dataset, DATA_SIZE, TEMPLATES, KS, batch_size=20)
    own_size, default_size = RecordingEmbedder(input_size), RecordingEmbedder()
    E.score_model(own_size, evalset)
    E.score_model(default_size, evalset)

    assert {tuple(b.shape[1:]) for b in own_size.batches} == {(3, input_size, input_size)}
    assert {tuple(b.shape[1:]) for b in default_size.batches} == {(3, DATA_SIZE, DATA_SIZE)}
    assert [len(b) for b in own_size.batches] == [20, 20, 12, 20, 4]  # val (52), then test (24)
    val_images = torch.cat(own_size.batches[:3])
    assert torch.equal(val_images, decode_split_up_front(two_shard_dataset, "val", input_size))


def test_a_real_model_gets_its_tower_input_size(two_shard_dataset, monkeypatch):
    model = small_model(input_size=24)
    seen: list[tuple[int, ...]] = []
    embed = model.embed_images
    monkeypatch.setattr(model, "embed_images", lambda images, batch_size=256: seen.append(tuple(images.shape)) or
                        embed(images, batch_size))
    evalset = E.prepare_eval(two_shard_dataset, DATA_SIZE, TEMPLATES, KS, batch_size=64)
    E.score_model(model, evalset)
    assert model.image_input_size == 24 and seen == [(52, 3, 24, 24), (24, 3, 24, 24)]


def test_prepare_decodes_no_image(two_shard_dataset, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("prepare_eval decoded an image")

    monkeypatch.setattr(stream_module, "decode_image", no_decoding)
    evalset = E.prepare_eval(two_shard_dataset, DATA_SIZE, TEMPLATES, KS, batch_size=8, workers=0)
    val = evalset.splits[0]
    assert len(val.split.captions) == len(val.split.metas) == len(val.split.keys) == 52
    assert val.split.keys[:2] == ["val-00000", "val-00001"] and val.split.keys[-1] == "val-extra-011"
    assert val.split.metas[0]["objects"][0]["colour"] == "red"


def test_reader_workers_never_exceed_batches():
    assert E.reader_workers(samples=10, batch_size=8, workers=4) == 2
    assert E.reader_workers(samples=100, batch_size=8, workers=2) == 2
    assert E.reader_workers(samples=100, batch_size=8, workers=0) == 0


def test_split_without_readable_samples_is_skipped_with_a_note(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "ds", {"val": 8}, size=DATA_SIZE)
    (dataset / "test").mkdir()
    with tarfile.open(dataset / "test" / "shard-000000.tar", "w") as tar:
        info = tarfile.TarInfo("test-00000.txt")  # a caption without an image
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    evalset = E.prepare_eval(dataset, DATA_SIZE, TEMPLATES, KS)
    assert [p.name for p in evalset.splits] == ["val"]
    assert any("split 'test' skipped: no readable samples" in n for n in evalset.notes)
