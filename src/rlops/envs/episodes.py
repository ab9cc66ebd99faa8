"""Run whole episodes with any action function (used by evaluation and training)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rlops.envs.base import VectorEnv, action_masks
from rlops.envs.checker import assert_finite_obs


@dataclass(frozen=True)
class EpisodeResults:
    """Returns and lengths of finished episodes.

    Attributes:
        returns: ``[E]`` undiscounted returns.
        lengths: ``[E]`` episode lengths in steps.
    """

    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean_return(self) -> float:
        """Mean undiscounted return."""
        return float(self.returns.mean()) if self.returns.size else float("nan")

    @property
    def std_return(self) -> float:
        """Standard deviation of the returns."""
        return float(self.returns.std()) if self.returns.size else float("nan")


def run_episodes(
    env: VectorEnv,
    act: Callable[..., np.ndarray],
    episodes: int,
    seed: int | None = None,
    max_steps: int = 1_000_000,
) -> EpisodeResults:
    """Run exactly ``episodes`` episodes, spread evenly over the sub-envs.

    Each sub-env runs a fixed quota of episodes (rather than "the first E to
    finish"), which would bias the estimate towards short episodes.

    Args:
        env: a same-step-autoreset vector env (see :mod:`rlops.envs.base`).
        act: maps ``[N, *obs_shape]`` observations to ``[N, ...]`` env actions;
            for an env with action constraints (``action_masks()``) it is
            called as ``act(obs, mask)`` with the ``[N, A]`` eligible actions.
        episodes: how many episodes to run in total.
        seed: reset seed.
        max_steps: safety bound on vector steps.

    Returns:
        The :class:`EpisodeResults`, in completion order.

    Raises:
        EnvError: if the env returns a non-finite observation or reward.
        RuntimeError: if ``max_steps`` vector steps pass before the quota is met.
    """
    n = env.num_envs
    quota = np.full(n, episodes // n, dtype=np.int64)
    quota[: episodes % n] += 1
    done_count = np.zeros(n, dtype=np.int64)
    running = np.zeros(n, dtype=np.float64)
    length = np.zeros(n, dtype=np.int64)
    returns: list[float] = []
    lengths: list[int] = []
    obs, _ = env.reset(seed=seed)
    assert_finite_obs(np.asarray(obs), 0)
    masked = action_masks(env) is not None
    for step in range(1, max_steps + 1):
        if (done_count >= quota).all():
            return EpisodeResults(np.asarray(returns), np.asarray(lengths, dtype=np.int64))
        actions = act(obs, action_masks(env)) if masked else act(obs)
        obs, rewards, terminations, truncations, _ = env.step(actions)
        assert_finite_obs(np.asarray(obs), step)
        assert_finite_obs(np.asarray(rewards), step, name="reward")
        running += rewards
        length += 1
        for i in np.flatnonzero(np.logical_or(terminations, truncations)):
            if done_count[i] < quota[i]:
                returns.append(float(running[i]))
                lengths.append(int(length[i]))
                done_count[i] += 1
            running[i] = 0.0
            length[i] = 0
    raise RuntimeError(f"run_episodes: {episodes} episodes did not finish in {max_steps} steps")
