"""The actor-learner runtime: training loop, actors, checkpoints (inline backend).

Submodules load on first use so that reading and validating a config
(:mod:`rlops.runtime.config`) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlops.core.lazy import lazy_exports

_LAZY = {
    "EnvConfig": "rlops.runtime.config",
    "EvalConfig": "rlops.runtime.config",
    "ExperimentConfig": "rlops.runtime.config",
    "LogConfig": "rlops.runtime.config",
    "RuntimeConfig": "rlops.runtime.config",
    "config_from_dict": "rlops.runtime.config",
    "load_config": "rlops.runtime.config",
    "RolloutActor": "rlops.runtime.actor",
    "Evaluation": "rlops.runtime.loop",
    "RunResult": "rlops.runtime.loop",
    "train": "rlops.runtime.loop",
}

if TYPE_CHECKING:
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


__getattr__ = lazy_exports(__name__, _LAZY)


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
