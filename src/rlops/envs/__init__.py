"""Vectorized environments: rlops simulators, Gymnasium adapters, wrappers, checker."""

from rlops.envs.base import VectorEnv, action_masks, final_observations
from rlops.envs.checker import assert_finite_obs, check_vector_env
from rlops.envs.classic import (
    CartPoleParams,
    CartPoleVectorEnv,
    PendulumParams,
    PendulumVectorEnv,
)
from rlops.envs.episodes import EpisodeResults, run_episodes
from rlops.envs.registry import EnvInfo, list_envs, make_vec, register

# Wrappers (episode statistics, observation normalisation, reward scaling).
from rlops.envs.wrappers import (
    EpisodeStatistics,
    NormalizeObservation,
    RunningMeanStd,
    ScaleReward,
    ShapeReward,
)

__all__ = [
    "CartPoleParams",
    "CartPoleVectorEnv",
    "EnvInfo",
    "EpisodeResults",
    "EpisodeStatistics",
    "NormalizeObservation",
    "PendulumParams",
    "PendulumVectorEnv",
    "RunningMeanStd",
    "ScaleReward",
    "ShapeReward",
    "VectorEnv",
    "action_masks",
    "assert_finite_obs",
    "check_vector_env",
    "final_observations",
    "list_envs",
    "make_vec",
    "register",
    "run_episodes",
]
