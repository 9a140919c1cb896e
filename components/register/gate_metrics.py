"""Which metrics the promotion gate decides on, settled before training against the metrics the
evaluate step will report (litops.evaluate.metric_names).

`registry.primary_metric: auto` is the first of AUTO_PRIMARY that will be reported: the
benchmark's zero-shot top-1 where object metadata gives the dataset classes (the embedded
benchmark), else retrieval R@1 averaged over both directions (a dataset of captions only).
`auto` in `registry.guard_metrics` stands for those of AUTO_GUARDS that will be reported, less
the primary. A metric named outright that will not be reported refuses the run, in one line
naming it and the metrics there are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

from litops.core.config import ConfigError, RegistryConfig

AUTO = "auto"
AUTO_PRIMARY = ("zeroshot_top1", "retrieval_mean_r1")
AUTO_GUARDS = ("retrieval_i2t_r1", "retrieval_t2i_r1", "compositional_acc")


@dataclass(frozen=True)
class GateMetrics:
    primary: str
    guards: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"primary": self.primary, "guards": list(self.guards)}

    def line(self) -> str:
        return f"the gate decides on {self.primary}; guards: {', '.join(self.guards) or 'none'}"


def resolve(cfg: RegistryConfig, reported: Iterable[str], source: str = "this evaluation") -> GateMetrics:
    """The gate's metrics for `cfg` among the `reported` ones; ConfigError when one named outright
    (or any primary, for auto) will not be reported. `source` says what reports them, for the message."""
    reported = list(dict.fromkeys(reported))
    have = ", ".join(reported) or "none"
    if cfg.primary_metric == AUTO:
        primary = next((m for m in AUTO_PRIMARY if m in reported), None)
        if primary is None:
            raise ConfigError(f"registry.primary_metric=auto: neither {' nor '.join(AUTO_PRIMARY)} is reported for "
                              f"{source}; name one of: {have}")
    elif cfg.primary_metric not in reported:
        raise ConfigError(f"registry.primary_metric '{cfg.primary_metric}' is not reported for {source} "
                          f"(reported: {have})")
    else:
        primary = cfg.primary_metric
    guards: list[str] = []
    for name in cfg.guard_metrics:
        if name == AUTO:
            guards += [m for m in AUTO_GUARDS if m in reported and m != primary]
        elif name not in reported:
            raise ConfigError(f"registry.guard_metrics entry '{name}' is not reported for {source} (reported: {have})")
        elif name != primary:
            guards.append(name)
    return GateMetrics(primary, tuple(dict.fromkeys(guards)))


def is_resolved(cfg: RegistryConfig) -> bool:
    return cfg.primary_metric != AUTO and AUTO not in cfg.guard_metrics


def resolved(cfg: RegistryConfig, reported: Iterable[str], source: str = "this evaluation") -> RegistryConfig:
    """`cfg` with `auto` replaced by the metrics it stands for among `reported`."""
    if is_resolved(cfg):
        return cfg
    metrics = resolve(cfg, reported, source)
    return dataclasses.replace(cfg, primary_metric=metrics.primary, guard_metrics=list(metrics.guards))


def listed(cfg: RegistryConfig) -> list[str]:
    """The metrics a listing of versions shows: those named, and every one `auto` may stand for."""
    primary = list(AUTO_PRIMARY) if cfg.primary_metric == AUTO else [cfg.primary_metric]
    guards = [g for name in cfg.guard_metrics for g in (AUTO_GUARDS if name == AUTO else (name,))]
    return list(dict.fromkeys(primary + guards))
