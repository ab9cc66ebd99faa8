"""The PPO learner: GAE on a fragment, then epochs of clipped-surrogate minibatch updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from rlops.algos.ppo.config import PPOConfig
from rlops.algos.ppo.loss import ppo_loss_grads
from rlops.algos.ppo.networks import ActorCritic
from rlops.algos.returns import gae
from rlops.artifacts import NetworkSpec
from rlops.core.batch import Rollout
from rlops.nets.optim import FlatAdam, clip_grad_norm


def _explained_variance(pred: np.ndarray, target: np.ndarray) -> float:
    var = float(np.var(target))
    return float("nan") if var == 0 else 1.0 - float(np.var(target - pred)) / var


class PPOLearner:
    """Consumes :class:`Rollout` fragments and updates an :class:`ActorCritic`.

    Args:
        config: PPO hyperparameters.
        spec: network shape.
        total_steps: training budget in env steps (drives linear schedules).
        seed: seeds parameter init and minibatch shuffling.

    >>> spec = NetworkSpec(obs_dim=4, act_dim=2, hidden_sizes=(64, 64),
    ...                    activation="tanh", head="categorical")
    >>> learner = PPOLearner(PPOConfig(), spec, total_steps=10_000, seed=0)
    >>> version, weights = learner.get_variables()
    """

    def __init__(self, config: PPOConfig, spec: NetworkSpec, total_steps: int, seed: int) -> None:
        self.config = config
        self.spec = spec
        self.total_steps = total_steps
        torch.manual_seed(seed)
        self.net = ActorCritic(spec, config)
        self.optimizer = FlatAdam(self.net.flat, lr=config.lr, eps=config.adam_eps)
        self.generator = torch.Generator().manual_seed(seed)
        self.version = 0
        self.env_steps = 0

    def _schedule(self, initial: float, kind: str) -> float:
        # SB3's convention: progress is measured after the fragment was collected.
        remaining = max(0.0, 1.0 - self.env_steps / self.total_steps)
        return initial * remaining if kind == "linear" else initial

    def get_variables(self) -> tuple[int, dict[str, np.ndarray]]:
        """Return ``(version, weights)``; the version increases by one per update."""
        return self.version, self.net.numpy_tensors()

    @torch.no_grad()
    def step(self, batch: Rollout) -> dict[str, float]:
        """Run ``n_epochs`` of minibatch updates on one fragment.

        Args:
            batch: a fragment with ``T * N`` transitions.

        Returns:
            Metrics: ``losses/policy``, ``losses/value``, ``losses/entropy``,
            ``losses/approx_kl``, ``losses/clip_fraction``,
            ``losses/explained_variance``, ``losses/grad_norm``, ``charts/lr``,
            ``charts/clip_coef``, ``charts/policy_version``.
        """
        cfg = self.config
        self.env_steps += batch.num_steps * batch.num_envs
        lr = self._schedule(cfg.lr, cfg.lr_schedule)
        clip = self._schedule(cfg.clip_coef, cfg.clip_schedule)
        self.optimizer.lr = lr

        advantages, returns = gae(
            batch.rewards,
            batch.values,
            batch.dones,
            batch.last_values,
            cfg.gamma,
            cfg.gae_lambda,
        )
        size = batch.num_steps * batch.num_envs
        obs = torch.from_numpy(batch.observations.reshape(size, -1).astype(np.float32))
        act_np = batch.actions.reshape(size, *batch.actions.shape[2:])
        actions = torch.from_numpy(act_np)
        if self.net.discrete:
            actions = actions.long()
        old_logp = torch.from_numpy(batch.log_probs.reshape(size).astype(np.float32))
        old_values = torch.from_numpy(batch.values.reshape(size).astype(np.float32))
        adv_all = torch.from_numpy(advantages.reshape(size))
        ret_all = torch.from_numpy(returns.reshape(size))
        mb = min(cfg.minibatch_size, size)
        normalize = cfg.norm_adv and mb > 1
        if normalize and mb == size:
            # One minibatch = the whole batch: normalise once, not once per epoch.
            adv_all = (adv_all - adv_all.mean()) / (adv_all.std() + 1e-8)
            normalize = False

        # Approx KL and clip fraction are measured on the last epoch only (every
        # epoch when target_kl needs them); the gradients are hand-derived
        # (ppo_loss_grads + ActorCritic.backward), checked against autograd in tests.
        stats: list[torch.Tensor] = []
        grad_norms: list[float] = []
        for epoch in range(cfg.n_epochs):
            measure = epoch == cfg.n_epochs - 1 or cfg.target_kl is not None
            # One minibatch = the whole batch: order is irrelevant, skip the shuffle.
            perm = None if mb == size else torch.randperm(size, generator=self.generator)
            for start in range(0, size - mb + 1, mb):
                if perm is None:
                    o, a, olp, ov, adv, ret = obs, actions, old_logp, old_values, adv_all, ret_all
                else:
                    idx = perm[start : start + mb]
                    o, a, olp, ov = obs[idx], actions[idx], old_logp[idx], old_values[idx]
                    adv, ret = adv_all[idx], ret_all[idx]
                if normalize:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                policy_out, values, cache = self.net.forward_cached(o)
                grads = ppo_loss_grads(
                    policy_out=policy_out,
                    values=values,
                    actions=a,
                    log_std=None if self.net.discrete else self.net.log_std,
                    old_logp=olp,
                    advantages=adv,
                    old_values=ov,
                    returns=ret,
                    clip_coef=clip,
                    clip_vf=cfg.clip_vf,
                    ent_coef=cfg.ent_coef,
                    vf_coef=cfg.vf_coef,
                    with_stats=measure,
                )
                loss = grads.loss
                self.net.backward(cache, grads.policy_out, grads.values, grads.log_std)
                grad_norms.append(clip_grad_norm(self.net.flat, cfg.max_grad_norm))

                self.optimizer.step()
                if measure:
                    stats.append(
                        torch.stack(
                            [
                                loss.policy,
                                loss.value,
                                loss.entropy,
                                loss.approx_kl,
                                loss.clip_fraction,
                            ]
                        )
                    )
                    if cfg.target_kl is not None and float(loss.approx_kl) > cfg.target_kl:
                        break
            else:
                continue
            break
        self.version += 1
        mean = torch.stack(stats).mean(0).tolist()
        return {
            "losses/policy": mean[0],
            "losses/value": mean[1],
            "losses/entropy": mean[2],
            "losses/approx_kl": mean[3],
            "losses/clip_fraction": mean[4],
            "losses/grad_norm": float(np.mean(grad_norms)),
            "losses/explained_variance": _explained_variance(
                batch.values.reshape(-1), returns.reshape(-1)
            ),
            "charts/lr": lr,
            "charts/clip_coef": clip,
            "charts/policy_version": float(self.version),
        }

    # -- checkpointing: tensors go to safetensors, the rest to JSON ---------------
    def state_dict(self) -> dict[str, Any]:
        """Return ``{"tensors": {name: Tensor}, "meta": JSON-able}`` for a checkpoint."""
        opt = self.optimizer.state_dict()
        tensors: dict[str, torch.Tensor] = {
            "net/flat": self.net.flat.detach().clone(),
            "optim/exp_avg": opt["exp_avg"],
            "optim/exp_avg_sq": opt["exp_avg_sq"],
            "rng/torch_generator": self.generator.get_state(),
        }
        meta = {
            "version": self.version,
            "env_steps": self.env_steps,
            "optim_steps": opt["steps"],
            "lr": opt["lr"],
        }
        return {"tensors": tensors, "meta": meta}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output exactly."""
        tensors: Mapping[str, torch.Tensor] = state["tensors"]
        meta = state["meta"]
        with torch.no_grad():
            self.net.flat.copy_(tensors["net/flat"])
        self.optimizer.load_state_dict(
            {
                "exp_avg": tensors["optim/exp_avg"],
                "exp_avg_sq": tensors["optim/exp_avg_sq"],
                "steps": meta["optim_steps"],
                "lr": meta["lr"],
            }
        )
        self.generator.set_state(tensors["rng/torch_generator"])
        self.version = int(meta["version"])
        self.env_steps = int(meta["env_steps"])
