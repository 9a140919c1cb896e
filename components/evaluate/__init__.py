"""Evaluate component: zero-shot, retrieval and compositional metrics on held-out splits."""

from litops.evaluate.evaluate import EvalSet, ModelReport, evaluate_model, prepare_eval, prepare_from_config, score_model

__all__ = ["EvalSet", "ModelReport", "evaluate_model", "prepare_eval", "prepare_from_config", "score_model"]
