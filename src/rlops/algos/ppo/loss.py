"""The PPO clipped surrogate objective as a pure function of tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class PPOLoss:
    """Loss terms of one minibatch (tensors; ``total`` carries gradients)."""

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def ppo_loss(
    *,
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor | None,
    clip_coef: float,
    clip_vf: float | None,
    ent_coef: float,
    vf_coef: float,
    with_stats: bool = True,
) -> PPOLoss:
    """Clipped surrogate + value + entropy loss (Schulman et al. 2017, eq. 7 and 9).

    Args:
        new_logp: ``[B]`` log-probs of the taken actions under the current policy.
        old_logp: ``[B]`` log-probs under the policy that acted.
        advantages: ``[B]`` advantages (already normalised if configured).
        new_values: ``[B]`` current value predictions.
        old_values: ``[B]`` value predictions at collection time.
        returns: ``[B]`` value targets.
        entropy: ``[B]`` policy entropy, or None when ``ent_coef`` is 0.
        clip_coef: ratio clip epsilon.
        clip_vf: clip value updates to ``old_values +- clip_vf``; None disables.
        ent_coef: entropy bonus weight.
        vf_coef: value loss weight.
        with_stats: compute ``approx_kl`` and ``clip_fraction`` (NaN otherwise).

    Returns:
        A :class:`PPOLoss`; ``approx_kl`` is the low-variance estimator
        ``E[(r - 1) - log r]`` (Schulman, "Approximating KL divergence", 2020).
    """
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    surrogate = torch.min(
        advantages * ratio, advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    )
    policy_loss = -surrogate.mean()
    if clip_vf is None:
        value_loss = (returns - new_values).pow(2).mean()
    else:
        clipped = old_values + (new_values - old_values).clamp(-clip_vf, clip_vf)
        value_loss = torch.max((returns - new_values).pow(2), (returns - clipped).pow(2)).mean()
    total = policy_loss + vf_coef * value_loss
    entropy_mean = torch.full((), float("nan"))
    if entropy is not None:
        entropy_mean = entropy.mean()
        total = total - ent_coef * entropy_mean
    approx_kl = clip_fraction = torch.full((), float("nan"))
    if with_stats:
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()
            clip_fraction = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return PPOLoss(total, policy_loss, value_loss, entropy_mean, approx_kl, clip_fraction)


@dataclass(frozen=True, slots=True)
class PPOGrads:
    """Loss terms of one minibatch and the loss gradient w.r.t. the network outputs."""

    loss: PPOLoss
    policy_out: torch.Tensor
    """``[B, act_dim]``: d loss / d logits (categorical) or d loss / d mean (Gaussian)."""
    values: torch.Tensor
    """``[B]``: d loss / d value."""
    log_std: torch.Tensor | None
    """``[act_dim]``: d loss / d log_std (Gaussian), else None."""


def ppo_loss_grads(
    *,
    policy_out: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    log_std: torch.Tensor | None,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_coef: float,
    clip_vf: float | None,
    ent_coef: float,
    vf_coef: float,
    with_stats: bool = True,
) -> PPOGrads:
    """The loss of :func:`ppo_loss` and its analytic gradient w.r.t. the network outputs.

    Same objective as :func:`ppo_loss` (the autograd reference; a test checks
    they agree), written out so the update needs no autograd graph (call it
    under ``torch.no_grad()``):

    * clipped surrogate: ``d/d logp = -A r / B`` where the unclipped branch is the
      minimum (or the ratio is inside the clip range), else 0;
    * categorical: ``d logp_a / d logits = onehot(a) - softmax(logits)``,
      ``d H / d logits = -p (log p + H)``;
    * Gaussian: ``d logp / d mean = z / sigma``, ``d logp / d log_std = z^2 - 1``,
      ``d H / d log_std = 1``.

    Args:
        policy_out: ``[B, act_dim]`` logits or Gaussian means.
        values: ``[B]`` value predictions.
        actions: ``[B]`` int64 or ``[B, act_dim]`` float actions.
        log_std: ``[act_dim]`` Gaussian log-std, None for categorical.
        old_logp: ``[B]`` acting log-probs.
        advantages: ``[B]`` advantages (normalised if configured).
        old_values: ``[B]`` values at collection time.
        returns: ``[B]`` value targets.
        clip_coef: ratio clip epsilon.
        clip_vf: value clip range or None.
        ent_coef: entropy bonus weight.
        vf_coef: value loss weight.
        with_stats: compute approx KL and clip fraction.

    Returns:
        :class:`PPOGrads`.
    """
    batch = values.shape[0]
    need_entropy = with_stats or ent_coef > 0
    entropy: torch.Tensor | None = None
    if log_std is None:
        logp_all = torch.log_softmax(policy_out, dim=-1)
        probs = logp_all.exp()
        index = actions.unsqueeze(-1)
        logp = logp_all.gather(1, index).squeeze(-1)
        if need_entropy:
            entropy = -(probs * logp_all).sum(-1)
    else:
        std = log_std.exp()
        z = (actions - policy_out) / std
        logp = (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * _LOG_2PI * log_std.shape[0]
        entropy = (0.5 + 0.5 * _LOG_2PI + log_std).sum().expand(batch)

    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = advantages * ratio
    clipped = advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    policy_loss = -torch.min(unclipped, clipped).mean()
    # The gradient flows through the unclipped branch where it is the minimum;
    # inside the clip range both branches are equal and the gradient is the same.
    g_logp = (unclipped <= clipped) * unclipped * (-1.0 / batch)

    diff = values - returns
    if clip_vf is None:
        value_loss = diff.pow(2).mean()
        g_values = (2.0 * vf_coef / batch) * diff
    else:
        delta = values - old_values
        v_clipped = old_values + delta.clamp(-clip_vf, clip_vf)
        l_unclipped = diff.pow(2)
        l_clipped = (v_clipped - returns).pow(2)
        value_loss = torch.max(l_unclipped, l_clipped).mean()
        through_clipped = (l_clipped > l_unclipped) & (delta.abs() <= clip_vf)
        g_values = torch.where(
            l_clipped > l_unclipped,
            torch.where(through_clipped, 2.0 * (v_clipped - returns), 0.0),
            2.0 * diff,
        ) * (vf_coef / batch)

    total = policy_loss + vf_coef * value_loss
    entropy_mean = torch.full((), float("nan"))
    if entropy is not None:
        entropy_mean = entropy.mean()
        total = total - ent_coef * entropy_mean
    g_log_std: torch.Tensor | None = None
    if log_std is None:
        # d logp_a / d logits = onehot(a) - probs
        g_col = g_logp.unsqueeze(-1)
        g_out = (-g_col * probs).scatter_add_(1, index, g_col)
        if ent_coef > 0:
            assert entropy is not None
            g_out += (ent_coef / batch) * probs * (logp_all + entropy.unsqueeze(-1))
    else:
        g_out = g_logp.unsqueeze(-1) * z / std
        g_log_std = (g_logp.unsqueeze(-1) * (z.pow(2) - 1.0)).sum(0) - ent_coef

    approx_kl = clip_fraction = torch.full((), float("nan"))
    if with_stats:
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > clip_coef).float().mean()
    loss = PPOLoss(total, policy_loss, value_loss, entropy_mean, approx_kl, clip_fraction)
    return PPOGrads(loss, g_out, g_values, g_log_std)
