"""DQN: TD targets (known answers), gradients vs autograd, dueling fold, Q-head artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rlops.algos.dqn import DQNConfig, QNetwork, td_loss_grads, td_targets
from rlops.artifacts import NumpyActorCritic
from rlops.runtime import RunResult


def test_td_targets_known_answers() -> None:
    rewards = torch.tensor([1.0, 1.0, 2.0])
    discounts = torch.tensor([0.9, 0.9, 0.81])  # the last is a 2-step transition
    terminated = torch.tensor([False, True, False])
    next_target = torch.tensor([[1.0, 3.0], [5.0, 5.0], [2.0, 0.0]])
    next_online = torch.tensor([[9.0, 0.0], [0.0, 9.0], [0.0, 1.0]])
    # Plain DQN: max of the target net; terminated -> no bootstrap.
    vanilla = td_targets(rewards, discounts, terminated, next_target, None)
    torch.testing.assert_close(vanilla, torch.tensor([1 + 0.9 * 3, 1.0, 2 + 0.81 * 2]))
    # Double DQN: the online argmax picks the action, the target net values it.
    double = td_targets(rewards, discounts, terminated, next_target, next_online)
    torch.testing.assert_close(double, torch.tensor([1 + 0.9 * 1, 1.0, 2 + 0.81 * 0]))


@pytest.mark.parametrize("huber", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_td_loss_gradient_matches_autograd(huber: bool, weighted: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q = (3 * torch.randn(32, generator=g)).requires_grad_(True)
    targets = torch.randn(32, generator=g)
    weights = torch.rand(32, generator=g) if weighted else None
    per_item = (
        torch.nn.functional.smooth_l1_loss(q, targets, reduction="none")
        if huber
        else (q - targets) ** 2
    )
    ref = (per_item * (weights if weights is not None else 1.0)).mean()
    ref.backward()
    result = td_loss_grads(q.detach(), targets, weights, huber)
    assert float(result.loss) == pytest.approx(float(ref.detach()), rel=1e-6)
    torch.testing.assert_close(result.grad_q_taken, q.grad)
    torch.testing.assert_close(result.td_errors, q.detach() - targets)


@pytest.mark.parametrize("dueling", [False, True])
def test_q_network_hand_backward_matches_autograd(dueling: bool) -> None:
    torch.manual_seed(0)
    net = QNetwork(4, 3, (16, 16), "relu", dueling)
    obs = torch.randn(10, 4)
    grad_q = torch.randn(10, 3)
    (net.q_values(obs) * grad_q).sum().backward()
    ref = net.flat.grad.clone()
    net.flat.grad = None
    with torch.no_grad():
        q, cache = net.forward_cached(obs)
        torch.testing.assert_close(q, net.q_values(obs).detach(), rtol=1e-5, atol=1e-6)
        net.backward(cache, grad_q)
    torch.testing.assert_close(net.flat.grad, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dueling", [False, True])
def test_exported_q_network_reproduces_q_values(dueling: bool) -> None:
    torch.manual_seed(1)
    net = QNetwork(4, 3, (8,), "tanh", dueling)
    numpy_net = NumpyActorCritic(net.spec(epsilon=0.1), net.numpy_tensors())
    obs = torch.randn(6, 4)
    np.testing.assert_allclose(
        numpy_net.pi(obs.numpy()), net.q_values(obs).detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_target_network_hard_and_polyak_updates() -> None:
    net = QNetwork(2, 2, (4,), "relu", False)
    with torch.no_grad():
        net.flat.add_(1.0)
        before = net.target.clone()
        net.update_target(0.25)
        torch.testing.assert_close(net.target, 0.75 * before + 0.25 * net.flat.detach())
        net.update_target(1.0)
        torch.testing.assert_close(net.target, net.flat.detach())


def test_epsilon_greedy_distribution_and_log_probs() -> None:
    torch.manual_seed(2)
    net = QNetwork(3, 4, (8,), "relu", False)
    numpy_net = NumpyActorCritic(net.spec(epsilon=0.2), net.numpy_tensors())
    obs = np.random.default_rng(0).normal(size=(1, 3)).astype(np.float32)
    probs = numpy_net.probs(obs)[0]
    greedy = int(numpy_net.pi(obs).argmax())
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
    assert probs[greedy] == pytest.approx(0.8 + 0.2 / 4)
    many = np.repeat(obs, 20_000, axis=0)
    actions, logp = numpy_net.sample(many, np.random.default_rng(1))
    np.testing.assert_allclose(np.bincount(actions, minlength=4) / 20_000, probs, atol=0.01)
    np.testing.assert_allclose(np.exp(logp), probs[actions], rtol=1e-5)
    greedy_actions, greedy_logp = numpy_net.sample(many[:5], np.random.default_rng(1), True)
    assert (greedy_actions == greedy).all()
    np.testing.assert_allclose(np.exp(greedy_logp), probs[greedy], rtol=1e-5)


def test_epsilon_schedule_is_linear_then_flat() -> None:
    cfg = DQNConfig(exploration_fraction=0.1, exploration_initial_eps=1.0)
    assert cfg.epsilon(0, 100_000) == 1.0
    assert cfg.epsilon(5_000, 100_000) == pytest.approx(0.525)
    assert cfg.epsilon(10_000, 100_000) == pytest.approx(0.05)
    assert cfg.epsilon(90_000, 100_000) == pytest.approx(0.05)


def _tiny_dqn(tmp_path: Path, name: str, overrides: list[str]) -> RunResult:
    from rlops.runtime import load_config, train

    base = [
        "total_steps=2048",
        "algo.learning_starts=256",
        "algo.train_freq=64",
        "algo.gradient_steps=16",
        "algo.hidden_sizes=[32,32]",
        "algo.target_update_interval=256",
        "eval.every_steps=1024",
        "eval.episodes=2",
        "log.tensorboard=false",
        "log.progress=false",
        "runtime.checkpoint_every=1024",
    ]
    config = load_config("configs/cartpole_dqn.yaml", [*base, *overrides])
    return train(config, out_dir=tmp_path / name)


@pytest.mark.parametrize(
    "variant",
    [
        [],
        ["algo.prioritized=true", "algo.dueling=true", "algo.n_step=3"],
        ["algo.double_q=false", "algo.huber=false", "algo.tau=0.1", "env.num_envs=4"],
    ],
)
def test_dqn_variants_train_and_serve(tmp_path: Path, variant: list[str]) -> None:
    import rlops

    result = _tiny_dqn(tmp_path, "run", variant)
    assert result.env_steps >= 2048
    assert np.isfinite(result.metrics["losses/td"])
    assert result.metrics["replay/size"] > 0
    policy = rlops.load_policy(result.artifact_path)
    assert policy.manifest["network"]["head"] == "q"
    probs = policy.action_distribution(np.zeros(4, np.float32))
    assert probs.sum() == pytest.approx(1.0) and probs.min() > 0  # epsilon-greedy support
    action, logp = policy.act(np.zeros(4, np.float32))
    assert np.exp(logp) == pytest.approx(probs[action], rel=1e-5)


def test_dqn_resume_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    import shutil

    from rlops.runtime import train

    overrides = ["algo.prioritized=true", "algo.n_step=3"]
    a = _tiny_dqn(tmp_path, "a", overrides)
    b = _tiny_dqn(tmp_path, "b", overrides)
    assert a.weights_hash == b.weights_hash  # deterministic
    # Interrupt b after its first checkpoint: drop what it wrote later, resume.
    checkpoints = sorted((b.run_dir / "checkpoints").glob("step_*"))
    for later in checkpoints[1:]:
        shutil.rmtree(later)
    shutil.rmtree(b.artifact_path)
    resumed = train(resume=b.run_dir)
    assert resumed.weights_hash == a.weights_hash
