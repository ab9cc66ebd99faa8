"""Soft Actor-Critic: twin critics, tanh-squashed Gaussian actor, learned entropy coefficient.

Torch-backed parts load on first use, so :class:`SACConfig` can be imported
(and a config validated) without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlops.algos.sac.config import SACConfig
from rlops.core.lazy import lazy_exports

_LAZY = {
    "SACBatch": "rlops.algos.sac.loss",
    "SACLearner": "rlops.algos.sac.learner",
    "SquashedGaussianActor": "rlops.algos.sac.networks",
    "TwinCritic": "rlops.algos.sac.networks",
    "critic_targets": "rlops.algos.sac.loss",
    "sac_losses": "rlops.algos.sac.loss",
    "tanh_gaussian_log_prob": "rlops.algos.sac.loss",
}

if TYPE_CHECKING:
    from rlops.algos.sac.learner import SACLearner
    from rlops.algos.sac.loss import SACBatch, critic_targets, sac_losses, tanh_gaussian_log_prob
    from rlops.algos.sac.networks import SquashedGaussianActor, TwinCritic

__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "SACBatch",
    "SACConfig",
    "SACLearner",
    "SquashedGaussianActor",
    "TwinCritic",
    "critic_targets",
    "sac_losses",
    "tanh_gaussian_log_prob",
]
