"""The SAC learner: replay in, soft actor-critic updates out, versioned actor weights published."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rlops.algos.dqn.learner import Replay, Writer, store_fragment
from rlops.algos.sac.config import SACConfig
from rlops.algos.sac.loss import (
    SACBatch,
    actor_loss_grads,
    actor_output_grad,
    alpha_loss_grad,
    critic_loss_grad,
    critic_targets,
    sample_squashed,
)
from rlops.algos.sac.networks import SquashedGaussianActor, TwinCritic
from rlops.core.batch import Transitions
from rlops.nets.optim import FlatAdam, clip_grad_norm

_OPTIMIZERS = ("actor", "critic", "alpha")


class SACLearner:
    """Soft Actor-Critic (Haarnoja et al. 2018) with SB3's update order and conventions.

    ``step(transitions)`` writes the fragment into replay (through the n-step
    writer), then, once ``learning_starts`` env steps are in and replay holds a
    batch, runs ``gradient_steps`` updates. Each update (:meth:`update`) is, as
    in SB3's ``SAC.train``: sample ``a ~ pi(s)``; step ``log_alpha``; step the
    critics towards the soft targets; step the actor against the *updated*
    critics; Polyak-average the target critics every ``target_update_interval``
    gradient steps. Alpha in the targets and the actor loss is the value from
    before the step's alpha update.

    The gradients are written by hand (:mod:`rlops.algos.sac.loss`); the
    autograd reference :func:`~rlops.algos.sac.loss.sac_losses` is what
    ``tests/test_sac.py`` checks them (and whole updates) against. Sampling
    noise comes from the learner's own ``torch.Generator``, so a seed fixes a run.

    Args:
        config: SAC hyperparameters.
        obs_dim: observation size.
        act_dim: action size.
        action_low: ``[act_dim]`` lower bounds of the env's Box action space.
        action_high: ``[act_dim]`` upper bounds.
        total_steps: training budget (unused: SAC has no schedules; kept so every
            learner is built the same way).
        replay: the replay buffer (holds env-scale actions).
        writer: the n-step writer feeding it.
        seed: seeds parameter init and the sampling noise.

    >>> learner = SACLearner(SACConfig(hidden_sizes=(16,)), obs_dim=3, act_dim=1,
    ...                      action_low=[-2.0], action_high=[2.0], total_steps=1000,
    ...                      replay=None, writer=None, seed=0)  # the runtime passes rlops.replay
    >>> version, weights = learner.get_variables()
    >>> weights["pi.layers.1.weight"].shape  # [mean | log_std] outputs x hidden
    (2, 16)
    >>> batch = SACBatch(obs=torch.randn(8, 3), actions=torch.rand(8, 1) * 2 - 1,
    ...                  rewards=torch.randn(8), next_obs=torch.randn(8, 3),
    ...                  terminated=torch.zeros(8, dtype=torch.bool),
    ...                  discounts=torch.full((8,), 0.99))
    >>> sorted(learner.update(batch, torch.randn(2, 8, 1)))
    ['losses/actor', 'losses/alpha', 'losses/critic', 'losses/entropy', 'losses/q_mean']
    """

    def __init__(
        self,
        config: SACConfig,
        obs_dim: int,
        act_dim: int,
        action_low: Sequence[float] | np.ndarray,
        action_high: Sequence[float] | np.ndarray,
        total_steps: int,
        replay: Replay,
        writer: Writer | Sequence[Writer],
        seed: int,
    ) -> None:
        self.config = config
        self.total_steps = total_steps
        self.replay = replay
        self.writers = list(writer) if isinstance(writer, Sequence) else [writer]
        self.act_dim = act_dim
        with torch.random.fork_rng(devices=[]):  # seed the init without touching global state
            torch.manual_seed(seed)
            self.actor = SquashedGaussianActor(
                obs_dim,
                act_dim,
                config.hidden_sizes,
                config.activation,
                action_low,
                action_high,
                (config.log_std_min, config.log_std_max),
            )
            self.critic = TwinCritic(obs_dim, act_dim, config.hidden_sizes, config.activation)
        self.generator = torch.Generator().manual_seed(seed)
        """Source of the reparameterisation noise."""
        self.log_alpha = torch.nn.Parameter(torch.full((1,), math.log(config.ent_coef_init)))
        self.log_alpha.grad = torch.zeros_like(self.log_alpha)
        self.target_entropy = (
            float(-act_dim) if config.target_entropy is None else config.target_entropy
        )
        self.optimizers = {
            name: FlatAdam(param, lr=config.lr, eps=config.adam_eps)
            for name, param in zip(_OPTIMIZERS, (self.actor.flat, self.critic.flat, self.log_alpha))
        }
        self.version = 0
        self.env_steps = 0
        self.gradient_steps = 0
        self.inserted = 0

    @property
    def alpha(self) -> float:
        """The current entropy coefficient."""
        if self.config.ent_coef is not None:
            return self.config.ent_coef
        return math.exp(float(self.log_alpha.detach()))

    def get_variables(self) -> tuple[int, dict[str, np.ndarray]]:
        """``(version, actor weights in the "tanh_gaussian" artifact layout)``.

        See :meth:`SquashedGaussianActor.numpy_tensors` for the names and how a
        numpy policy reads them.
        """
        return self.version, self.actor.numpy_tensors()

    @torch.no_grad()
    def step(self, batch: Transitions) -> dict[str, float]:
        """Store a fragment and run the scheduled updates.

        Args:
            batch: ``T`` steps of ``N`` envs; ``actions`` ``[T, N, act_dim]`` in env units.

        Returns:
            ``losses/actor``, ``losses/critic``, ``losses/alpha`` (learned alpha
            only), ``losses/entropy`` (``-mean log pi``), ``losses/q_mean`` (when
            updates ran; means over the gradient steps), ``charts/alpha``,
            ``replay/size``, ``charts/gradient_steps``, ``charts/policy_version``.
        """
        cfg = self.config
        self.inserted += store_fragment(self._writer_for(batch.source), self.replay, batch)
        self.env_steps += batch.num_steps * batch.num_envs
        metrics: dict[str, float] = {}
        if self.env_steps >= cfg.learning_starts and len(self.replay) >= cfg.batch_size:
            history: dict[str, list[float]] = {}
            for _ in range(cfg.gradient_steps):
                items, _indices, _weights = self.replay.sample(cfg.batch_size)
                sac_batch = SACBatch.from_items(items, self.actor)
                noise = torch.randn(2, cfg.batch_size, self.act_dim, generator=self.generator)
                for key, value in self.update(sac_batch, noise).items():
                    history.setdefault(key, []).append(value)
            metrics.update({key: float(np.mean(values)) for key, values in history.items()})
        self.version += 1
        metrics["charts/alpha"] = self.alpha
        metrics["replay/size"] = float(len(self.replay))
        metrics["replay/inserted"] = float(self.inserted)
        if self.inserted:
            # Sampled items per inserted item: fixed by gradient_steps per fragment.
            sampled = self.gradient_steps * self.config.batch_size
            metrics["replay/samples_per_insert"] = sampled / self.inserted
        metrics["charts/gradient_steps"] = float(self.gradient_steps)
        metrics["charts/policy_version"] = float(self.version)
        return metrics

    @torch.no_grad()
    def update(self, batch: SACBatch, noise: torch.Tensor) -> dict[str, float]:
        """One gradient step on ``batch`` (alpha, critics, actor, then Polyak).

        Args:
            batch: the minibatch.
            noise: ``[2, B, act_dim]`` standard-normal draws: ``noise[0]`` for the
                actions on ``obs``, ``noise[1]`` for ``a'`` on ``next_obs``.

        Returns:
            ``losses/actor``, ``losses/critic``, ``losses/alpha`` (learned alpha
            only), ``losses/entropy``, ``losses/q_mean``.
        """
        cfg = self.config
        actor, critic = self.actor, self.critic
        size = batch.obs.shape[0]
        bounds = (cfg.log_std_min, cfg.log_std_max)
        # One actor pass over [obs; next_obs]; the obs half's activations feed its backward.
        out, cache = actor.forward_cached(torch.cat([batch.obs, batch.next_obs]))
        cache_pi = [h[:, :size] for h in cache]
        pi = sample_squashed(out[:size], noise[0], bounds, actor.log_scale_sum)
        nxt = sample_squashed(out[size:], noise[1], bounds, actor.log_scale_sum)
        metrics: dict[str, float] = {}

        alpha = self.alpha  # before the alpha update, as SB3
        if cfg.ent_coef is None:
            loss, grad = alpha_loss_grad(
                float(self.log_alpha.detach()), pi.log_prob, self.target_entropy
            )
            assert self.log_alpha.grad is not None
            self.log_alpha.grad.fill_(grad)
            self.optimizers["alpha"].step()
            metrics["losses/alpha"] = loss

        next_q, _ = critic.forward_cached(batch.next_obs, nxt.action, target=True)
        targets = critic_targets(
            batch.rewards, batch.discounts, batch.terminated, next_q, nxt.log_prob, alpha
        )
        q, critic_cache = critic.forward_cached(batch.obs, batch.actions)
        metrics["losses/q_mean"] = float(q.mean())
        metrics["losses/critic"], grad_q = critic_loss_grad(q, targets)
        critic.backward(critic_cache, grad_q)
        if cfg.max_grad_norm is not None:
            clip_grad_norm(critic.flat, cfg.max_grad_norm)
        self.optimizers["critic"].step()

        # The actor's loss is taken against the critics just updated (SB3 order).
        q_pi, pi_cache = critic.forward_cached(batch.obs, pi.action)
        metrics["losses/actor"], grad_q_pi = actor_loss_grads(pi.log_prob, q_pi, alpha)
        grad_action = critic.action_grad(pi_cache, grad_q_pi)
        actor.backward(cache_pi, actor_output_grad(pi, grad_action, alpha))
        if cfg.max_grad_norm is not None:
            clip_grad_norm(actor.flat, cfg.max_grad_norm)
        self.optimizers["actor"].step()
        metrics["losses/entropy"] = -float(pi.log_prob.mean())

        self.gradient_steps += 1
        if self.gradient_steps % cfg.target_update_interval == 0:
            critic.update_target(cfg.tau)
        return metrics

    def _writer_for(self, source: int) -> Writer:
        if not 0 <= source < len(self.writers):
            raise ValueError(
                f"fragment from actor stream {source}, but this learner has "
                f"{len(self.writers)} n-step writer(s) (streams 0..{len(self.writers) - 1})"
            )
        return self.writers[source]

    def state_dict(self) -> dict[str, Any]:
        """Tensors (weights, target, log alpha, Adam moments, noise RNG) and JSON-able counters.

        Returns:
            ``{"tensors": {name: torch.Tensor}, "meta": {...}, "replay": ..., "writer": ...}``.
        """
        tensors: dict[str, torch.Tensor] = {
            "actor/flat": self.actor.flat.detach().clone(),
            "critic/flat": self.critic.flat.detach().clone(),
            "critic/target": self.critic.target.clone(),
            "log_alpha": self.log_alpha.detach().clone(),
            "rng/noise": self.generator.get_state(),
        }
        meta: dict[str, Any] = {
            "version": self.version,
            "env_steps": self.env_steps,
            "gradient_steps": self.gradient_steps,
            "inserted": self.inserted,
        }
        for name, optimizer in self.optimizers.items():
            opt = optimizer.state_dict()
            tensors[f"optim/{name}/exp_avg"] = opt["exp_avg"]
            tensors[f"optim/{name}/exp_avg_sq"] = opt["exp_avg_sq"]
            meta[f"optim/{name}/steps"] = opt["steps"]
            meta[f"optim/{name}/lr"] = opt["lr"]
        return {
            "tensors": tensors,
            "meta": meta,
            "replay": self.replay.state_dict(),
            "writer": [w.state_dict() for w in self.writers],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output exactly (the next updates are bit-identical)."""
        tensors, meta = state["tensors"], state["meta"]
        with torch.no_grad():
            self.actor.flat.copy_(tensors["actor/flat"])
            self.critic.flat.copy_(tensors["critic/flat"])
            self.critic.target.copy_(tensors["critic/target"])
            self.log_alpha.copy_(tensors["log_alpha"])
        self.generator.set_state(tensors["rng/noise"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(
                {
                    "exp_avg": tensors[f"optim/{name}/exp_avg"],
                    "exp_avg_sq": tensors[f"optim/{name}/exp_avg_sq"],
                    "steps": meta[f"optim/{name}/steps"],
                    "lr": meta[f"optim/{name}/lr"],
                }
            )
        self.version = int(meta["version"])
        self.env_steps = int(meta["env_steps"])
        self.gradient_steps = int(meta["gradient_steps"])
        self.inserted = int(meta.get("inserted", 0))
        self.replay.load_state_dict(state["replay"])
        writer_states = state["writer"]
        if isinstance(writer_states, Mapping):  # one stream (inline runs)
            writer_states = [writer_states]
        for writer, writer_state in zip(self.writers, writer_states, strict=False):
            writer.load_state_dict(writer_state)
