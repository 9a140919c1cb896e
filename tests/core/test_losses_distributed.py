"""Ring losses over 2 and 3 gloo processes on CPU against the single-process reference."""

from pathlib import Path

import pytest
import torch

from litops.core.losses.reference import sigmoid_loss_reference, softmax_loss_reference
from tests.core.losses_dist_launch import run_ring_workers

WORKER = Path(__file__).with_name("losses_dist_worker.py")


def _cases(world: int) -> list[dict]:
    g = torch.Generator().manual_seed(100 + world)
    cases = []
    for loss in ("sigmoid", "softmax"):
        for n_local, d, block, noncontig, ddp, spread in [
            (1, 3, None, False, False, 1.0),     # N_local = 1
            (7, 12, 3, True, False, 1.0),        # strips that do not divide n, non-contiguous, odd D
            (5, 16, None, False, True, 1.0),     # ddp=True scaling
            (4, 8, 2, False, False, 40.0),       # extreme logits (|logit| > 80)
        ]:
            img = torch.randn(world * n_local, d, generator=g, dtype=torch.float64) * spread / d**0.5
            txt = torch.randn(world * n_local, d, generator=g, dtype=torch.float64) * spread / d**0.5
            if n_local > 1:
                txt[1] = txt[0]  # duplicate rows
                img[1] = img[0]
            cases.append({"loss": loss, "img": img.float(), "txt": txt.float(), "scale": torch.tensor(10.0 if spread == 1 else 3.0),
                          "bias": torch.tensor(-5.0), "block": block, "noncontig": noncontig, "ddp": ddp})
    return cases


def _reference(case: dict) -> dict:
    img = case["img"].double().requires_grad_(True)
    txt = case["txt"].double().requires_grad_(True)
    scale = case["scale"].double().requires_grad_(True)
    bias = case["bias"].double().requires_grad_(True)
    if case["loss"] == "sigmoid":
        loss = sigmoid_loss_reference(img, txt, scale, bias)
    else:
        loss = softmax_loss_reference(img, txt, scale)
    loss.backward()
    return {"loss": loss.detach(), "img": img.grad, "txt": txt.grad, "scale": scale.grad,
            "bias": bias.grad if case["loss"] == "sigmoid" else None}


def _close(got, want, what):
    assert got is not None, what
    assert torch.isfinite(got).all(), what
    err = (got.double() - want).abs().max().item()
    tol = 2e-5 * max(want.abs().max().item(), 1e-3)
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("world", [2, 3])
def test_ring_matches_reference(world, tmp_path):
    cases = _cases(world)
    results = run_ring_workers(WORKER, world, tmp_path, cases)
    for k, case in enumerate(cases):
        ref = _reference(case)
        n = case["img"].shape[0] // world
        mult = world if case["ddp"] else 1
        for r in range(world):
            got = results[r][k]
            what = f"{case['loss']} case {k} rank {r}"
            _close(got["loss"], ref["loss"], what + " loss")  # global loss on every rank
            sl = slice(r * n, (r + 1) * n)
            _close(got["img"], ref["img"][sl] * mult, what + " d img")
            _close(got["txt"], ref["txt"][sl] * mult, what + " d txt")
            _close(got["scale"], ref["scale"], what + " d scale")
            if case["loss"] == "sigmoid":
                _close(got["bias"], ref["bias"], what + " d bias")
            else:
                assert got["bias"] is None
    for r in range(world):
        msg = results[r][-1]["mismatch_error"]
        assert msg is not None and "same (n, D)" in msg
