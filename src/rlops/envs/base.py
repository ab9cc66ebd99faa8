"""The vector-env contract rlops trains on.

rlops speaks Gymnasium's vector API (``gymnasium.vector.VectorEnv``): ``reset``
returns ``(obs[N, ...], info)``, ``step(actions[N, ...])`` returns
``(obs, rewards[N], terminations[N], truncations[N], info)``, and
``single_observation_space`` / ``single_action_space`` describe one sub-env.
rlops' own simulators subclass ``gymnasium.vector.VectorEnv`` and any Gymnasium
env comes in through ``gymnasium.make_vec``, so both plug into the same loop.

One convention is fixed: **same-step autoreset**. When sub-env ``i`` ends at a
step, the observation returned for it is already the first observation of its
next episode, and the last observation of the finished episode is in
``info["final_obs"][i]`` with ``info["_final_obs"][i]`` True
(``gymnasium.vector.AutoresetMode.SAME_STEP``). rlops' simulators store
``final_obs`` as one ``[N, ...]`` array; Gymnasium stores an object array with
``None`` for sub-envs that did not end. :func:`final_observations` reads both.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

VectorEnv = gym.vector.VectorEnv
"""The vector-env type rlops accepts (``gymnasium.vector.VectorEnv``)."""

SAME_STEP = AutoresetMode.SAME_STEP


def action_masks(env: Any) -> np.ndarray | None:
    """``[N, A]`` bool eligible actions for the env's current observations, or None.

    An env with action constraints exposes ``action_masks()`` (the convention
    of sb3-contrib's MaskablePPO); wrappers are looked through. After a
    same-step autoreset the mask of a finished sub-env is its new episode's.
    """
    fn = getattr(env, "action_masks", None) or getattr(env.unwrapped, "action_masks", None)
    if fn is None:
        return None
    return np.asarray(fn(), dtype=bool)


def final_observations(info: dict[str, Any], index: np.ndarray) -> np.ndarray:
    """Stack the final observations of the sub-envs in ``index``.

    Args:
        info: the ``info`` dict a same-step-autoreset vector env returned.
        index: integer indices of sub-envs that ended on this step.

    Returns:
        ``[len(index), *obs_shape]`` array of their last observations.

    Raises:
        KeyError: if the env did not report ``final_obs`` (wrong autoreset mode).
    """
    final = info["final_obs"]
    if final.dtype != object:
        return np.asarray(final[index])
    return np.stack([np.asarray(final[i]) for i in index])
