"""Multi-layer perceptrons with the layout the artifact's numpy inference reads.

An :class:`MLP` stores its linear layers as ``layers.0``, ``layers.1``, ...;
the activation is applied between layers, never after the last one. The
policy artifact (:mod:`rlops.artifacts`) runs the same layout in numpy, so a
trained torch module serves without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
"""Activation names accepted in configs and artifacts."""


class MLP(nn.Module):
    """Linear layers with an activation between them.

    Args:
        in_dim: input features.
        hidden_sizes: widths of the hidden layers (may be empty: a linear map).
        out_dim: output features.
        activation: a key of :data:`ACTIVATIONS`.

    >>> MLP(4, (64, 64), 2)(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
    """

    def __init__(
        self, in_dim: int, hidden_sizes: Sequence[int], out_dim: int, activation: str = "tanh"
    ) -> None:
        super().__init__()
        sizes = [in_dim, *hidden_sizes, out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, in_dim]`` to ``[B, out_dim]``."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.activation(x)
        return x


def orthogonal_init(mlp: MLP, hidden_gain: float = 2**0.5, out_gain: float = 1.0) -> None:
    """Orthogonal weights, zero biases (Engstrom et al. 2020, "Implementation Matters").

    Args:
        mlp: the module to initialise in place.
        hidden_gain: gain of hidden layers (sqrt 2 is standard for tanh/relu torsos).
        out_gain: gain of the output layer (0.01 for policy logits, 1 for values).
    """
    last = len(mlp.layers) - 1
    for i, layer in enumerate(mlp.layers):
        assert isinstance(layer, nn.Linear)
        nn.init.orthogonal_(layer.weight, gain=out_gain if i == last else hidden_gain)
        nn.init.zeros_(layer.bias)
