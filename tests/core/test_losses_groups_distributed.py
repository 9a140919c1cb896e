"""Duplicate-aware ring losses over 2 and 3 gloo processes on CPU against the single-process
reference (value and gradients), with duplicate groups that span ranks."""

from pathlib import Path

import pytest
import torch

from litops.core.losses.reference import sigmoid_loss_reference, softmax_loss_reference
from tests.core.losses_dist_launch import run_ring_workers

WORKER = Path(__file__).with_name("losses_groups_dist_worker.py")


def _groups(world: int, n_local: int, pattern: str) -> torch.Tensor:
    """Group ids for the global batch. "span": duplicates within and across ranks;
    "same": one group; "distinct": no duplicates."""
    big_n = world * n_local
    if pattern == "same":
        return torch.zeros(big_n, dtype=torch.int64)
    if pattern == "distinct":
        return torch.arange(big_n, dtype=torch.int64) * 7 - 3
    ids = torch.arange(big_n, dtype=torch.int64)
    ids[n_local] = ids[0]  # rank 0 row 0 and rank 1 row 0 share a caption
    ids[big_n - 1] = ids[1 % big_n]  # last rank's last row joins rank 0's row 1
    if n_local > 2:
        ids[2] = ids[1]  # a duplicate within rank 0 as well (group of 3)
    return ids


def _cases(world: int) -> list[dict]:
    g = torch.Generator().manual_seed(200 + world)
    cases = []
    for loss in ("sigmoid", "softmax"):
        for duplicates in ("positive", "ignore"):
            # float64 checks the algorithm tightly; float32 (non-extreme) the accumulation dtype
            for n_local, d, block, noncontig, ddp, spread, pattern, dtype in [
                (5, 12, 2, True, False, 1.0, "span", torch.float64),     # strips not dividing n, non-contiguous
                (5, 12, 3, False, False, 1.0, "span", torch.float32),
                (4, 8, None, False, True, 40.0, "span", torch.float64),  # extreme logits (|logit| > 80), ddp scaling
                (3, 6, 1, False, False, 1.0, "same", torch.float64),     # every pair same-group
                (1, 4, None, False, False, 1.0, "span", torch.float64),  # one row per rank
            ]:
                img = torch.randn(world * n_local, d, generator=g, dtype=torch.float64) * spread / d**0.5
                txt = torch.randn(world * n_local, d, generator=g, dtype=torch.float64) * spread / d**0.5
                cases.append({"loss": loss, "duplicates": duplicates, "img": img.to(dtype), "txt": txt.to(dtype),
                              "scale": torch.tensor(10.0 if spread == 1 else 3.0, dtype=dtype),
                              "bias": torch.tensor(-5.0, dtype=dtype), "groups": _groups(world, n_local, pattern),
                              "block": block, "noncontig": noncontig, "ddp": ddp})
    return cases


def _reference(case: dict) -> dict:
    img, txt, scale, bias = (case[k].double().requires_grad_(True) for k in ("img", "txt", "scale", "bias"))
    if case["loss"] == "sigmoid":
        loss = sigmoid_loss_reference(img, txt, scale, bias, case["groups"], case["duplicates"])
    else:
        loss = softmax_loss_reference(img, txt, scale, case["groups"], case["duplicates"])
    loss.backward()
    return {"loss": loss.detach(), "img": img.grad, "txt": txt.grad, "scale": scale.grad,
            "bias": bias.grad if case["loss"] == "sigmoid" else None}


def _close(got, want, what, magnitude=None):
    """max|got − want| within a relative tolerance of `magnitude` (default max|want|): 1e-10 in
    float64, 2e-5 in float32, with a floor since a near-zero d scale is a cancelling sum."""
    assert got is not None, what
    assert torch.isfinite(got).all(), what
    err = (got.double() - want).abs().max().item()
    rel = 1e-10 if got.dtype == torch.float64 else 2e-5
    tol = rel * max(want.abs().max().item() if magnitude is None else magnitude, 1e-2)
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("world", [2, 3])
def test_ring_with_groups_matches_reference(world, tmp_path):
    cases = _cases(world)
    results = run_ring_workers(WORKER, world, tmp_path, cases)
    for k, case in enumerate(cases):
        ref = _reference(case)
        n = case["img"].shape[0] // world
        mult = world if case["ddp"] else 1
        for r in range(world):
            got = results[r][k]
            what = f"{case['loss']}/{case['duplicates']} case {k} rank {r}"
            _close(got["loss"], ref["loss"], what + " loss")
            if case["ddp"]:  # the trainer's DistContext.loss gives the same value
                assert torch.equal(got["dist_context_loss"], got["loss"]), what
            sl = slice(r * n, (r + 1) * n)
            # relative to the whole gradient: one rank's slice may hold only tiny entries
            _close(got["img"], ref["img"][sl] * mult, what + " d img", ref["img"].abs().max().item() * mult)
            _close(got["txt"], ref["txt"][sl] * mult, what + " d txt", ref["txt"].abs().max().item() * mult)
            _close(got["scale"], ref["scale"], what + " d scale")
            if case["loss"] == "sigmoid":
                _close(got["bias"], ref["bias"], what + " d bias")
            else:
                assert got["bias"] is None
    for r in range(world):
        msg = results[r][-1]["mismatch_error"]
        assert msg is not None and "same duplicates mode" in msg, msg


def test_cross_rank_groups_change_the_loss():
    # the spanning pattern must really create cross-rank duplicates, or the test above proves little
    ids = _groups(3, 4, "span")
    assert ids[0] == ids[4] and ids[11] == ids[1]
    case = _cases(3)[0]
    plain = sigmoid_loss_reference(case["img"].double(), case["txt"].double(), case["scale"].double(), case["bias"].double())
    grouped = _reference(case)["loss"]
    assert abs(plain.item() - grouped.item()) > 1e-3
