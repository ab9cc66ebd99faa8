"""TD targets and the TD loss with its gradient, as pure functions of tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def td_targets(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None,
) -> torch.Tensor:
    """``y = r + discount * (1 - terminated) * Q_target(s', a*)``.

    Args:
        rewards: ``[B]`` (n-step) rewards.
        discounts: ``[B]`` ``gamma ** m`` for an m-step transition.
        terminated: ``[B]`` true where the episode terminated within the window
            (truncation keeps the bootstrap: Pardo et al. 2018).
        next_q_target: ``[B, n]`` target-network Q-values of ``s'``.
        next_q_online: ``[B, n]`` online Q-values of ``s'`` for double DQN
            (``a* = argmax`` online, valued by the target net; van Hasselt et
            al. 2016), or None for ``a* = argmax`` of the target net.

    Returns:
        ``[B]`` targets.

    >>> td_targets(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([False]),
    ...            torch.tensor([[2.0, 4.0]]), torch.tensor([[3.0, 1.0]]))
    tensor([2.])
    """
    if next_q_online is None:
        bootstrap = next_q_target.max(dim=1).values
    else:
        best = next_q_online.argmax(dim=1, keepdim=True)
        bootstrap = next_q_target.gather(1, best).squeeze(1)
    return rewards + discounts * (~terminated) * bootstrap


@dataclass(frozen=True, slots=True)
class TDLoss:
    """Loss of one minibatch and its gradient w.r.t. the taken-action Q-values."""

    loss: torch.Tensor
    td_errors: torch.Tensor
    """``[B]`` ``Q(s, a) - y`` (for priorities)."""
    grad_q_taken: torch.Tensor
    """``[B]`` d loss / d Q(s, a)."""


def td_loss_grads(
    q_taken: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, huber: bool
) -> TDLoss:
    """Mean (importance-weighted) Huber or squared TD loss and its gradient.

    Huber is PyTorch's ``smooth_l1_loss`` with ``beta = 1`` (gradient
    ``clip(delta, -1, 1)``); squared error is ``delta ** 2`` (gradient ``2 delta``).

    Args:
        q_taken: ``[B]`` Q-values of the taken actions.
        targets: ``[B]`` TD targets (no gradient).
        weights: ``[B]`` importance weights (PER) or None.
        huber: Huber instead of squared error.

    Returns:
        A :class:`TDLoss`.
    """
    delta = q_taken - targets
    batch = delta.shape[0]
    if huber:
        abs_delta = delta.abs()
        per_item = torch.where(abs_delta < 1.0, 0.5 * delta * delta, abs_delta - 0.5)
        grad = delta.clamp(-1.0, 1.0)
    else:
        per_item = delta * delta
        grad = 2.0 * delta
    if weights is not None:
        per_item = per_item * weights
        grad = grad * weights
    return TDLoss(per_item.mean(), delta, grad / batch)
