"""Duplicate-aware targets (groups, duplicates): the reference against targets written out pair by
pair, the chunked losses against the reference (value and every gradient), today's loss
unchanged, and input validation."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from losses_groups_cases import GROUP_CASES, MODES, check, errors, make_group_case, run  # noqa: E402

from litops.core.losses import (  # noqa: E402
    caption_groups,
    contrastive_loss,
    sigmoid_loss,
    sigmoid_loss_distributed,
    softmax_loss,
    softmax_loss_distributed,
)

LOSSES = ("sigmoid", "softmax")


# ----------------------------------------------------------------------------- explicit targets


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _explicit_loss(loss: str, logits: list[list[float]], groups: list[int], duplicates: str) -> float:
    """The task's definitions, pair by pair in Python floats."""
    n = len(groups)
    same = [[groups[i] == groups[j] for j in range(n)] for i in range(n)]
    if duplicates == "negative":
        same = [[i == j for j in range(n)] for i in range(n)]
    if loss == "sigmoid":
        total = 0.0
        for i in range(n):
            for j in range(n):
                if duplicates == "ignore" and same[i][j] and i != j:
                    continue
                z = 1.0 if (same[i][j] if duplicates == "positive" else i == j) else -1.0
                total -= _log_sigmoid(z * logits[i][j])
        return total / n
    kept = [[not (duplicates == "ignore" and same[i][j] and i != j) for j in range(n)] for i in range(n)]
    ce_rows = ce_cols = 0.0
    for i in range(n):  # image → text over row i, text → image over column i
        row_lse = _logsumexp([logits[i][j] for j in range(n) if kept[i][j]])
        col_lse = _logsumexp([logits[j][i] for j in range(n) if kept[j][i]])
        targets = [j for j in range(n) if same[i][j]] if duplicates == "positive" else [i]
        ce_rows += sum(row_lse - logits[i][j] for j in targets) / len(targets)
        ce_cols += sum(col_lse - logits[j][i] for j in targets) / len(targets)
    return 0.5 * (ce_rows + ce_cols) / n


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("duplicates", MODES)
@pytest.mark.parametrize("case", ["mixed", "extreme", "same", "n1"])
def test_reference_matches_explicit_targets(loss, duplicates, case):
    img, txt, scale, bias, groups = make_group_case(case)
    want = run(loss, "ref64", img, txt, scale, bias, groups, duplicates)[0].item()
    logits = (scale * img @ txt.t() + (bias if loss == "sigmoid" else 0)).tolist()
    explicit = _explicit_loss(loss, logits, groups.tolist(), duplicates)
    assert math.isfinite(want)
    assert abs(want - explicit) <= 1e-12 * max(1.0, abs(explicit)), (want, explicit)


def test_duplicates_change_the_loss():
    # the mixed case really has same-group pairs, so the modes differ from each other
    img, txt, scale, bias, groups = make_group_case("mixed")
    for loss in LOSSES:
        values = {m: run(loss, "ref64", img, txt, scale, bias, groups, m)[0].item() for m in MODES}
        assert len({round(v, 9) for v in values.values()}) == 3, values


def test_softmax_positive_equals_negative_when_duplicate_texts_are_identical():
    # same-group columns are then identical, so averaging the target over them changes nothing
    # (rows: equal log-probabilities; columns: the per-column targets just swap between twins);
    # "ignore" still differs, and so does the sigmoid "positive"
    img, txt, scale, bias, groups = make_group_case("mixed", identical_texts=True)
    value = {m: run("softmax", "ref64", img, txt, scale, bias, groups, m)[0].item() for m in MODES}
    assert abs(value["positive"] - value["negative"]) <= 1e-12 * value["negative"]
    assert abs(value["ignore"] - value["negative"]) > 1e-3
    sig = {m: run("sigmoid", "ref64", img, txt, scale, bias, groups, m)[0].item() for m in ("positive", "negative")}
    assert abs(sig["positive"] - sig["negative"]) > 1e-3


# ----------------------------------------------------------------------------- chunked vs reference


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("block", [None, 1, 7])
@pytest.mark.parametrize("case", GROUP_CASES)
@pytest.mark.parametrize("duplicates", MODES)
@pytest.mark.parametrize("loss", LOSSES)
def test_chunked_matches_reference(loss, duplicates, case, block, dtype):
    img, txt, scale, bias, groups = make_group_case(case, dtype)
    want = run(loss, "ref64", img, txt, scale, bias, groups, duplicates)
    got = run(loss, "chunked", img, txt, scale, bias, groups, duplicates, block=block)
    check(errors(got, want), dtype, loss, f"chunked/{block} {loss} {duplicates} {case} {dtype}")
    assert got[1].dtype == dtype and got[2].dtype == dtype


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("duplicates", ["positive", "ignore"])
def test_chunked_partial_requires_grad(loss, duplicates):
    img, txt, scale, bias, groups = make_group_case("mixed")
    grads = (False, True, False, True)
    want = run(loss, "ref64", img, txt, scale, bias, groups, duplicates, grads=grads)
    got = run(loss, "chunked", img, txt, scale, bias, groups, duplicates, block=4, grads=grads)
    assert got[1] is None and got[3] is None
    assert (got[2] - want[2]).abs().max() <= 1e-10 * want[2].abs().max()
    assert abs(got[0].item() - want[0].item()) <= 1e-10 * abs(want[0].item())


# ----------------------------------------------------------------------------- today's loss


@pytest.mark.parametrize("impl", ["reference", "chunked"])
@pytest.mark.parametrize("loss", LOSSES)
def test_negative_or_no_groups_is_todays_loss_exactly(loss, impl):
    img, txt, scale, bias, groups = make_group_case("mixed", torch.float32)
    todays = run(loss, impl, img, txt, scale, bias, None, "negative", block=5 if impl == "chunked" else None)
    for grp, mode in ((groups, "negative"), (None, "positive"), (None, "ignore")):
        got = run(loss, impl, img, txt, scale, bias, grp, mode, block=5 if impl == "chunked" else None)
        for a, b in zip(got, todays):
            assert (a is None and b is None) or torch.equal(a, b), (grp is not None, mode)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
@pytest.mark.parametrize("duplicates", ["positive", "ignore"])
@pytest.mark.parametrize("loss", LOSSES)
def test_distinct_groups_give_todays_loss(loss, duplicates, impl):
    img, txt, scale, bias, groups = make_group_case("distinct")
    todays = run(loss, "ref64", img, txt, scale, bias, None, "negative")
    got = run(loss, impl, img, txt, scale, bias, groups, duplicates, block=4 if impl == "chunked" else None)
    check(errors(got, todays), torch.float64, loss, f"{impl} {loss} {duplicates} distinct groups")


def test_contrastive_loss_forwards_groups():
    img, txt, scale, bias, groups = make_group_case("mixed")
    for name, fn in (("sigmoid", lambda: sigmoid_loss(img, txt, scale, bias, groups=groups, duplicates="positive")),
                     ("softmax", lambda: softmax_loss(img, txt, scale, groups=groups, duplicates="positive"))):
        got = contrastive_loss(name, img, txt, scale, bias, groups=groups, duplicates="positive")
        assert torch.equal(got, fn()), name
        assert not torch.equal(got, contrastive_loss(name, img, txt, scale, bias)), name


# ----------------------------------------------------------------------------- caption_groups


def test_caption_groups_equal_text_equal_ids_in_every_process():
    caps = ["a dog", "a cat", "a dog", "", "ünïcödé 🐕", "a dog "]
    ids = caption_groups(caps)
    assert ids.dtype == torch.int64 and ids.shape == (6,)
    assert ids[0] == ids[2]
    assert len(set(ids.tolist())) == 5  # trailing space is different text
    code = ("import sys, json; from litops.core.losses import caption_groups; "
            "print(json.dumps(caption_groups(json.loads(sys.argv[1])).tolist()))")
    import json

    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(caps)], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == ids.tolist()


# ----------------------------------------------------------------------------- validation


def _calls(img, txt, scale, bias):
    return {
        "sigmoid_loss": lambda **kw: sigmoid_loss(img, txt, scale, bias, impl="chunked", **kw),
        "softmax_loss": lambda **kw: softmax_loss(img, txt, scale, impl="reference", **kw),
        "contrastive_loss": lambda **kw: contrastive_loss("softmax", img, txt, scale, bias, **kw),
        # validated before any process group is needed
        "sigmoid_loss_distributed": lambda **kw: sigmoid_loss_distributed(img, txt, scale, bias, **kw),
        "softmax_loss_distributed": lambda **kw: softmax_loss_distributed(img, txt, scale, **kw),
    }


@pytest.mark.parametrize("call", ["sigmoid_loss", "softmax_loss", "contrastive_loss", "sigmoid_loss_distributed",
                                  "softmax_loss_distributed"])
@pytest.mark.parametrize("kwargs,message", [
    (dict(duplicates="merge"), "unknown duplicates mode 'merge'"),
    (dict(duplicates="Positive", groups=torch.zeros(4, dtype=torch.int64)), "expected one of ('negative', 'positive', 'ignore')"),
    (dict(groups=torch.zeros(3, dtype=torch.int64), duplicates="positive"), "groups must have shape (4,)"),
    (dict(groups=torch.zeros(4, 1, dtype=torch.int64), duplicates="ignore"), "got shape (4, 1)"),
    (dict(groups=torch.zeros(4, dtype=torch.int32), duplicates="positive"), "dtype torch.int64, got dtype torch.int32"),
    (dict(groups=torch.zeros(4), duplicates="positive"), "got dtype torch.float32"),
    (dict(groups=torch.zeros(4, dtype=torch.int64, device="meta"), duplicates="positive"), "device cpu, got device meta"),
    (dict(groups=[0, 1, 2, 3], duplicates="positive"), "groups must be a torch.Tensor"),
])
def test_bad_groups_or_mode_raise(call, kwargs, message):
    img, txt = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError) as err:
        _calls(img, txt, torch.tensor(1.0), torch.tensor(0.0))[call](**kwargs)
    assert message in str(err.value)
