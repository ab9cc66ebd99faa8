"""Shared fakes for rlops' tests: envs that misbehave on purpose.

* :class:`NaNCartPole`: Gymnasium CartPole-v1 whose observation turns NaN at a
  chosen step; registered with Gymnasium as ``NaNCartPole-v0`` when this module is
  imported, so ``rlops.envs.make_vec("gym:rlops.testing:NaNCartPole-v0", 4)``
  works (Gymnasium imports this module first).
* :class:`FaultyVectorEnv`: a tiny native vector env with one injectable fault
  (NaN, wrong dtype or shape, missing ``final_obs``...) at a chosen sub-env and
  step, for testing :func:`rlops.envs.check_vector_env` and the training loop's
  guards.
* :class:`InjectNonFinite`: a wrapper that puts NaN/Inf into a reward or a
  ``final_obs`` entry (outputs the observation checks do not see).
* :class:`TruncateAt`: a wrapper that truncates one chosen sub-env at one step.
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

__all__ = [
    "NAN_CARTPOLE_ID",
    "Fault",
    "FaultyVectorEnv",
    "InjectNonFinite",
    "NaNCartPole",
    "TruncateAt",
    "Where",
]

NAN_CARTPOLE_ID = "NaNCartPole-v0"
"""Gymnasium id of :class:`NaNCartPole` (use ``gym:rlops.testing:NaNCartPole-v0``)."""

F32 = npt.NDArray[np.float32]


class NaNCartPole(gym.Env[F32, np.int64]):
    """CartPole-v1 whose observation has NaN in position 0 on one step.

    The ``nan_step``-th call to :meth:`step` since construction (counted across
    episodes, so a random policy reaches it however short its episodes are)
    returns an observation whose first entry is NaN; the underlying state stays
    finite.

    Args:
        nan_step: 1-based index of the ``step()`` call that returns NaN.

    >>> env = NaNCartPole(nan_step=2)
    >>> _ = env.reset(seed=0)
    >>> bool(np.isnan(env.step(0)[0]).any()), bool(np.isnan(env.step(0)[0]).any())
    (False, True)
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's attribute)

    def __init__(self, nan_step: int = 50) -> None:
        self._env: gym.Env[Any, Any] = CartPoleEnv()
        self.observation_space = self._env.observation_space
        self.action_space = spaces.Discrete(2)
        self.nan_step = nan_step
        self._steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Reset the wrapped CartPole (the NaN step counter keeps running)."""
        super().reset(seed=seed)
        return self._env.reset(seed=seed, options=options)

    def step(self, action: np.int64) -> tuple[F32, float, bool, bool, dict[str, Any]]:
        """Step the wrapped CartPole; on the ``nan_step``-th call, obs[0] is NaN."""
        obs, reward, terminated, truncated, info = self._env.step(action)
        self._steps += 1
        if self._steps == self.nan_step:
            obs = obs.copy()
            obs[0] = np.nan
        return obs, float(reward), terminated, truncated, info


if NAN_CARTPOLE_ID not in gym.registry:
    gym.register(id=NAN_CARTPOLE_ID, entry_point="rlops.testing:NaNCartPole", max_episode_steps=500)


Fault = Literal[
    "none", "nan", "inf", "obs_dtype", "obs_shape", "reward_shape", "flags_dtype", "no_final_obs"
]
"""What :class:`FaultyVectorEnv` gets wrong at ``fault_step``."""


class FaultyVectorEnv(gym.vector.VectorEnv[F32, npt.NDArray[np.int64], npt.NDArray[Any]]):
    """Deterministic same-step-autoreset vector env with one injectable fault.

    Observation of sub-env ``i``: ``[steps into episode, i, last action]``
    (float32, ``Box(-inf, inf, (3,))``); actions ``Discrete(2)``; reward 1.0;
    every episode is truncated after ``episode_length`` steps. At the
    ``fault_step``-th ``step()`` since the last reset, the output is corrupted
    according to ``fault``:

    * ``"nan"`` / ``"inf"``: ``obs[fault_env, 0]`` is NaN / +Inf;
    * ``"obs_dtype"``: observations come back float64;
    * ``"obs_shape"``: observations lose their last column;
    * ``"reward_shape"``: rewards have shape ``[N, 1]``;
    * ``"flags_dtype"``: terminations are int8 instead of bool;
    * ``"no_final_obs"``: from this step on, ended episodes omit ``final_obs``.

    Args:
        num_envs: number of sub-envs.
        fault: which fault to inject (``"none"``: a well-behaved env).
        fault_env: sub-env index the NaN/Inf faults hit.
        fault_step: 1-based step at which the fault appears.
        episode_length: steps per episode (truncation).

    >>> env = FaultyVectorEnv(2, fault="nan", fault_env=1, fault_step=2)
    >>> _ = env.reset(seed=0)
    >>> _ = env.step(np.zeros(2, np.int64))
    >>> env.step(np.zeros(2, np.int64))[0][1, 0]
    np.float32(nan)
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(
        self,
        num_envs: int = 4,
        *,
        fault: Fault = "none",
        fault_env: int = 0,
        fault_step: int = 1,
        episode_length: int = 5,
    ) -> None:
        self.num_envs = num_envs
        self.fault = fault
        self.fault_env = fault_env
        self.fault_step = fault_step
        self.episode_length = episode_length
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Start every episode at step 0; ``seed`` only seeds ``np_random``."""
        super().reset(seed=seed)
        self._elapsed[:] = 0
        self._steps = 0
        return self._obs(np.zeros(self.num_envs)), {}

    def step(self, actions: npt.NDArray[np.int64]) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Advance every sub-env one step, corrupting the output at ``fault_step``."""
        self._steps += 1
        self._elapsed += 1
        obs: npt.NDArray[Any] = self._obs(np.asarray(actions, dtype=np.float64))
        rewards: npt.NDArray[Any] = np.ones(self.num_envs)
        terminations: npt.NDArray[Any] = np.zeros(self.num_envs, dtype=np.bool_)
        truncations = self._elapsed >= self.episode_length
        info: dict[str, Any] = {}
        faulty = self._steps == self.fault_step
        if truncations.any() and not (
            self.fault == "no_final_obs" and self._steps >= self.fault_step
        ):
            info = {"final_obs": obs.copy(), "_final_obs": truncations.copy()}
        self._elapsed[truncations] = 0
        obs[truncations, 0] = 0.0
        if faulty:
            if self.fault == "nan":
                obs[self.fault_env, 0] = np.nan
            elif self.fault == "inf":
                obs[self.fault_env, 0] = np.inf
            elif self.fault == "obs_dtype":
                obs = obs.astype(np.float64)
            elif self.fault == "obs_shape":
                obs = obs[:, :-1]
            elif self.fault == "reward_shape":
                rewards = rewards[:, None]
            elif self.fault == "flags_dtype":
                terminations = terminations.astype(np.int8)
        return obs, rewards, terminations, truncations, info

    def _obs(self, last_actions: npt.NDArray[np.float64]) -> F32:
        obs = np.empty((self.num_envs, 3), dtype=np.float32)
        obs[:, 0] = self._elapsed
        obs[:, 1] = np.arange(self.num_envs)
        obs[:, 2] = last_actions
        return obs


Where = Literal["final_obs", "reward"]
"""Which output :class:`InjectNonFinite` corrupts."""


class InjectNonFinite(gym.vector.VectorWrapper):
    """Write a non-finite ``value`` into one step output of a wrapped vector env.

    Complements :class:`FaultyVectorEnv` (whose NaN/Inf faults hit the returned
    observations) with the outputs a loop may forget to check:

    * ``"reward"``: ``rewards[env_index]`` of the ``step``-th ``step()`` call;
    * ``"final_obs"``: ``info["final_obs"][env_index]`` (first entry) of the first
      ``step()`` call at or after ``step`` on which sub-env ``env_index``'s episode
      ends (so a truncated episode's value bootstrap sees it).

    Calls are counted from construction; ``reset`` does not restart the count.

    Args:
        env: a same-step-autoreset vector env.
        where: the output to corrupt.
        step: 1-based ``step()`` call at (or, for ``"final_obs"``, after) which to corrupt.
        env_index: sub-env to corrupt.
        value: the non-finite value (``nan``, ``inf`` or ``-inf``).

    >>> env = InjectNonFinite(FaultyVectorEnv(2, episode_length=2), where="final_obs", step=1)
    >>> _ = env.reset(seed=0)
    >>> _ = env.step(np.zeros(2, np.int64))
    >>> env.step(np.zeros(2, np.int64))[4]["final_obs"][0, 0]
    np.float32(nan)
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv[Any, Any, Any],
        *,
        where: Where,
        step: int = 1,
        env_index: int = 0,
        value: float = float("nan"),
    ) -> None:
        super().__init__(env)
        self.where = where
        self.at_step = step
        self.env_index = env_index
        self.value = value
        self.injected = False
        self._steps = 0

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step the wrapped env, corrupting the chosen output once."""
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        self._steps += 1
        if self.injected or self._steps < self.at_step:
            return obs, rewards, terminations, truncations, info
        i = self.env_index
        if self.where == "reward" and self._steps == self.at_step:
            rewards = np.array(rewards, dtype=np.float64, copy=True)
            rewards[i] = self.value
            self.injected = True
        elif self.where == "final_obs" and "final_obs" in info and info["_final_obs"][i]:
            final = info["final_obs"].copy()
            if final.dtype == object:
                final[i] = np.array(final[i], dtype=np.float32, copy=True)
                final[i].flat[0] = self.value
            else:
                final[i].flat[0] = self.value
            info = {**info, "final_obs": final}
            self.injected = True
        return obs, rewards, terminations, truncations, info


class TruncateAt(gym.vector.VectorWrapper):
    """Truncate one sub-env's episode at one step, leaving the others running.

    On the ``step``-th ``step()`` call, sub-env ``env_index`` reports
    ``truncated=True`` with ``info["final_obs"]`` (its observation, as an
    ``[N, ...]`` array) and ``info["_final_obs"]`` (True only for it); the
    returned observation is unchanged (a stand-in for the next episode's first).
    With :class:`InjectNonFinite` on top it puts a NaN into a final observation
    of a sub-env other than the first.

    Args:
        env: a same-step-autoreset vector env whose episodes do not end at ``step``.
        env_index: the sub-env to truncate.
        step: 1-based ``step()`` call at which to truncate it.

    >>> env = TruncateAt(FaultyVectorEnv(3, episode_length=100), env_index=2, step=1)
    >>> _ = env.reset(seed=0)
    >>> env.step(np.zeros(3, np.int64))[3].tolist()
    [False, False, True]
    """

    def __init__(
        self, env: gym.vector.VectorEnv[Any, Any, Any], *, env_index: int, step: int
    ) -> None:
        super().__init__(env)
        self.env_index = env_index
        self.at_step = step
        self._steps = 0

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step the wrapped env; truncate ``env_index`` on the chosen call."""
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        self._steps += 1
        if self._steps == self.at_step:
            truncations = np.array(truncations, dtype=np.bool_, copy=True)
            truncations[self.env_index] = True
            mask = np.zeros(self.num_envs, dtype=np.bool_)
            mask[self.env_index] = True
            info = {**info, "final_obs": np.array(obs, copy=True), "_final_obs": mask}
        return obs, rewards, terminations, truncations, info
