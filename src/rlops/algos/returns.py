"""Return math as pure numpy functions with known-answer tests.

Conventions (shapes ``[T, N]``: ``T`` steps, ``N`` environments):

* ``dones[t, i] == 1`` means the episode of env ``i`` ended at step ``t``
  (terminated *or* truncated), so step ``t + 1`` starts a new episode and no
  value flows back across that boundary.
* Truncation is not termination. A truncated episode would have continued, so
  its last reward is bootstrapped with ``gamma * V(final_obs)`` before the
  advantage computation (:func:`bootstrap_truncated`); a terminated one is not
  (Pardo et al. 2018, "Time Limits in Reinforcement Learning").
"""

from __future__ import annotations

import numpy as np


def bootstrap_truncated(
    rewards: np.ndarray, truncated: np.ndarray, final_values: np.ndarray, gamma: float
) -> np.ndarray:
    """Add ``gamma * V(final_obs)`` to the rewards of truncated (not terminated) steps.

    Args:
        rewards: ``[N]`` or ``[T, N]`` rewards.
        truncated: same shape, true where the episode was cut by a time limit
            and did *not* terminate.
        final_values: same shape, ``V(final_obs)`` (ignored where not truncated).
        gamma: discount factor.

    Returns:
        A new array of rewards with the bootstrap added.

    >>> r, trunc, v = np.array([1.0, 1.0]), np.array([True, False]), np.array([10.0, 10.0])
    >>> bootstrap_truncated(r, trunc, v, 0.9)
    array([10.,  1.])
    """
    return np.where(truncated, rewards + gamma * final_values, rewards)


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16).

    ``delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_t) - V(s_t)``,
    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}``, where
    ``V(s_T)`` is ``last_values``.

    Args:
        rewards: ``[T, N]`` rewards (truncation bootstrap already added).
        values: ``[T, N]`` value estimates ``V(s_t)``.
        dones: ``[T, N]`` 1 where the episode ended at step ``t``.
        last_values: ``[N]`` value of the observation after step ``T - 1``.
        gamma: discount factor in ``[0, 1]``.
        lam: GAE lambda in ``[0, 1]``; 1 gives Monte-Carlo advantages, 0 gives TD(0).

    Returns:
        ``(advantages, returns)``, both ``[T, N]`` float32, with
        ``returns = advantages + values`` (the value-function targets).

    >>> adv, ret = gae(np.array([[1.0], [1.0]]), np.zeros((2, 1)), np.array([[0.0], [1.0]]),
    ...                np.array([5.0]), gamma=0.5, lam=1.0)
    >>> ret[:, 0].tolist()
    [1.5, 1.0]
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    not_done = 1.0 - np.asarray(dones, dtype=np.float64)
    steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    next_values = np.asarray(last_values, dtype=np.float64)
    running = np.zeros_like(next_values)
    for t in range(steps - 1, -1, -1):
        delta = rewards[t] + gamma * next_values * not_done[t] - values[t]
        running = delta + gamma * lam * not_done[t] * running
        advantages[t] = running
        next_values = values[t]
    returns = advantages + values
    return advantages.astype(np.float32), returns.astype(np.float32)


def discounted_returns(
    rewards: np.ndarray, dones: np.ndarray, last_values: np.ndarray, gamma: float
) -> np.ndarray:
    """Discounted returns ``G_t = r_t + gamma * (1 - done_t) * G_{t+1}``, ``G_T = last_values``.

    Equal to ``gae(..., lam=1)[1]`` for any values; kept as the simple
    reference the GAE tests compare against.

    Args:
        rewards: ``[T, N]`` rewards.
        dones: ``[T, N]`` episode-end flags.
        last_values: ``[N]`` bootstrap values after the last step.
        gamma: discount factor.

    Returns:
        ``[T, N]`` float32 returns.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    not_done = 1.0 - np.asarray(dones, dtype=np.float64)
    out = np.zeros_like(rewards)
    running = np.asarray(last_values, dtype=np.float64)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * not_done[t] * running
        out[t] = running
    return out.astype(np.float32)


def vtrace(
    log_rhos: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float = 1.0,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """V-trace off-policy value targets and policy-gradient advantages.

    Espeholt et al. 2018, "IMPALA", eq. (1) with the recursion of remark 1 and
    the lambda variant of remark 2 (``c_i = lam * min(c_bar, rho_i)``):

    ``delta_t = rho_clip_t * (r_t + gamma * (1 - done_t) * V(x_{t+1}) - V(x_t))``,
    ``vs_t - V(x_t) = delta_t + gamma * (1 - done_t) * c_t * (vs_{t+1} - V(x_{t+1}))``,
    ``pg_t = rho_clip_t * (r_t + gamma * (1 - done_t) * vs_{t+1} - V(x_t))`` (eq. 4),

    with ``rho_clip_t = min(rho_bar, rho_t)``, ``rho_t = exp(log_rhos[t])`` and
    ``V(x_T) = vs_T = last_values``. On-policy (``log_rhos == 0``,
    ``rho_bar = c_bar = 1``) ``vs - values`` equals the GAE(``lam``) advantages.

    Args:
        log_rhos: ``[T, N]`` ``log pi(a_t|x_t) - log mu(a_t|x_t)``, target policy
            ``pi`` over behaviour policy ``mu``.
        rewards: ``[T, N]`` rewards (truncation bootstrap already added).
        values: ``[T, N]`` value estimates ``V(x_t)`` (of the target policy's critic).
        dones: ``[T, N]`` 1 where the episode ended at step ``t``; cuts the trace.
        last_values: ``[N]`` value of the observation after step ``T - 1``.
        gamma: discount factor in ``[0, 1]``.
        lam: trace-cutting lambda in ``[0, 1]`` (1 = plain V-trace).
        rho_bar: truncation level of the importance weights in ``delta_t`` and
            ``pg_t`` (sets the fixed point: the value of a policy between
            ``mu`` and ``pi``); must be ``>= c_bar`` in the paper's analysis.
        c_bar: truncation level of the trace coefficients (contraction speed).

    Returns:
        ``(vs, pg_advantages)``, both ``[T, N]`` float32: the value-function
        targets and the importance-weighted advantages for the policy gradient.

    >>> vs, pg = vtrace(np.zeros((2, 1)), np.array([[1.0], [1.0]]), np.zeros((2, 1)),
    ...                 np.array([[0.0], [1.0]]), np.array([5.0]), gamma=0.5)
    >>> vs[:, 0].tolist(), pg[:, 0].tolist()
    ([1.5, 1.0], [1.5, 1.0])
    """
    rhos = np.exp(np.asarray(log_rhos, dtype=np.float64))
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    not_done = 1.0 - np.asarray(dones, dtype=np.float64)
    last = np.asarray(last_values, dtype=np.float64)
    clipped_rhos = np.minimum(rho_bar, rhos)
    cs = lam * np.minimum(c_bar, rhos)
    next_values = np.concatenate([values[1:], last[None]], axis=0)
    discounts = gamma * not_done
    deltas = clipped_rhos * (rewards + discounts * next_values - values)
    vs_minus_v = np.zeros_like(values)
    running = np.zeros_like(last)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + discounts[t] * cs[t] * running
        vs_minus_v[t] = running
    vs = vs_minus_v + values
    next_vs = np.concatenate([vs[1:], last[None]], axis=0)
    pg_advantages = clipped_rhos * (rewards + discounts * next_vs - values)
    return vs.astype(np.float32), pg_advantages.astype(np.float32)
