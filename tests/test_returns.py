"""Known-answer tests for the pure return math (GAE, discounted returns, truncation)."""

from __future__ import annotations

import numpy as np
import pytest

from rlops.algos.returns import bootstrap_truncated, discounted_returns, gae


def test_gae_hand_computed_single_env() -> None:
    # T=3, gamma=0.9, lambda=0.8, no episode end; V(s_3) = 4.
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.5], [1.0], [1.5]])
    dones = np.zeros((3, 1))
    adv, ret = gae(rewards, values, dones, np.array([4.0]), gamma=0.9, lam=0.8)
    d2 = 3.0 + 0.9 * 4.0 - 1.5  # 5.1
    d1 = 2.0 + 0.9 * 1.5 - 1.0  # 2.35
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], np.array([a0, a1, a2]) + values[:, 0], rtol=1e-6)


def test_gae_does_not_flow_across_episode_end() -> None:
    # Episode ends at t=1 (terminated): t=1 does not bootstrap from V(s_2), and
    # the advantage of t=2 (next episode) must not leak into t=1.
    rewards = np.array([[1.0], [1.0], [1.0]])
    values = np.array([[2.0], [3.0], [5.0]])
    dones = np.array([[0.0], [1.0], [0.0]])
    adv, _ = gae(rewards, values, dones, np.array([7.0]), gamma=0.5, lam=1.0)
    a2 = 1.0 + 0.5 * 7.0 - 5.0
    a1 = 1.0 - 3.0
    a0 = 1.0 + 0.5 * 3.0 - 2.0 + 0.5 * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)


def test_truncation_bootstraps_termination_does_not() -> None:
    # Same trajectory ending at t=1, once truncated (V(final)=10), once terminated.
    rewards = np.array([[1.0], [1.0]])
    values = np.zeros((2, 1))
    dones = np.array([[0.0], [1.0]])
    gamma = 0.9
    truncated = bootstrap_truncated(
        rewards, np.array([[False], [True]]), np.full((2, 1), 10.0), gamma
    )
    terminated = bootstrap_truncated(
        rewards, np.array([[False], [False]]), np.full((2, 1), 10.0), gamma
    )
    _, ret_trunc = gae(truncated, values, dones, np.array([0.0]), gamma, 1.0)
    _, ret_term = gae(terminated, values, dones, np.array([0.0]), gamma, 1.0)
    np.testing.assert_allclose(ret_trunc[:, 0], [1 + 0.9 * (1 + 9.0), 1 + 9.0], rtol=1e-6)
    np.testing.assert_allclose(ret_term[:, 0], [1.9, 1.0], rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_lambda_one_equals_discounted_returns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t, n = 20, 4
    rewards = rng.normal(size=(t, n))
    values = rng.normal(size=(t, n))
    dones = (rng.random((t, n)) < 0.2).astype(np.float64)
    last = rng.normal(size=n)
    _, ret = gae(rewards, values, dones, last, gamma=0.97, lam=1.0)
    np.testing.assert_allclose(
        ret, discounted_returns(rewards, dones, last, 0.97), rtol=1e-5, atol=1e-5
    )


def test_gae_lambda_zero_is_td_error() -> None:
    rng = np.random.default_rng(3)
    rewards, values = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    dones = np.zeros((5, 2))
    last = rng.normal(size=2)
    adv, _ = gae(rewards, values, dones, last, gamma=0.9, lam=0.0)
    next_values = np.vstack([values[1:], last[None]])
    np.testing.assert_allclose(adv, rewards + 0.9 * next_values - values, rtol=1e-5, atol=1e-6)


def test_gae_matches_brute_force_lambda_return() -> None:
    # GAE(lambda) advantage == lambda-return minus V, computed by brute force
    # from n-step returns (no episode ends), Sutton & Barto eq. 12.3 truncated at T.
    rng = np.random.default_rng(4)
    t_len, gamma, lam = 6, 0.95, 0.7
    r = rng.normal(size=t_len)
    v = rng.normal(size=t_len + 1)  # v[T] is the bootstrap
    adv, _ = gae(r[:, None], v[:-1, None], np.zeros((t_len, 1)), v[-1:], gamma, lam)
    for t in range(t_len):
        horizon = t_len - t

        def n_step(n: int, t: int = t) -> float:
            return sum(gamma**k * r[t + k] for k in range(n)) + gamma**n * v[t + n]

        lam_ret = (1 - lam) * sum(lam ** (n - 1) * n_step(n) for n in range(1, horizon))
        lam_ret += lam ** (horizon - 1) * n_step(horizon)
        assert adv[t, 0] == pytest.approx(lam_ret - v[t], rel=1e-4, abs=1e-5)
