"""Known-answer tests for the pure return math (GAE, V-trace, discounted returns, truncation)."""

from __future__ import annotations

import numpy as np
import pytest

from rlops.algos.returns import bootstrap_truncated, discounted_returns, gae, vtrace


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


def _vtrace_reference(
    log_rhos: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float,
    rho_bar: float,
    c_bar: float,
) -> tuple[np.ndarray, np.ndarray]:
    """V-trace straight from the sum of Espeholt et al. 2018, eq. (1), one env at a time.

    ``vs_s = V_s + sum_{t>=s} (prod_{i=s}^{t-1} gamma_i c_i) delta_t`` with
    ``gamma_i = gamma * (1 - done_i)`` (an episode end cuts the product) and
    ``pg_s = rho_clip_s * (r_s + gamma_s * vs_{s+1} - V_s)`` (eq. 4).
    """
    t_len, n_envs = rewards.shape
    rhos = np.exp(log_rhos)
    vs = np.zeros((t_len, n_envs))
    pg = np.zeros((t_len, n_envs))
    for j in range(n_envs):
        v_ext = np.append(values[:, j], last_values[j])
        disc = gamma * (1.0 - dones[:, j])
        c = lam * np.minimum(c_bar, rhos[:, j])
        rho_clip = np.minimum(rho_bar, rhos[:, j])
        delta = rho_clip * (rewards[:, j] + disc * v_ext[1:] - v_ext[:-1])
        for s in range(t_len):
            vs[s, j] = v_ext[s] + sum(
                np.prod([disc[i] * c[i] for i in range(s, t)]) * delta[t] for t in range(s, t_len)
            )
        vs_ext = np.append(vs[:, j], last_values[j])
        pg[:, j] = rho_clip * (rewards[:, j] + disc * vs_ext[1:] - v_ext[:-1])
    return vs, pg


def _random_fragment(
    seed: int, t: int = 12, n: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_rhos = rng.normal(scale=0.7, size=(t, n))
    rewards = rng.normal(size=(t, n))
    values = rng.normal(size=(t, n))
    dones = (rng.random((t, n)) < 0.2).astype(np.float64)
    last = rng.normal(size=n)
    return log_rhos, rewards, values, dones, last


def test_vtrace_hand_computed_single_env() -> None:
    # T=2, gamma=0.9, lam=1, rho_bar=c_bar=1, no episode end, V(x_2) = 3.
    # rho = [0.5, 2] -> rho_clip = c = [0.5, 1].
    # delta_1 = 1.0 * (2 + 0.9 * 3.0 - 1.0) = 3.7
    # delta_0 = 0.5 * (1 + 0.9 * 1.0 - 0.5) = 0.7
    # vs_1 = V_1 + delta_1 = 1.0 + 3.7 = 4.7
    # vs_0 = V_0 + delta_0 + 0.9 * c_0 * delta_1 = 0.5 + 0.7 + 0.45 * 3.7 = 2.865
    # pg_1 = 1.0 * (2 + 0.9 * 3.0 - 1.0) = 3.7  (vs_2 = V(x_2) = 3)
    # pg_0 = 0.5 * (1 + 0.9 * vs_1 - 0.5) = 0.5 * 4.73 = 2.365
    vs, pg = vtrace(
        np.log([[0.5], [2.0]]),
        np.array([[1.0], [2.0]]),
        np.array([[0.5], [1.0]]),
        np.zeros((2, 1)),
        np.array([3.0]),
        gamma=0.9,
    )
    np.testing.assert_allclose(vs[:, 0], [2.865, 4.7], rtol=1e-6)
    np.testing.assert_allclose(pg[:, 0], [2.365, 3.7], rtol=1e-6)
    assert vs.dtype == pg.dtype == np.float32


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("lam", "rho_bar", "c_bar"), [(1.0, 1.0, 1.0), (0.9, 1.5, 0.8), (0.5, 2.0, 2.0)]
)
def test_vtrace_matches_paper_sum_formula(
    seed: int, lam: float, rho_bar: float, c_bar: float
) -> None:
    args = _random_fragment(seed)
    vs, pg = vtrace(*args, gamma=0.95, lam=lam, rho_bar=rho_bar, c_bar=c_bar)
    ref_vs, ref_pg = _vtrace_reference(*args, 0.95, lam, rho_bar, c_bar)
    np.testing.assert_allclose(vs, ref_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pg, ref_pg, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.8, 1.0])
def test_vtrace_on_policy_equals_gae(lam: float) -> None:
    # rho = c = 1 everywhere: V-trace is the lambda-return, vs - V == GAE advantages
    # (Espeholt et al. 2018, remark 2).
    _, rewards, values, dones, last = _random_fragment(5, t=20, n=4)
    vs, _ = vtrace(np.zeros_like(rewards), rewards, values, dones, last, gamma=0.97, lam=lam)
    adv, ret = gae(rewards, values, dones, last, gamma=0.97, lam=lam)
    np.testing.assert_allclose(vs - values, adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vs, ret, rtol=1e-5, atol=1e-5)


def test_vtrace_clips_large_importance_weights() -> None:
    _, rewards, values, dones, last = _random_fragment(6)
    huge = np.full_like(rewards, 20.0)  # rho = e^20
    # rho_bar = c_bar = 1: every weight clips to 1, i.e. the on-policy answer.
    vs, pg = vtrace(huge, rewards, values, dones, last, gamma=0.9)
    on_vs, on_pg = vtrace(np.zeros_like(rewards), rewards, values, dones, last, gamma=0.9)
    np.testing.assert_allclose(vs, on_vs, rtol=1e-6)
    np.testing.assert_allclose(pg, on_pg, rtol=1e-6)
    # rho_bar = 2, c_bar = 1.5: rho_clip = 2 and c = 1.5, whatever rho above them.
    vs, pg = vtrace(huge, rewards, values, dones, last, gamma=0.9, rho_bar=2.0, c_bar=1.5)
    ref_vs, ref_pg = _vtrace_reference(
        np.full_like(rewards, 30.0), rewards, values, dones, last, 0.9, 1.0, 2.0, 1.5
    )
    np.testing.assert_allclose(vs, ref_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pg, ref_pg, rtol=1e-5, atol=1e-5)
    # The policy-gradient weight is exactly rho_bar at the last step (no later vs).
    next_v = np.where(dones[-1] > 0, 0.0, 0.9 * last)
    np.testing.assert_allclose(pg[-1], 2.0 * (rewards[-1] + next_v - values[-1]), rtol=1e-5)


def test_vtrace_done_stops_the_trace() -> None:
    log_rhos, rewards, values, _, last = _random_fragment(7, t=6, n=1)
    dones = np.zeros((6, 1))
    dones[2, 0] = 1.0  # episode ends at t=2; t=3.. belong to the next episode
    vs, pg = vtrace(log_rhos, rewards, values, dones, last, gamma=0.9, rho_bar=2.0, c_bar=2.0)
    changed = rewards.copy()
    changed[3:, 0] += 100.0
    values_changed = values.copy()
    values_changed[3, 0] -= 50.0  # V of the next episode's first state does not leak either
    vs2, pg2 = vtrace(
        log_rhos, changed, values_changed, dones, last + 10.0, 0.9, rho_bar=2.0, c_bar=2.0
    )
    np.testing.assert_array_equal(vs[:3], vs2[:3])
    np.testing.assert_array_equal(pg[:3], pg2[:3])
    assert np.all(np.abs(vs[3:] - vs2[3:]) > 1.0)
