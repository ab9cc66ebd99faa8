"""``K`` same-shaped MLPs in one flat parameter vector, with a hand-written backward pass.

Small RL networks on CPU are bound by per-op overhead, not arithmetic. Keeping
``K`` MLPs of identical shape (PPO's policy and value nets, SAC's twin
critics, a single DQN Q-net with ``K = 1``) as stacked ``[K, in, out]`` layers
runs them as one batched matmul per layer; keeping every parameter (plus any
extra tensors such as a log-std) as views of one flat vector makes gradient
clipping, Adam (:class:`~rlops.nets.optim.FlatAdam`) and Polyak target updates
one op each. :meth:`StackedMLP.backward` applies the chain rule directly, so
an update needs no autograd graph; :meth:`StackedMLP.forward` is the autograd
reference the tests compare it with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

NARROW = 16
"""Layers narrower than this use the transposed GEMM formulation (measured 2x faster)."""


class StackedMLP(nn.Module):
    """``K`` MLPs ``in -> hidden... -> out`` stored in one flat parameter vector.

    Args:
        k: number of stacked MLPs.
        sizes: layer widths ``[in, *hidden, out]``.
        activation: ``"tanh"`` or ``"relu"`` between layers (none after the last).
        extra: shapes of extra parameters stored in the same flat vector (e.g.
            ``{"log_std": (act_dim,)}``), read with :meth:`extra`.

    >>> net = StackedMLP(2, [4, 8, 3], "tanh")
    >>> net(torch.zeros(5, 4)).shape
    torch.Size([2, 5, 3])
    """

    def __init__(
        self,
        k: int,
        sizes: Sequence[int],
        activation: str,
        extra: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
        self.k = k
        self.sizes = list(sizes)
        self.tanh = activation == "tanh"
        layout: list[tuple[int, ...]] = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            layout += [(k, a, b), (k, 1, b)]
        self._extra_names = list(extra or {})
        layout += [tuple(shape) for shape in (extra or {}).values()]
        self._layout: list[tuple[int, int, tuple[int, ...]]] = []
        offset = 0
        for shape in layout:
            size = int(np.prod(shape))
            self._layout.append((offset, offset + size, shape))
            offset += size
        self.flat = nn.Parameter(torch.zeros(offset))
        self.weights, self.biases = self.views(self.flat.data)

    @property
    def num_layers(self) -> int:
        """Number of linear layers."""
        return len(self.sizes) - 1

    def views(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(weights [K, in, out], biases [K, 1, out])`` as views of ``flat``.

        Pass ``self.flat`` for differentiable views, ``self.flat.data`` or a
        gradient/target vector of the same layout for plain ones.
        """
        n = self.num_layers
        views = [flat[a:b].view(shape) for a, b, shape in self._layout[: 2 * n]]
        return views[0::2], views[1::2]

    def extra(self, name: str, flat: torch.Tensor | None = None) -> torch.Tensor:
        """View of extra parameter ``name`` in ``flat`` (default: the parameter data)."""
        a, b, shape = self._layout[2 * self.num_layers + self._extra_names.index(name)]
        source = self.flat.data if flat is None else flat
        return source[a:b].view(shape)

    def init_orthogonal(self, gains: Sequence[Sequence[float]]) -> None:
        """Orthogonal weights, zero biases (Engstrom et al. 2020, "Implementation Matters").

        Args:
            gains: ``gains[layer][k]`` for every layer and stacked MLP.
        """
        with torch.no_grad():
            for i, w in enumerate(self.weights):
                for j in range(self.k):
                    nn.init.orthogonal_(w[j].T, gain=gains[i][j])  # init works on [out, in]
                self.biases[i].zero_()

    def init_uniform(self) -> None:
        """PyTorch's ``nn.Linear`` default: ``U(-1/sqrt(in), 1/sqrt(in))`` weights and biases."""
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):
                bound = 1.0 / w.shape[1] ** 0.5
                nn.init.uniform_(w, -bound, bound)
                nn.init.uniform_(b, -bound, bound)

    def _stack(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.dim() == 3 else x.unsqueeze(0).expand(self.k, *x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Autograd reference: ``[B, in]`` (shared input) or ``[K, B, in]`` -> ``[K, B, out]``."""
        weights, biases = self.views(self.flat)
        x = self._stack(x)
        for i, (w, b) in enumerate(zip(weights, biases)):
            x = torch.baddbmm(b, x, w)
            if i < self.num_layers - 1:
                x = torch.tanh(x) if self.tanh else torch.relu(x)
        return x

    def forward_cached(
        self, x: torch.Tensor, flat: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward pass for hand-written updates; call it under ``torch.no_grad()``.

        Args:
            x: ``[B, in]`` (shared by all K MLPs) or ``[K, B, in]``.
            flat: evaluate with these parameters instead (e.g. a target network's
                flat vector of the same layout).

        Returns:
            ``(out [K, B, out], activations)``; the activations feed :meth:`backward`.
        """
        weights, biases = (self.weights, self.biases) if flat is None else self.views(flat)
        x = self._stack(x)
        cache = [x]
        last = self.num_layers - 1
        for i, (w, b) in enumerate(zip(weights, biases)):
            if w.shape[2] < NARROW:
                # Narrow output (the heads): x @ w as (w^T @ x^T)^T hits a far
                # faster GEMM path than a [B, 64] x [64, 2] product.
                x = torch.baddbmm(b.transpose(1, 2), w.transpose(1, 2), x.transpose(1, 2))
                x = x.transpose(1, 2)
            else:
                x = torch.baddbmm(b, x, w)
            if i < last:
                if self.tanh:
                    # tanh(x) = 2 sigmoid(2x) - 1: ATen's vectorised sigmoid is several
                    # times faster than its tanh on CPU; equal up to float rounding.
                    x = torch.sigmoid_(x.mul_(2.0)).mul_(2.0).sub_(1.0)
                else:
                    x = torch.relu_(x)
                cache.append(x)
        return x, cache

    def backward(
        self, cache: list[torch.Tensor], grad_out: torch.Tensor, need_input_grad: bool = False
    ) -> torch.Tensor | None:
        """Chain rule through the layers: write weight/bias gradients into ``flat.grad``.

        Extra parameters' gradients are the caller's to write (``extra(name, flat.grad)``).

        Args:
            cache: activations from :meth:`forward_cached`.
            grad_out: ``[K, B, out]`` gradient of the loss w.r.t. the outputs.
            need_input_grad: also return the gradient w.r.t. the input.

        Returns:
            ``[K, B, in]`` input gradient if ``need_input_grad``, else None.
        """
        if self.flat.grad is None:
            self.flat.grad = torch.zeros_like(self.flat)
        grad_w, grad_b = self.views(self.flat.grad)
        g = grad_out
        for i in range(self.num_layers - 1, -1, -1):
            h = cache[i]
            if g.shape[2] < NARROW:
                grad_w[i].copy_(torch.bmm(g.transpose(1, 2), h).transpose(1, 2))
            else:
                torch.bmm(h.transpose(1, 2), g, out=grad_w[i])
            torch.sum(g, 1, keepdim=True, out=grad_b[i])
            if i == 0 and not need_input_grad:
                return None
            g = torch.bmm(g, self.weights[i].transpose(1, 2))
            if i == 0:
                return g
            g = (
                torch.ops.aten.tanh_backward(g, h)
                if self.tanh
                else torch.ops.aten.threshold_backward(g, h, 0.0)
            )
        return None

    def layer_arrays(self, index: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(weight [out, in], bias [out])]`` of stacked MLP ``index``, nn.Linear layout."""
        return [
            (w[index].numpy().T.copy(), b[index, 0].numpy().copy())
            for w, b in zip(self.weights, self.biases)
        ]
