"""PPO: hand-derived gradients equal autograd on the reference loss; learner behaviour."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import pytest
import torch

from rlops.algos.ppo import ActorCritic, PPOConfig, PPOLearner, ppo_loss
from rlops.algos.ppo.loss import ppo_loss_grads
from rlops.artifacts import NetworkSpec, NumpyActorCritic
from rlops.core.batch import Rollout
from rlops.core.errors import ConfigError


def _spec(head: str, activation: str = "tanh") -> NetworkSpec:
    act_dim = 3 if head == "categorical" else 2
    return NetworkSpec(
        obs_dim=5,
        act_dim=act_dim,
        hidden_sizes=(16, 8),
        activation=activation,  # type: ignore[arg-type]
        head=head,  # type: ignore[arg-type]
    )


def _data(spec: NetworkSpec, batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch, spec.obs_dim, generator=g)
    if spec.head == "categorical":
        actions = torch.randint(0, spec.act_dim, (batch,), generator=g)
    else:
        actions = torch.randn(batch, spec.act_dim, generator=g)
    return {
        "obs": obs,
        "actions": actions,
        # Old log-probs near the current ones so that some ratios are clipped, some not.
        "old_logp_noise": 0.3 * torch.randn(batch, generator=g),
        "advantages": torch.randn(batch, generator=g),
        "old_values": torch.randn(batch, generator=g),
        "returns": torch.randn(batch, generator=g),
    }


@pytest.mark.parametrize("head", ["categorical", "gaussian"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("clip_vf", [None, 0.2])
@pytest.mark.parametrize("ent_coef", [0.0, 0.05])
def test_hand_gradients_match_autograd(
    head: str, activation: str, clip_vf: float | None, ent_coef: float
) -> None:
    spec = _spec(head, activation)
    torch.manual_seed(0)
    net = ActorCritic(spec, PPOConfig(log_std_init=-0.3))
    d = _data(spec, 64, seed=1)
    with torch.no_grad():
        ref_logp, _, _ = net.evaluate(d["obs"], d["actions"])
    old_logp = ref_logp + d["old_logp_noise"]
    kwargs = {
        "old_logp": old_logp,
        "advantages": d["advantages"],
        "old_values": d["old_values"],
        "returns": d["returns"],
        "clip_coef": 0.2,
        "clip_vf": clip_vf,
        "ent_coef": ent_coef,
        "vf_coef": 0.5,
    }

    # Reference: autograd through evaluate() + ppo_loss().
    net.zero_grad()
    new_logp, entropy, values = net.evaluate(d["obs"], d["actions"])
    ref = ppo_loss(new_logp=new_logp, new_values=values, entropy=entropy, **kwargs)
    ref.total.backward()
    ref_grads = {n: p.grad.clone() for n, p in net.named_parameters()}

    # Fast path: analytic output gradients + hand-written backward.
    net.zero_grad()
    with torch.no_grad():
        out, values2, cache = net.forward_cached(d["obs"])
        grads = ppo_loss_grads(
            policy_out=out,
            values=values2,
            actions=d["actions"],
            log_std=None if head == "categorical" else net.log_std,
            **kwargs,
        )
        net.backward(cache, grads.policy_out, grads.values, grads.log_std)

    clipped = ((new_logp - old_logp).exp() - 1).abs() > 0.2
    assert 0 < int(clipped.sum()) < 64, "test data should exercise both clip branches"
    assert float(grads.loss.total) == pytest.approx(float(ref.total.detach()), rel=1e-5, abs=1e-6)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(
            p.grad.numpy(), ref_grads[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("head", ["categorical", "gaussian"])
def test_numpy_inference_matches_torch(head: str) -> None:
    spec = _spec(head)
    torch.manual_seed(3)
    net = ActorCritic(spec, PPOConfig(log_std_init=-0.5))
    numpy_net = NumpyActorCritic(spec, net.numpy_tensors())
    obs = torch.randn(32, spec.obs_dim)
    rng = np.random.default_rng(0)
    actions, logp = numpy_net.sample(obs.numpy(), rng)
    ref_logp, _, ref_values = net.evaluate(obs, torch.from_numpy(actions))
    np.testing.assert_allclose(logp, ref_logp.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        numpy_net.value(obs.numpy()), ref_values.detach().numpy(), rtol=1e-5, atol=1e-5
    )


def test_categorical_sampling_frequencies_match_probabilities() -> None:
    spec = _spec("categorical")
    torch.manual_seed(4)
    net = NumpyActorCritic(spec, ActorCritic(spec, PPOConfig(ortho_init=False)).numpy_tensors())
    obs = np.repeat(np.random.default_rng(1).normal(size=(1, 5)).astype(np.float32), 20000, 0)
    probs = net.probs(obs[:1])[0]
    actions, _ = net.sample(obs, np.random.default_rng(2))
    freq = np.bincount(actions, minlength=3) / len(actions)
    np.testing.assert_allclose(freq, probs, atol=0.015)


def _rollout(seed: int, t: int = 16, n: int = 4) -> Rollout:
    rng = np.random.default_rng(seed)
    return Rollout(
        observations=rng.normal(size=(t, n, 5)).astype(np.float32),
        actions=rng.integers(0, 3, (t, n)),
        log_probs=np.full((t, n), np.log(1 / 3), np.float32),
        values=np.zeros((t, n), np.float32),
        rewards=rng.normal(size=(t, n)).astype(np.float32),
        dones=(rng.random((t, n)) < 0.1).astype(np.float32),
        last_values=np.zeros(n, np.float32),
    )


def test_learner_metrics_and_state_round_trip() -> None:
    cfg = PPOConfig(n_steps=16, minibatch_size=16, n_epochs=3, lr_schedule="linear")
    a = PPOLearner(cfg, _spec("categorical"), total_steps=640, seed=0)
    metrics = a.step(_rollout(0))
    for key in (
        "losses/policy",
        "losses/value",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clip_fraction",
        "losses/grad_norm",
        "losses/explained_variance",
    ):
        assert np.isfinite(metrics[key]), key
    assert metrics["charts/lr"] == pytest.approx(cfg.lr * (1 - 64 / 640))
    assert metrics["losses/entropy"] == pytest.approx(np.log(3), abs=0.05)
    assert a.get_variables()[0] == 1

    b = PPOLearner(cfg, _spec("categorical"), total_steps=640, seed=99)
    b.load_state_dict(a.state_dict())
    a.step(_rollout(1))
    b.step(_rollout(1))
    wa, wb = a.get_variables()[1], b.get_variables()[1]
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name])


def test_target_kl_stops_epochs_early() -> None:
    spec = _spec("categorical")
    loose = PPOLearner(PPOConfig(n_epochs=10, minibatch_size=16, lr=0.05), spec, 10_000, 0)
    strict = PPOLearner(
        PPOConfig(n_epochs=10, minibatch_size=16, lr=0.05, target_kl=1e-6), spec, 10_000, 0
    )
    init = loose.get_variables()[1]
    batch = _rollout(0)
    loose.step(batch)
    strict.step(batch)

    def distance(weights: dict[str, np.ndarray]) -> float:
        return sum(float(np.abs(weights[k] - init[k]).sum()) for k in init)

    # The strict learner stopped after its first minibatch: it moved, but far less.
    assert 0 < distance(strict.get_variables()[1]) < distance(loose.get_variables()[1]) / 5


@pytest.mark.parametrize("head", ["categorical", "gaussian"])
def test_fused_acting_pass_equals_separate_heads(head: str) -> None:
    spec = _spec(head)
    torch.manual_seed(5)
    net = NumpyActorCritic(spec, ActorCritic(spec, PPOConfig()).numpy_tensors())
    obs = np.random.default_rng(0).normal(size=(16, spec.obs_dim)).astype(np.float32)
    a1, lp1, v1 = net.sample_with_value(obs, np.random.default_rng(7))
    a2, lp2 = net.sample(obs, np.random.default_rng(7))
    np.testing.assert_allclose(a1, a2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lp1, lp2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v1, net.value(obs), rtol=1e-5, atol=1e-5)


def test_learner_and_actor_satisfy_the_core_interfaces() -> None:
    from rlops.core import Actor, Learner
    from rlops.envs import make_vec
    from rlops.observability import PhaseTimer
    from rlops.runtime import RolloutActor

    spec = NetworkSpec(
        obs_dim=4, act_dim=2, hidden_sizes=(8,), activation="tanh", head="categorical"
    )
    learner = PPOLearner(PPOConfig(n_steps=8, minibatch_size=16), spec, 1000, 0)
    actor = RolloutActor(make_vec("rlops/CartPole-v1", 2), spec, 8, 0.99, 0, PhaseTimer())
    assert isinstance(learner, Learner)
    assert isinstance(actor, Actor)
    # The loop of rlops.core.interfaces, once.
    actor.reset(seed=0)
    actor.update(*learner.get_variables())
    batch = actor.collect()
    assert (batch.num_steps, batch.num_envs, batch.policy_version) == (8, 2, 0)
    learner.step(batch)
    assert learner.get_variables()[0] == 1


def _stale(learner: PPOLearner, batch: Rollout, version: int) -> Rollout:
    """``batch`` tagged as collected by weights ``version`` after ``learner`` moved on."""
    assert learner.version > version
    return dataclasses.replace(batch, policy_version=version)


def _with_correction(cfg: PPOConfig, correction: Literal["vtrace", "none"]) -> PPOConfig:
    """``cfg`` with ``off_policy_correction`` set."""
    return dataclasses.replace(cfg, off_policy_correction=correction)


@pytest.mark.parametrize("with_last_obs", [True, False])
def test_stale_fragment_takes_the_vtrace_path(with_last_obs: bool) -> None:
    cfg = PPOConfig(n_steps=16, minibatch_size=16, n_epochs=4, lr=0.01)
    learners = {
        "vtrace": PPOLearner(_with_correction(cfg, "vtrace"), _spec("categorical"), 10_000, 0),
        "none": PPOLearner(_with_correction(cfg, "none"), _spec("categorical"), 10_000, 0),
    }
    for learner in learners.values():
        for k in range(3):
            learner.step(dataclasses.replace(_rollout(k), policy_version=learner.version))
    batch = _rollout(7)
    if with_last_obs:
        last_obs = np.random.default_rng(8).normal(size=(4, 5)).astype(np.float32)
        batch = dataclasses.replace(batch, last_observations=last_obs)
    before = learners["vtrace"].get_variables()[1]
    metrics = learners["vtrace"].step(_stale(learners["vtrace"], batch, 0))
    plain = learners["none"].step(_stale(learners["none"], batch, 0))

    assert metrics["charts/fragment_lag"] == plain["charts/fragment_lag"] == 3.0
    for key in ("losses/vtrace_rho_mean", "losses/vtrace_rho_clipped_frac", "losses/policy"):
        assert np.isfinite(metrics[key]), key
    assert metrics["losses/vtrace_rho_mean"] > 0
    assert 0.0 < metrics["losses/vtrace_rho_clipped_frac"] < 1.0
    assert "losses/vtrace_rho_mean" not in plain
    after = learners["vtrace"].get_variables()[1]
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    # The correction changed the update: same start, same data, different weights.
    uncorrected = learners["none"].get_variables()[1]
    assert any(not np.allclose(after[k], uncorrected[k]) for k in after)


@pytest.mark.parametrize("head", ["categorical", "gaussian"])
def test_stale_fragment_of_an_unchanged_policy_matches_plain_ppo(head: str) -> None:
    # If the behaviour policy is the current one (rho = 1), the ratio is taken
    # against the same log-probs and, with lambda = 1, V-trace's vs and
    # pg_advantages (r_t + gamma * vs_{t+1} - V_t, eq. 4) are GAE's returns and
    # advantages (for lambda < 1 pg_advantages is not GAE(lambda)): the two paths
    # agree up to float rounding of the recomputed log-probs and values.
    spec = _spec(head)
    cfg = PPOConfig(n_steps=16, minibatch_size=16, n_epochs=3, lr=1e-3, clip_vf=0.2, gae_lambda=1.0)
    fresh, stale = PPOLearner(cfg, spec, 10_000, 0), PPOLearner(cfg, spec, 10_000, 0)
    batch = _rollout(3)
    if head == "gaussian":
        rng = np.random.default_rng(3)
        batch = dataclasses.replace(batch, actions=rng.normal(size=(16, 4, 2)).astype(np.float32))
    with torch.no_grad():
        obs = torch.from_numpy(batch.observations.reshape(64, 5))
        acts = torch.from_numpy(batch.actions.reshape(64, *batch.actions.shape[2:]))
        logp, _, values = fresh.net.evaluate(obs, acts.long() if head == "categorical" else acts)
    batch = dataclasses.replace(
        batch,
        log_probs=logp.numpy().reshape(16, 4),
        values=values.numpy().reshape(16, 4),
        last_values=np.random.default_rng(4).normal(size=4).astype(np.float32),
    )
    stale.version = 2  # as if it had published twice without its weights changing
    m_fresh = fresh.step(batch)
    m_stale = stale.step(dataclasses.replace(batch, policy_version=1))
    assert m_stale["losses/vtrace_rho_mean"] == pytest.approx(1.0, abs=1e-5)
    assert m_stale["losses/vtrace_rho_clipped_frac"] <= 0.1  # rho = 1 +- rounding
    for key in ("losses/policy", "losses/value", "losses/explained_variance"):
        assert m_stale[key] == pytest.approx(m_fresh[key], rel=1e-3, abs=1e-5), key
    w_fresh, w_stale = fresh.get_variables()[1], stale.get_variables()[1]
    for k in w_fresh:
        np.testing.assert_allclose(w_stale[k], w_fresh[k], rtol=1e-3, atol=1e-5, err_msg=k)


def test_fresh_fragment_ignores_off_policy_correction() -> None:
    spec = _spec("categorical")
    cfg = PPOConfig(n_steps=16, minibatch_size=16, n_epochs=2)
    learners = [
        PPOLearner(_with_correction(cfg, "vtrace"), spec, 10_000, 0),
        PPOLearner(_with_correction(cfg, "none"), spec, 10_000, 0),
    ]
    for k in range(3):
        metrics = [
            learner.step(dataclasses.replace(_rollout(k), policy_version=learner.version))
            for learner in learners
        ]
        assert metrics[0] == pytest.approx(metrics[1], nan_ok=True)
        assert metrics[0]["charts/fragment_lag"] == 0.0
        assert "losses/vtrace_rho_mean" not in metrics[0]
    wa, wb = learners[0].get_variables()[1], learners[1].get_variables()[1]
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"off_policy_correction": "foo"}, "algo.off_policy_correction"),
        ({"vtrace_rho_bar": -1.0}, "algo.vtrace_rho_bar"),
        ({"vtrace_rho_bar": 0.0}, "algo.vtrace_rho_bar"),
        ({"vtrace_c_bar": 0.0}, "algo.vtrace_c_bar"),
        ({"vtrace_rho_bar": 1.0, "vtrace_c_bar": 2.0}, "algo.vtrace_c_bar"),
    ],
)
def test_config_rejects_bad_off_policy_settings(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        PPOConfig(**kwargs)


def test_actor_fragment_carries_its_last_observation() -> None:
    from rlops.envs import make_vec
    from rlops.observability import PhaseTimer
    from rlops.runtime import RolloutActor

    spec = NetworkSpec(
        obs_dim=4, act_dim=2, hidden_sizes=(8,), activation="tanh", head="categorical"
    )
    learner = PPOLearner(PPOConfig(n_steps=8, minibatch_size=16), spec, 1000, 0)
    actor = RolloutActor(make_vec("rlops/CartPole-v1", 2), spec, 8, 0.99, 0, PhaseTimer())
    actor.reset(seed=0)
    actor.update(*learner.get_variables())
    batch = actor.collect()
    assert batch.last_observations is not None
    assert batch.last_observations.shape == (2, 4)
    net = NumpyActorCritic(spec, learner.get_variables()[1])
    np.testing.assert_allclose(
        net.value(batch.last_observations), batch.last_values, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="last_observations"):
        dataclasses.replace(batch, last_observations=np.zeros((3, 4), np.float32))
