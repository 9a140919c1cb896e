"""Chunked and reference losses against the float64 reference: value and all four gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from losses_cases import CASES, check, errors, make_case, run  # noqa: E402

from litops.core.losses import contrastive_loss, sigmoid_loss, softmax_loss  # noqa: E402


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl,block", [("reference", None), ("chunked", None), ("chunked", 5), ("chunked", 1)])
def test_fp32_exact(loss, case, impl, block):
    img, txt, scale, bias = make_case(case)
    want = run(loss, "ref64", img, txt, scale, bias)
    got = run(loss, impl, img, txt, scale, bias, block=block)
    check(errors(got, want), torch.float32, loss, f"{impl}/{block} {loss} {case}")


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
@pytest.mark.parametrize("case", ["ragged", "extreme", "duplicates"])
def test_bf16_tolerance(loss, case):
    img, txt, scale, bias = make_case(case, torch.bfloat16)
    want = run(loss, "ref64", img, txt, scale, bias)
    got = run(loss, "chunked", img, txt, scale, bias, block=7)
    check(errors(got, want), torch.bfloat16, loss, f"chunked bf16 {loss} {case}")
    assert got[1].dtype == torch.bfloat16 and got[2].dtype == torch.bfloat16


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
@pytest.mark.parametrize("grads", [(True, False, False, False), (False, True, False, False), (False, False, True, False),
                                   (False, False, False, True), (True, True, False, True), (False, False, False, False)])
def test_partial_requires_grad(loss, grads):
    img, txt, scale, bias = make_case("ragged")
    want = run(loss, "ref64", img, txt, scale, bias, grads=grads)
    got = run(loss, "chunked", img, txt, scale, bias, grads=grads, block=8)
    for name, a, b in zip(("img", "txt", "scale", "bias"), got[1:], want[1:]):
        if b is None:
            assert a is None, name
        else:
            assert (a.double() - b).abs().max() <= 1e-5 * b.abs().max(), name
    assert abs(got[0].item() - want[0].item()) <= 1e-5 * abs(want[0].item())


def test_no_nan_at_extreme_logits_fp32_reference_scale():
    # logits of ±1e4: softplus/sigmoid must stay finite; the loss is dominated by the negatives
    img = torch.eye(6, 8) * 100
    txt = torch.eye(6, 8) * 100
    txt[1] = -txt[1]  # a positive pair with logit −1e4·scale
    for loss in ("sigmoid", "softmax"):
        got = run(loss, "chunked", img, txt, torch.tensor(1.0), torch.tensor(0.0), block=4)
        want = run(loss, "ref64", img, txt, torch.tensor(1.0), torch.tensor(0.0))
        assert all(torch.isfinite(g).all() for g in got if g is not None)
        check(errors(got, want), torch.float32, loss, f"chunked {loss} huge logits")


def test_scale_bias_shape_one_and_dtype_preserved():
    img, txt, _, _ = make_case("ragged")
    scale = torch.tensor([4.0], requires_grad=True)
    bias = torch.tensor([-1.0], requires_grad=True)
    sigmoid_loss(img, txt, scale, bias, impl="chunked").backward()
    assert scale.grad.shape == (1,) and bias.grad.shape == (1,)


def test_auto_is_chunked_on_cpu_and_matches(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    img, txt, scale, bias = make_case("ragged")
    a = sigmoid_loss(img, txt, scale, bias)
    b = sigmoid_loss(img, txt, scale, bias, impl="chunked")
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="CUDA"):
        sigmoid_loss(img, txt, scale, bias, impl="triton")
    with pytest.raises(ValueError, match="impl"):
        sigmoid_loss(img, txt, scale, bias, impl="fused")


def test_contrastive_loss_dispatch():
    img, txt, scale, bias = make_case("ragged")
    logit_scale = torch.tensor(2.3, requires_grad=True)
    b = torch.tensor(-10.0, requires_grad=True)
    for name in ("sigmoid", "softmax"):
        vals = [contrastive_loss(name, img, txt, logit_scale.exp(), b, impl=impl) for impl in ("reference", "chunked", "auto")]
        assert all(torch.allclose(v, vals[0], rtol=1e-5) for v in vals)
        vals[1].backward()
    assert logit_scale.grad is not None and b.grad is not None
    with pytest.raises(ValueError, match="unknown loss"):
        contrastive_loss("triplet", img, txt, logit_scale.exp(), b)


@pytest.mark.parametrize("impl", ["reference", "chunked", "auto"])
def test_bad_inputs_raise_value_error(impl):
    x = torch.randn(8, 4)
    s, b = torch.tensor(1.0), torch.tensor(0.0)
    bad = [
        ((x, torch.randn(7, 4), s, b), r"\(8, 4\).*\(7, 4\)"),            # mismatched N
        ((x, torch.randn(8, 5), s, b), r"\(8, 4\).*\(8, 5\)"),            # mismatched D
        ((torch.randn(8), torch.randn(8), s, b), r"2-D.*\(8,\)"),         # wrong rank
        ((torch.randn(2, 8, 4), x, s, b), r"2-D.*\(2, 8, 4\)"),
        ((x, x.double(), s, b), r"torch.float32.*torch.float64"),         # mixed dtypes
        ((x, x.long(), s, b), r"int64"),
        ((x, x, torch.ones(2), b), r"scale.*\(2,\)"),                     # non-scalar scale
        ((x, x, s, torch.zeros(1, 3)), r"bias.*\(1, 3\)"),                # non-scalar bias
    ]
    for args, pattern in bad:
        with pytest.raises(ValueError, match=pattern):
            sigmoid_loss(*args, impl=impl)
        if "bias" not in pattern:
            with pytest.raises(ValueError, match=pattern):
                softmax_loss(*args[:3], impl=impl)


def test_softmax_column_lse_underflow_fallback():
    # row 0's max (1000) dwarfs column 1's entries (0 and −100): the shared-exp column sum
    # underflows for column 1 and must be recomputed directly
    img = torch.tensor([[10.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    txt = torch.tensor([[10.0, 0.0], [0.0, -10.0], [1.0, 0.0]])
    scale = torch.tensor(10.0)
    want = run("softmax", "ref64", img, txt, scale, torch.tensor(0.0))
    for block in (1, 2, 3):
        got = run("softmax", "chunked", img, txt, scale, torch.tensor(0.0), block=block)
        check(errors(got, want), torch.float32, "softmax", f"underflow fallback block={block}")


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
def test_autocast_does_not_lower_precision(loss):
    img, txt, scale, bias = make_case("ragged")
    want = run(loss, "ref64", img, txt, scale, bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(loss, "chunked", img, txt, scale, bias, block=8)
    check(errors(got, want), torch.float32, loss, f"chunked {loss} under autocast")


def test_auto_picks_chunked_for_float64():
    from litops.core.losses._checks import resolve_impl

    assert resolve_impl("auto", torch.device("cpu"), torch.float32) == "chunked"
    assert resolve_impl("auto", torch.device("cuda"), torch.float64) == "chunked"
