"""Proximal Policy Optimization.

Torch-backed parts load on first use, so :class:`PPOConfig` can be imported
(and a config validated) without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlops.algos.ppo.config import PPOConfig
from rlops.core.lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["ActorCritic", "PPOConfig", "PPOLearner", "PPOLoss", "ppo_loss"]
