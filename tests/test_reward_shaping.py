"""Reward shaping from info components, and per-episode component logging on every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlops.algos.ppo import PPOConfig
from rlops.core.errors import EnvError
from rlops.envs import EpisodeStatistics, ShapeReward, make_vec
from rlops.runtime import EnvConfig, EvalConfig, ExperimentConfig, LogConfig, RuntimeConfig, train

AUTOSCALING = "rlops/Autoscaling-v0"


def test_shape_reward_adds_weighted_components_and_keeps_the_original() -> None:
    base = make_vec(AUTOSCALING, 3, max_episode_steps=20)
    env = ShapeReward(base, {"replica_cost": -2.0, "slo_violations": -0.5})
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, reward, _, _, info = env.step(rng.integers(0, 3, 3))
        expected = (
            info["reward_unshaped"] - 2.0 * info["replica_cost"] - 0.5 * info["slo_violations"]
        )
        np.testing.assert_allclose(reward, expected)


def test_episode_statistics_sums_components_per_episode() -> None:
    env = EpisodeStatistics(make_vec(AUTOSCALING, 2, max_episode_steps=10), ("replica_cost",))
    env.reset(seed=1)
    total = np.zeros(2)
    for _ in range(10):
        _, _, _, _, info = env.step(np.ones(2, dtype=np.int64))
        total += info["replica_cost"]
    sums = env.pop_components()["replica_cost"]
    np.testing.assert_allclose(np.sort(sums), np.sort(total))
    assert env.pop_components()["replica_cost"].size == 0  # popped


def test_missing_component_names_the_key() -> None:
    env = ShapeReward(make_vec("rlops/CartPole-v1", 2), {"cost": 1.0})
    env.reset(seed=0)
    with pytest.raises(EnvError, match="reward_shaping: info key 'cost'"):
        env.step(np.zeros(2, dtype=np.int64))


@pytest.mark.parametrize("backend", ["inline", "process"])
def test_training_logs_each_component(tmp_path: Path, backend: str) -> None:
    config = ExperimentConfig(
        total_steps=1024,
        env=EnvConfig(
            id=AUTOSCALING,
            num_envs=4,
            kwargs={"max_episode_steps": 32},
            reward_shaping={"slo_violations": -0.5},
            info_metrics=("replica_cost",),
        ),
        algo=PPOConfig(n_steps=64, minibatch_size=128, n_epochs=1),
        eval=EvalConfig(episodes=2, num_envs=2),
        log=LogConfig(progress=False, tensorboard=False),
        runtime=RuntimeConfig(backend=backend),  # type: ignore[arg-type]
    )
    result = train(config, out_dir=tmp_path)
    assert result.metrics["charts/episode_replica_cost"] > 0
    assert "charts/episode_slo_violations" in result.metrics
