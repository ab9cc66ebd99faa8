"""Numpy inference heads of the policy artifact against torch.distributions."""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import AffineTransform, TanhTransform

from rlops.artifacts import NetworkSpec, NumpyActorCritic


def _tanh_gaussian_net(act_dim: int = 2) -> NumpyActorCritic:
    rng = np.random.default_rng(0)
    spec = NetworkSpec(
        obs_dim=3, act_dim=act_dim, hidden_sizes=(8,), activation="relu", head="tanh_gaussian"
    )
    tensors = {
        "pi.layers.0.weight": rng.normal(size=(8, 3)).astype(np.float32),
        "pi.layers.0.bias": rng.normal(size=8).astype(np.float32),
        "pi.layers.1.weight": 0.3 * rng.normal(size=(2 * act_dim, 8)).astype(np.float32),
        "pi.layers.1.bias": np.zeros(2 * act_dim, np.float32),
        "action_scale": np.array([2.0, 0.5], np.float32)[:act_dim],
        "action_bias": np.array([0.0, 1.0], np.float32)[:act_dim],
    }
    return NumpyActorCritic(spec, tensors)


def test_tanh_gaussian_log_prob_matches_torch_transformed_distribution() -> None:
    net = _tanh_gaussian_net()
    obs = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)
    actions, logp = net.sample(obs, np.random.default_rng(2))
    out = net.pi(obs)
    mean, log_std = torch.from_numpy(out[:, :2]), torch.from_numpy(np.clip(out[:, 2:], -20, 2))
    dist = TransformedDistribution(
        Normal(mean, log_std.exp()),
        [
            TanhTransform(cache_size=1),
            AffineTransform(torch.from_numpy(net.action_bias), torch.from_numpy(net.action_scale)),
        ],
    )
    ref = dist.log_prob(torch.from_numpy(actions)).sum(-1).numpy()
    # rlops adds 1e-6 inside log(1 - tanh^2) for stability (as SB3); compare loosely.
    np.testing.assert_allclose(logp, ref, rtol=1e-3, atol=2e-3)
    low, high = net.action_bias - net.action_scale, net.action_bias + net.action_scale
    assert ((actions >= low) & (actions <= high)).all()


def test_tanh_gaussian_deterministic_is_squashed_mean() -> None:
    net = _tanh_gaussian_net()
    obs = np.zeros((4, 3), np.float32)
    actions, _ = net.sample(obs, np.random.default_rng(0), deterministic=True)
    mean = net.pi(obs)[:, :2]
    np.testing.assert_allclose(actions, np.tanh(mean) * net.action_scale + net.action_bias)
