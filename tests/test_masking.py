"""Action masks: a masked policy never takes an ineligible action, in serving and in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlops.algos.ppo import PPOConfig
from rlops.artifacts import NetworkSpec, NumpyActorCritic
from rlops.core.errors import ArtifactError
from rlops.envs import register
from rlops.runtime import EnvConfig, EvalConfig, ExperimentConfig, LogConfig, train
from rlops.testing import MaskedChoice

register("test/MaskedChoice-v0", MaskedChoice, "masked test env", overwrite=True)


def _net(head: str, seed: int = 0, n: int = 5) -> NumpyActorCritic:
    rng = np.random.default_rng(seed)
    tensors = {
        "pi.layers.0.weight": rng.normal(size=(n, 3)).astype(np.float32),
        "pi.layers.0.bias": rng.normal(size=n).astype(np.float32),
    }
    spec = NetworkSpec(
        obs_dim=3, act_dim=n, hidden_sizes=(), activation="tanh", head=head, epsilon=0.2
    )  # type: ignore[arg-type]
    return NumpyActorCritic(spec, tensors)


@pytest.mark.parametrize("head", ["categorical", "q"])
def test_masked_sampling_never_picks_an_ineligible_action(head: str) -> None:
    net = _net(head)
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(4000, 3)).astype(np.float32)
    mask = rng.random((4000, 5)) < 0.4
    mask[np.arange(4000), rng.integers(0, 5, 4000)] = True
    for deterministic in (False, True):
        actions, logp = net.sample(obs, rng, deterministic, mask)
        assert mask[np.arange(4000), actions].all()
        probs = net.probs(obs, mask)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        assert (probs[~mask] == 0).all()
        np.testing.assert_allclose(
            logp, np.log(probs[np.arange(4000), actions]), rtol=1e-4, atol=1e-5
        )


def test_masked_categorical_frequencies_match_renormalised_probs() -> None:
    net = _net("categorical")
    obs = np.zeros((20000, 3), np.float32)
    mask = np.tile(np.array([True, False, True, False, True]), (20000, 1))
    actions, _ = net.sample(obs, np.random.default_rng(2), False, mask)
    freq = np.bincount(actions, minlength=5) / 20000
    np.testing.assert_allclose(freq, net.probs(obs[:1], mask[:1])[0], atol=0.015)


def test_training_with_masks_never_violates_and_learns(tmp_path: Path) -> None:
    config = ExperimentConfig(
        seed=0,
        total_steps=8192,
        env=EnvConfig(id="test/MaskedChoice-v0", num_envs=8),
        algo=PPOConfig(n_steps=32, minibatch_size=64, n_epochs=4, lr=3e-3, gamma=0.5),
        eval=EvalConfig(episodes=20, num_envs=4),
        log=LogConfig(progress=False, tensorboard=False),
    )
    result = train(config, out_dir=tmp_path)
    # Best eligible action each step pays ~0.83 on average; random eligible ~0.5.
    assert result.final_return / 10 > 0.75, result.final_return


def test_policy_rejects_bad_masks(tmp_path: Path) -> None:
    import rlops

    config = ExperimentConfig(
        total_steps=256,
        env=EnvConfig(id="test/MaskedChoice-v0", num_envs=8),
        algo=PPOConfig(n_steps=32, minibatch_size=64, n_epochs=1),
        eval=EvalConfig(episodes=1, num_envs=1),
        log=LogConfig(progress=False, tensorboard=False),
    )
    policy = rlops.load_policy(train(config, out_dir=tmp_path).artifact_path)
    obs = np.ones(4, np.float32)
    action, _ = policy.act(obs, mask=np.array([False, False, True, False]))
    assert action == 2
    with pytest.raises(ArtifactError, match="no eligible action"):
        policy.act(obs, mask=np.zeros(4, bool))
    with pytest.raises(ArtifactError, match="shape"):
        policy.act(obs, mask=np.ones(3, bool))
    with pytest.raises(ArtifactError, match="booleans"):
        policy.act(obs, mask=np.ones(4))
    dist = policy.action_distribution(obs, mask=np.array([True, False, True, False]))
    assert dist[1] == dist[3] == 0.0 and abs(dist.sum() - 1) < 1e-6
