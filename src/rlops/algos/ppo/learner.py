"""The PPO learner: GAE on a fragment, then epochs of clipped-surrogate minibatch updates.

A stale fragment (collected by an older policy, as in asynchronous runs) is
first corrected with V-trace (Espeholt et al. 2018) to the policy the update
starts from; see :meth:`PPOLearner.step`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from rlops.algos.ppo.config import PPOConfig
from rlops.algos.ppo.loss import ppo_loss_grads
from rlops.algos.ppo.networks import ActorCritic
from rlops.algos.returns import gae, vtrace
from rlops.artifacts import NetworkSpec
from rlops.core.batch import Rollout
from rlops.nets.optim import FlatAdam, clip_grad_norm


def _explained_variance(pred: np.ndarray, target: np.ndarray) -> float:
    var = float(np.var(target))
    return float("nan") if var == 0 else 1.0 - float(np.var(target - pred)) / var


MASKED = -1e9
"""Logit offset of ineligible actions (``exp`` underflows to exactly 0 in float32)."""


class _Targets(NamedTuple):
    """What one update learns from, flattened to ``[T * N]``."""

    advantages: torch.Tensor
    """Policy-gradient advantages (before normalisation)."""
    returns: torch.Tensor
    """Value-function targets."""
    old_logp: torch.Tensor
    """Log-probs the clipped ratio is taken against."""
    old_values: torch.Tensor
    """Values the value clipping (``clip_vf``) is centred on."""
    value_pred: np.ndarray
    """``[T, N]`` values scored against ``returns`` by the explained variance."""


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

        A fresh fragment (``batch.policy_version == version``) gets GAE
        advantages and returns. A stale one (older ``policy_version``) with
        ``off_policy_correction="vtrace"`` gets V-trace targets instead
        (:meth:`_vtrace_targets`); with ``"none"`` it is used as if fresh.

        Args:
            batch: a fragment with ``T * N`` transitions.

        Returns:
            Metrics: ``losses/policy``, ``losses/value``, ``losses/entropy``,
            ``losses/approx_kl``, ``losses/clip_fraction``,
            ``losses/explained_variance``, ``losses/grad_norm``, ``charts/lr``,
            ``charts/clip_coef``, ``charts/policy_version``,
            ``charts/fragment_lag`` (``version - batch.policy_version``), and
            when V-trace ran ``losses/vtrace_rho_mean`` and
            ``losses/vtrace_rho_clipped_frac`` (importance weights
            ``pi / mu`` and the fraction above ``vtrace_rho_bar``).
        """
        cfg = self.config
        self.env_steps += batch.num_steps * batch.num_envs
        lr = self._schedule(cfg.lr, cfg.lr_schedule)
        clip = self._schedule(cfg.clip_coef, cfg.clip_schedule)
        self.optimizer.lr = lr

        size = batch.num_steps * batch.num_envs
        obs = torch.from_numpy(batch.observations.reshape(size, -1).astype(np.float32))
        act_np = batch.actions.reshape(size, *batch.actions.shape[2:])
        actions = torch.from_numpy(act_np)
        if self.net.discrete:
            actions = actions.long()
        mask_bias = None
        if batch.action_masks is not None and self.net.discrete:
            # Ineligible actions: logits + MASKED (finite, so 0 * log p stays 0);
            # adding a constant leaves d loss / d logits unchanged.
            eligible = batch.action_masks.reshape(size, -1)
            mask_bias = torch.from_numpy(np.where(eligible, 0.0, MASKED).astype(np.float32))
        lag = self.version - batch.policy_version
        extra: dict[str, float] = {"charts/fragment_lag": float(lag)}
        if lag > 0 and cfg.off_policy_correction == "vtrace":
            targets, rho_metrics = self._vtrace_targets(batch, obs, actions, mask_bias)
            extra.update(rho_metrics)
        else:
            advantages, returns = gae(
                batch.rewards,
                batch.values,
                batch.dones,
                batch.last_values,
                cfg.gamma,
                cfg.gae_lambda,
            )
            targets = _Targets(
                advantages=torch.from_numpy(advantages.reshape(size)),
                returns=torch.from_numpy(returns.reshape(size)),
                old_logp=torch.from_numpy(batch.log_probs.reshape(size).astype(np.float32)),
                old_values=torch.from_numpy(batch.values.reshape(size).astype(np.float32)),
                value_pred=batch.values,
            )
        old_logp, old_values = targets.old_logp, targets.old_values
        adv_all, ret_all = targets.advantages, targets.returns
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
                mbias = mask_bias
                if perm is None:
                    o, a, olp, ov, adv, ret = obs, actions, old_logp, old_values, adv_all, ret_all
                else:
                    idx = perm[start : start + mb]
                    o, a, olp, ov = obs[idx], actions[idx], old_logp[idx], old_values[idx]
                    adv, ret = adv_all[idx], ret_all[idx]
                    mbias = None if mask_bias is None else mask_bias[idx]
                if normalize:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                policy_out, values, cache = self.net.forward_cached(o)
                if mbias is not None:
                    policy_out = policy_out + mbias
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
                targets.value_pred.reshape(-1), targets.returns.numpy()
            ),
            "charts/lr": lr,
            "charts/clip_coef": clip,
            "charts/policy_version": float(self.version),
            **extra,
        }

    def _vtrace_targets(
        self,
        batch: Rollout,
        obs: torch.Tensor,
        actions: torch.Tensor,
        mask_bias: torch.Tensor | None = None,
    ) -> tuple[_Targets, dict[str, float]]:
        """V-trace targets of the current policy ``pi`` from a fragment of an older ``mu``.

        The update is split in two, as in IMPACT (Luo et al. 2020, with the
        policy at the start of the update as its target network) and RLlib's
        APPO: V-trace corrects from the behaviour ``mu`` to the policy ``pi``
        this update starts from (``vs`` as value targets, ``pg_advantages``,
        which carry the clipped weight ``min(rho_bar, pi/mu)``, as advantages),
        and the clipped surrogate takes its ratio against ``pi``
        (``old_logp = log pi``), so PPO's trust region is around ``pi``, not
        around the stale ``mu``. The trace lambda is ``gae_lambda``, so on
        fresh data ``vs`` would be GAE's returns (``pg_advantages`` equals
        GAE's advantages only at lambda 1: it is ``r + gamma * vs' - V``, eq. 4).

        Args:
            batch: the stale fragment.
            obs: ``[T * N, obs_dim]`` its observations.
            actions: ``[T * N]`` or ``[T * N, act_dim]`` its actions.

        Returns:
            ``(targets, metrics)`` with ``losses/vtrace_rho_mean`` and
            ``losses/vtrace_rho_clipped_frac``.
        """
        cfg = self.config
        t, n = batch.num_steps, batch.num_envs
        logp_pi, _, values_pi = self.net.evaluate(
            obs, actions, with_entropy=False, mask_bias=mask_bias
        )
        if batch.last_observations is not None:
            last_obs = batch.last_observations.reshape(n, -1).astype(np.float32)
            last_values = self.net(torch.from_numpy(last_obs))[1].numpy()
        else:
            # No final observation: bootstrap from the behaviour critic's estimate
            # (it enters through the TD error of step T - 1, unless that step ended
            # an episode, and reaches back only to the env's last episode end).
            last_values = batch.last_values
        values = values_pi.numpy().reshape(t, n)
        log_rhos = logp_pi.numpy().reshape(t, n).astype(np.float64) - batch.log_probs
        vs, pg_advantages = vtrace(
            log_rhos,
            batch.rewards,
            values,
            batch.dones,
            last_values,
            cfg.gamma,
            lam=cfg.gae_lambda,
            rho_bar=cfg.vtrace_rho_bar,
            c_bar=cfg.vtrace_c_bar,
        )
        rhos = np.exp(log_rhos)
        targets = _Targets(
            advantages=torch.from_numpy(pg_advantages.reshape(t * n)),
            returns=torch.from_numpy(vs.reshape(t * n)),
            old_logp=logp_pi.float(),
            # Clip value updates around the critic this update starts from.
            old_values=values_pi.float(),
            value_pred=values,
        )
        metrics = {
            "losses/vtrace_rho_mean": float(rhos.mean()),
            "losses/vtrace_rho_clipped_frac": float((rhos > cfg.vtrace_rho_bar).mean()),
        }
        return targets, metrics

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
