"""Fixtures shared by several test modules.

``artifacts`` trains three tiny PPO policies once per session (a few seconds)
for the serving tests: CartPole (discrete), MaskedChoice (discrete, masked) and
Pendulum (continuous, normalised observations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import rlops
from rlops.algos.ppo import PPOConfig
from rlops.envs import register
from rlops.runtime import EnvConfig, EvalConfig, ExperimentConfig, LogConfig
from rlops.testing import MaskedChoice


def _train(env_id: str, out: Path, steps: int, **env: Any) -> Path:
    config = ExperimentConfig(
        seed=0,
        total_steps=steps,
        env=EnvConfig(id=env_id, num_envs=4, **env),
        algo=PPOConfig(n_steps=64, minibatch_size=64, n_epochs=1),
        eval=EvalConfig(episodes=1, num_envs=1),
        log=LogConfig(progress=False, tensorboard=False),
    )
    return rlops.train(config, out_dir=out).artifact_path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Policy artifacts by name: ``cartpole``, ``masked`` and ``pendulum``, plus
    ``cartpole_b`` (another CartPole policy: a canary or shadow candidate)."""
    register("test/MaskedChoice-v0", MaskedChoice, "masked test env", overwrite=True)
    root = tmp_path_factory.mktemp("artifacts")
    return {
        "cartpole": _train("rlops/CartPole-v1", root / "cartpole", 2048),
        "cartpole_b": _train("rlops/CartPole-v1", root / "cartpole_b", 1024),
        "masked": _train("test/MaskedChoice-v0", root / "masked", 512),
        "pendulum": _train("rlops/Pendulum-v1", root / "pendulum", 512, normalize_obs=True),
    }
