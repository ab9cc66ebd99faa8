"""Typed batches that cross boundaries between actors, learners and storage.

Shapes use ``T`` for time steps within a fragment and ``N`` for parallel
environments. Every field is a numpy array, so a batch can cross a process
boundary as-is (shared memory, Ray object store) without pickling tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True, slots=True)
class Rollout:
    """An on-policy fragment of ``T`` steps from ``N`` environments.

    Attributes:
        observations: ``[T, N, *obs_shape]`` observations the actions were chosen on
            (already normalised if the run normalises observations).
        actions: ``[T, N]`` (discrete, int64) or ``[T, N, act_dim]`` (continuous,
            float32, *before* clipping to the action bounds).
        log_probs: ``[T, N]`` log-probability of each action under the acting policy.
        values: ``[T, N]`` value estimates of ``observations``.
        rewards: ``[T, N]`` rewards, with ``gamma * V(final_obs)`` already added on
            truncated steps (bootstrap on truncation, not on termination: Pardo et
            al. 2018, "Time Limits in Reinforcement Learning").
        dones: ``[T, N]`` 1.0 where the episode ended (terminated or truncated) at
            this step, so the next observation belongs to a new episode.
        last_values: ``[N]`` value estimates of the observation after the fragment.
        policy_version: version of the weights that produced the fragment.
        last_observations: ``[N, *obs_shape]`` the observation after the fragment
            (the one ``last_values`` was computed on), or None. A learner that is
            newer than ``policy_version`` re-evaluates it with its own critic
            (V-trace); without it, it falls back on the behaviour's ``last_values``.
        action_masks: ``[T, N, A]`` bool eligible actions at each step (envs with
            ``action_masks()``), or None; the policy's distribution was
            renormalised over them, and the learner does the same.
    """

    observations: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    last_values: np.ndarray
    policy_version: int = 0
    last_observations: np.ndarray | None = None
    action_masks: np.ndarray | None = None

    @property
    def num_steps(self) -> int:
        """``T``, the fragment length."""
        return int(self.rewards.shape[0])

    @property
    def num_envs(self) -> int:
        """``N``, the number of parallel environments."""
        return int(self.rewards.shape[1])

    def __post_init__(self) -> None:
        t, n = self.rewards.shape
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, np.ndarray):
                continue
            expected = (n,) if f.name in ("last_values", "last_observations") else (t, n)
            if value.shape[: len(expected)] != expected:
                raise ValueError(
                    f"Rollout.{f.name}: leading shape must be {expected}, got {value.shape}"
                )


@dataclass(frozen=True, slots=True)
class Transitions:
    """An off-policy fragment: ``T`` steps from ``N`` environments, ready for replay.

    Attributes:
        observations: ``[T, N, *obs_shape]`` observations the actions were chosen on.
        actions: ``[T, N]`` (discrete, int64) or ``[T, N, act_dim]`` (continuous,
            float32, as sent to the env).
        rewards: ``[T, N]`` rewards.
        next_observations: ``[T, N, *obs_shape]`` the observation after the step;
            where the episode ended it is the episode's *final* observation, not
            the first observation of the next episode (same-step autoreset).
        terminated: ``[T, N]`` true where the episode terminated (no bootstrap).
        truncated: ``[T, N]`` true where it was cut by a time limit (bootstrap
            from ``next_observations``: Pardo et al. 2018).
        policy_version: version of the weights that produced the fragment.
        source: which actor's stream it continues (0 for the inline backend);
            n-step windows are kept per stream, never spliced across actors.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    policy_version: int = 0
    source: int = 0

    @property
    def num_steps(self) -> int:
        """``T``, the fragment length."""
        return int(self.rewards.shape[0])

    @property
    def num_envs(self) -> int:
        """``N``, the number of parallel environments."""
        return int(self.rewards.shape[1])
