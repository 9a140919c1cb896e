"""Evaluate component: zero-shot, retrieval and compositional metrics on held-out splits and on the
suites of the user's own data configured under `eval.suites`.

Names resolve lazily, so `python -m litops.evaluate` can reject bad arguments (an unreachable
tracking store, a missing model file) before torch is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EvalSet", "ModelReport", "evaluate_model", "prepare_eval", "prepare_from_config", "score_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from litops.evaluate import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module 'litops.evaluate' has no attribute {name!r}")
