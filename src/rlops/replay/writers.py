"""Writers: turn per-step vector-env transitions into replay items.

:class:`NStepWriter` is the n-step adder (Sutton 1988; used with replay by
Hessel et al. 2018, "Rainbow", and Acme's ``NStepTransitionAdder``). From the
per-step transitions of ``N`` sub-envs it emits, for every step ``t`` whose
window is complete,

``(obs_t, action_t, R, next_obs_{t+m}, terminated, discount = gamma^m)`` with
``R = sum_{k<m} gamma^k r_{t+k}``,

where ``m = n`` normally and ``m < n`` when the episode ended inside the
window. The learner's target is then ``R + discount * (1 - terminated) *
Q(next_obs)``:

* at a **termination** the bootstrap is off (``terminated=True``, target ``R``);
* at a **truncation** (time limit) the bootstrap stays on from the final
  observation (``terminated=False``): the episode was cut, not finished
  (Pardo et al. 2018, "Time Limits in Reinforcement Learning").

When a sub-env's episode ends, all of its pending windows are flushed at once
(the shorter ``m``), so no transition mixes two episodes.

**Autoreset contract.** rlops' vector envs autoreset on the same step: for a
sub-env that ended, ``env.step`` returns the *next* episode's first
observation and puts the last one in ``info["final_obs"]``. Pass that final
observation as ``next_obs`` for the ended sub-envs (e.g.
``np.where(done[:, None], final_obs, obs)``), and the returned observation as
``obs`` of the next call. With Gymnasium's next-step autoreset instead, skip
the step that only resets (its reward and flags are meaningless).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from rlops.core.errors import ConfigError, ReplayError
from rlops.replay.spec import Batch

__all__ = ["NStepWriter"]


class NStepWriter:
    """Accumulate ``n``-step returns per sub-env; emit completed transitions.

    Each :meth:`add` takes one vector-env step (every argument ``[N, ...]``)
    and returns the transitions it completed, a batch with fields ``obs``,
    ``action``, ``reward`` (float32), ``next_obs``, ``terminated`` (bool) and
    ``discount`` (float32 ``gamma**m``), ordered by sub-env, then by start
    step. The batch may be empty (0 items). It matches
    ``TransitionSpec.transitions(obs_shape, ..., n_step=True)``. With ``n=1``
    these are exactly the plain transitions, plus ``discount = gamma``.

    All pending windows live in ``[n, N, ...]`` ring arrays indexed by the
    shared step counter, and every step's emissions are computed for all
    sub-envs at once (one small matrix product for the returns).

    Args:
        n: steps per transition (``>= 1``).
        gamma: discount factor in ``[0, 1]``.
        num_envs: ``N``, the number of sub-envs.

    Raises:
        ConfigError: If ``n < 1``, ``gamma`` is outside ``[0, 1]`` or ``num_envs < 1``.

    >>> writer = NStepWriter(n=2, gamma=0.5, num_envs=1)
    >>> obs = np.zeros((1, 3), np.float32)
    >>> step = dict(action=np.array([1]), next_obs=obs, truncated=np.array([False]))
    >>> len(writer.add(obs, reward=np.array([1.0]), terminated=np.array([False]), **step)["reward"])
    0
    >>> out = writer.add(obs, reward=np.array([2.0]), terminated=np.array([False]), **step)
    >>> out["reward"].tolist(), out["discount"].tolist(), out["terminated"].tolist()
    ([2.0], [0.25], [False])
    """

    def __init__(self, n: int, gamma: float, num_envs: int) -> None:
        if n < 1:
            raise ConfigError(f"NStepWriter n must be >= 1, got {n}")
        if not 0.0 <= gamma <= 1.0:
            raise ConfigError(f"NStepWriter gamma must be in [0, 1], got {gamma}")
        if num_envs < 1:
            raise ConfigError(f"NStepWriter num_envs must be >= 1, got {num_envs}")
        self.n = int(n)
        self.gamma = float(gamma)
        self.num_envs = int(num_envs)
        self._step = 0
        self._pending = np.zeros(self.num_envs, dtype=np.int64)
        self._rewards = np.zeros((self.n, self.num_envs), dtype=np.float64)
        self._obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None
        # _returns[j, i] = gamma^(i - j) for i >= j: row j sums a window starting
        # at chronological slot j up to the newest step.
        k = np.arange(self.n)
        power = k[None, :] - k[:, None]
        self._returns = np.where(power >= 0, self.gamma ** np.maximum(power, 0), 0.0)
        self._discounts = (self.gamma ** (self.n - k)).astype(np.float32)
        self._j = k[:, None]

    def _check(self, name: str, value: npt.ArrayLike, ring: np.ndarray | None) -> np.ndarray:
        array = np.asarray(value)
        if array.ndim == 0 or array.shape[0] != self.num_envs:
            raise ReplayError(
                f"NStepWriter.add: {name} must be [num_envs={self.num_envs}, ...], "
                f"got shape {array.shape}"
            )
        if ring is not None and (array.shape[1:] != ring.shape[2:] or array.dtype != ring.dtype):
            raise ReplayError(
                f"NStepWriter.add: {name} changed to shape {array.shape} of {array.dtype}, "
                f"earlier steps had [{self.num_envs}, *{ring.shape[2:]}] of {ring.dtype}"
            )
        return array

    def add(
        self,
        obs: npt.ArrayLike,
        action: npt.ArrayLike,
        reward: npt.ArrayLike,
        next_obs: npt.ArrayLike,
        terminated: npt.ArrayLike,
        truncated: npt.ArrayLike,
    ) -> Batch:
        """Record one vector-env step; return the transitions it completed.

        Args:
            obs: ``[N, *obs_shape]`` observations the actions were taken on.
            action: ``[N, *action_shape]`` actions.
            reward: ``[N]`` rewards.
            next_obs: ``[N, *obs_shape]`` next observations; for sub-envs whose
                episode ended, the *final* observation (see the module doc).
            terminated: ``[N]`` episode ended in a terminal state.
            truncated: ``[N]`` episode was cut (time limit); ignored where
                ``terminated``.

        Returns:
            The completed transitions (possibly 0 of them).

        Raises:
            ReplayError: If an argument is not ``[N, ...]``, changes shape or
                dtype between calls, or a reward is not finite; nothing is
                recorded then.
        """
        obs_a = self._check("obs", obs, self._obs)
        act_a = self._check("action", action, self._actions)
        next_a = self._check("next_obs", next_obs, None)
        if next_a.shape != obs_a.shape or next_a.dtype != obs_a.dtype:
            raise ReplayError(
                f"NStepWriter.add: next_obs is {next_a.shape} of {next_a.dtype}, obs is "
                f"{obs_a.shape} of {obs_a.dtype}; they must match"
            )
        rew = np.asarray(reward, dtype=np.float64)
        term = np.asarray(terminated, dtype=np.bool_)
        trunc = np.asarray(truncated, dtype=np.bool_)
        for name, flat in (("reward", rew), ("terminated", term), ("truncated", trunc)):
            if flat.shape != (self.num_envs,):
                raise ReplayError(
                    f"NStepWriter.add: {name} must have shape ({self.num_envs},), got {flat.shape}"
                )
        if not np.isfinite(rew).all():
            bad = int(np.flatnonzero(~np.isfinite(rew))[0])
            raise ReplayError(f"NStepWriter.add: reward[{bad}] = {rew[bad]} is not finite")
        if self._obs is None or self._actions is None:
            self._obs = np.zeros((self.n, *obs_a.shape), dtype=obs_a.dtype)
            self._actions = np.zeros((self.n, *act_a.shape), dtype=act_a.dtype)
        n = self.n
        slot = self._step % n
        self._obs[slot] = obs_a
        self._actions[slot] = act_a
        self._rewards[slot] = rew
        self._step += 1
        pending = self._pending
        pending += 1
        done = term | trunc
        full = pending == n
        if not (done.any() or full.any()):
            return self._empty(obs_a, act_a)
        # Chronological slots, oldest first; window start j covers slots j..n-1.
        order = (self._step + np.arange(n)) % n
        # emit[j, e]: window of env e starting at chronological j completes now.
        in_window = self._j >= n - pending
        emit = in_window & (done | ((self._j == 0) & full))
        env, start = np.nonzero(emit.T)  # by env, then start step
        returns = self._returns @ self._rewards[order]
        slots = order[start]
        out: Batch = {
            "obs": self._obs[slots, env],
            "action": self._actions[slots, env],
            "reward": returns[start, env].astype(np.float32),
            "next_obs": next_a[env].copy(),
            "terminated": term[env],
            "discount": self._discounts[start],
        }
        pending[full & ~done] = n - 1
        pending[done] = 0
        return out

    def _empty(self, obs: np.ndarray, action: np.ndarray) -> Batch:
        return {
            "obs": np.zeros((0, *obs.shape[1:]), dtype=obs.dtype),
            "action": np.zeros((0, *action.shape[1:]), dtype=action.dtype),
            "reward": np.zeros(0, dtype=np.float32),
            "next_obs": np.zeros((0, *obs.shape[1:]), dtype=obs.dtype),
            "terminated": np.zeros(0, dtype=np.bool_),
            "discount": np.zeros(0, dtype=np.float32),
        }

    @property
    def pending(self) -> npt.NDArray[np.int64]:
        """``[N]`` steps per sub-env whose transitions are not emitted yet (``< n``)."""
        return self._pending.copy()

    def state_dict(self) -> dict[str, Any]:
        """Settings, the step counter and the pending windows (ring arrays)."""
        return {
            "n": self.n,
            "gamma": self.gamma,
            "num_envs": self.num_envs,
            "step": self._step,
            "pending": self._pending.copy(),
            "rewards": self._rewards.copy(),
            "obs": None if self._obs is None else self._obs.copy(),
            "actions": None if self._actions is None else self._actions.copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output, pending windows included.

        Raises:
            ReplayError: If ``n``, ``gamma`` or ``num_envs`` differ, or the arrays
                have the wrong shapes.
        """
        for key in ("n", "gamma", "num_envs"):
            if state[key] != getattr(self, key):
                raise ReplayError(
                    f"NStepWriter state has {key}={state[key]!r}, "
                    f"this writer {getattr(self, key)!r}"
                )
        pending = np.asarray(state["pending"], dtype=np.int64)
        rewards = np.asarray(state["rewards"], dtype=np.float64)
        if pending.shape != (self.num_envs,) or rewards.shape != (self.n, self.num_envs):
            raise ReplayError("NStepWriter state: pending/rewards have the wrong shape")
        if state["obs"] is None or state["actions"] is None:
            self._obs = self._actions = None
        else:
            obs, actions = np.array(state["obs"]), np.array(state["actions"])
            if obs.shape[:2] != (self.n, self.num_envs) or actions.shape[:2] != obs.shape[:2]:
                raise ReplayError("NStepWriter state: obs/actions must be [n, num_envs, ...]")
            self._obs, self._actions = obs, actions
        self._step = int(state["step"])
        self._pending = pending.copy()
        self._rewards = rewards.copy()
