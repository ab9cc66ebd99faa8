"""SAC through the training loop, the artifact and resume (tiny budgets)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import rlops
from rlops.runtime import RunResult, load_config, train


def _tiny_sac(tmp_path: Path, name: str, overrides: tuple[str, ...] = ()) -> RunResult:
    base = [
        "total_steps=600",
        "algo.learning_starts=200",
        "algo.batch_size=32",
        "algo.hidden_sizes=[32,32]",
        "eval.every_steps=300",
        "eval.episodes=2",
        "log.tensorboard=false",
        "log.progress=false",
        "log.every_steps=100",
        "runtime.checkpoint_every=300",
    ]
    config = load_config("configs/pendulum_sac.yaml", [*base, *overrides])
    return train(config, out_dir=tmp_path / name)


def test_sac_trains_and_serves_a_squashed_gaussian_policy(tmp_path: Path) -> None:
    result = _tiny_sac(tmp_path, "run")
    assert result.env_steps == 600
    for key in ("losses/actor", "losses/critic", "charts/alpha", "replay/size"):
        assert np.isfinite(result.metrics[key]), key
    policy = rlops.load_policy(result.artifact_path)
    assert policy.manifest["network"]["head"] == "tanh_gaussian"
    obs = np.array([1.0, 0.0, 0.0], np.float32)
    actions, logp = policy.act(np.repeat(obs[None], 64, 0))
    assert actions.shape == (64, 1) and np.isfinite(logp).all()
    assert (np.abs(actions) <= 2.0).all()  # inside Pendulum's torque bounds
    mean_action, _ = policy.act(obs, deterministic=True)
    np.testing.assert_allclose(policy.act(obs, deterministic=True)[0], mean_action)


def test_sac_resume_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    a = _tiny_sac(tmp_path, "a")
    b = _tiny_sac(tmp_path, "b")
    assert a.weights_hash == b.weights_hash  # deterministic
    checkpoints = sorted((b.run_dir / "checkpoints").glob("step_*"))
    for later in checkpoints[1:]:
        shutil.rmtree(later)
    shutil.rmtree(b.artifact_path)
    resumed = train(resume=b.run_dir)
    assert resumed.weights_hash == a.weights_hash


def test_sac_refuses_discrete_actions(tmp_path: Path) -> None:
    with pytest.raises(rlops.core.EnvError, match="SAC needs a 1-D Box"):
        _tiny_sac(tmp_path, "bad", ("env.id=rlops/CartPole-v1",))
