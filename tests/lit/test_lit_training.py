"""Training quality of life: GradCache in the loop, bf16 autocast, torch.compile, AdamW groups and
schedule, clipping, system metrics to MLflow, and the LiT config."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from litops.core.config import DataConfig, LitopsConfig, ModelConfig, TrainConfig
from litops.core.model import LiTModel
from litops.train.logger import JsonlLogger
from litops.train.loop import make_optimizer, param_groups, train, warmup_cosine


def lit_config(**train_kw) -> LitopsConfig:
    return LitopsConfig(
        data=DataConfig(image_size=32),
        model=ModelConfig(image_tower="efficientnet_lite0", lock="Lu", image_input_size=32, embed_dim=32,
                          text_width=32, text_heads=2, vocab_size=512),
        train=TrainConfig(**{"steps": 3, "batch_size": 32, "checkpoint_every": 3, "warmup_steps": 1, "lr": 1e-3,
                             **train_kw}),
    )


def _weights(result) -> dict[str, torch.Tensor]:
    return torch.load(result.model_path, weights_only=False)["model"]


def test_micro_batch_size_trains_like_the_full_batch(tiny_dataset, tmp_path):
    """train.micro_batch_size=8 of batch 32: GradCache steps give the full-batch step's weights."""
    full = train(lit_config(steps=2), tiny_dataset, tmp_path / "full", JsonlLogger(tmp_path / "f.jsonl"))
    gc = train(lit_config(steps=2, micro_batch_size=8, feature_cache=False), tiny_dataset, tmp_path / "gc",
               JsonlLogger(tmp_path / "g.jsonl"))
    a, b = _weights(full), _weights(gc)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=2e-5), k


def test_bf16_autocast_runs_and_is_recorded(tiny_dataset, tmp_path):
    """bf16 is the default on CUDA (precision=auto); forced here on the CPU, where autocast also works."""
    cfg = lit_config(precision="bf16", steps=2)
    res = train(cfg, tiny_dataset, tmp_path / "b", JsonlLogger(tmp_path / "b.jsonl"))
    assert math.isfinite(res.final_loss)
    params = [json.loads(l)["params"] for l in (tmp_path / "b.jsonl").read_text().splitlines() if '"params"' in l]
    assert any(p.get("precision") == "bf16" for p in params)
    params_auto = lit_config().train.precision
    assert params_auto == "auto"


def test_torch_compile_option(tiny_dataset, tmp_path, monkeypatch):
    """train.compile=true wraps the forward with torch.compile (an eager backend keeps CI fast)."""
    calls = []
    real = torch.compile

    def spy(fn, *a, **kw):
        calls.append(fn)
        return real(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", spy)
    res = train(lit_config(compile=True, steps=2), tiny_dataset, tmp_path / "c", JsonlLogger(tmp_path / "c.jsonl"))
    assert len(calls) == 1 and isinstance(calls[0], LiTModel) and math.isfinite(res.final_loss)


def test_adamw_groups_schedule_and_clipping():
    model = LiTModel(ModelConfig(text_width=32, text_heads=2, vocab_size=256, embed_dim=16), 32)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert {"logit_scale", "logit_bias"} <= nd and no_decay["weight_decay"] == 0.0
    assert all(n.endswith("bias") or "norm" in n or "bn" in n.lower() or n.startswith("logit") or ".pos" in n
               or n.split(".")[-2].isdigit() for n in nd)
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.05
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-9)
    lu = LiTModel(ModelConfig(image_tower="efficientnet_lite0", lock="Lu", image_input_size=32, text_width=32,
                              text_heads=2, vocab_size=256), 32).lock()
    groups = param_groups(lu, 0.05)
    assert not any(p is q for g in groups for p in g["params"] for q in lu.image_tower.parameters())  # locked: none


def test_optimizer_is_fused_adamw_and_steps_like_the_per_tensor_loop():
    """The trainer's AdamW uses torch's fused kernel on the CPU (much faster for MiniLM-sized towers,
    tests/benchmarks/optimizer_step.py); its update equals the per-tensor reference within fp32 rounding."""
    torch.manual_seed(0)
    cfg = ModelConfig(text_width=32, text_heads=2, vocab_size=256, embed_dim=16)
    model, twin = LiTModel(cfg, 32), LiTModel(cfg, 32)
    twin.load_state_dict(model.state_dict())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fused = make_optimizer(model, 1e-2, 0.05, torch.device("cpu"))
    assert fused.defaults["fused"] is True
    loop = torch.optim.AdamW(param_groups(twin, 0.05), lr=1e-2, betas=(0.9, 0.98), eps=1e-6, foreach=False)
    for step in range(3):
        for a, b in zip(model.parameters(), twin.parameters()):
            g = torch.randn_like(a) * (step + 1)
            a.grad, b.grad = g.clone(), g.clone()
        fused.step()
        loop.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert not torch.equal(a.detach(), initial[name]), f"{name} did not move"
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name


def test_gradients_are_clipped(tiny_dataset, tmp_path, monkeypatch):
    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        params = list(params)
        norm = real(params, max_norm, *a, **kw)
        seen.append((max_norm, norm.item(), torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])).item()))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train(lit_config(grad_clip=1e-3, steps=2), tiny_dataset, tmp_path / "k", JsonlLogger(tmp_path / "k.jsonl"))
    assert len(seen) == 2 and all(m == 1e-3 and before > 1e-3 and after <= 1e-3 * 1.01 for m, before, after in seen)


def test_system_metrics_reach_mlflow(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("psutil")
    from mlflow.tracking import MlflowClient

    from litops.train.mlflow_logger import MLflowLogger

    monkeypatch.setenv("LITOPS_SYSTEM_METRICS_INTERVAL", "0.2")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lg = MLflowLogger(uri, "sys", tmp_path / "ck", "run", {})
    assert lg.system_metrics is None, "no sampler thread until training logs (readers fork first)"
    lg.log_metrics({"train/loss": 1.0}, step=1)
    assert lg.system_metrics is not None
    time.sleep(1.5)
    lg.close()
    keys = MlflowClient(uri).get_run(lg.run_id).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in keys), sorted(keys)
    assert any(k.startswith("system/system_memory_usage") for k in keys), sorted(keys)


def test_lit_effnet_minilm_config():
    from litops.flows.config import load_config

    cfg = load_config(["experiment=lit_effnet_minilm"])
    assert (cfg.model.image_tower, cfg.model.text_tower, cfg.model.lock) == ("efficientnet_lite0", "minilm", "LU")
    assert cfg.loss.name == "sigmoid" and cfg.train.feature_cache is True
    assert (cfg.train.steps, cfg.train.lr) == (100, 0.0002)  # the experiment's presets for a pretrained text tower
    assert cfg.model.image_input_size == 0  # the tower's own 224 px (64 px starves the locked ImageNet features)
    assert load_config(["experiment=lit_effnet_minilm", "train.steps=7"]).train.steps == 7  # CLI overrides still win
    assert load_config([]).model.lock == "Lu"  # the embedded default: LiT (configs/model/lit.yaml)
    assert load_config(["experiment=scratch_small"]).model.lock == "uu"  # both towers from scratch


def test_model_groups_set_model_keys_only():
    """Training presets live in experiments: picking a model leaves the experiment's training settings."""
    from litops.flows.config import config_dir, load_config

    experiment = load_config([])
    assert load_config(["model=small"]).train == experiment.train
    assert load_config(["model=lit_effnet_minilm"]).train == experiment.train
    for option in sorted(Path(config_dir(), "model").glob("*.yaml")):
        text = option.read_text()
        assert "@package _global_" not in text and "\ntrain:" not in text, option.name
