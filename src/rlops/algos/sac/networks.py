"""SAC's networks: a tanh-squashed Gaussian actor and twin Q critics with a target copy.

Both are :class:`~rlops.nets.StackedMLP` s, so every parameter group is one flat
vector (one :class:`~rlops.nets.FlatAdam` each, one ``lerp_`` for Polyak):

* the actor is ``K = 1`` MLP ``obs -> [mean | log_std]`` (``2 * act_dim``
  outputs, SB3's separate ``mu`` and ``log_std`` linear heads as one layer);
* the twin critics are ``K = 2`` MLPs ``[obs, action] -> Q`` run as one batched
  matmul per layer, their target another flat vector of the same layout.

Actions cross the networks in the normalised space ``[-1, 1]``: the actor's
``tanh`` output is what the critics read, and env actions (what replay holds)
are mapped back with :meth:`SquashedGaussianActor.normalise`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rlops.nets import StackedMLP


class SquashedGaussianActor(nn.Module):
    """MLP ``obs -> [mean | log_std]``; ``action = tanh(mean + std * eps) * scale + bias``.

    Action bounds become ``action_scale = (high - low) / 2`` and
    ``action_bias = (high + low) / 2`` (CleanRL's ``sac_continuous_action``).
    The log-std output is clamped to ``[log_std_min, log_std_max]`` (SB3).

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden_sizes: hidden widths.
        activation: ``"relu"`` or ``"tanh"``.
        action_low: ``[act_dim]`` lower Box bounds (finite).
        action_high: ``[act_dim]`` upper Box bounds (finite).
        log_std_bounds: ``(min, max)`` clamp of the log standard deviation.

    >>> actor = SquashedGaussianActor(3, 1, (32,), "relu", [-2.0], [2.0], (-20.0, 2.0))
    >>> out = actor(torch.zeros(5, 3))
    >>> out.shape  # [mean | log_std]
    torch.Size([5, 2])
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        action_low: Sequence[float] | np.ndarray,
        action_high: Sequence[float] | np.ndarray,
        log_std_bounds: tuple[float, float],
    ) -> None:
        super().__init__()
        low = np.asarray(action_low, dtype=np.float64).reshape(-1)
        high = np.asarray(action_high, dtype=np.float64).reshape(-1)
        if low.shape != (act_dim,) or high.shape != (act_dim,):
            raise ValueError(
                f"action bounds must have shape ({act_dim},), got {low.shape} and {high.shape}"
            )
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
            raise ValueError(
                f"SAC needs finite action bounds with high > low, got low={low} high={high}; "
                "wrap the env to rescale unbounded actions"
            )
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.log_std_min, self.log_std_max = log_std_bounds
        self.body = StackedMLP(1, [obs_dim, *hidden_sizes, 2 * act_dim], activation)
        self.body.init_uniform()  # nn.Linear's default, as SB3/CleanRL SAC use
        self.action_scale = torch.tensor((high - low) / 2.0, dtype=torch.float32)
        self.action_bias = torch.tensor((high + low) / 2.0, dtype=torch.float32)
        # sum(log(action_scale)): the affine map's log-Jacobian, subtracted from log-probs.
        self.log_scale_sum = float(np.sum(np.log((high - low) / 2.0)))

    @property
    def flat(self) -> nn.Parameter:
        """Actor parameters as one flat vector."""
        return self.body.flat

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Autograd reference: ``[B, 2 * act_dim]`` raw outputs ``[mean | log_std (unclamped)]``."""
        out: torch.Tensor = self.body(obs)[0]
        return out

    def forward_cached(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Raw outputs without autograd (call under ``torch.no_grad()``) and the activations."""
        out, cache = self.body.forward_cached(obs)
        return out[0], cache

    def backward(self, cache: list[torch.Tensor], grad_out: torch.Tensor) -> None:
        """Write ``flat.grad`` from ``d loss / d out`` (``[B, 2 * act_dim]``)."""
        self.body.backward(cache, grad_out.unsqueeze(0))

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """Map ``[-1, 1]`` actions to the env's bounds: ``action * scale + bias``."""
        return action * self.action_scale + self.action_bias

    def normalise(self, env_action: torch.Tensor) -> torch.Tensor:
        """Map env actions back to ``[-1, 1]`` (the critics' input space)."""
        return (env_action - self.action_bias) / self.action_scale

    def numpy_tensors(self) -> dict[str, np.ndarray]:
        """Actor weights in the artifact layout of a ``"tanh_gaussian"`` head.

        Returns:
            ``pi.layers.{i}.weight`` (``[out, in]``, nn.Linear layout) and
            ``pi.layers.{i}.bias``; the last layer has ``2 * act_dim`` outputs
            ``[mean | log_std]``. Plus ``action_scale`` and ``action_bias``
            (``[act_dim]``). A numpy policy reads them as::

                out = mlp(obs)                       # relu/tanh hidden, linear last
                mean = out[:, :act_dim]
                log_std = clip(out[:, act_dim:], log_std_min, log_std_max)  # -20, 2
                action = tanh(mean + exp(log_std) * eps) * action_scale + action_bias
                deterministic = tanh(mean) * action_scale + action_bias
        """
        out: dict[str, np.ndarray] = {}
        for i, (weight, bias) in enumerate(self.body.layer_arrays(0)):
            out[f"pi.layers.{i}.weight"] = weight.astype(np.float32)
            out[f"pi.layers.{i}.bias"] = bias.astype(np.float32)
        out["action_scale"] = self.action_scale.numpy().astype(np.float32, copy=True)
        out["action_bias"] = self.action_bias.numpy().astype(np.float32, copy=True)
        return out


class TwinCritic(nn.Module):
    """Two Q-networks ``[obs, action] -> Q`` in one flat vector, plus their target copy.

    Clipped double-Q (Fujimoto et al. 2018, as used by Haarnoja et al. 2018)
    takes the minimum of the two. Actions are the normalised ``[-1, 1]`` ones.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden_sizes: hidden widths of each critic.
        activation: ``"relu"`` or ``"tanh"``.

    >>> critic = TwinCritic(3, 1, (32,), "relu")
    >>> critic.q_values(torch.zeros(5, 3), torch.zeros(5, 1)).shape
    torch.Size([2, 5])
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden_sizes: tuple[int, ...], activation: str
    ) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.body = StackedMLP(2, [obs_dim + act_dim, *hidden_sizes, 1], activation)
        self.body.init_uniform()
        self.target = self.body.flat.detach().clone()

    @property
    def flat(self) -> nn.Parameter:
        """Online parameters of both critics as one flat vector."""
        return self.body.flat

    def q_values(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Autograd reference: ``[2, B]`` Q-values of ``[-1, 1]`` actions."""
        q: torch.Tensor = self.body(torch.cat([obs, action], dim=1))[..., 0]
        return q

    def forward_cached(
        self, obs: torch.Tensor, action: torch.Tensor, target: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``[2, B]`` Q-values without autograd (call under ``torch.no_grad()``), activations.

        Args:
            obs: ``[B, obs_dim]``.
            action: ``[B, act_dim]`` normalised actions.
            target: evaluate the target critics instead.
        """
        x = torch.cat([obs, action], dim=1)
        out, cache = self.body.forward_cached(x, flat=self.target if target else None)
        return out[..., 0], cache

    def backward(self, cache: list[torch.Tensor], grad_q: torch.Tensor) -> None:
        """Write ``flat.grad`` from ``d loss / d Q`` (``[2, B]``)."""
        self.body.backward(cache, grad_q.unsqueeze(-1))

    def action_grad(self, cache: list[torch.Tensor], grad_q: torch.Tensor) -> torch.Tensor:
        """``d loss / d action`` (``[B, act_dim]``, summed over both critics) from ``d loss / d Q``.

        The input-gradient half of backpropagation only: the actor's update
        needs how Q changes with the action, not the critics' weight gradients
        (which :meth:`StackedMLP.backward` would also compute), so this skips
        them. Uses the online weights, which must be those ``cache`` came from.

        Args:
            cache: activations from :meth:`forward_cached` (online weights).
            grad_q: ``[2, B]`` gradient w.r.t. each critic's Q-values.

        Returns:
            ``[B, act_dim]`` gradient w.r.t. the (normalised) action.
        """
        body = self.body
        g: torch.Tensor = grad_q.unsqueeze(-1)
        for i in range(body.num_layers - 1, 0, -1):
            g = torch.bmm(g, body.weights[i].transpose(1, 2))
            h = cache[i]
            # ReLU's native backward kernel: one pass, no bool mask to build and cast.
            g = (
                torch.ops.aten.tanh_backward(g, h)
                if body.tanh
                else torch.ops.aten.threshold_backward(g, h, 0.0)
            )
        w_action = body.weights[0][:, self.obs_dim :, :]  # [2, act_dim, hidden]
        return torch.bmm(g, w_action.transpose(1, 2)).sum(0)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """Polyak: ``target <- tau * online + (1 - tau) * target`` (``tau = 1``: hard copy)."""
        if tau >= 1.0:
            self.target.copy_(self.body.flat)
        else:
            self.target.lerp_(self.body.flat, tau)
