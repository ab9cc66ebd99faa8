"""Networks of the offline learners and their export to the artifact layout.

Both are plain :class:`rlops.nets.MLP` modules stored under the ``pi.`` prefix
the artifact's numpy inference reads: a softmax policy (``categorical`` head)
and a Q-network with a target copy (``q`` head).
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from torch import nn

from rlops.artifacts import NetworkSpec
from rlops.nets import MLP, orthogonal_init

MASKED_LOGIT = -1e9
"""Logit of an ineligible action: finite, so ``0 * log 0`` terms stay 0 (not NaN)
in entropies and gradients, yet ``exp`` of it is exactly 0 in float32."""


def _export(mlp: MLP) -> dict[str, np.ndarray]:
    return {
        f"pi.{name}": value.detach().cpu().numpy().astype(np.float32)
        for name, value in mlp.state_dict().items()
    }


class PolicyNetwork(nn.Module):
    """Softmax policy ``obs -> log pi(.|obs)`` over ``n_actions``.

    The output layer starts at orthogonal gain 0.01, so the initial policy is
    close to uniform (Andrychowicz et al. 2021).

    Args:
        obs_dim: observation size.
        n_actions: number of discrete actions.
        hidden_sizes: hidden widths.
        activation: ``"tanh"`` or ``"relu"``.

    >>> net = PolicyNetwork(3, 4, (8,), "tanh")
    >>> net.log_probs(torch.zeros(2, 3)).exp().sum(dim=1).tolist() == [1.0, 1.0]
    True
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden_sizes: tuple[int, ...],
        activation: Literal["tanh", "relu"],
    ) -> None:
        super().__init__()
        self.obs_dim, self.n_actions = obs_dim, n_actions
        self.hidden_sizes, self.activation = hidden_sizes, activation
        self.mlp = MLP(obs_dim, hidden_sizes, n_actions, activation)
        orthogonal_init(self.mlp, out_gain=0.01)

    def log_probs(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, n_actions]`` log-probabilities; ineligible actions (``mask`` False) get ~0 mass."""
        logits = self.mlp(obs)
        if mask is not None:
            logits = logits.masked_fill(~mask, MASKED_LOGIT)
        return torch.log_softmax(logits, dim=1)

    def numpy_tensors(self) -> dict[str, np.ndarray]:
        """Weights in the artifact layout (``pi.layers.{i}.weight/bias``)."""
        return _export(self.mlp)

    def spec(self) -> NetworkSpec:
        """The artifact's network description (a ``categorical`` head)."""
        return NetworkSpec(
            obs_dim=self.obs_dim,
            act_dim=self.n_actions,
            hidden_sizes=self.hidden_sizes,
            activation=self.activation,
            head="categorical",
        )


class OfflineQNetwork(nn.Module):
    """MLP ``obs -> Q[n_actions]`` with a frozen target copy.

    Initialised as ``nn.Linear``'s default, as the rlops DQN is.

    Args:
        obs_dim: observation size.
        n_actions: number of discrete actions.
        hidden_sizes: hidden widths.
        activation: ``"tanh"`` or ``"relu"``.

    >>> q = OfflineQNetwork(4, 2, (16,), "relu")
    >>> q(torch.zeros(3, 4)).shape, q.target(torch.zeros(3, 4)).shape
    (torch.Size([3, 2]), torch.Size([3, 2]))
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden_sizes: tuple[int, ...],
        activation: Literal["tanh", "relu"],
    ) -> None:
        super().__init__()
        self.obs_dim, self.n_actions = obs_dim, n_actions
        self.hidden_sizes, self.activation = hidden_sizes, activation
        self.online = MLP(obs_dim, hidden_sizes, n_actions, activation)
        self.target = copy.deepcopy(self.online).requires_grad_(False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, n_actions]`` online Q-values."""
        q: torch.Tensor = self.online(obs)
        return q

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """``target <- tau * online + (1 - tau) * target`` (``tau = 1``: hard copy)."""
        for t, o in zip(self.target.parameters(), self.online.parameters()):
            t.lerp_(o, tau)

    def numpy_tensors(self) -> dict[str, np.ndarray]:
        """Online weights in the artifact layout (``pi.layers.{i}.weight/bias``)."""
        return _export(self.online)

    def spec(self, epsilon: float) -> NetworkSpec:
        """The artifact's network description (a ``q`` head with ``epsilon``)."""
        return NetworkSpec(
            obs_dim=self.obs_dim,
            act_dim=self.n_actions,
            hidden_sizes=self.hidden_sizes,
            activation=self.activation,
            head="q",
            epsilon=epsilon,
        )
