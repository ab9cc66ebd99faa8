"""SAC: squashed log-probs vs torch.distributions, soft targets (known answers), Polyak,
hand-derived gradients and whole updates vs autograd, learner smoke and state round trip."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from rlops.algos.sac import (
    SACBatch,
    SACConfig,
    SACLearner,
    SquashedGaussianActor,
    TwinCritic,
    critic_targets,
    sac_losses,
    tanh_gaussian_log_prob,
)
from rlops.algos.sac.loss import (
    actor_loss_grads,
    actor_output_grad,
    alpha_loss_grad,
    critic_loss_grad,
    sample_squashed,
)
from rlops.core.batch import Transitions
from rlops.core.errors import ConfigError
from rlops.nets.optim import FlatAdam, clip_grad_norm

LOW = np.array([-2.0, -1.0, 0.0])
HIGH = np.array([2.0, 3.0, 0.5])


def _nets(
    obs_dim: int = 4, bounds: tuple[float, float] = (-20.0, 2.0), seed: int = 0
) -> tuple[SquashedGaussianActor, TwinCritic]:
    torch.manual_seed(seed)
    actor = SquashedGaussianActor(obs_dim, 3, (16, 16), "relu", LOW, HIGH, bounds)
    critic = TwinCritic(obs_dim, 3, (16, 16), "relu")
    with torch.no_grad():  # a target that differs from the online critics
        critic.target.add_(0.05 * torch.randn(critic.target.shape))
    return actor, critic


def _batch(size: int, obs_dim: int = 4, seed: int = 1) -> SACBatch:
    g = torch.Generator().manual_seed(seed)
    return SACBatch(
        obs=torch.randn(size, obs_dim, generator=g),
        actions=torch.rand(size, 3, generator=g) * 2 - 1,
        rewards=torch.randn(size, generator=g),
        next_obs=torch.randn(size, obs_dim, generator=g),
        terminated=torch.rand(size, generator=g) < 0.3,
        discounts=torch.full((size,), 0.99),
    )


# ---------------------------------------------------------------- log-probs, targets, Polyak


def test_log_prob_matches_torch_transformed_distribution() -> None:
    g = torch.Generator().manual_seed(0)
    mean = 2.0 * torch.randn(64, 3, generator=g, dtype=torch.float64)
    log_std = torch.randn(64, 3, generator=g, dtype=torch.float64).clamp(-3, 1)
    mean[0] = 12.0  # deep in the tanh tail, where log(1 - tanh^2 + 1e-6) would be off
    scale = torch.tensor((HIGH - LOW) / 2)
    bias = torch.tensor((HIGH + LOW) / 2)
    noise = torch.randn(64, 3, generator=g, dtype=torch.float64)
    pre_tanh = mean + log_std.exp() * noise
    # Push u through the transforms so log_prob inverts them from their caches, exactly.
    tanh, affine = TanhTransform(cache_size=1), AffineTransform(bias, scale, cache_size=1)
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [tanh, affine])
    action = affine(tanh(pre_tanh))
    expected = dist.log_prob(action).sum(-1)
    log_scale_sum = float(np.log((HIGH - LOW) / 2).sum())
    ours = tanh_gaussian_log_prob(mean, log_std, pre_tanh, log_scale_sum)
    torch.testing.assert_close(ours, expected)
    # The fast path's noise form (no division by std) is the same density.
    sample = sample_squashed(torch.cat([mean, log_std], 1), noise, (-20.0, 2.0), log_scale_sum)
    torch.testing.assert_close(sample.log_prob, expected)
    torch.testing.assert_close(sample.action * scale + bias, action)


def test_critic_targets_known_answers() -> None:
    rewards = torch.tensor([1.0, 1.0, 2.0])
    discounts = torch.tensor([0.9, 0.9, 0.81])  # the last is a 2-step transition
    terminated = torch.tensor([False, True, False])
    next_q_target = torch.tensor([[3.0, 5.0, 2.0], [4.0, 1.0, 0.0]])  # min: 3, 1, 0
    next_log_prob = torch.tensor([-1.0, 7.0, 2.0])
    targets = critic_targets(rewards, discounts, terminated, next_q_target, next_log_prob, 0.5)
    # Soft values min Q' - alpha log pi' = 3.5, -2.5, -1; terminated -> reward only.
    torch.testing.assert_close(targets, torch.tensor([1 + 0.9 * 3.5, 1.0, 2 - 0.81]))
    no_entropy = critic_targets(rewards, discounts, terminated, next_q_target, next_log_prob, 0.0)
    torch.testing.assert_close(no_entropy, torch.tensor([1 + 0.9 * 3, 1.0, 2.0]))


def test_polyak_and_hard_target_updates() -> None:
    critic = TwinCritic(2, 1, (4,), "relu")
    with torch.no_grad():
        critic.flat.add_(1.0)
        before = critic.target.clone()
        critic.update_target(0.25)
        torch.testing.assert_close(critic.target, 0.75 * before + 0.25 * critic.flat.detach())
        critic.update_target(1.0)
        torch.testing.assert_close(critic.target, critic.flat.detach())


# ---------------------------------------------------------------- hand gradients vs autograd


@pytest.mark.parametrize("bounds", [(-20.0, 2.0), (-0.3, 0.1)])  # the second clamps often
def test_hand_gradients_match_autograd(bounds: tuple[float, float]) -> None:
    actor, critic = _nets(bounds=bounds)
    batch = _batch(32)
    noise = torch.randn(2, 32, 3, generator=torch.Generator().manual_seed(2))
    log_alpha = torch.nn.Parameter(torch.tensor([math.log(0.3)]))
    target_entropy = -3.0
    ref = sac_losses(actor, critic, log_alpha, batch, noise, target_entropy)
    (ref_actor,) = torch.autograd.grad(ref.actor, actor.flat, retain_graph=True)
    (ref_critic,) = torch.autograd.grad(ref.critic, critic.flat)
    (ref_alpha,) = torch.autograd.grad(ref.alpha, log_alpha)

    alpha = 0.3
    with torch.no_grad():
        out, cache = actor.forward_cached(batch.obs)
        pi = sample_squashed(out, noise[0], bounds, actor.log_scale_sum)
        if bounds[0] > -1:  # the narrow clamp: both of its gradient branches are exercised
            assert 0 < int(pi.log_std_open.sum()) < pi.log_std_open.numel()
        torch.testing.assert_close(pi.log_prob, ref.log_prob.detach())
        alpha_loss, alpha_grad = alpha_loss_grad(math.log(alpha), pi.log_prob, target_entropy)
        assert alpha_loss == pytest.approx(float(ref.alpha), rel=1e-5)
        assert alpha_grad == pytest.approx(float(ref_alpha), rel=1e-5)

        next_out = actor.forward_cached(batch.next_obs)[0]
        nxt = sample_squashed(next_out, noise[1], bounds, actor.log_scale_sum)
        next_q, _ = critic.forward_cached(batch.next_obs, nxt.action, target=True)
        targets = critic_targets(
            batch.rewards, batch.discounts, batch.terminated, next_q, nxt.log_prob, alpha
        )
        q, critic_cache = critic.forward_cached(batch.obs, batch.actions)
        critic_loss, grad_q = critic_loss_grad(q, targets)
        assert critic_loss == pytest.approx(float(ref.critic), rel=1e-5)
        critic.backward(critic_cache, grad_q)
        assert critic.flat.grad is not None
        torch.testing.assert_close(critic.flat.grad, ref_critic, rtol=1e-4, atol=1e-6)

        q_pi, pi_cache = critic.forward_cached(batch.obs, pi.action)
        actor_loss, grad_q_pi = actor_loss_grads(pi.log_prob, q_pi, alpha)
        assert actor_loss == pytest.approx(float(ref.actor), rel=1e-5)
        grad_action = critic.action_grad(pi_cache, grad_q_pi)
        actor.backward(cache, actor_output_grad(pi, grad_action, alpha))
        assert actor.flat.grad is not None
        torch.testing.assert_close(actor.flat.grad, ref_actor, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_critic_action_gradient_matches_autograd(activation: str) -> None:
    torch.manual_seed(0)
    critic = TwinCritic(4, 3, (16, 16), activation)
    obs, action = torch.randn(8, 4), (torch.rand(8, 3) * 2 - 1).requires_grad_(True)
    grad_q = torch.randn(2, 8)
    (critic.q_values(obs, action) * grad_q).sum().backward()
    with torch.no_grad():
        _, cache = critic.forward_cached(obs, action.detach())
        torch.testing.assert_close(critic.action_grad(cache, grad_q), action.grad)


def _reference_update(
    actor: SquashedGaussianActor,
    critic: TwinCritic,
    log_alpha: torch.nn.Parameter,
    optimizers: Mapping[str, FlatAdam],
    cfg: SACConfig,
    batch: SACBatch,
    noise: torch.Tensor,
) -> None:
    """One SB3-ordered SAC update with autograd gradients (what the learner must reproduce)."""
    target_entropy = -3.0
    old_log_alpha = log_alpha.detach().clone()
    losses = sac_losses(actor, critic, log_alpha, batch, noise, target_entropy)
    if cfg.ent_coef is None:
        (log_alpha.grad,) = torch.autograd.grad(losses.alpha, log_alpha, retain_graph=True)
        optimizers["alpha"].step()
    (critic.flat.grad,) = torch.autograd.grad(losses.critic, critic.flat)
    if cfg.max_grad_norm is not None:
        clip_grad_norm(critic.flat, cfg.max_grad_norm)
    optimizers["critic"].step()
    # The actor against the updated critics, with alpha from before the alpha step.
    losses = sac_losses(actor, critic, old_log_alpha, batch, noise, target_entropy)
    (actor.flat.grad,) = torch.autograd.grad(losses.actor, actor.flat)
    if cfg.max_grad_norm is not None:
        clip_grad_norm(actor.flat, cfg.max_grad_norm)
    optimizers["actor"].step()
    critic.update_target(cfg.tau)


@pytest.mark.parametrize(
    "cfg",
    [
        SACConfig(hidden_sizes=(16, 16), lr=1e-3, tau=0.1),
        SACConfig(hidden_sizes=(16, 16), lr=1e-3, tau=0.1, ent_coef=0.2, max_grad_norm=0.5),
    ],
    ids=["auto-alpha", "fixed-alpha-clipped"],
)
def test_learner_updates_match_autograd_reference(cfg: SACConfig) -> None:
    learner = SACLearner(cfg, 4, 3, LOW, HIGH, 1000, _RingReplay(64), _OneStepWriter(), seed=3)
    actor, critic = copy.deepcopy(learner.actor), copy.deepcopy(learner.critic)
    initial = math.log(cfg.ent_coef) if cfg.ent_coef is not None else 0.0
    log_alpha = torch.nn.Parameter(torch.tensor([initial]))
    optimizers = {
        name: FlatAdam(p, lr=cfg.lr, eps=cfg.adam_eps)
        for name, p in (("actor", actor.flat), ("critic", critic.flat), ("alpha", log_alpha))
    }
    for i in range(3):
        batch = _batch(32, seed=10 + i)
        noise = torch.randn(2, 32, 3, generator=torch.Generator().manual_seed(20 + i))
        metrics = learner.update(batch, noise)
        _reference_update(actor, critic, log_alpha, optimizers, cfg, batch, noise)
        assert ("losses/alpha" in metrics) == (cfg.ent_coef is None)
    # Adam divides by sqrt(v): near-zero gradients amplify float rounding, hence atol.
    torch.testing.assert_close(learner.actor.flat.detach(), actor.flat.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        learner.critic.flat.detach(), critic.flat.detach(), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(learner.critic.target, critic.target, atol=1e-6, rtol=0)
    assert learner.alpha == pytest.approx(math.exp(float(log_alpha.detach())), rel=1e-6)
    assert learner.gradient_steps == 3


# ---------------------------------------------------------------- learner with fake replay


class _OneStepWriter:
    """1-step writer: every vector step becomes ``N`` transitions with ``discount = gamma``."""

    def __init__(self, gamma: float = 0.99) -> None:
        self.gamma = gamma

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> Mapping[str, np.ndarray] | None:
        return {
            "obs": obs,
            "action": action,
            "reward": reward,
            "next_obs": next_obs,
            "terminated": terminated,
            "discount": np.full(len(reward), self.gamma, dtype=np.float32),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"gamma": self.gamma}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.gamma = float(state["gamma"])


class _RingReplay:
    """A tiny ring buffer with uniform sampling from its own numpy RNG."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.data: dict[str, np.ndarray] = {}
        self.pos = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)

    def add(self, batch: Mapping[str, np.ndarray]) -> None:
        for i in range(len(batch["reward"])):
            for key, value in batch.items():
                row = np.asarray(value[i])
                if key not in self.data:
                    self.data[key] = np.zeros((self.capacity, *row.shape), dtype=row.dtype)
                self.data[key][self.pos] = row
            self.pos = (self.pos + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> tuple[Mapping[str, np.ndarray], np.ndarray, np.ndarray]:
        idx = self.rng.integers(0, self.size, size=batch_size)
        return {k: v[idx] for k, v in self.data.items()}, idx, np.ones(batch_size)

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        pass

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict[str, Any]:
        return {
            "data": {k: v.copy() for k, v in self.data.items()},
            "pos": self.pos,
            "size": self.size,
            "rng": copy.deepcopy(self.rng.bit_generator.state),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.data = {k: v.copy() for k, v in state["data"].items()}
        self.pos, self.size = int(state["pos"]), int(state["size"])
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])


def _fragments(count: int, seed: int, num_envs: int = 2) -> list[Transitions]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        shape = (1, num_envs)
        out.append(
            Transitions(
                observations=rng.normal(size=(*shape, 4)).astype(np.float32),
                actions=rng.uniform(LOW, HIGH, size=(*shape, 3)).astype(np.float32),
                rewards=rng.normal(size=shape).astype(np.float32),
                next_observations=rng.normal(size=(*shape, 4)).astype(np.float32),
                terminated=rng.random(shape) < 0.1,
                truncated=rng.random(shape) < 0.1,
            )
        )
    return out


def _learner(seed: int) -> SACLearner:
    cfg = SACConfig(hidden_sizes=(32, 32), batch_size=16, learning_starts=20, gradient_steps=2)
    return SACLearner(cfg, 4, 3, LOW, HIGH, 1000, _RingReplay(256), _OneStepWriter(), seed)


def test_learner_smoke_metrics_and_versions() -> None:
    learner = _learner(seed=0)
    before = learner.get_variables()[1]
    metrics: dict[str, float] = {}
    for i, fragment in enumerate(_fragments(15, seed=0)):
        metrics = learner.step(fragment)
        assert metrics["charts/policy_version"] == i + 1
        assert ("losses/critic" in metrics) == (learner.env_steps >= 20)
    for key in ("losses/actor", "losses/critic", "losses/alpha", "losses/entropy"):
        assert math.isfinite(metrics[key]), key
    assert metrics["replay/size"] == 30
    assert learner.gradient_steps == 2 * 6  # updates from env step 20 (fragment 10) on
    assert metrics["charts/alpha"] < 1.0  # alpha starts at 1 and moves
    version, after = learner.get_variables()
    assert version == 15
    assert sorted(after) == sorted(before)
    assert not np.array_equal(after["pi.layers.0.weight"], before["pi.layers.0.weight"])


def test_exported_actor_reproduces_actions_in_numpy() -> None:
    learner = _learner(seed=1)
    _, weights = learner.get_variables()
    n_layers = 3
    assert weights[f"pi.layers.{n_layers - 1}.weight"].shape == (6, 32)  # [mean | log_std]
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    x = obs
    for i in range(n_layers):
        x = x @ weights[f"pi.layers.{i}.weight"].T + weights[f"pi.layers.{i}.bias"]
        if i < n_layers - 1:
            x = np.maximum(x, 0.0)
    deterministic = np.tanh(x[:, :3]) * weights["action_scale"] + weights["action_bias"]
    with torch.no_grad():
        out = learner.actor(torch.from_numpy(obs))
        expected = learner.actor.to_env(torch.tanh(out[:, :3])).numpy()
    np.testing.assert_allclose(deterministic, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights["action_scale"], (HIGH - LOW) / 2)
    np.testing.assert_allclose(weights["action_bias"], (HIGH + LOW) / 2)


def test_state_dict_round_trip_gives_identical_updates() -> None:
    a = _learner(seed=0)
    for fragment in _fragments(12, seed=1):
        a.step(fragment)
    state = copy.deepcopy(a.state_dict())
    b = _learner(seed=99)  # different init and noise: everything must come from the state
    b.load_state_dict(state)
    for fragment in _fragments(4, seed=2):
        metrics_a, metrics_b = a.step(fragment), b.step(fragment)
        assert metrics_a == metrics_b
    for name in ("actor/flat", "critic/flat", "critic/target", "log_alpha"):
        torch.testing.assert_close(
            a.state_dict()["tensors"][name], b.state_dict()["tensors"][name], rtol=0, atol=0
        )


def test_same_seed_same_weights() -> None:
    weights = []
    for _ in range(2):
        learner = _learner(seed=5)
        for fragment in _fragments(12, seed=3):
            learner.step(fragment)
        weights.append(learner.get_variables()[1])
    for key in weights[0]:
        np.testing.assert_array_equal(weights[0][key], weights[1][key])


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tau": 0.0},
        {"batch_size": 0},
        {"ent_coef": -0.1},
        {"ent_coef_init": 0.0},
        {"log_std_min": 2.0},
        {"max_grad_norm": 0.0},
        {"batch_size": 10, "buffer_size": 5},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="algo\\."):
        SACConfig(**kwargs)


def test_config_imports_without_torch() -> None:
    code = "import sys, rlops.algos.sac as s; s.SACConfig(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
