"""GradCache: exact large batch in micro-batches (parameter gradients equal the direct step's)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from litops.core.config import ModelConfig
from litops.core.losses import contrastive_loss
from litops.core.model import LiTModel
from litops.train.gradcache import direct_step, gradcache_step, train_step


def loss_fn(img, txt, scale, bias):
    return contrastive_loss("sigmoid", img, txt, scale, bias)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and len(a) > 4
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), (k, (a[k] - b[k]).abs().max().item())


def _batch(model, n: int = 12, size: int = 32):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    words = ["red", "green", "blue", "circle", "square", "small", "large", "left"]
    texts = [" ".join(words[(i * 3 + j) % len(words)] for j in range(2 + i % 4)) for i in range(n)]
    return model.image_tower.preprocess(images), model.text_tower.tokenize(texts)


def test_gradcache_equals_direct_full_batch_step():
    """Locked EfficientNet-Lite0 (eval-mode BatchNorm) + a text tower from scratch; uneven micro-batches."""
    torch.manual_seed(0)
    model = LiTModel(ModelConfig(image_tower="efficientnet_lite0", lock="Lu", image_input_size=32, embed_dim=32,
                                 text_width=32, text_heads=2, vocab_size=256), 32).lock().train()
    pixels, tokens = _batch(model)
    direct_loss = direct_step(model, model, pixels, tokens, None, loss_fn)
    direct = _grads(model)
    model.zero_grad(set_to_none=True)
    gc_loss = gradcache_step(model, model, pixels, tokens, None, loss_fn, micro_batch_size=5)  # 5 + 5 + 2
    _assert_same(direct, _grads(model))
    assert torch.allclose(direct_loss, gc_loss, atol=1e-6)
    assert "logit_scale" in direct and "logit_bias" in direct and not any(k.startswith("image_tower") for k in direct)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A small local BERT-like model (dropout 0.1) saved as a transformers folder: `text_tower=hf`, lock U."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from litops.core.pretrained import minilm_path

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1),
              add_pooling_layer=False).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True).save_pretrained(path)
    return str(path)


def _hf_model(path: str) -> LiTModel:
    torch.manual_seed(0)
    return LiTModel(ModelConfig(image_tower="scratch_cnn", text_tower="hf", text_pretrained_path=path, lock="uU",
                                embed_dim=16, image_width=8), 32).train()


def _microbatched_reference(model, feats, tokens, mb: int) -> dict[str, torch.Tensor]:
    """The same step with a graph: micro-batched forwards (same RNG stream), full-batch loss, one backward."""
    imgs, txts = [], []
    for i in range(0, len(feats), mb):
        s = slice(i, i + mb)
        img, txt = model(None, {k: v[s] for k, v in tokens.items()}, image_features=feats[s])
        imgs.append(img)
        txts.append(txt)
    loss_fn(torch.cat(imgs), torch.cat(txts), model.logit_scale.exp(), model.logit_bias).backward()
    return _grads(model)


def test_gradcache_restores_rng_for_dropout_and_reads_cached_features(tiny_bert):
    """With dropout on, the re-forward draws the same masks: gradients equal the graph-keeping reference."""
    model = _hf_model(tiny_bert)
    assert model.text_tower.model.config.hidden_dropout_prob == 0.1 and model.text_tower.training
    feats = torch.randn(10, model.image_tower.output_dim, generator=torch.Generator().manual_seed(2))
    _, tokens = _batch(model, n=10)
    torch.manual_seed(5)
    want = _microbatched_reference(model, feats, tokens, 4)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    train_step(model, model, None, tokens, feats, loss_fn, micro_batch_size=4)
    _assert_same(want, _grads(model))
    # without restoring the RNG the masks would differ (the check above is not vacuous)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(6)
    other = _microbatched_reference(model, feats, tokens, 4)
    assert not all(torch.allclose(other[k], want[k], rtol=1e-4, atol=1e-6) for k in want)


def test_gradcache_under_ddp_syncs_only_on_the_last_micro_batch(tiny_bert, tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = _hf_model(tiny_bert)
        model.text_tower.model.config.hidden_dropout_prob = 0.0
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        feats = torch.randn(10, model.image_tower.output_dim, generator=torch.Generator().manual_seed(2))
        _, tokens = _batch(model, n=10)
        direct_step(model, model, None, tokens, feats, loss_fn)
        want = _grads(model)
        model.zero_grad(set_to_none=True)

        class SpyDDP(DDP):
            synced: list[bool] = []

            @contextlib.contextmanager
            def no_sync(self):
                SpyDDP.synced.append(False)
                with super().no_sync():
                    yield

        wrapped = SpyDDP(model)
        gradcache_step(wrapped, model, None, tokens, feats, loss_fn, micro_batch_size=3)  # 4 micro-batches
        assert SpyDDP.synced == [False, False, False]  # no_sync on the first three; the last one all-reduces
        _assert_same(want, _grads(model))
    finally:
        dist.destroy_process_group()
