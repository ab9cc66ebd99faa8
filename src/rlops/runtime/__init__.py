"""The actor-learner runtime: training loop, actors, checkpoints (inline backend)."""

from rlops.runtime.actor import RolloutActor
from rlops.runtime.config import (
    EnvConfig,
    EvalConfig,
    ExperimentConfig,
    LogConfig,
    RuntimeConfig,
    config_from_dict,
    load_config,
)
from rlops.runtime.loop import Evaluation, RunResult, train

__all__ = [
    "EnvConfig",
    "EvalConfig",
    "Evaluation",
    "ExperimentConfig",
    "LogConfig",
    "RolloutActor",
    "RunResult",
    "RuntimeConfig",
    "config_from_dict",
    "load_config",
    "train",
]
