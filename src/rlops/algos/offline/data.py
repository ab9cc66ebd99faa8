"""What the offline learners read: logged decisions as arrays, and transitions built from them.

The learners accept any object with the fields of
:class:`rlops.evaluation.ope.data.BanditData` / ``EpisodeData`` (the
:class:`BanditLog` / :class:`EpisodeLog` protocols below), so this layer does
not import ``rlops.evaluation`` (it sits below ``algos``); load a log with
``load_decisions`` + ``to_bandit`` / ``to_episodes`` and pass the result.

Everything here is numpy: pure functions with known answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from rlops.core.decisions import DecisionRecord, is_sequential
from rlops.core.errors import DataError

OBS_NORM_EPSILON = 1e-8
"""Added to the variance before the square root (as the training-time normaliser)."""
OBS_NORM_CLIP = 10.0
"""Normalised observations are clipped to +-this (as the training-time normaliser)."""


class BanditLog(Protocol):
    """``n`` one-step decisions over ``K`` actions (``BanditData`` satisfies it).

    Attributes:
        observations: ``[n, d]`` contexts.
        actions: ``[n]`` int logged action indices in ``[0, K)``.
        rewards: ``[n]`` rewards.
        propensities: ``[n]`` behaviour probability of the logged action, in (0, 1].
        n_actions: ``K``.
        masks: ``[n, K]`` bool eligible actions, or None.
    """

    @property
    def observations(self) -> np.ndarray: ...
    @property
    def actions(self) -> np.ndarray: ...
    @property
    def rewards(self) -> np.ndarray: ...
    @property
    def propensities(self) -> np.ndarray: ...
    @property
    def n_actions(self) -> int: ...
    @property
    def masks(self) -> np.ndarray | None: ...


class EpisodeLog(Protocol):
    """``E`` episodes padded to ``T`` steps (``EpisodeData`` satisfies it).

    Attributes:
        observations: ``[E, T, d]``.
        actions: ``[E, T]`` int (anything where padded).
        rewards: ``[E, T]``.
        valid: ``[E, T]`` bool, True on logged steps (a prefix of each row).
        n_actions: ``K``.
        masks: ``[E, T, K]`` bool or None.
    """

    @property
    def observations(self) -> np.ndarray: ...
    @property
    def actions(self) -> np.ndarray: ...
    @property
    def rewards(self) -> np.ndarray: ...
    @property
    def valid(self) -> np.ndarray: ...
    @property
    def n_actions(self) -> int: ...
    @property
    def masks(self) -> np.ndarray | None: ...


@dataclass(frozen=True)
class OfflineTransitions:
    """``N`` one-step transitions ``(s, a, r, s', done)`` from logged episodes.

    Attributes:
        obs: ``[N, d]`` float64 observations.
        actions: ``[N]`` int64 logged actions.
        rewards: ``[N]`` float64 rewards.
        next_obs: ``[N, d]`` float64 next observations (a copy of ``obs`` where
            ``terminated``: never bootstrapped from).
        terminated: ``[N]`` bool, True at each episode's last logged step.
        masks: ``[N, K]`` bool eligible actions at ``s``, or None.
        next_masks: ``[N, K]`` bool eligible actions at ``s'``, or None.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    masks: np.ndarray | None = None
    next_masks: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of transitions."""
        return int(self.actions.shape[0])


def episodes_to_transitions(log: EpisodeLog) -> OfflineTransitions:
    """Flatten padded episodes into transitions, episode-major then step order.

    The decision record has no terminated/truncated flag, so an episode's last
    logged step is treated as terminal (no bootstrap). Episodes cut short by a
    time limit are then valued as if they ended there; that is conservative,
    and the only reading a log without the flag supports.

    >>> from types import SimpleNamespace
    >>> log = SimpleNamespace(
    ...     observations=np.arange(6.0).reshape(2, 3, 1), actions=np.array([[0, 1, 0], [1, 0, 0]]),
    ...     rewards=np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]),
    ...     valid=np.array([[True, True, False], [True, False, False]]), n_actions=2, masks=None)
    >>> t = episodes_to_transitions(log)
    >>> t.obs.ravel().tolist(), t.next_obs.ravel().tolist(), t.terminated.tolist()
    ([0.0, 1.0, 3.0], [1.0, 1.0, 3.0], [False, True, True])
    """
    valid = np.asarray(log.valid, dtype=bool)
    if valid.ndim != 2 or not valid.any():
        raise DataError("episodes: no logged step to learn from")
    obs = np.asarray(log.observations, dtype=np.float64)
    # next_valid[e, t]: step t+1 of episode e exists, i.e. step t is not the last.
    next_valid = np.zeros_like(valid)
    next_valid[:, :-1] = valid[:, 1:]
    # Shifted observations; the last column (no successor) repeats itself.
    shifted = np.concatenate([obs[:, 1:], obs[:, -1:]], axis=1)
    terminated = valid & ~next_valid
    next_obs = np.where(terminated[..., None], obs, shifted)
    masks = next_masks = None
    if log.masks is not None:
        m = np.asarray(log.masks, dtype=bool)
        masks = m[valid]
        shifted_m = np.concatenate([m[:, 1:], m[:, -1:]], axis=1)
        # Terminal steps never bootstrap; give them an all-true mask so max/argmax stay finite.
        next_masks = np.where(terminated[..., None], True, shifted_m)[valid]
    return OfflineTransitions(
        obs=obs[valid],
        actions=np.asarray(log.actions, dtype=np.int64)[valid],
        rewards=np.asarray(log.rewards, dtype=np.float64)[valid],
        next_obs=next_obs[valid],
        terminated=terminated[valid],
        masks=masks,
        next_masks=next_masks,
    )


def obs_norm_stats(obs: np.ndarray) -> dict[str, Any]:
    """Mean and variance of ``[n, d]`` observations in the artifact's ``obs_norm`` shape."""
    x = np.asarray(obs, dtype=np.float64)
    return {
        "mean": x.mean(axis=0),
        "var": x.var(axis=0),
        "epsilon": OBS_NORM_EPSILON,
        "clip": OBS_NORM_CLIP,
    }


def normalize(obs: np.ndarray, stats: dict[str, Any] | None) -> np.ndarray:
    """``[n, d]`` float32 observations as the artifact preprocesses them.

    Same arithmetic as :meth:`rlops.artifacts.Policy.preprocess` (float32
    mean and std, clip), so the network trains on exactly what it serves on.

    >>> normalize(np.array([[1.0], [3.0]]), obs_norm_stats(np.array([[1.0], [3.0]]))).ravel()
    array([-1.,  1.], dtype=float32)
    """
    x = np.asarray(obs, dtype=np.float32)
    if stats is None:
        return x
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.sqrt(np.asarray(stats["var"], dtype=np.float64) + float(stats["epsilon"]))
    clip = float(stats["clip"])
    return np.clip((x - mean) / std.astype(np.float32), -clip, clip)


def check_finite(name: str, values: np.ndarray) -> None:
    """Refuse NaN/Inf in a logged field, naming it and the count.

    Raises:
        DataError: if any value is not finite.
    """
    bad = int((~np.isfinite(np.asarray(values, dtype=np.float64))).sum())
    if bad:
        raise DataError(f"{name}: {bad} value(s) are NaN or infinite; clean the log first")


def check_discrete(records: Sequence[DecisionRecord]) -> None:
    """Refuse logs with continuous actions (the offline learners here are discrete).

    Raises:
        DataError: naming the ``action`` field and the count.
    """
    continuous = sum(not isinstance(r.action, int) or isinstance(r.action, bool) for r in records)
    if continuous:
        raise DataError(
            f"action: {continuous} of {len(records)} record(s) have continuous actions (a list "
            "of floats); offline learning here trains discrete-action policies only "
            "(bandit-ips, bandit-dr, cql)"
        )


def default_algo(records: Sequence[DecisionRecord]) -> Literal["bandit-dr", "cql"]:
    """``"bandit-dr"`` for a one-step log, ``"cql"`` for a sequential one.

    A log is one-step when no episode (:func:`rlops.core.decisions.episode_key`,
    as ``to_episodes`` groups them) logs more than one distinct ``step``: a
    serving log without episode ids, where a unit's decisions all sit at
    step 0, is a contextual bandit, not one long episode.

    >>> from rlops.core.decisions import DecisionRecord
    >>> rec = lambda ep, step: DecisionRecord(decision_id=f"{ep}{step}", timestamp=0.0,
    ...     unit_id="u", episode_id=ep, step=step, observation=[0.0], action=0,
    ...     propensity=0.5, policy_version="v", arm="simulation")
    >>> default_algo([rec("a", 0), rec("b", 0)]), default_algo([rec("a", 0), rec("a", 1)])
    ('bandit-dr', 'cql')
    """
    return "cql" if is_sequential(records) else "bandit-dr"
