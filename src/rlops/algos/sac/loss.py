"""SAC's losses: the autograd reference and the hand-derived gradients the learner uses.

Notation (Haarnoja et al. 2018; update order and loss scaling of SB3's ``SAC``):
``out = actor(s) = [mean | log_std_raw]``, ``log_std = clamp(log_std_raw, lo, hi)``,
``u = mean + exp(log_std) * eps`` (reparameterisation, ``eps ~ N(0, I)``),
``a = tanh(u)`` in ``[-1, 1]`` (what the critics read), env action
``a * scale + bias``, and

* ``log pi(a|s) = log N(u; mean, std) - sum log|d tanh(u)/du| - sum log(scale)``,
  with the squash term in the numerically stable form
  ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (that of
  ``torch.distributions.TanhTransform``; SB3 uses ``log(1 - tanh(u)^2 + 1e-6)``,
  which agrees except where ``|u|`` is large enough for the 1e-6 to matter);
* critic target ``y = r + discount (1 - terminated) (min_k Q'_k(s', a') - alpha log pi(a'|s'))``
  with ``a' ~ pi(s')`` and the target critics ``Q'``;
* critic loss ``0.5 sum_k mean((Q_k(s, a) - y)^2)``;
* actor loss ``mean(alpha log pi(a|s) - min_k Q_k(s, a))`` with ``a ~ pi(s)``
  reparameterised;
* alpha loss ``-mean(log_alpha (log pi(a|s) + target_entropy))``, the log-prob
  detached (SB3; softlearning issue 60).

:func:`sac_losses` computes all three with autograd through
:meth:`StackedMLP.forward <rlops.nets.StackedMLP.forward>`: it is the readable
reference. The learner instead calls :func:`sample_squashed`,
:func:`alpha_loss_grad`, :func:`critic_loss_grad`, :func:`actor_loss_grads` and
:func:`actor_output_grad`, which write the same gradients out by hand
(``tests/test_sac.py`` checks they agree).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rlops.algos.sac.networks import SquashedGaussianActor, TwinCritic

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


@dataclass(frozen=True, slots=True)
class SACBatch:
    """A replayed minibatch as tensors, actions normalised to ``[-1, 1]``.

    Attributes:
        obs: ``[B, obs_dim]`` observations.
        actions: ``[B, act_dim]`` the taken actions, mapped to ``[-1, 1]``.
        rewards: ``[B]`` (n-step) rewards.
        next_obs: ``[B, obs_dim]`` the observation to bootstrap from.
        terminated: ``[B]`` bool, true where the episode terminated within the
            window (truncation keeps the bootstrap: Pardo et al. 2018).
        discounts: ``[B]`` ``gamma ** m`` for an m-step transition.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    discounts: torch.Tensor

    @staticmethod
    def from_items(items: Mapping[str, np.ndarray], actor: SquashedGaussianActor) -> SACBatch:
        """Build from replay items (fields ``obs, action, reward, next_obs, terminated, discount``).

        Args:
            items: numpy arrays as :meth:`Replay.sample <rlops.algos.dqn.learner.Replay>`
                returns them; ``action`` in env units.
            actor: supplies the action bounds used to normalise ``action``.

        Returns:
            The batch as float32 (bool ``terminated``) tensors.
        """

        def f32(name: str) -> torch.Tensor:
            return torch.from_numpy(np.asarray(items[name], dtype=np.float32))

        actions = f32("action").reshape(-1, actor.act_dim)
        return SACBatch(
            obs=f32("obs"),
            actions=actor.normalise(actions),
            rewards=f32("reward"),
            next_obs=f32("next_obs"),
            terminated=torch.from_numpy(np.asarray(items["terminated"], dtype=bool)),
            discounts=f32("discount"),
        )


def tanh_gaussian_log_prob(
    mean: torch.Tensor, log_std: torch.Tensor, pre_tanh: torch.Tensor, log_scale_sum: float
) -> torch.Tensor:
    """``[B]`` log-density of ``tanh(pre_tanh) * scale + bias`` when ``pre_tanh ~ N(mean, std)``.

    Args:
        mean: ``[B, A]`` Gaussian mean.
        log_std: ``[B, A]`` Gaussian log standard deviation (already clamped).
        pre_tanh: ``[B, A]`` the Gaussian sample ``u`` before the squash.
        log_scale_sum: ``sum(log(action_scale))`` (0 for actions in ``[-1, 1]``).

    Returns:
        ``[B]`` log-probabilities (differentiable).

    >>> z = torch.zeros(1, 1)
    >>> round(float(tanh_gaussian_log_prob(z, z, z, 0.0)[0]), 4)  # N(0; 0, 1), slope 1 at 0
    -0.9189
    """
    z = (pre_tanh - mean) / log_std.exp()
    gaussian = (-0.5 * z * z - log_std).sum(-1) - 0.5 * _LOG_2PI * mean.shape[-1]
    return gaussian - squash_log_det(pre_tanh).sum(-1) - log_scale_sum


def squash_log_det(pre_tanh: torch.Tensor) -> torch.Tensor:
    """Elementwise ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (stable form).

    Its derivative is ``-2 tanh(u)``.
    """
    return 2.0 * (_LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))


@dataclass(frozen=True, slots=True)
class SquashedSample:
    """A reparameterised action sample and what its gradient needs.

    Attributes:
        action: ``[B, A]`` ``tanh(u)`` in ``[-1, 1]``.
        log_prob: ``[B]`` ``log pi`` of the env-scale action.
        std: ``[B, A]`` ``exp(log_std)``.
        noise: ``[B, A]`` the standard-normal ``eps``.
        log_std_open: ``[B, A]`` true where the log-std clamp passes the gradient
            (``lo <= log_std_raw <= hi``, inclusive as ``torch.clamp``).
    """

    action: torch.Tensor
    log_prob: torch.Tensor
    std: torch.Tensor
    noise: torch.Tensor
    log_std_open: torch.Tensor


def sample_squashed(
    out: torch.Tensor,
    noise: torch.Tensor,
    log_std_bounds: tuple[float, float],
    log_scale_sum: float,
) -> SquashedSample:
    """Sample ``a = tanh(mean + std * eps)`` and its log-prob from the actor's raw output.

    With ``u - mean = std * eps``, ``log N(u; mean, std) = -eps^2 / 2 - log_std - log(2 pi) / 2``
    per dimension, which is what this computes (no division by ``std``).

    Args:
        out: ``[B, 2A]`` raw actor output ``[mean | log_std_raw]``.
        noise: ``[B, A]`` standard-normal ``eps``.
        log_std_bounds: ``(lo, hi)`` clamp of the log-std.
        log_scale_sum: ``sum(log(action_scale))``.

    Returns:
        A :class:`SquashedSample`.
    """
    act_dim = noise.shape[-1]
    mean, raw = out[:, :act_dim], out[:, act_dim:]
    lo, hi = log_std_bounds
    log_std = raw.clamp(lo, hi)
    std = log_std.exp()
    pre_tanh = torch.addcmul(mean, std, noise)
    log_prob = (
        (-0.5 * noise * noise - log_std - squash_log_det(pre_tanh)).sum(-1)
        - 0.5 * _LOG_2PI * act_dim
        - log_scale_sum
    )
    return SquashedSample(
        action=torch.tanh(pre_tanh),
        log_prob=log_prob,
        std=std,
        noise=noise,
        log_std_open=(raw >= lo) & (raw <= hi),
    )


def critic_targets(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """Soft TD targets ``y = r + discount (1 - terminated) (min_k Q'_k - alpha log pi')``.

    Args:
        rewards: ``[B]`` (n-step) rewards.
        discounts: ``[B]`` ``gamma ** m`` for an m-step transition.
        terminated: ``[B]`` bool; true = no bootstrap (truncation bootstraps:
            Pardo et al. 2018).
        next_q_target: ``[K, B]`` target critics' Q-values of ``(s', a')``.
        next_log_prob: ``[B]`` ``log pi(a'|s')``.
        alpha: entropy coefficient.

    Returns:
        ``[B]`` targets.

    >>> critic_targets(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([False]),
    ...                torch.tensor([[4.0], [6.0]]), torch.tensor([-2.0]), 0.5)
    tensor([3.5000])
    """
    soft_value = next_q_target.min(dim=0).values - alpha * next_log_prob
    return rewards + discounts * (~terminated) * soft_value


@dataclass(frozen=True, slots=True)
class SACLosses:
    """The three SAC losses at one parameter point (autograd reference)."""

    actor: torch.Tensor
    """Scalar, differentiable w.r.t. the actor (and, unused, the critics)."""
    critic: torch.Tensor
    """Scalar, differentiable w.r.t. the critics."""
    alpha: torch.Tensor
    """Scalar, differentiable w.r.t. ``log_alpha``."""
    log_prob: torch.Tensor
    """``[B]`` ``log pi(a|s)`` of the reparameterised actions on ``obs``."""


def sac_losses(
    actor: SquashedGaussianActor,
    critic: TwinCritic,
    log_alpha: torch.Tensor,
    batch: SACBatch,
    noise: torch.Tensor,
    target_entropy: float,
) -> SACLosses:
    """The SAC losses with autograd (the reference the hand-derived gradients are tested on).

    Alpha in the critic target and the actor loss is ``exp(log_alpha)``
    detached, the value before this step's alpha update (SB3).

    Args:
        actor: the policy.
        critic: the twin critics (online for ``Q``, target for ``Q'``).
        log_alpha: ``[1]`` log entropy coefficient (may require grad).
        batch: the minibatch.
        noise: ``[2, B, A]`` standard-normal draws: ``noise[0]`` for actions on
            ``obs``, ``noise[1]`` for ``a'`` on ``next_obs``.
        target_entropy: the alpha loss's entropy target.

    Returns:
        :class:`SACLosses`.

    >>> actor = SquashedGaussianActor(3, 1, (8,), "relu", [-2.0], [2.0], (-20.0, 2.0))
    >>> critic = TwinCritic(3, 1, (8,), "relu")
    >>> b = SACBatch(obs=torch.zeros(4, 3), actions=torch.zeros(4, 1), rewards=torch.ones(4),
    ...              next_obs=torch.zeros(4, 3), terminated=torch.zeros(4, dtype=torch.bool),
    ...              discounts=torch.full((4,), 0.99))
    >>> losses = sac_losses(actor, critic, torch.zeros(1), b, torch.randn(2, 4, 1), -1.0)
    >>> losses.critic.shape
    torch.Size([])
    """
    alpha = float(log_alpha.detach().exp())
    lo, hi = actor.log_std_min, actor.log_std_max
    act_dim = actor.act_dim

    def sample(obs: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = actor(obs)
        mean, log_std = out[:, :act_dim], out[:, act_dim:].clamp(lo, hi)
        pre_tanh = mean + log_std.exp() * eps
        return torch.tanh(pre_tanh), tanh_gaussian_log_prob(
            mean, log_std, pre_tanh, actor.log_scale_sum
        )

    action, log_prob = sample(batch.obs, noise[0])
    alpha_loss = -(log_alpha * (log_prob.detach() + target_entropy)).mean()
    with torch.no_grad():
        next_action, next_log_prob = sample(batch.next_obs, noise[1])
        next_q, _ = critic.forward_cached(batch.next_obs, next_action, target=True)
        targets = critic_targets(
            batch.rewards, batch.discounts, batch.terminated, next_q, next_log_prob, alpha
        )
    q = critic.q_values(batch.obs, batch.actions)
    critic_loss = 0.5 * sum(F.mse_loss(q_k, targets) for q_k in q)
    assert isinstance(critic_loss, torch.Tensor)
    min_q_pi = critic.q_values(batch.obs, action).min(dim=0).values
    actor_loss = (alpha * log_prob - min_q_pi).mean()
    return SACLosses(actor=actor_loss, critic=critic_loss, alpha=alpha_loss, log_prob=log_prob)


def alpha_loss_grad(
    log_alpha: float, log_prob: torch.Tensor, target_entropy: float
) -> tuple[float, float]:
    """Alpha loss ``-log_alpha * mean(log pi + target_entropy)`` and its ``d / d log_alpha``.

    Args:
        log_alpha: current log entropy coefficient.
        log_prob: ``[B]`` ``log pi(a|s)`` of the reparameterised actions.
        target_entropy: entropy target.

    Returns:
        ``(loss, gradient)``.
    """
    grad = -(float(log_prob.mean()) + target_entropy)
    return log_alpha * grad, grad


def critic_loss_grad(q: torch.Tensor, targets: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Critic loss ``0.5 sum_k mean((Q_k - y)^2)`` and ``d loss / d Q = (Q - y) / B``.

    Args:
        q: ``[K, B]`` online Q-values of the replayed actions.
        targets: ``[B]`` soft TD targets.

    Returns:
        ``(loss, [K, B] gradient)``.
    """
    delta = q - targets
    batch = q.shape[1]
    loss = 0.5 * float(torch.vdot(delta.view(-1), delta.view(-1))) / batch
    return loss, delta.div_(batch)


def actor_loss_grads(
    log_prob: torch.Tensor, q_pi: torch.Tensor, alpha: float
) -> tuple[float, torch.Tensor]:
    """Actor loss ``mean(alpha log pi - min_k Q_k)`` and ``d loss / d Q`` (``[K, B]``).

    The minimum passes the gradient ``-1 / B`` to the critic it selects (the
    index ``torch.min`` returns, as autograd does).

    Args:
        log_prob: ``[B]`` ``log pi(a|s)``.
        q_pi: ``[K, B]`` online Q-values of the reparameterised actions.
        alpha: entropy coefficient.

    Returns:
        ``(loss, [K, B] gradient w.r.t. q_pi)``.
    """
    min_q, index = q_pi.min(dim=0, keepdim=True)
    batch = q_pi.shape[1]
    loss = (alpha * float(log_prob.sum()) - float(min_q.sum())) / batch
    grad_q = torch.zeros_like(q_pi).scatter_(0, index, -1.0 / batch)
    return loss, grad_q


def actor_output_grad(
    sample: SquashedSample, grad_action: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``d actor_loss / d out`` (``[B, 2A]``) by the chain rule through the squashed sample.

    With ``g_a = d loss / d a`` (through the critics) and ``c = alpha / B``
    (the weight of each ``log pi`` in the mean):

    * ``d log pi / d u = 2 tanh(u)`` (squash term), ``d log pi / d log_std = -1``
      (Gaussian term with ``eps`` fixed), ``d a / d u = 1 - a^2``;
    * ``d loss / d u = g_a (1 - a^2) + 2 c a``;
    * ``d loss / d mean = d loss / d u``;
    * ``d loss / d log_std_raw = (d loss / d u * std * eps - c) * [lo <= raw <= hi]``.

    Args:
        sample: the sample the loss was computed on.
        grad_action: ``[B, A]`` ``d loss / d a`` through the critics.
        alpha: entropy coefficient.

    Returns:
        ``[B, 2A]`` gradient w.r.t. ``[mean | log_std_raw]``.
    """
    a = sample.action
    c = alpha / a.shape[0]
    grad_u = torch.addcmul(grad_action, grad_action, a * a, value=-1.0).add_(a, alpha=2.0 * c)
    grad_log_std = (grad_u * sample.std * sample.noise).sub_(c).mul_(sample.log_std_open)
    return torch.cat([grad_u, grad_log_std], dim=1)
