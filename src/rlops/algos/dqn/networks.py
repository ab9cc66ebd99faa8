"""The DQN Q-network (plain or dueling), its target copy, and export to the artifact layout."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlops.artifacts import NetworkSpec
from rlops.nets import StackedMLP


class QNetwork(nn.Module):
    """MLP ``obs -> Q[n_actions]``; with ``dueling``, ``Q = V + A - mean(A)``.

    The target network is a second flat vector of the same layout
    (:attr:`target`), evaluated with ``forward_cached(x, flat=target)``; hard
    and Polyak updates are one op on it.

    Args:
        obs_dim: observation size.
        n_actions: number of discrete actions.
        hidden_sizes: hidden widths.
        activation: ``"relu"`` or ``"tanh"``.
        dueling: dueling head (Wang et al. 2016).

    >>> q = QNetwork(4, 2, (32,), "relu", dueling=True)
    >>> q.q_values(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        dueling: bool,
    ) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.dueling = dueling
        self.hidden_sizes = hidden_sizes
        self.activation = activation
        out = n_actions + 1 if dueling else n_actions
        self.body = StackedMLP(1, [obs_dim, *hidden_sizes, out], activation)
        self.body.init_uniform()  # nn.Linear's default, as SB3/CleanRL DQN use
        self.target = self.body.flat.detach().clone()

    @property
    def flat(self) -> nn.Parameter:
        """Online parameters as one flat vector."""
        return self.body.flat

    def _combine(self, out: torch.Tensor) -> torch.Tensor:
        if not self.dueling:
            return out
        value, adv = out[:, :1], out[:, 1:]
        return value + adv - adv.mean(dim=1, keepdim=True)

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """Autograd reference: ``[B, n_actions]`` online Q-values."""
        return self._combine(self.body(obs)[0])

    def forward_cached(
        self, obs: torch.Tensor, target: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Q-values without autograd (call under ``torch.no_grad()``) and the activations."""
        out, cache = self.body.forward_cached(obs, flat=self.target if target else None)
        return self._combine(out[0]), cache

    def backward(self, cache: list[torch.Tensor], grad_q: torch.Tensor) -> None:
        """Write ``flat.grad`` from ``d loss / d Q`` (``[B, n_actions]``)."""
        if self.dueling:
            # dQ_j/dV = 1, dQ_j/dA_i = [i = j] - 1/n
            grad = torch.cat(
                [grad_q.sum(1, keepdim=True), grad_q - grad_q.mean(1, keepdim=True)], dim=1
            )
        else:
            grad = grad_q
        self.body.backward(cache, grad.unsqueeze(0))

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """``target <- tau * online + (1 - tau) * target`` (``tau = 1``: hard copy)."""
        if tau >= 1.0:
            self.target.copy_(self.body.flat)
        else:
            self.target.lerp_(self.body.flat, tau)

    def numpy_tensors(self) -> dict[str, np.ndarray]:
        """Greedy-policy weights in the artifact layout (``pi.layers.{i}``).

        A dueling head is folded into its last linear layer, which is exact:
        ``Q = M [V, A]`` with a fixed matrix ``M``.
        """
        layers = self.body.layer_arrays(0)
        if self.dueling:
            n = self.n_actions
            fold = np.concatenate([np.ones((n, 1)), np.eye(n) - np.full((n, n), 1.0 / n)], axis=1)
            weight, bias = layers[-1]
            layers[-1] = (fold @ weight, fold @ bias)
        out: dict[str, np.ndarray] = {}
        for i, (weight, bias) in enumerate(layers):
            out[f"pi.layers.{i}.weight"] = weight.astype(np.float32)
            out[f"pi.layers.{i}.bias"] = bias.astype(np.float32)
        return out

    def spec(self, epsilon: float) -> NetworkSpec:
        """The artifact's network description (a ``"q"`` head)."""
        return NetworkSpec(
            obs_dim=self.body.sizes[0],
            act_dim=self.n_actions,
            hidden_sizes=self.hidden_sizes,
            activation=self.activation,  # type: ignore[arg-type]
            head="q",
            epsilon=epsilon,
        )
