"""PPO's actor-critic: separate policy and value MLPs, evaluated together.

The policy and the value MLP have the same widths, so their layers are stored
stacked (``[2, in, out]``: index 0 = policy, 1 = value) and run as one batched
matmul per layer. That halves the number of autograd nodes per minibatch,
which is what a small-MLP PPO update on CPU is bound by; the maths is exactly
that of two separate MLPs. :meth:`ActorCritic.numpy_tensors` exports the usual
``pi.layers.{i}`` / ``vf.layers.{i}`` layout that the artifact reads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlops.algos.ppo.config import PPOConfig
from rlops.artifacts import NetworkSpec

_LOG_2PI = float(np.log(2.0 * np.pi))
_NARROW = 16
"""Layers narrower than this use the transposed GEMM formulation (see forward_cached)."""


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
        sizes = [spec.obs_dim, *spec.hidden_sizes, spec.act_dim]
        shapes: list[tuple[int, ...]] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            shapes += [(2, a, b), (2, 1, b)]
        if not self.discrete:
            shapes.append((spec.act_dim,))
        # All parameters live in one flat vector; weights/biases are views into it.
        # Gradient clipping and Adam then run as one kernel each instead of one
        # per tensor, which matters when every tensor is tiny.
        self._layout: list[tuple[int, int, tuple[int, ...]]] = []
        offset = 0
        for shape in shapes:
            size = int(np.prod(shape))
            self._layout.append((offset, offset + size, shape))
            offset += size
        self.flat = nn.Parameter(torch.zeros(offset))
        self.activation = torch.tanh if spec.activation == "tanh" else torch.relu
        self.weights, self.biases = self._views(self.flat.data)
        last = len(self.weights) - 1
        with torch.no_grad():
            for i, w in enumerate(self.weights):
                for k in range(2):
                    # Orthogonal init (Engstrom et al. 2020): sqrt 2 hidden, 0.01 policy
                    # output, 1 value output. nn.init works on [out, in], hence .T.
                    gain = (0.01 if k == 0 else 1.0) if i == last else 2**0.5
                    if config.ortho_init:
                        nn.init.orthogonal_(w[k].T, gain=gain)
                    else:
                        bound = 1.0 / w.shape[1] ** 0.5
                        nn.init.uniform_(w[k], -bound, bound)
            if not self.discrete:
                self.log_std.fill_(config.log_std_init)

    def _views(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n_layers = len(self.spec.hidden_sizes) + 1
        views = [flat[a:b].view(shape) for a, b, shape in self._layout]
        return views[0 : 2 * n_layers : 2], views[1 : 2 * n_layers : 2]

    @property
    def log_std(self) -> torch.Tensor:
        """``[act_dim]`` state-independent log standard deviation (Gaussian head)."""
        a, b, _ = self._layout[-1]
        return self.flat.data[a:b]

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return policy outputs ``[B, act_dim]`` and values ``[B]`` (autograd reference)."""
        weights, biases = self._views(self.flat)
        x = obs.unsqueeze(0).expand(2, *obs.shape)
        last = len(weights) - 1
        for i, (w, b) in enumerate(zip(weights, biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = self.activation(x)
        # The value MLP's output layer is act_dim wide; only column 0 is the value
        # (the other columns get no gradient and stay at their initial values).
        return x[0], x[1, :, 0]

    def forward_cached(
        self, obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Forward pass for the hand-written update; call it under ``torch.no_grad()``.

        Keeps the activations :meth:`backward` needs.

        Returns:
            ``(policy_out[B, act_dim], values[B], activations)``.
        """
        x = obs.unsqueeze(0).expand(2, *obs.shape)
        cache = [x]
        last = len(self.weights) - 1
        tanh = self.spec.activation == "tanh"
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.shape[2] < _NARROW:
                # Narrow output (the heads): x @ w as (w^T @ x^T)^T hits a far
                # faster GEMM path than a [B, 64] x [64, 2] product (2x measured).
                x = torch.baddbmm(b.transpose(1, 2), w.transpose(1, 2), x.transpose(1, 2))
                x = x.transpose(1, 2)
            else:
                x = torch.baddbmm(b, x, w)
            if i < last:
                if tanh:
                    # tanh(x) = 2 sigmoid(2x) - 1: ATen's vectorised sigmoid is several
                    # times faster than its tanh on CPU; equal up to float rounding.
                    x = torch.sigmoid_(x.mul_(2.0)).mul_(2.0).sub_(1.0)
                else:
                    x = torch.relu_(x)
                cache.append(x)
        return x[0], x[1, :, 0], cache

    def backward(
        self,
        cache: list[torch.Tensor],
        grad_out: torch.Tensor,
        grad_values: torch.Tensor,
        grad_log_std: torch.Tensor | None = None,
    ) -> None:
        """Hand-written backward pass: set ``.grad`` of every parameter.

        Autograd on a 64-wide MLP spends most of its time in bookkeeping; the
        chain rule for ``tanh``/``relu`` layers is a handful of batched matmuls.
        ``tests/test_ppo.py`` checks these gradients against autograd on the
        reference loss (:meth:`evaluate` + :func:`~rlops.algos.ppo.loss.ppo_loss`).

        Args:
            cache: activations from :meth:`forward_cached`.
            grad_out: ``[B, act_dim]`` gradient w.r.t. the policy output.
            grad_values: ``[B]`` gradient w.r.t. the values.
            grad_log_std: ``[act_dim]`` gradient w.r.t. ``log_std`` (Gaussian head).
        """
        if self.flat.grad is None:
            self.flat.grad = torch.zeros_like(self.flat)
        grad_w, grad_b = self._views(self.flat.grad)
        g = torch.zeros(2, *grad_out.shape, dtype=grad_out.dtype)
        g[0] = grad_out
        g[1, :, 0] = grad_values
        tanh = self.spec.activation == "tanh"
        for i in range(len(self.weights) - 1, -1, -1):
            h = cache[i]
            if g.shape[2] < _NARROW:
                grad_w[i].copy_(torch.bmm(g.transpose(1, 2), h).transpose(1, 2))
            else:
                torch.bmm(h.transpose(1, 2), g, out=grad_w[i])
            torch.sum(g, 1, keepdim=True, out=grad_b[i])
            if i == 0:
                break
            g = torch.bmm(g, self.weights[i].transpose(1, 2))
            if tanh:
                g = torch.ops.aten.tanh_backward(g, h)
            else:
                g = g * (h > 0)
        if not self.discrete:
            assert grad_log_std is not None
            a, b, _ = self._layout[-1]
            self.flat.grad[a:b] = grad_log_std

    def evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor, with_entropy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Return ``(log_prob[B], entropy[B] or None, value[B])`` of ``actions``."""
        out, values = self(obs)
        log_std = self.flat[self._layout[-1][0] : self._layout[-1][1]]
        if self.discrete:
            logp_all = torch.log_softmax(out, dim=-1)
            logp = logp_all.gather(1, actions.unsqueeze(-1)).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
            return logp, entropy, values
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
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            wn = w.numpy()
            bn = b.numpy()
            for k, prefix in enumerate(("pi", "vf")):
                weight, bias = wn[k].T, bn[k, 0]
                if prefix == "vf" and i == last:
                    weight, bias = weight[:1], bias[:1]
                out[f"{prefix}.layers.{i}.weight"] = np.array(weight, dtype=np.float32)
                out[f"{prefix}.layers.{i}.bias"] = np.array(bias, dtype=np.float32)
        if not self.discrete:
            out["log_std"] = self.log_std.numpy().astype(np.float32, copy=True)
        return out
