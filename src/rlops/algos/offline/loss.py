"""Offline objectives as pure functions of tensors: IPS/DR policy value and CQL(H).

The bandit objective is ``mean_i sum_a pi(a|x_i) * term_i(a)``: linear in the
policy, so one ``[n, K]`` matrix of per-action terms (computed once from the
log) defines it, and its gradient is the importance-weighted policy gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def importance_weights(propensities: torch.Tensor, max_weight: float | None) -> torch.Tensor:
    """``[n]`` ``1 / p``, clipped at ``max_weight`` when given (Ionides 2008)."""
    w = 1.0 / propensities
    return w if max_weight is None else w.clamp(max=max_weight)


def ips_terms(
    actions: torch.Tensor,
    rewards: torch.Tensor,
    propensities: torch.Tensor,
    n_actions: int,
    *,
    max_weight: float | None = None,
    baseline: float = 0.0,
) -> torch.Tensor:
    """``[n, K]`` IPS terms ``1[a = a_i] w_i (r_i - baseline)``.

    Args:
        actions: ``[n]`` int64 logged actions.
        rewards: ``[n]`` rewards.
        propensities: ``[n]`` behaviour probabilities of the logged actions.
        n_actions: ``K``.
        max_weight: clip ``w = 1/p`` at this value (None: unclipped).
        baseline: subtracted from every reward (BanditNet's translation).

    >>> ips_terms(torch.tensor([1, 0]), torch.tensor([2.0, 1.0]), torch.tensor([0.5, 0.25]), 2)
    tensor([[0., 4.],
            [4., 0.]])
    """
    w = importance_weights(propensities, max_weight)
    onehot = F.one_hot(actions, n_actions).to(rewards.dtype)
    return onehot * (w * (rewards - baseline)).unsqueeze(1)


def dr_terms(
    q_hat: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    propensities: torch.Tensor,
    *,
    max_weight: float | None = None,
) -> torch.Tensor:
    """``[n, K]`` doubly robust terms ``q(x_i, a) + 1[a = a_i] w_i (r_i - q(x_i, a_i))``.

    Dudik, Langford & Li 2011: unbiased when either the propensities or the
    reward model ``q`` are right, with the reward model as control variate.

    Args:
        q_hat: ``[n, K]`` reward-model predictions for every action.
        actions: ``[n]`` int64 logged actions.
        rewards: ``[n]`` rewards.
        propensities: ``[n]`` behaviour probabilities of the logged actions.
        max_weight: clip ``w = 1/p`` at this value (None: unclipped).

    >>> dr_terms(torch.tensor([[1.0, 2.0]]), torch.tensor([0]), torch.tensor([3.0]),
    ...          torch.tensor([0.5]))
    tensor([[5., 2.]])
    """
    w = importance_weights(propensities, max_weight)
    taken = q_hat.gather(1, actions.unsqueeze(1)).squeeze(1)
    onehot = F.one_hot(actions, q_hat.shape[1]).to(q_hat.dtype)
    return q_hat + onehot * (w * (rewards - taken)).unsqueeze(1)


@dataclass(frozen=True, slots=True)
class PolicyLoss:
    """Loss of one policy minibatch (minimise ``loss``) and its parts."""

    loss: torch.Tensor
    value: torch.Tensor
    """Estimated policy value on the minibatch, ``mean_i sum_a pi(a|x_i) term_i(a)``."""
    entropy: torch.Tensor
    """Mean entropy of the policy on the minibatch."""


def policy_value_loss(
    log_probs: torch.Tensor, terms: torch.Tensor, entropy_coef: float
) -> PolicyLoss:
    """``-(value + entropy_coef * entropy)`` of a softmax policy on logged terms.

    Args:
        log_probs: ``[B, K]`` policy log-probabilities (masked actions: a very
            negative but finite value, so ``0 * log 0`` is 0).
        terms: ``[B, K]`` IPS or DR terms.
        entropy_coef: weight of the entropy bonus.

    >>> lp = torch.log(torch.tensor([[0.5, 0.5]]))
    >>> out = policy_value_loss(lp, torch.tensor([[2.0, 0.0]]), 0.0)
    >>> float(out.value), round(float(out.entropy), 4)
    (1.0, 0.6931)
    """
    probs = log_probs.exp()
    value = (probs * terms).sum(dim=1).mean()
    entropy = -(probs * log_probs).sum(dim=1).mean()
    return PolicyLoss(loss=-(value + entropy_coef * entropy), value=value, entropy=entropy)


@dataclass(frozen=True, slots=True)
class CQLLoss:
    """Loss of one CQL minibatch and its two parts."""

    loss: torch.Tensor
    td: torch.Tensor
    """Mean TD loss (Huber or squared)."""
    conservative: torch.Tensor
    """Mean ``logsumexp_a Q(s, a) - Q(s, a_data)`` (>= 0 up to masking)."""


def cql_loss(
    q_all: torch.Tensor,
    actions: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    *,
    mask: torch.Tensor | None = None,
    huber: bool = True,
) -> CQLLoss:
    """CQL(H) for discrete actions (Kumar et al. 2020, eq. 4 with the entropy regulariser).

    ``td(Q(s, a), y) + alpha * (logsumexp_a Q(s, a) - Q(s, a_data))``: the
    logsumexp is a soft maximum over actions, so minimising the penalty lowers
    the Q-values of actions the log did not take relative to the ones it did.

    Args:
        q_all: ``[B, K]`` online Q-values of ``s``.
        actions: ``[B]`` int64 logged actions.
        targets: ``[B]`` TD targets (no gradient).
        alpha: weight of the conservative penalty.
        mask: ``[B, K]`` eligible actions at ``s`` (the soft maximum runs over them).
        huber: Huber (smooth L1, beta 1) TD loss, else squared error.

    >>> q = torch.tensor([[0.0, 0.0]])
    >>> out = cql_loss(q, torch.tensor([0]), torch.tensor([1.0]), 1.0, huber=False)
    >>> float(out.td), round(float(out.conservative), 4)
    (1.0, 0.6931)
    """
    q_taken = q_all.gather(1, actions.unsqueeze(1)).squeeze(1)
    if huber:
        td = F.smooth_l1_loss(q_taken, targets)
    else:
        td = F.mse_loss(q_taken, targets)
    q_soft = q_all if mask is None else q_all.masked_fill(~mask, float("-inf"))
    conservative = (torch.logsumexp(q_soft, dim=1) - q_taken).mean()
    return CQLLoss(loss=td + alpha * conservative, td=td, conservative=conservative)
