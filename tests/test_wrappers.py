"""Vector-env wrappers: running statistics with known answers, exact state round trips.

Fast tier. Raw observations are recorded by a pass-through wrapper placed under
the wrapper under test, so every normalised value is checked against the
formula applied to exactly what the env produced.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rlops.envs import (
    EpisodeStatistics,
    NormalizeObservation,
    RunningMeanStd,
    ScaleReward,
    final_observations,
    make_vec,
)


class Recorder(gym.vector.VectorWrapper):
    """Pass-through wrapper that keeps copies of the raw outputs of the env below it."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.obs: np.ndarray | None = None
        self.rewards: np.ndarray | None = None
        self.final_obs: Any = None
        self.final_mask: np.ndarray | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.obs = np.array(obs, copy=True)
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        self.obs = np.array(obs, copy=True)
        self.rewards = np.array(rewards, copy=True)
        self.final_obs = info["final_obs"].copy() if "final_obs" in info else None
        self.final_mask = np.array(info["_final_obs"]) if "_final_obs" in info else None
        return obs, rewards, terminations, truncations, info


def prior_stats(data: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean/var of ``data`` pooled with ``epsilon`` pseudo-samples of mean 0, var 1."""
    n = data.shape[0]
    total = n + epsilon
    mean = data.sum(axis=0) / total
    m2 = ((data - mean) ** 2).sum(axis=0) + epsilon * (1.0 + mean**2)
    return mean, m2 / total


def normalize(obs: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float, clip: float):
    return np.clip((obs - mean) / np.sqrt(var + eps), -clip, clip).astype(np.float32)


# --- RunningMeanStd ---------------------------------------------------------------------------


def test_running_mean_std_matches_numpy_over_concatenated_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [
        rng.normal(loc=[3.0, -2.0, 0.5], scale=[1.0, 10.0, 0.01], size=(size, 3))
        for size in (1, 7, 64, 3, 250)
    ]
    rms = RunningMeanStd(shape=(3,), epsilon=0.0)
    for batch in batches:
        rms.update(batch)
    data = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-10)
    assert rms.count == data.shape[0]


def test_running_mean_std_default_prior_is_tiny_and_exact() -> None:
    rng = np.random.default_rng(1)
    batches = [rng.normal(5.0, 2.0, size=(size, 2)) for size in (10, 1, 33)]
    rms = RunningMeanStd(shape=(2,))
    for batch in batches:
        rms.update(batch)
    data = np.concatenate(batches)
    mean, var = prior_stats(data, 1e-4)
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(rms.var, var, rtol=1e-10)
    # ... and close to the plain sample statistics.
    np.testing.assert_allclose(rms.mean, data.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-4)
    assert rms.count == pytest.approx(44 + 1e-4)


def test_running_mean_std_known_answer_scalar() -> None:
    rms = RunningMeanStd(shape=(), epsilon=0.0)
    rms.update(np.array([1.0, 2.0]))
    rms.update(np.array([3.0, 4.0, 10.0]))
    assert float(rms.mean) == pytest.approx(4.0)
    assert float(rms.var) == pytest.approx(10.0)  # var([1, 2, 3, 4, 10]) = 50 / 5


def test_running_mean_std_state_dict_round_trip_is_a_copy() -> None:
    rms = RunningMeanStd(shape=(2,))
    rms.update(np.array([[1.0, 2.0], [3.0, 5.0]]))
    state = rms.state_dict()
    other = RunningMeanStd(shape=(2,))
    other.load_state_dict(state)
    rms.update(np.array([[100.0, 100.0]]))  # later updates must not leak into `state`
    np.testing.assert_array_equal(other.mean, state["mean"])
    np.testing.assert_array_equal(other.var, state["var"])
    assert other.count == state["count"]
    assert not np.array_equal(rms.mean, other.mean)
    batch = np.array([[0.5, -1.0], [2.0, 7.0]])
    twin = RunningMeanStd(shape=(2,))
    twin.load_state_dict(state)
    other.update(batch)
    twin.update(batch)
    np.testing.assert_array_equal(other.mean, twin.mean)
    np.testing.assert_array_equal(other.var, twin.var)


# --- NormalizeObservation ---------------------------------------------------------------------


def test_normalize_observation_applies_running_stats_to_obs_and_final_obs() -> None:
    recorder = Recorder(make_vec("rlops/CartPole-v1", 4))
    env = NormalizeObservation(recorder)
    obs, _ = env.reset(seed=0)
    seen = [recorder.obs]
    np.testing.assert_array_equal(
        obs, normalize(recorder.obs, env.rms.mean, env.rms.var, env.epsilon, env.clip)
    )
    rng = np.random.default_rng(0)
    finals_checked = 0
    for _ in range(300):
        obs, _, terminated, truncated, info = env.step(rng.integers(0, 2, size=4))
        seen.append(recorder.obs)
        mean, var = env.rms.mean, env.rms.var
        assert obs.dtype == np.float32
        np.testing.assert_array_equal(obs, normalize(recorder.obs, mean, var, 1e-8, 10.0))
        done = np.logical_or(terminated, truncated)
        if done.any():
            idx = np.flatnonzero(done)
            got = final_observations(info, idx)
            want = normalize(recorder.final_obs[idx], mean, var, 1e-8, 10.0)
            np.testing.assert_array_equal(got, want)
            finals_checked += idx.size
    assert finals_checked >= 20  # a random policy ends many CartPole episodes in 300 steps
    # The statistics are those of every raw observation (reset + steps), not final ones.
    data = np.concatenate(seen).astype(np.float64)
    mean, var = prior_stats(data, 1e-4)
    np.testing.assert_allclose(env.rms.mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(env.rms.var, var, rtol=1e-9)
    assert env.rms.count == pytest.approx(data.shape[0] + 1e-4)


def test_normalize_observation_with_gymnasium_object_final_obs() -> None:
    recorder = Recorder(make_vec("gym:CartPole-v1", 3))
    env = NormalizeObservation(recorder)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    finals_checked = 0
    for _ in range(200):
        _, _, terminated, truncated, info = env.step(rng.integers(0, 2, size=3))
        done = np.logical_or(terminated, truncated)
        if not done.any():
            continue
        idx = np.flatnonzero(done)
        got = final_observations(info, idx).astype(np.float32)
        raw = np.stack([np.asarray(recorder.final_obs[i], dtype=np.float32) for i in idx])
        want = normalize(raw, env.rms.mean, env.rms.var, env.epsilon, env.clip)
        np.testing.assert_array_equal(got, want)
        for i in np.flatnonzero(~done):
            assert info["final_obs"][i] is None
        finals_checked += idx.size
    assert finals_checked >= 10


def test_normalized_observations_have_zero_mean_unit_std() -> None:
    env = NormalizeObservation(make_vec("rlops/Pendulum-v1", 4))
    env.reset(seed=0)
    rng = np.random.default_rng(2)
    out = []
    for _ in range(2000):
        obs, *_ = env.step(rng.uniform(-2, 2, size=(4, 1)).astype(np.float32))
        out.append(obs)
    tail = np.concatenate(out[500:])
    np.testing.assert_allclose(tail.mean(axis=0), 0.0, atol=0.15)
    np.testing.assert_allclose(tail.std(axis=0), 1.0, atol=0.15)


def test_normalize_observation_clips() -> None:
    recorder = Recorder(make_vec("rlops/CartPole-v1", 2))
    env = NormalizeObservation(recorder, clip=0.5)
    env.reset(seed=0)
    env.rms.load_state_dict({"mean": np.zeros(4), "var": np.full(4, 1e-4), "count": 1e6})
    env.training = False
    obs, *_ = env.step(np.array([1, 1]))
    unclipped = recorder.obs / np.sqrt(1e-4 + 1e-8)
    big = np.abs(unclipped) > 0.5
    assert big.sum() >= 4  # the test needs values to clip
    np.testing.assert_array_equal(obs[big], (0.5 * np.sign(unclipped[big])).astype(np.float32))
    np.testing.assert_allclose(obs[~big], unclipped[~big], rtol=1e-6)


def test_normalize_observation_frozen_when_not_training() -> None:
    env = NormalizeObservation(make_vec("rlops/CartPole-v1", 2))
    env.reset(seed=0)
    env.step(np.array([0, 1]))
    before = env.state_dict()
    env.training = False
    env.reset(seed=3)
    for _ in range(10):
        env.step(np.array([1, 0]))
    after = env.state_dict()
    np.testing.assert_array_equal(before["mean"], after["mean"])
    np.testing.assert_array_equal(before["var"], after["var"])
    assert before["count"] == after["count"]


def test_normalize_observation_state_dict_round_trip() -> None:
    base = make_vec("rlops/CartPole-v1", 3)
    env = NormalizeObservation(base)
    env.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(50):
        env.step(rng.integers(0, 2, size=3))
    state = env.state_dict()
    env_state = base.state_dict()
    actions = rng.integers(0, 2, size=(40, 3))
    expected = [env.step(a)[0] for a in actions]

    base2 = make_vec("rlops/CartPole-v1", 3)
    base2.load_state_dict(env_state)
    restored = NormalizeObservation(base2)
    restored.load_state_dict(state)
    got = [restored.step(a)[0] for a in actions]
    np.testing.assert_array_equal(np.stack(got), np.stack(expected))
    np.testing.assert_array_equal(restored.rms.mean, env.rms.mean)
    np.testing.assert_array_equal(restored.rms.var, env.rms.var)

    # Without the statistics the same env state normalises differently.
    base3 = make_vec("rlops/CartPole-v1", 3)
    base3.load_state_dict(env_state)
    fresh = NormalizeObservation(base3)
    assert not np.array_equal(fresh.step(actions[0])[0], expected[0])


def test_normalize_observation_export_matches_stats() -> None:
    env = NormalizeObservation(make_vec("rlops/CartPole-v1", 2), clip=5.0, epsilon=1e-6)
    env.reset(seed=0)
    env.step(np.array([0, 1]))
    exported = env.export()
    np.testing.assert_array_equal(exported["mean"], env.rms.mean)
    np.testing.assert_array_equal(exported["var"], env.rms.var)
    assert exported["clip"] == 5.0
    assert exported["epsilon"] == 1e-6


# --- ScaleReward ------------------------------------------------------------------------------


def test_scale_reward_divides_by_running_std_of_discounted_return() -> None:
    recorder = Recorder(make_vec("rlops/Pendulum-v1", 2))
    env = ScaleReward(recorder, gamma=0.9)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    ret = np.zeros(2)
    history = []
    for _ in range(250):  # more than one 200-step episode: the return resets on truncation
        _, scaled, terminated, truncated, _ = env.step(
            rng.uniform(-2, 2, size=(2, 1)).astype(np.float32)
        )
        raw = recorder.rewards
        ret = ret * 0.9 + raw
        history.append(ret.copy())
        _, var = prior_stats(np.concatenate(history), 1e-4)
        want = np.clip(raw / np.sqrt(var + 1e-8), -10, 10).astype(np.float32)
        np.testing.assert_allclose(scaled, want, rtol=1e-5)
        assert scaled.dtype == np.float32
        ret[np.logical_or(terminated, truncated)] = 0.0


def test_scaled_rewards_give_unit_std_discounted_returns() -> None:
    gamma = 0.99
    env = ScaleReward(make_vec("rlops/Pendulum-v1", 4), gamma=gamma)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    ret = np.zeros(4)
    returns = []
    raw_scale = None
    for t in range(6000):
        _, scaled, terminated, truncated, _ = env.step(
            rng.uniform(-2, 2, size=(4, 1)).astype(np.float32)
        )
        ret = ret * gamma + scaled
        if t >= 1000:  # let the running std settle first
            returns.append(ret.copy())
        ret[np.logical_or(terminated, truncated)] = 0.0
        raw_scale = np.sqrt(env.rms.var)
    std = np.concatenate(returns).std()
    assert 0.85 < std < 1.15, std
    # Pendulum returns are far from unit scale before scaling.
    assert raw_scale is not None and raw_scale > 50


def test_scale_reward_state_round_trip() -> None:
    base = make_vec("rlops/Pendulum-v1", 3)
    env = ScaleReward(base, gamma=0.95)
    env.reset(seed=5)
    rng = np.random.default_rng(5)
    for _ in range(120):
        env.step(rng.uniform(-2, 2, size=(3, 1)).astype(np.float32))
    state = env.state_dict()
    env_state = base.state_dict()
    actions = rng.uniform(-2, 2, size=(150, 3, 1)).astype(np.float32)
    expected = np.stack([env.step(a)[1] for a in actions])

    # The saved state is a copy: stepping `env` above did not change it.
    base2 = make_vec("rlops/Pendulum-v1", 3)
    base2.load_state_dict(env_state)
    restored = ScaleReward(base2, gamma=0.95)
    restored.load_state_dict(state)
    got = np.stack([restored.step(a)[1] for a in actions])
    np.testing.assert_array_equal(got, expected)

    # The running return is part of the state: dropping it changes the rewards.
    base3 = make_vec("rlops/Pendulum-v1", 3)
    base3.load_state_dict(env_state)
    partial = ScaleReward(base3, gamma=0.95)
    partial.load_state_dict({**state, "ret": np.zeros(3)})
    assert not np.array_equal(partial.step(actions[0])[1], expected[0])


# --- EpisodeStatistics ------------------------------------------------------------------------


def test_episode_statistics_cartpole_returns_equal_lengths() -> None:
    stats = EpisodeStatistics(make_vec("rlops/CartPole-v1", 4))
    stats.reset(seed=0)
    rng = np.random.default_rng(0)
    running = np.zeros(4, dtype=np.int64)
    expected_lengths: list[int] = []
    got_returns, got_lengths = [], []
    for t in range(1000):
        _, rewards, terminated, truncated, _ = stats.step(rng.integers(0, 2, size=4))
        assert np.all(rewards == 1.0)
        running += 1
        done = np.logical_or(terminated, truncated)
        expected_lengths.extend(running[done].tolist())
        running[done] = 0
        if t % 100 == 99:
            returns, lengths = stats.pop_episodes()
            got_returns.append(returns)
            got_lengths.append(lengths)
    returns, lengths = np.concatenate(got_returns), np.concatenate(got_lengths)
    assert len(expected_lengths) > 100
    assert lengths.tolist() == expected_lengths
    np.testing.assert_array_equal(returns, lengths.astype(np.float64))
    assert stats.episodes == len(expected_lengths)
    empty_returns, empty_lengths = stats.pop_episodes()
    assert empty_returns.size == 0 and empty_lengths.size == 0


def test_episode_statistics_sees_raw_rewards_under_scaling() -> None:
    stats = EpisodeStatistics(make_vec("rlops/CartPole-v1", 2))
    env = ScaleReward(NormalizeObservation(stats), gamma=0.99)
    env.reset(seed=0)
    rng = np.random.default_rng(3)
    scaled_seen = []
    for _ in range(300):
        _, scaled, *_ = env.step(rng.integers(0, 2, size=2))
        scaled_seen.append(scaled)
    returns, lengths = stats.pop_episodes()
    assert returns.size > 5
    np.testing.assert_array_equal(returns, lengths.astype(np.float64))
    assert not np.allclose(np.concatenate(scaled_seen), 1.0)  # the agent sees scaled rewards


def test_episode_statistics_state_round_trip_mid_episode() -> None:
    base = make_vec("rlops/CartPole-v1", 2)
    stats = EpisodeStatistics(base)
    stats.reset(seed=7)
    for _ in range(5):
        stats.step(np.array([0, 1]))
    stats.pop_episodes()
    state, env_state = stats.state_dict(), base.state_dict()
    base2 = make_vec("rlops/CartPole-v1", 2)
    base2.load_state_dict(env_state)
    restored = EpisodeStatistics(base2)
    restored.load_state_dict(state)
    actions = np.random.default_rng(7).integers(0, 2, size=(300, 2))
    for a in actions:
        stats.step(a)
        restored.step(a)
    want_returns, want_lengths = stats.pop_episodes()
    got_returns, got_lengths = restored.pop_episodes()
    assert want_lengths.size > 3
    np.testing.assert_array_equal(got_lengths, want_lengths)
    np.testing.assert_array_equal(got_returns, want_returns)
    assert restored.episodes == stats.episodes
