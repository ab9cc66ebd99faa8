"""Proximal Policy Optimization.

Torch-backed parts load on first use, so :class:`PPOConfig` can be imported
(and a config validated) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rlops.algos.ppo.config import PPOConfig

_LAZY = {
    "ActorCritic": "rlops.algos.ppo.networks",
    "PPOLearner": "rlops.algos.ppo.learner",
    "PPOLoss": "rlops.algos.ppo.loss",
    "ppo_loss": "rlops.algos.ppo.loss",
}

if TYPE_CHECKING:
    from rlops.algos.ppo.learner import PPOLearner
    from rlops.algos.ppo.loss import PPOLoss, ppo_loss
    from rlops.algos.ppo.networks import ActorCritic


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rlops.algos.ppo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["ActorCritic", "PPOConfig", "PPOLearner", "PPOLoss", "ppo_loss"]
