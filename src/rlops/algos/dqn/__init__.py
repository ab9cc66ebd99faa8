"""Deep Q-learning: double Q, dueling heads, n-step targets, prioritized replay.

Torch-backed parts load on first use, so :class:`DQNConfig` can be imported
(and a config validated) without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlops.algos.dqn.config import DQNConfig
from rlops.core.lazy import lazy_exports

_LAZY = {
    "DQNLearner": "rlops.algos.dqn.learner",
    "QNetwork": "rlops.algos.dqn.networks",
    "td_loss_grads": "rlops.algos.dqn.loss",
    "td_targets": "rlops.algos.dqn.loss",
}

if TYPE_CHECKING:
    from rlops.algos.dqn.learner import DQNLearner
    from rlops.algos.dqn.loss import td_loss_grads, td_targets
    from rlops.algos.dqn.networks import QNetwork

__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = ["DQNConfig", "DQNLearner", "QNetwork", "td_loss_grads", "td_targets"]
