"""The small logger interface the training loop reports through.

The loop knows only this interface. The caller plugs in an implementation: JSON lines on a
bare GPU box, MLflow (see mlflow_logger.py) when tracking is configured.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol


class MetricLogger(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


class JsonlLogger:
    """Appends one JSON line per call to a file; survives restarts (append mode)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps({"time": time.time(), **record}) + "\n")
        self._file.flush()

    def log_params(self, params: dict[str, Any]) -> None:
        self._write({"params": params})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._write({"step": step, "metrics": metrics})

    def close(self, status: str = "FINISHED") -> None:
        self._write({"status": status})
        self._file.close()


class FanOutLogger:
    """Sends every call to several loggers."""

    def __init__(self, *loggers: MetricLogger):
        self.loggers = loggers

    def log_params(self, params: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log_metrics(metrics, step)

    def close(self, status: str = "FINISHED") -> None:
        for lg in self.loggers:
            lg.close(status)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
