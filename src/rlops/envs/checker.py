"""Check that a vector env honours the contract rlops trains on.

:func:`check_vector_env` is the one-off, thorough check to run on a new or
user-supplied env before training (``rlops`` runs it when an env is first
used). :func:`assert_finite_obs` is the cheap per-step guard the training loop
calls on every observation batch. Both raise :class:`~rlops.core.errors.EnvError`
with a message naming the check, the sub-env index and the step, e.g.
``observation of env 3 at step 17 contains NaN: [0.1 nan 0.0 0.2]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from rlops.core.errors import EnvError

__all__ = ["assert_finite_obs", "check_vector_env"]


def assert_finite_obs(
    obs: npt.NDArray[Any],
    step: int | str,
    *,
    name: str = "observation",
    env_ids: npt.NDArray[np.integer[Any]] | None = None,
) -> None:
    """Raise if a batch of observations ``[N, ...]`` contains NaN or Inf.

    Costs one ``np.isfinite(obs).all()`` when the batch is clean; the offending
    sub-env is only searched for on failure.

    Args:
        obs: batched observations, leading axis = sub-env.
        step: the step number (or a label such as ``"reset"``) for the message.
        name: what ``obs`` is, for the message (e.g. ``"final observation"``).
        env_ids: sub-env index of each row when ``obs`` holds a subset of the
            sub-envs (e.g. only those whose episode ended); default ``0..N-1``.

    Raises:
        EnvError: naming the first sub-env whose observation is not finite.

    >>> assert_finite_obs(np.zeros((2, 3), np.float32), step=0)
    >>> assert_finite_obs(np.array([[0.0], [np.inf]]), step=5)
    Traceback (most recent call last):
    ...
    rlops.core.errors.EnvError: observation of env 1 at step 5 contains +Inf: [inf]
    """
    if obs.dtype.kind not in "fc":
        return  # integer / bool observations are always finite
    if np.isfinite(obs).all():
        return
    finite = np.isfinite(obs).reshape(obs.shape[0], -1).all(axis=1)
    position = int(np.flatnonzero(~finite)[0])
    env = position if env_ids is None else int(env_ids[position])
    row = np.asarray(obs[position])
    if np.isnan(row).any():
        what = "NaN"
    elif (row == np.inf).any():
        what = "+Inf"
    else:
        what = "-Inf"
    raise EnvError(f"{name} of env {env} at step {step} contains {what}: {row}")


def check_vector_env(
    env: gym.vector.VectorEnv[Any, Any, Any], *, steps: int = 200, seed: int = 0
) -> None:
    """Validate spaces, shapes, dtypes, finiteness and autoreset of a vector env.

    Resets the env with ``seed``, takes ``steps`` random actions from its
    ``action_space`` (seeded with ``seed``) and checks every output; finally
    checks that ``reset(seed=seed)`` is reproducible. The env is left stepped:
    reset it again before use.

    Checks, by the name used in error messages:

    * ``env-type``: ``env`` is a ``gymnasium.vector.VectorEnv`` with ``num_envs >= 1``;
    * ``spaces``: observations are a ``Box``; actions a ``Box`` or ``Discrete``;
      the batched spaces have leading dimension ``num_envs``;
    * ``autoreset-mode``: ``metadata["autoreset_mode"]`` is ``SAME_STEP``;
    * ``reset`` / ``step``: return tuples of the right arity with a dict info;
    * ``obs-shape`` / ``obs-dtype`` / ``obs-finite``: observations are
      ``[N, *obs_shape]`` arrays of the space's dtype without NaN/Inf;
    * ``reward``: rewards are a real ``[N]`` array, all finite;
    * ``terminations`` / ``truncations``: bool ``[N]`` arrays;
    * ``final-obs``: when a sub-env ended, ``info["_final_obs"]`` marks exactly
      the ended sub-envs and their ``info["final_obs"]`` is well-formed and finite;
    * ``reset-determinism``: two ``reset(seed=seed)`` give equal observations.

    Args:
        env: the env to check.
        steps: number of random steps to take.
        seed: seeds ``reset`` and the action sampler.

    Raises:
        EnvError: on the first failed check, naming it (and the sub-env and
            step where it applies).

    >>> from rlops.envs.classic import CartPoleVectorEnv
    >>> check_vector_env(CartPoleVectorEnv(4), steps=50)
    """
    if not isinstance(env, gym.vector.VectorEnv):
        raise EnvError(
            f"[env-type] expected a gymnasium.vector.VectorEnv, got {type(env).__name__}; "
            "wrap single envs with gymnasium.make_vec or rlops.envs.make_vec('gym:<id>')"
        )
    n = env.num_envs
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise EnvError(f"[env-type] num_envs must be an int >= 1, got {n!r}")
    obs_space = _check_spaces(env, int(n))
    mode = env.metadata.get("autoreset_mode")
    if mode != AutoresetMode.SAME_STEP:
        raise EnvError(
            f"[autoreset-mode] metadata['autoreset_mode'] is {mode!r}; rlops needs "
            "AutoresetMode.SAME_STEP (final observation in info['final_obs'])"
        )

    reset_out: Any = env.reset(seed=seed)
    if not (
        isinstance(reset_out, tuple) and len(reset_out) == 2 and isinstance(reset_out[1], dict)
    ):
        raise EnvError("[reset] reset() must return (obs, info: dict)")
    first_obs = _check_obs(reset_out[0], obs_space, int(n), "reset")

    env.action_space.seed(seed)
    for t in range(1, steps + 1):
        actions = env.action_space.sample()
        out: Any = env.step(actions)
        if not (isinstance(out, tuple) and len(out) == 5 and isinstance(out[4], dict)):
            raise EnvError(
                f"[step] step() must return (obs, rewards, terminations, truncations, "
                f"info: dict), got {type(out).__name__} at step {t}"
            )
        obs, rewards, terminations, truncations, info = out
        _check_obs(obs, obs_space, int(n), t)
        _check_rewards(rewards, int(n), t)
        term = _check_flags(terminations, int(n), t, "terminations")
        trunc = _check_flags(truncations, int(n), t, "truncations")
        done = term | trunc
        if done.any():
            _check_final_obs(info, done, obs_space, t)

    again = env.reset(seed=seed)[0]
    if not np.array_equal(np.asarray(again), first_obs):
        raise EnvError(
            f"[reset-determinism] reset(seed={seed}) returned different observations on "
            "a second call; seed every random generator from the reset seed"
        )


def _check_spaces(env: gym.vector.VectorEnv[Any, Any, Any], n: int) -> spaces.Box:
    for attr in (
        "single_observation_space",
        "single_action_space",
        "observation_space",
        "action_space",
    ):
        if not isinstance(getattr(env, attr, None), spaces.Space):
            raise EnvError(f"[spaces] env.{attr} must be a gymnasium.spaces.Space")
    obs_space = env.single_observation_space
    act_space = env.single_action_space
    if not isinstance(obs_space, spaces.Box):
        raise EnvError(
            f"[spaces] single_observation_space must be a Box, got {obs_space}; flatten "
            "Dict/Tuple observations with gymnasium.wrappers.FlattenObservation"
        )
    if not isinstance(act_space, spaces.Box | spaces.Discrete):
        raise EnvError(f"[spaces] single_action_space must be a Box or Discrete, got {act_space}")
    batched_obs = env.observation_space.shape
    expected_obs = (n, *obs_space.shape)
    if batched_obs != expected_obs:
        raise EnvError(
            f"[spaces] observation_space shape {batched_obs} does not match "
            f"(num_envs, *single_observation_space.shape) = {expected_obs}"
        )
    batched_act = env.action_space.shape
    expected_act = (n, *(act_space.shape or ()))
    if batched_act != expected_act:
        raise EnvError(
            f"[spaces] action_space shape {batched_act} does not match "
            f"(num_envs, *single_action_space.shape) = {expected_act}"
        )
    return obs_space


def _check_obs(obs: Any, space: spaces.Box, n: int, step: int | str) -> npt.NDArray[Any]:
    if not isinstance(obs, np.ndarray):
        raise EnvError(
            f"[obs-shape] observations at step {step} must be a numpy array, "
            f"got {type(obs).__name__}"
        )
    expected = (n, *space.shape)
    if obs.shape != expected:
        raise EnvError(
            f"[obs-shape] observations at step {step} have shape {obs.shape}, expected "
            f"{expected} (num_envs, *single_observation_space.shape)"
        )
    if obs.dtype != space.dtype:
        raise EnvError(
            f"[obs-dtype] observations at step {step} have dtype {obs.dtype}, the "
            f"observation space says {space.dtype}"
        )
    try:
        assert_finite_obs(obs, step)
    except EnvError as e:
        raise EnvError(f"[obs-finite] {e}") from None
    return obs


def _check_rewards(rewards: Any, n: int, step: int) -> None:
    r = np.asarray(rewards)
    if r.shape != (n,) or r.dtype.kind not in "fiu":
        raise EnvError(
            f"[reward] rewards at step {step} must be a real array of shape ({n},), got "
            f"{r.dtype} {r.shape}"
        )
    if r.dtype.kind == "f" and not np.isfinite(r).all():
        env = int(np.flatnonzero(~np.isfinite(r))[0])
        raise EnvError(f"[reward] reward of env {env} at step {step} is {r[env]}")


def _check_flags(flags: Any, n: int, step: int, name: str) -> npt.NDArray[np.bool_]:
    if not isinstance(flags, np.ndarray) or flags.dtype != np.bool_ or flags.shape != (n,):
        got = f"{flags.dtype} {flags.shape}" if isinstance(flags, np.ndarray) else type(flags)
        raise EnvError(
            f"[{name}] {name} at step {step} must be a bool array of shape ({n},), got {got}"
        )
    return flags


def _check_final_obs(
    info: dict[str, Any], done: npt.NDArray[np.bool_], space: spaces.Box, step: int
) -> None:
    if "final_obs" not in info or "_final_obs" not in info:
        raise EnvError(
            f"[final-obs] sub-envs {np.flatnonzero(done).tolist()} ended at step {step} but "
            "info has no 'final_obs'/'_final_obs' (same-step autoreset must report them)"
        )
    mask = np.asarray(info["_final_obs"])
    if mask.shape != done.shape or not np.array_equal(mask.astype(bool), done):
        raise EnvError(
            f"[final-obs] info['_final_obs'] at step {step} is {mask.tolist()}, expected the "
            f"ended sub-envs {done.tolist()}"
        )
    final = info["final_obs"]
    for env in np.flatnonzero(done):
        row = np.asarray(final[env])
        if row.shape != space.shape:
            raise EnvError(
                f"[final-obs] final observation of env {env} at step {step} has shape "
                f"{row.shape}, expected {space.shape}"
            )
        if row.dtype.kind in "fc" and not np.isfinite(row).all():
            what = "NaN" if np.isnan(row).any() else "Inf"
            raise EnvError(
                f"[final-obs] final observation of env {env} at step {step} contains {what}: {row}"
            )
