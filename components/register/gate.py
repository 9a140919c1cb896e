"""The promotion gate: a pure decision over two metric dicts (no MLflow here).

A challenger replaces the champion only when the primary metric improves by at least
`min_improvement` AND no guard metric drops by more than `guard_tolerance`. With no champion
yet, the challenger is promoted iff its primary metric reaches `absolute_floor`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from litops.core.config import RegistryConfig
from litops.register import gate_metrics

_EPS = 1e-9  # float noise: 0.715 - 0.705 must count as +0.010


class GateError(ValueError):
    """The gate's inputs are unusable (a metric is missing or not a number)."""


@dataclass
class Decision:
    promote: bool
    reason: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per primary/guard metric

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "rejected"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_metrics(cfg: RegistryConfig) -> list[str]:
    """The primary metric first, then the guards (no duplicates; `auto`: every metric it may stand for)."""
    return gate_metrics.listed(cfg)


def _metric(metrics: Mapping[str, Any], name: str, who: str) -> float:
    if name not in metrics:
        have = ", ".join(sorted(metrics)) or "none"
        raise GateError(f"{who} metrics lack '{name}' (have: {have})")
    value = metrics[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GateError(f"{who} metric '{name}' is not a number: {value!r}") from None
    if isinstance(value, bool) or math.isnan(number):
        raise GateError(f"{who} metric '{name}' is not a number: {value!r}")
    return number


def _f(x: float) -> str:
    return f"{x:.3f}"


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def decide(challenger: Mapping[str, Any], champion: Mapping[str, Any] | None, cfg: RegistryConfig) -> Decision:
    """Promote or reject `challenger` against `champion` (None: no champion yet); `auto` in `cfg`
    stands for the metrics it picks among the challenger's."""
    cfg = gate_metrics.resolved(cfg, challenger, "the challenger")
    primary = cfg.primary_metric
    ch_primary = _metric(challenger, primary, "challenger")

    if champion is None:
        for guard in cfg.guard_metrics:  # still required, so the report and tags are complete
            _metric(challenger, guard, "challenger")
        rows = [{"metric": name, "role": "primary" if name == primary else "guard",
                 "challenger": _metric(challenger, name, "challenger"), "champion": None, "delta": None,
                 "ok": (ch_primary + _EPS >= cfg.absolute_floor) if name == primary else True}
                for name in key_metrics(cfg)]
        if ch_primary + _EPS >= cfg.absolute_floor:
            reason = (f"no champion yet: {primary} {_f(ch_primary)} >= absolute floor "
                      f"{_f(cfg.absolute_floor)}")
            return Decision(True, reason, rows)
        reason = f"no champion yet: {primary} {_f(ch_primary)} < absolute floor {_f(cfg.absolute_floor)}"
        return Decision(False, reason, rows)

    rows: list[dict[str, Any]] = []
    failures: list[str] = []

    cp_primary = _metric(champion, primary, "champion")
    delta = ch_primary - cp_primary
    primary_ok = delta + _EPS >= cfg.min_improvement
    rows.append({"metric": primary, "role": "primary", "challenger": ch_primary, "champion": cp_primary,
                 "delta": delta, "ok": primary_ok})
    primary_text = (f"{primary} {_f(ch_primary)} vs champion {_f(cp_primary)}: {_signed(delta)} "
                    f"{'>=' if primary_ok else '<'} required {_signed(cfg.min_improvement)}")
    if not primary_ok:
        failures.append(primary_text)

    for guard in cfg.guard_metrics:
        if guard == primary:
            continue
        ch, cp = _metric(challenger, guard, "challenger"), _metric(champion, guard, "champion")
        drop = cp - ch
        ok = drop <= cfg.guard_tolerance + _EPS
        rows.append({"metric": guard, "role": "guard", "challenger": ch, "champion": cp, "delta": ch - cp, "ok": ok})
        if not ok:
            failures.append(f"guard {guard} dropped {_f(drop)} ({_f(ch)} vs champion {_f(cp)}) "
                            f"> tolerance {_f(cfg.guard_tolerance)}")

    if failures:
        return Decision(False, "; ".join(failures), rows)
    guards = [g for g in cfg.guard_metrics if g != primary]
    guard_text = (f"; no guard metric ({', '.join(guards)}) dropped more than {_f(cfg.guard_tolerance)}"
                  if guards else "")
    return Decision(True, primary_text + guard_text, rows)


def _cell(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return _signed(x) if signed else f"{x:.4f}"


def render_markdown(decision: Decision, model_name: str, version: int | str,
                    champion_version: int | str | None, run_info: str = "",
                    champion_source: str = "") -> str:
    """A short report: metrics table (challenger vs champion, deltas), decision, reason, run link."""
    champ_head = f"champion v{champion_version}" if champion_version is not None else "champion (none)"
    lines = [
        f"## Promotion gate: {model_name} v{version}",
        "",
        f"| metric | role | challenger v{version} | {champ_head} | delta | ok |",
        "|---|---|---:|---:|---:|:-:|",
    ]
    for r in decision.rows:
        lines.append(f"| {r['metric']} | {r['role']} | {_cell(r['challenger'])} | {_cell(r['champion'])} | "
                     f"{_cell(r['delta'], signed=True)} | {'✅' if r['ok'] else '❌'} |")
    lines += [
        "",
        f"**Decision:** {'PROMOTED' if decision.promote else 'REJECTED'}",
        "",
        f"**Reason:** {decision.reason}",
    ]
    if champion_source:
        lines += ["", f"Champion metrics: {champion_source}"]
    if run_info:
        lines += ["", run_info]
    return "\n".join(lines) + "\n"
