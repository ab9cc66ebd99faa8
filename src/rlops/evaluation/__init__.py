"""Evaluation: rollouts of a policy artifact on an environment."""

from rlops.evaluation.rollout import EvalReport, evaluate

__all__ = ["EvalReport", "evaluate"]
