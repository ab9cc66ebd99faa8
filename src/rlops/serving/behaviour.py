"""The behaviour policy the production arm serves, and its exact propensities.

Pure numpy; runs on the batcher's single worker thread. :func:`served_distribution`
turns the policy's action probabilities into the distribution actions are really
drawn from (mode, epsilon floor, epsilon cap: see :class:`ServeConfig`), so the
logged propensity is the probability of the returned action under what was
done, which is what inverse-propensity estimators need (Horvitz and Thompson
1952; Dudik et al. 2011).

>>> probs = np.array([[0.7, 0.2, 0.1]])
>>> d, greedy, capped = served_distribution(probs, None, "greedy", 0.3, 1.0)
>>> d.round(2).tolist(), greedy.tolist(), capped.tolist()
([[0.8, 0.1, 0.1]], [0], [False])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlops.artifacts import Policy
from rlops.serving.config import Mode


def served_distribution(
    probs: np.ndarray,
    mask: np.ndarray | None,
    mode: Mode,
    epsilon: float,
    epsilon_cap: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the distribution discrete actions are drawn from.

    Args:
        probs: ``[B, n]`` policy probabilities, already zero on ineligible actions
            and renormalised over the eligible ones.
        mask: ``[B, n]`` bool eligible actions, or None (all eligible).
        mode: ``"sample"`` (base = ``probs``) or ``"greedy"`` (base = one-hot argmax).
        epsilon: mass spread uniformly over the eligible actions.
        epsilon_cap: most mass allowed off the greedy action.

    Returns:
        ``(dist [B, n] float64, greedy [B] int64, capped [B] bool)``: rows of
        ``dist`` sum to 1 and are exactly 0 on ineligible actions; ``capped``
        marks rows the cap shrank.
    """
    p = np.asarray(probs, dtype=np.float64)
    batch, n = p.shape
    rows = np.arange(batch)
    eligible = np.ones((batch, n), dtype=bool) if mask is None else mask
    # Argmax over eligible actions only (ineligible probabilities are 0, but a
    # row of all-zero eligible probabilities must still pick an eligible action).
    greedy = np.where(eligible, p, -1.0).argmax(axis=1)
    if mode == "greedy":
        dist = np.zeros_like(p)
        dist[rows, greedy] = 1.0
    else:
        dist = np.where(eligible, p, 0.0)
        dist /= dist.sum(axis=1, keepdims=True)
    if epsilon > 0.0:
        uniform = eligible / eligible.sum(axis=1, keepdims=True)
        dist = (1.0 - epsilon) * dist + epsilon * uniform
    off_greedy = 1.0 - dist[rows, greedy]
    capped = off_greedy > epsilon_cap + 1e-12
    if capped.any():
        shrink = epsilon_cap / off_greedy[capped]
        sub = dist[capped] * shrink[:, None]
        sub[np.arange(len(sub)), greedy[capped]] += 1.0 - shrink
        dist[capped] = sub
    return dist, greedy.astype(np.int64), capped


def sample_rows(dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one action per row of ``dist`` by inverse CDF; never a zero-probability one.

    >>> sample_rows(np.array([[0.0, 1.0, 0.0]]), np.random.default_rng(0)).tolist()
    [1]
    """
    cdf = dist.cumsum(axis=1)
    u = rng.random((dist.shape[0], 1)) * cdf[:, -1:]
    # First index whose cdf exceeds u: a zero-probability entry never does (its
    # cdf equals its predecessor's); rounding past the end maps to the last
    # entry with positive probability.
    last = dist.shape[1] - 1 - np.argmax(dist[:, ::-1] > 0.0, axis=1)
    picked: np.ndarray = np.minimum((cdf <= u).sum(axis=1), last)
    return picked.astype(np.int64)


@dataclass(frozen=True)
class BatchDecision:
    """The policy's answer for a micro-batch of ``B`` observations.

    Attributes:
        actions: ``[B]`` int64 discrete indices (``Discrete.start`` added) or
            ``[B, act_dim]`` float32 continuous actions within the bounds.
        propensity: ``[B]`` float64 probability (discrete) of the returned
            action, or ``exp(logp)`` (continuous sampling), or 1.0 (greedy continuous).
        dist: ``[B, n]`` float64 served distribution (discrete), else None.
        logp: ``[B]`` float64 log-density (continuous), else None.
        capped: ``[B]`` bool rows whose exploration the cap bounded.
    """

    actions: np.ndarray
    propensity: np.ndarray
    dist: np.ndarray | None
    logp: np.ndarray | None
    capped: np.ndarray


class Behaviour:
    """The production arm's decision rule over a loaded policy.

    Called from one thread only (it owns the sampling generator).

    >>> behaviour = Behaviour(policy, mode="sample", epsilon=0.0, epsilon_cap=1.0)  # doctest: +SKIP
    >>> out = behaviour.decide(obs_batch, masks)  # doctest: +SKIP
    """

    def __init__(
        self,
        policy: Policy,
        *,
        mode: Mode,
        epsilon: float,
        epsilon_cap: float,
        seed: int | None = None,
    ) -> None:
        self.policy = policy
        self.mode = mode
        self.epsilon = epsilon
        self.epsilon_cap = epsilon_cap
        self.rng = np.random.default_rng(seed)
        space = policy.action_space
        self._start = int(getattr(space, "start", 0)) if policy.discrete else 0

    def decide(self, obs: np.ndarray, masks: np.ndarray | None) -> BatchDecision:
        """Decide for ``obs [B, *obs_shape]`` float32 with optional ``masks [B, n]`` bool."""
        batch = obs.shape[0]
        if self.policy.discrete:
            probs = self.policy.action_distribution(obs, masks)
            dist, _, capped = served_distribution(
                probs, masks, self.mode, self.epsilon, self.epsilon_cap
            )
            index = sample_rows(dist, self.rng)
            propensity = dist[np.arange(batch), index]
            return BatchDecision(index + self._start, propensity, dist, None, capped)
        greedy = self.mode == "greedy"
        actions, logp = self.policy.act(obs, deterministic=greedy)
        no_cap = np.zeros(batch, dtype=bool)
        if greedy:
            # A deterministic action is a point mass: probability 1, log 0.
            ones = np.ones(batch)
            return BatchDecision(actions, ones, None, np.zeros(batch), no_cap)
        logp64 = np.asarray(logp, dtype=np.float64)
        return BatchDecision(actions, np.exp(np.minimum(logp64, 700.0)), None, logp64, no_cap)
