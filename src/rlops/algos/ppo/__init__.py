"""Proximal Policy Optimization."""

from rlops.algos.ppo.config import PPOConfig
from rlops.algos.ppo.learner import PPOLearner
from rlops.algos.ppo.loss import PPOLoss, ppo_loss
from rlops.algos.ppo.networks import ActorCritic

__all__ = ["ActorCritic", "PPOConfig", "PPOLearner", "PPOLoss", "ppo_loss"]
