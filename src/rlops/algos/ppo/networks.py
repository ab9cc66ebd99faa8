"""PPO's actor-critic: separate policy and value MLPs, evaluated together.

The policy and the value MLP have the same widths, so they are one
:class:`~rlops.nets.StackedMLP` with ``K = 2`` (index 0 = policy, 1 = value),
run as one batched matmul per layer, with the Gaussian ``log_std`` in the same
flat parameter vector. The maths is exactly that of two separate MLPs.
:meth:`ActorCritic.numpy_tensors` exports the usual ``pi.layers.{i}`` /
``vf.layers.{i}`` layout that the artifact reads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlops.algos.ppo.config import PPOConfig
from rlops.artifacts import NetworkSpec
from rlops.nets import StackedMLP

_LOG_2PI = float(np.log(2.0 * np.pi))


class ActorCritic(nn.Module):
    """Policy MLP (logits or Gaussian mean), value MLP and state-independent ``log_std``.

    Args:
        spec: network shape (obs/action sizes, widths, activation, head).
        config: PPO config (initialisation details).

    >>> spec = NetworkSpec(obs_dim=4, act_dim=2, hidden_sizes=(64, 64), activation="tanh",
    ...                    head="categorical")
    >>> net = ActorCritic(spec, PPOConfig())
    >>> logp, entropy, value = net.evaluate(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    >>> value.shape
    torch.Size([3])
    """

    def __init__(self, spec: NetworkSpec, config: PPOConfig) -> None:
        super().__init__()
        self.spec = spec
        self.discrete = spec.head == "categorical"
        extra = {} if self.discrete else {"log_std": (spec.act_dim,)}
        # The value MLP's output layer is act_dim wide like the policy's; only
        # column 0 is the value (the other columns get no gradient).
        self.body = StackedMLP(
            2, [spec.obs_dim, *spec.hidden_sizes, spec.act_dim], spec.activation, extra
        )
        if config.ortho_init:
            # sqrt 2 hidden, 0.01 policy output, 1 value output (Engstrom et al. 2020).
            hidden = [[2**0.5, 2**0.5]] * len(spec.hidden_sizes)
            self.body.init_orthogonal([*hidden, [0.01, 1.0]])
        else:
            self.body.init_uniform()
        if not self.discrete:
            self.log_std.fill_(config.log_std_init)

    @property
    def flat(self) -> nn.Parameter:
        """Every parameter, as one flat vector (what the optimizer updates)."""
        return self.body.flat

    @property
    def log_std(self) -> torch.Tensor:
        """``[act_dim]`` state-independent log standard deviation (Gaussian head)."""
        return self.body.extra("log_std")

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return policy outputs ``[B, act_dim]`` and values ``[B]`` (autograd reference)."""
        out = self.body(obs)
        return out[0], out[1, :, 0]

    def forward_cached(
        self, obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Forward pass for the hand-written update; call it under ``torch.no_grad()``.

        Returns:
            ``(policy_out[B, act_dim], values[B], activations)``.
        """
        out, cache = self.body.forward_cached(obs)
        return out[0], out[1, :, 0], cache

    def backward(
        self,
        cache: list[torch.Tensor],
        grad_out: torch.Tensor,
        grad_values: torch.Tensor,
        grad_log_std: torch.Tensor | None = None,
    ) -> None:
        """Hand-written backward pass: set ``flat.grad``.

        ``tests/test_ppo.py`` checks these gradients against autograd on the
        reference loss (:meth:`evaluate` + :func:`~rlops.algos.ppo.loss.ppo_loss`).

        Args:
            cache: activations from :meth:`forward_cached`.
            grad_out: ``[B, act_dim]`` gradient w.r.t. the policy output.
            grad_values: ``[B]`` gradient w.r.t. the values.
            grad_log_std: ``[act_dim]`` gradient w.r.t. ``log_std`` (Gaussian head).
        """
        g = torch.zeros(2, *grad_out.shape, dtype=grad_out.dtype)
        g[0] = grad_out
        g[1, :, 0] = grad_values
        self.body.backward(cache, g)
        if not self.discrete:
            assert grad_log_std is not None and self.flat.grad is not None
            self.body.extra("log_std", self.flat.grad).copy_(grad_log_std)

    def evaluate(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        with_entropy: bool = True,
        mask_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Return ``(log_prob[B], entropy[B] or None, value[B])`` of ``actions`` (autograd).

        ``mask_bias`` (``[B, A]``, 0 for eligible actions and a large negative
        number for ineligible ones) is added to the logits: the categorical
        distribution renormalised over the eligible actions.
        """
        out, values = self(obs)
        if mask_bias is not None:
            out = out + mask_bias
        if self.discrete:
            logp_all = torch.log_softmax(out, dim=-1)
            logp = logp_all.gather(1, actions.unsqueeze(-1)).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
            return logp, entropy, values
        log_std = self.body.extra("log_std", self.body.flat)  # differentiable view
        std = log_std.exp()
        z = (actions - out) / std
        logp = (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * _LOG_2PI * self.spec.act_dim
        entropy = None
        if with_entropy:
            entropy = (0.5 + 0.5 * _LOG_2PI + log_std).sum().expand(out.shape[0])
        return logp, entropy, values

    def numpy_tensors(self) -> dict[str, np.ndarray]:
        """Weights in the artifact layout (``pi.layers.{i}.weight`` is ``[out, in]``)."""
        out: dict[str, np.ndarray] = {}
        for k, prefix in enumerate(("pi", "vf")):
            layers = self.body.layer_arrays(k)
            for i, (weight, bias) in enumerate(layers):
                if prefix == "vf" and i == len(layers) - 1:
                    weight, bias = weight[:1], bias[:1]
                out[f"{prefix}.layers.{i}.weight"] = weight.astype(np.float32)
                out[f"{prefix}.layers.{i}.bias"] = bias.astype(np.float32)
        if not self.discrete:
            out["log_std"] = self.log_std.numpy().astype(np.float32, copy=True)
        return out
