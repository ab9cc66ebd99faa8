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
* :class:`CrashingCartPole`: rlops' CartPole that raises :class:`EnvCrash` or
  hangs on purpose (configured by :class:`CrashConfig`), for fault-tolerance
  tests of actor runtimes (RLlib's ``CartPoleCrashing``); registered with rlops
  as ``rlops/CartPoleCrashing-v0``, so a YAML config can use it::

      env: {id: rlops/CartPoleCrashing-v0, num_envs: 4,
            kwargs: {p_crash_step: 0.0005, p_crash_reset: 0.005}}
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import time
from collections.abc import Mapping
from typing import Any, Final, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlops.core.config import check
from rlops.core.errors import ConfigError, EnvError
from rlops.envs.classic import CartPoleParams, CartPoleVectorEnv

__all__ = [
    "NAN_CARTPOLE_ID",
    "CrashConfig",
    "CrashingCartPole",
    "EnvCrash",
    "FakeHTTPEnvServer",
    "Fault",
    "FaultyVectorEnv",
    "InjectNonFinite",
    "MaskedChoice",
    "NaNCartPole",
    "TruncateAt",
    "Where",
    "actor_processes",
    "make_crashing_cartpole",
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


# --------------------------------------------------------------------------- crashing CartPole


class EnvCrash(RuntimeError):
    """An env failure injected on purpose by :class:`CrashingCartPole`.

    Deliberately *not* an :class:`rlops.core.errors.RlopsError`: it stands in for a
    bug in a third-party simulator, which a fault-tolerant runtime must survive
    (restart the actor) rather than report as a user error. It carries only its
    message, so it pickles across process boundaries unchanged.
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrashConfig:
    """What :class:`CrashingCartPole` does wrong, and how often (defaults: nothing).

    Probabilities are per draw from the env's fault generator (see
    :class:`CrashingCartPole` for how it is seeded).

    >>> CrashConfig(p_crash_step=0.0005).p_crash_reset
    0.0
    >>> CrashConfig(p_crash_step=1.5)
    Traceback (most recent call last):
    ...
    rlops.core.errors.ConfigError: p_crash_step: must be in [0, 1], got 1.5
    """

    p_crash_step: float = 0.0
    """Probability, per sub-env and per ``step()``, that the step raises :class:`EnvCrash`
    (a vector step of ``N`` sub-envs crashes with probability ``1 - (1 - p)^N``)."""
    p_crash_reset: float = 0.0
    """Probability, per ``reset()`` call, that the reset raises :class:`EnvCrash`."""
    p_hang_step: float = 0.0
    """Probability, per ``step()``, that the step sleeps ``hang_s`` seconds before returning."""
    hang_s: float = 0.0
    """Seconds a hung step sleeps; must be > 0 when ``p_hang_step > 0``."""
    crash_after_steps: int = 0
    """Raise :class:`EnvCrash` on exactly the ``k``-th ``step()`` after each reset; 0 = off."""
    hang_on_reset_s: float = 0.0
    """Seconds every ``reset()`` sleeps before resetting (a hung actor start); 0 = off."""
    step_cost_s: float = 0.0
    """CPU seconds every sub-env step burns (busy-waiting, not sleeping): a stand-in
    for an expensive simulator, so that env stepping dominates (scaling benchmarks)."""

    def __post_init__(self) -> None:
        for name in ("p_crash_step", "p_crash_reset", "p_hang_step"):
            value = getattr(self, name)
            check(
                _is_real(value) and 0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value!r}"
            )
        for name in ("hang_s", "hang_on_reset_s", "step_cost_s"):
            value = getattr(self, name)
            check(_is_real(value) and value >= 0.0, name, f"must be seconds >= 0, got {value!r}")
        check(
            not self.p_hang_step or self.hang_s > 0.0,
            "hang_s",
            f"must be > 0 when p_hang_step > 0 (seconds a hung step sleeps), got {self.hang_s!r}",
        )
        steps = self.crash_after_steps
        check(
            isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0,
            "crash_after_steps",
            f"must be an int >= 0 (0 = off), got {steps!r}",
        )


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_FAULT_STREAM: Final = 0x0FA017
"""Mixed into the fault generator's seed so fault draws are independent of the
dynamics stream that the same ``reset(seed=...)`` seeds."""


def _fault_rng(entropy: int) -> np.random.Generator:
    return np.random.default_rng([_FAULT_STREAM, entropy])


def _burn(seconds: float) -> None:
    """Busy-wait ``seconds`` of this thread's CPU time (a simulator's work, not a sleep)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _sleep(seconds: float) -> None:
    # time.sleep may wake early on some platforms; loop to a monotonic deadline so
    # a "hang of s seconds" is never shorter than s.
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(left)


Ints = npt.NDArray[np.integer[Any]]


class CrashingCartPole(gym.vector.VectorWrapper[F32, Ints, F32, Ints, npt.NDArray[Any]]):
    """:class:`~rlops.envs.CartPoleVectorEnv` that crashes or hangs on purpose.

    Spaces, dynamics, same-step autoreset and ``info["final_obs"]`` are those of
    the wrapped ``CartPoleVectorEnv``: with the default :class:`CrashConfig` the
    outputs are bit-identical to it for the same seed and actions. Faults:

    * ``step()``: increments the step counter (restarted by every successful
      ``reset()``), then raises :class:`EnvCrash` if the counter equals
      ``crash_after_steps`` or if any sub-env draws a crash with probability
      ``p_crash_step``; the cart-poles are not stepped then, and the env may keep
      stepping afterwards. Otherwise it steps the cart-poles and, with probability
      ``p_hang_step``, sleeps ``hang_s`` seconds before returning.
    * ``reset()``: sleeps ``hang_on_reset_s`` seconds, then raises with
      probability ``p_crash_reset`` (leaving the cart-poles as they were).

    Fault randomness comes from the env's own ``numpy.random.Generator``, separate
    from the dynamics generator: ``reset(seed=s)`` reseeds it from ``s`` (so
    actors seeded differently crash at different steps, and the same seed gives
    the same crash steps); before the first seeded reset it is seeded from
    ``os.getpid()`` (so unseeded envs in different processes differ, while two
    unseeded envs in one process share a fault stream). ``reset(seed=s)`` is
    therefore deterministic: with ``p_crash_reset`` in (0, 1), retrying a crashed
    reset with the same seed crashes again; retry with another seed or ``None``.

    Args:
        num_envs: number of sub-envs ``N``.
        crash: the faults to inject; defaults to none.
        params: CartPole physical constants; defaults to Gymnasium CartPole-v1.

    Raises:
        EnvError: if ``num_envs < 1``.

    >>> env = CrashingCartPole(2, crash=CrashConfig(crash_after_steps=2))
    >>> _ = env.reset(seed=0)
    >>> _ = env.step(np.array([0, 1]))
    >>> env.step(np.array([0, 1]))
    Traceback (most recent call last):
    ...
    rlops.testing.EnvCrash: CrashingCartPole: injected crash at step 2 (crash_after_steps=2)
    """

    def __init__(
        self,
        num_envs: int = 1,
        *,
        crash: CrashConfig | None = None,
        params: CartPoleParams | None = None,
    ) -> None:
        self._cartpole = CartPoleVectorEnv(num_envs, params=params)
        super().__init__(self._cartpole)
        self.crash = CrashConfig() if crash is None else crash
        self.params = self._cartpole.params
        self._fault_rng = _fault_rng(os.getpid())
        self._draws = np.empty(self.num_envs, dtype=np.float64)
        self._steps = 0
        self._ready = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Reset every sub-env, maybe after hanging, maybe crashing instead.

        Args:
            seed: reseeds both the dynamics and the fault generator; ``None``
                continues both.
            options: must be ``None`` or empty (as for ``CartPoleVectorEnv``).

        Returns:
            ``(obs [N, 4] float32, {})``.

        Raises:
            EnvCrash: with probability ``p_crash_reset``.
            EnvError: if ``options`` is not empty.
        """
        if seed is not None:
            self._fault_rng = _fault_rng(seed)
        c = self.crash
        if c.hang_on_reset_s > 0.0:
            _sleep(c.hang_on_reset_s)
        if c.p_crash_reset > 0.0 and self._fault_rng.random() < c.p_crash_reset:
            raise EnvCrash(
                f"CrashingCartPole: injected crash in reset() (p_crash_reset={c.p_crash_reset})"
            )
        obs, info = self._cartpole.reset(seed=seed, options=options)
        self._steps = 0
        self._ready = True
        return obs, info

    def step(self, actions: Ints) -> tuple[F32, npt.NDArray[Any], Any, Any, dict[str, Any]]:
        """Step every cart-pole (see ``CartPoleVectorEnv.step``), maybe crashing or hanging.

        Raises:
            EnvCrash: on the ``crash_after_steps``-th step after a reset, or with
                probability ``p_crash_step`` per sub-env.
            EnvError: if called before :meth:`reset`, or on invalid actions.
        """
        if not self._ready:
            return self._cartpole.step(actions)  # raises EnvError("... before reset() ...")
        self._steps += 1
        c = self.crash
        if self._steps == c.crash_after_steps:
            raise EnvCrash(
                f"CrashingCartPole: injected crash at step {self._steps} "
                f"(crash_after_steps={c.crash_after_steps})"
            )
        if c.p_crash_step > 0.0:
            self._fault_rng.random(out=self._draws)
            hit = np.flatnonzero(self._draws < c.p_crash_step)
            if hit.size:
                raise EnvCrash(
                    f"CrashingCartPole: injected crash at step {self._steps} in sub-env "
                    f"{hit[0]} (p_crash_step={c.p_crash_step})"
                )
        result = self._cartpole.step(actions)
        if c.step_cost_s > 0.0:
            _burn(c.step_cost_s * self.num_envs)
        if c.p_hang_step > 0.0 and self._fault_rng.random() < c.p_hang_step:
            _sleep(c.hang_s)
        return result

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, fault draws included.

        Returns:
            ``{"cartpole": CartPoleVectorEnv.state_dict(), "fault_rng": dict,
            "steps": int}``: ``fault_rng`` is the fault generator's
            ``bit_generator.state`` and ``steps`` the step counter since the
            last reset (JSON-serialisable).

        Raises:
            EnvError: if called before :meth:`reset`.
        """
        return {
            "cartpole": self._cartpole.state_dict(),
            "fault_rng": self._fault_rng.bit_generator.state,
            "steps": self._steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            EnvError: on missing keys, a state the wrapped ``CartPoleVectorEnv``
                rejects, a fault generator that is not PCG64, or a bad step count.
        """
        owner = type(self).__name__
        missing = {"cartpole", "fault_rng", "steps"} - set(state)
        if missing:
            raise EnvError(f"{owner}.load_state_dict: missing keys {sorted(missing)}")
        rng_state = state["fault_rng"]
        name = rng_state.get("bit_generator") if isinstance(rng_state, Mapping) else None
        if name != "PCG64":
            raise EnvError(
                f"{owner}.load_state_dict: 'fault_rng' must be a PCG64 bit_generator.state "
                f"dict, got bit_generator {name!r}"
            )
        steps = state["steps"]
        if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or steps < 0:
            raise EnvError(f"{owner}.load_state_dict: 'steps' must be an int >= 0, got {steps!r}")
        self._cartpole.load_state_dict(state["cartpole"])
        bit_generator = np.random.PCG64()
        rng_copy: Any = dict(rng_state)  # numpy types it as a TypedDict; checked above
        bit_generator.state = rng_copy
        self._fault_rng = np.random.Generator(bit_generator)
        self._steps = int(steps)
        self._ready = True


def make_crashing_cartpole(
    num_envs: int = 1,
    *,
    crash: CrashConfig | None = None,
    params: CartPoleParams | None = None,
    **fields: Any,
) -> CrashingCartPole:
    """Build a :class:`CrashingCartPole` from flat keyword arguments (a config's ``env.kwargs``).

    This is the factory behind ``make_vec("rlops/CartPoleCrashing-v0", ...)``.

    Args:
        num_envs: number of sub-envs.
        crash: base fault config; ``fields`` naming its fields override it.
        params: base CartPole constants; ``fields`` naming its fields override them.
        **fields: fields of :class:`CrashConfig` (``p_crash_step``, ...) or of
            :class:`~rlops.envs.CartPoleParams` (``gravity``, ...).

    Returns:
        The env, not yet reset.

    Raises:
        ConfigError: on an unknown field or a value :class:`CrashConfig` rejects.
        EnvError: on a value :class:`~rlops.envs.CartPoleParams` rejects.

    >>> env = make_crashing_cartpole(2, p_crash_step=0.0005, gravity=9.81)
    >>> env.crash.p_crash_step, env.params.gravity
    (0.0005, 9.81)
    """
    crash_names = {f.name for f in dataclasses.fields(CrashConfig)}
    params_names = {f.name for f in dataclasses.fields(CartPoleParams)}
    unknown = sorted(set(fields) - crash_names - params_names)
    if unknown:
        known = sorted(crash_names | params_names)
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"{unknown[0]}: unknown CrashingCartPole kwarg{hint}; known: CrashConfig fields "
            f"{sorted(crash_names)} and CartPoleParams fields {sorted(params_names)}"
        )
    crash_fields = {k: v for k, v in fields.items() if k in crash_names}
    params_fields = {k: v for k, v in fields.items() if k in params_names}
    crash = dataclasses.replace(crash or CrashConfig(), **crash_fields)
    params = dataclasses.replace(params or CartPoleParams(), **params_fields)
    return CrashingCartPole(num_envs, crash=crash, params=params)


def actor_processes(parent: int | None = None) -> list[int]:
    """PIDs of live rlops actor processes whose parent is ``parent`` (default: this process).

    Reads ``/proc`` (Linux), so tests can check that no actor outlives its run
    and can SIGKILL one mid-run.
    """
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == parent and state != "Z" and b"rlops.runtime._actor_main" in cmdline:
            found.append(int(entry))
    return sorted(found)


class MaskedChoice(gym.vector.VectorEnv[F32, npt.NDArray[np.int64], npt.NDArray[Any]]):
    """A vector env with per-step action masks: pick the best eligible of ``n`` actions.

    Observation: the ``[n]`` eligibility bits of the current step (float32).
    Action ``a`` in ``Discrete(n)`` pays ``a / (n - 1)`` when eligible; an
    ineligible action pays -1 and is counted in :attr:`violations` (a masked
    policy never incurs one). Episodes are truncated after ``length`` steps.
    Masks are drawn uniformly with at least one eligible action per row.

    Args:
        num_envs: sub-envs.
        n: actions.
        length: steps per episode.
    """

    metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(self, num_envs: int, n: int = 4, length: int = 10) -> None:
        self.num_envs = num_envs
        self.n = n
        self.length = length
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
        self.single_action_space = gym.spaces.Discrete(n)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.rng = np.random.default_rng()
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.mask = np.ones((num_envs, n), dtype=bool)
        self.violations = 0

    def _draw(self, rows: np.ndarray) -> None:
        mask = self.rng.random((len(rows), self.n)) < 0.5
        mask[np.arange(len(rows)), self.rng.integers(0, self.n, len(rows))] = True
        self.mask[rows] = mask

    def action_masks(self) -> np.ndarray:
        """``[N, n]`` eligible actions now."""
        return self.mask.copy()

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[F32, dict[str, Any]]:
        """Start all episodes."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t[:] = 0
        self._draw(np.arange(self.num_envs))
        return self.mask.astype(np.float32), {}

    def step(self, actions: Any) -> tuple[F32, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Pay for the chosen actions, then draw the next masks."""
        actions = np.asarray(actions, dtype=np.int64)
        rows = np.arange(self.num_envs)
        eligible = self.mask[rows, actions]
        self.violations += int((~eligible).sum())
        rewards = np.where(eligible, actions / (self.n - 1), -1.0)
        self.t += 1
        truncated = self.t >= self.length
        terminated = np.zeros(self.num_envs, dtype=bool)
        info: dict[str, Any] = {}
        final = self.mask.astype(np.float32)
        if truncated.any():
            info = {"final_obs": final, "_final_obs": truncated.copy()}
            self.t[truncated] = 0
        self._draw(rows)
        return self.mask.astype(np.float32), rewards, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        """Nothing to release."""


class FakeHTTPEnvServer:
    """Gymnasium CartPole-v1 served on 127.0.0.1 in the protocol of ``rlops.envs.adapters``.

    Starts a ``ThreadingHTTPServer`` on an ephemeral port in a daemon thread at
    construction; :meth:`close` (or leaving the ``with`` block) shuts it down.
    Each ``env_index`` is an independent ``CartPoleEnv`` truncated after
    ``max_episode_steps``; ``POST /reset`` with a seed reseeds it, with ``null``
    continues its generator, so a seeded reset is reproducible.

    Faults are injected per endpoint (``"spaces"``, ``"reset"``, ``"step"``)
    through :attr:`faults`, which tests may change while the server runs:

    * ``"sleep"``: wait ``sleep_s`` (cut short by :meth:`close`), then answer;
    * ``"status500"``: answer ``500`` with a JSON error body;
    * ``"malformed"``: answer ``200`` with a truncated JSON document;
    * ``"missing_key"``: drop ``reward`` (step), ``observation`` (reset) or
      ``action`` (spaces) from the answer;
    * ``"wrong_length"``: drop the observation's last value;
    * ``"nan"``: the observation's first value is ``NaN``;
    * ``"trickle"``: send the status line one byte every 50 ms, forever
      (until the client gives up or the server closes).

    Args:
        max_episode_steps: truncation horizon of every episode.
        faults: ``{endpoint: fault}`` to start with.
        sleep_s: how long a ``"sleep"`` fault waits [s].

    Attributes:
        requests: ``(method, path)`` of every request received, in order.
        last_headers: the headers of the last request received.

    >>> with FakeHTTPEnvServer(faults={"step": "status500"}) as server:
    ...     server.url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(
        self,
        *,
        max_episode_steps: int = 500,
        faults: Mapping[str, str] | None = None,
        sleep_s: float = 10.0,
    ) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        self.max_episode_steps = max_episode_steps
        self.faults: dict[str, str] = dict(faults or {})
        self.sleep_s = sleep_s
        self.requests: list[tuple[str, str]] = []
        self.last_headers: dict[str, str] = {}
        self._envs: dict[int, Any] = {}  # CartPoleEnv (untyped methods)
        self._elapsed: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, the base URL to give :class:`HTTPEnv`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        """Stop serving, wake sleeping handlers and free the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
        for env in self._envs.values():
            env.close()

    def __enter__(self) -> FakeHTTPEnvServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _handler_class(self) -> type[Any]:
        from http.server import BaseHTTPRequestHandler

        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

        return Handler

    def _handle(self, handler: Any, method: str) -> None:
        import json

        endpoint = handler.path.rstrip("/").rsplit("/", 1)[-1]
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self._lock:
            self.requests.append((method, handler.path))
            self.last_headers = dict(handler.headers.items())
            fault = self.faults.get(endpoint)
        try:
            if fault == "sleep":
                self._stop.wait(self.sleep_s)
            elif fault == "trickle":
                for byte in b"HTTP/1.0 200 OK\r\n":
                    if self._stop.wait(0.05):
                        return
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                self._stop.wait(self.sleep_s)
                return
            elif fault == "status500":
                self._send(handler, 500, b'{"error": "injected failure"}')
                return
            elif fault == "malformed":
                self._send(handler, 200, b'{"observation": [0.0, ')
                return
            try:
                payload = json.loads(raw) if raw else {}
                status, body = self._route(method, endpoint, payload)
            except (ValueError, TypeError, KeyError) as exc:
                status, body = 400, {"error": f"{type(exc).__name__}: {exc}"}
            if status == 200:
                body = self._corrupt(endpoint, body, fault)
            self._send(handler, status, json.dumps(body).encode())
        except OSError:
            pass  # the client gave up (timeout test): nothing to answer

    def _route(self, method: str, endpoint: str, payload: Any) -> tuple[int, dict[str, Any]]:
        if (method, endpoint) == ("GET", "spaces"):
            space: Any = CartPoleEnv().observation_space
            return 200, {
                "observation": {
                    "shape": list(space.shape),
                    "low": [None if math.isinf(v) else float(v) for v in space.low],
                    "high": [None if math.isinf(v) else float(v) for v in space.high],
                },
                "action": {"n": 2},
            }
        if method != "POST" or endpoint not in ("reset", "step"):
            return 404, {"error": f"no route {method} /{endpoint}"}
        index = payload["env_index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 4096:
            raise ValueError(f"env_index must be an int in [0, 4096), got {index!r}")
        with self._lock:
            if endpoint == "reset":
                seed = payload["seed"]
                env = self._envs.setdefault(index, CartPoleEnv())
                obs, _ = env.reset(seed=seed)
                self._elapsed[index] = 0
                return 200, {"observation": obs.tolist()}
            if index not in self._envs:
                return 409, {"error": f"env_index {index} was never reset"}
            action = payload["action"]
            if action not in (0, 1) or isinstance(action, bool):
                raise ValueError(f"action must be 0 or 1, got {action!r}")
            obs, reward, terminated, _, _ = self._envs[index].step(action)
            self._elapsed[index] += 1
            return 200, {
                "observation": obs.tolist(),
                "reward": float(reward),
                "terminated": bool(terminated),
                "truncated": self._elapsed[index] >= self.max_episode_steps,
            }

    @staticmethod
    def _corrupt(endpoint: str, body: dict[str, Any], fault: str | None) -> dict[str, Any]:
        if fault == "missing_key":
            body.pop({"step": "reward", "reset": "observation", "spaces": "action"}[endpoint])
        elif fault == "wrong_length" and "observation" in body:
            body["observation"] = body["observation"][:-1]
        elif fault == "nan" and "observation" in body:
            body["observation"][0] = math.nan
        return body

    @staticmethod
    def _send(handler: Any, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
