"""The promotion gate is a pure function of two metric dicts and the registry config."""

from __future__ import annotations

import pytest

from litops.core.config import RegistryConfig
from litops.register.gate import GateError, decide, render_markdown

CFG = RegistryConfig(primary_metric="zeroshot_top1", min_improvement=0.01,
                     guard_metrics=["retrieval_i2t_r1", "compositional_acc"], guard_tolerance=0.02,
                     absolute_floor=0.3)
CHAMPION = {"zeroshot_top1": 0.705, "retrieval_i2t_r1": 0.60, "compositional_acc": 0.50}


def challenger(**kw):
    return {**CHAMPION, **kw}


def test_improvement_at_least_margin_promotes():
    d = decide(challenger(zeroshot_top1=0.715), CHAMPION, CFG)  # exactly +0.010 (float noise tolerated)
    assert d.promote, d.reason
    assert "zeroshot_top1 0.715 vs champion 0.705: +0.010 >= required +0.010" in d.reason
    assert [r["metric"] for r in d.rows] == ["zeroshot_top1", "retrieval_i2t_r1", "compositional_acc"]
    assert d.rows[0]["delta"] == pytest.approx(0.01)


def test_improvement_below_margin_rejects():
    d = decide(challenger(zeroshot_top1=0.712), CHAMPION, CFG)
    assert not d.promote
    assert d.reason == "zeroshot_top1 0.712 vs champion 0.705: +0.007 < required +0.010"


def test_guard_drop_over_tolerance_rejects_naming_the_guard():
    d = decide(challenger(zeroshot_top1=0.80, retrieval_i2t_r1=0.55), CHAMPION, CFG)
    assert not d.promote
    assert "retrieval_i2t_r1" in d.reason and "0.050" in d.reason and "tolerance 0.020" in d.reason
    assert "compositional_acc" not in d.reason
    ok = {r["metric"]: r["ok"] for r in d.rows}
    assert ok == {"zeroshot_top1": True, "retrieval_i2t_r1": False, "compositional_acc": True}
    # a drop within the tolerance is fine
    assert decide(challenger(zeroshot_top1=0.80, retrieval_i2t_r1=0.585), CHAMPION, CFG).promote


def test_first_model_against_the_floor():
    above = decide({"zeroshot_top1": 0.31, "retrieval_i2t_r1": 0.1, "compositional_acc": 0.1}, None, CFG)
    assert above.promote and "no champion" in above.reason and "0.310 >= absolute floor 0.300" in above.reason
    below = decide({"zeroshot_top1": 0.29, "retrieval_i2t_r1": 0.1, "compositional_acc": 0.1}, None, CFG)
    assert not below.promote and "0.290 < absolute floor 0.300" in below.reason


def test_missing_metric_is_named():
    with pytest.raises(GateError, match="challenger metrics lack 'compositional_acc'"):
        decide({"zeroshot_top1": 0.8, "retrieval_i2t_r1": 0.6}, CHAMPION, CFG)
    with pytest.raises(GateError, match="champion metrics lack 'zeroshot_top1'"):
        decide(CHAMPION, {"retrieval_i2t_r1": 0.6}, CFG)
    with pytest.raises(GateError, match="not a number"):
        decide(challenger(zeroshot_top1="high"), CHAMPION, CFG)


def test_markdown_report_has_table_decision_reason():
    d = decide(challenger(zeroshot_top1=0.712), CHAMPION, CFG)
    md = render_markdown(d, "lit-embedded", 3, 2, "MLflow run: `abc`")
    assert "| zeroshot_top1 | primary | 0.7120 | 0.7050 | +0.007 |" in md
    assert "| retrieval_i2t_r1 | guard |" in md
    assert "**Decision:** REJECTED" in md and d.reason in md and "MLflow run: `abc`" in md
