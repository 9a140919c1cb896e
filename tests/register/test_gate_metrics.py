"""The gate's metrics settled against the names an evaluation will report (pure functions)."""

from __future__ import annotations

import pytest

from litops.core.config import ConfigError, RegistryConfig
from litops.register.gate import decide
from litops.register.gate_metrics import listed, resolve

RETRIEVAL = ["retrieval_i2t_r1", "retrieval_t2i_r1", "retrieval_i2t_r5", "retrieval_t2i_r5", "retrieval_mean_r1"]
BENCHMARK = RETRIEVAL + ["zeroshot_colour_top1", "zeroshot_top1", "zeroshot_top5", "compositional_acc",
                         "compositional_acc_binding"]


def test_auto_keeps_the_embedded_benchmarks_metrics():
    metrics = resolve(RegistryConfig(), BENCHMARK)
    assert metrics.primary == "zeroshot_top1"
    assert metrics.guards == ("retrieval_i2t_r1", "retrieval_t2i_r1", "compositional_acc")


def test_auto_on_captions_only_is_mean_retrieval_with_the_guards_there_are():
    metrics = resolve(RegistryConfig(), RETRIEVAL)
    assert (metrics.primary, metrics.guards) == ("retrieval_mean_r1", ("retrieval_i2t_r1", "retrieval_t2i_r1"))
    assert metrics.line() == "the gate decides on retrieval_mean_r1; guards: retrieval_i2t_r1, retrieval_t2i_r1"


def test_a_suites_metric_named_outright_is_taken_and_auto_guards_join_named_ones():
    cfg = RegistryConfig(primary_metric="shapes/zeroshot_top1", guard_metrics=["auto", "shapes/zeroshot_top5"])
    metrics = resolve(cfg, RETRIEVAL + ["shapes/zeroshot_top1", "shapes/zeroshot_top5"])
    assert metrics.primary == "shapes/zeroshot_top1"
    assert metrics.guards == ("retrieval_i2t_r1", "retrieval_t2i_r1", "shapes/zeroshot_top5")
    assert resolve(RegistryConfig(guard_metrics=[]), RETRIEVAL).guards == ()


@pytest.mark.parametrize("cfg, named", [
    (RegistryConfig(primary_metric="zeroshot_top1"), "registry.primary_metric 'zeroshot_top1'"),
    (RegistryConfig(guard_metrics=["compositional_acc"]), "registry.guard_metrics entry 'compositional_acc'"),
])
def test_a_metric_named_outright_that_will_not_be_reported_is_one_line_naming_it_and_what_there_is(cfg, named):
    with pytest.raises(ConfigError) as refused:
        resolve(cfg, RETRIEVAL, "dataset 'caps'")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(named) and "dataset 'caps'" in message
    assert message.endswith("(reported: " + ", ".join(RETRIEVAL) + ")")


def test_auto_without_a_primary_candidate_asks_for_one():
    with pytest.raises(ConfigError, match=r"primary_metric=auto: .*name one of: shapes/zeroshot_top1$"):
        resolve(RegistryConfig(), ["shapes/zeroshot_top1"], "suites shapes")


def test_a_gate_run_by_hand_with_auto_decides_on_the_challengers_metrics():
    challenger = {"retrieval_mean_r1": 0.5, "retrieval_i2t_r1": 0.5, "retrieval_t2i_r1": 0.5}
    decision = decide(challenger, None, RegistryConfig(absolute_floor=0.3))
    assert decision.promote and [r["metric"] for r in decision.rows] == ["retrieval_mean_r1", "retrieval_i2t_r1",
                                                                          "retrieval_t2i_r1"]
    assert listed(RegistryConfig()) == ["zeroshot_top1", "retrieval_mean_r1", "retrieval_i2t_r1", "retrieval_t2i_r1",
                                        "compositional_acc"]
