"""Numpy inference for the MLP actor-critic layout of :mod:`rlops.nets`.

Acting with a tiny MLP on a handful of observations is dominated by per-call
overhead, which numpy keeps far lower than torch; the same code serves
training rollouts and the policy artifact, so what was evaluated is exactly
what serves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rlops.core.errors import ArtifactError

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """Shape of an MLP actor-critic, as stored in ``policy.json``.

    Attributes:
        obs_dim: flattened observation size.
        act_dim: number of discrete actions, or the continuous action size.
        hidden_sizes: hidden widths of both the policy and the value MLP.
        activation: ``"tanh"`` or ``"relu"``.
        head: ``"categorical"`` (discrete) or ``"gaussian"`` (continuous,
            state-independent log-std).
    """

    obs_dim: int
    act_dim: int
    hidden_sizes: tuple[int, ...]
    activation: Literal["tanh", "relu"]
    head: Literal["categorical", "gaussian"]

    def to_json(self) -> dict[str, object]:
        """Return the spec as JSON-able data."""
        return {
            "kind": "mlp_actor_critic",
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "head": self.head,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> NetworkSpec:
        """Parse :meth:`to_json` output.

        Raises:
            ArtifactError: if a field is missing or invalid.
        """
        try:
            if data.get("kind") != "mlp_actor_critic":
                raise ValueError(f"unknown network kind {data.get('kind')!r}")
            activation = str(data["activation"])
            head = str(data["head"])
            if activation not in ("tanh", "relu") or head not in ("categorical", "gaussian"):
                raise ValueError(f"activation={activation!r} head={head!r}")
            hidden = data["hidden_sizes"]
            assert isinstance(hidden, list)
            return cls(
                obs_dim=int(str(data["obs_dim"])),
                act_dim=int(str(data["act_dim"])),
                hidden_sizes=tuple(int(h) for h in hidden),
                activation=activation,  # type: ignore[arg-type]
                head=head,  # type: ignore[arg-type]
            )
        except (KeyError, ValueError, AssertionError) as exc:
            raise ArtifactError(f"policy.json: malformed 'network' section: {exc}") from None


class _NumpyMLP:
    def __init__(self, tensors: Mapping[str, np.ndarray], prefix: str, activation: str) -> None:
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        i = 0
        while f"{prefix}.layers.{i}.weight" in tensors:
            # Store W^T contiguous once so the hot path is one matmul per layer.
            self.weights.append(
                np.ascontiguousarray(tensors[f"{prefix}.layers.{i}.weight"].T, dtype=np.float32)
            )
            self.biases.append(np.asarray(tensors[f"{prefix}.layers.{i}.bias"], dtype=np.float32))
            i += 1
        if not self.weights:
            raise ArtifactError(f"model.safetensors has no '{prefix}.layers.0.weight'")
        self.tanh = activation == "tanh"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w
            x += b
            if i < last:
                if self.tanh:
                    np.tanh(x, out=x)
                else:
                    np.maximum(x, 0.0, out=x)
        return x


class NumpyActorCritic:
    """Numpy forward pass of an MLP actor-critic.

    Args:
        spec: network shape.
        tensors: ``pi.layers.{i}.weight/bias``, ``vf.layers.{i}.weight/bias``
            (optional) and, for gaussian heads, ``log_std``.

    >>> import numpy as np
    >>> spec = NetworkSpec(obs_dim=2, act_dim=3, hidden_sizes=(), activation="tanh",
    ...                    head="categorical")
    >>> net = NumpyActorCritic(spec, {"pi.layers.0.weight": np.zeros((3, 2), np.float32),
    ...                               "pi.layers.0.bias": np.zeros(3, np.float32)})
    >>> net.probs(np.zeros((1, 2), np.float32)).round(3).tolist()
    [[0.333, 0.333, 0.333]]
    """

    def __init__(self, spec: NetworkSpec, tensors: Mapping[str, np.ndarray]) -> None:
        self.spec = spec
        self.pi = _NumpyMLP(tensors, "pi", spec.activation)
        self.vf = (
            _NumpyMLP(tensors, "vf", spec.activation) if "vf.layers.0.weight" in tensors else None
        )
        self.log_std: np.ndarray | None = None
        if spec.head == "gaussian":
            if "log_std" not in tensors:
                raise ArtifactError("gaussian policy without a 'log_std' tensor")
            self.log_std = np.asarray(tensors["log_std"], dtype=np.float32)
            self.std = np.exp(self.log_std)
            self._logp_const = float(-self.log_std.sum() - 0.5 * _LOG_2PI * spec.act_dim)
        self._fused = self._fuse()

    def _fuse(self) -> _NumpyMLP | None:
        """One MLP computing ``[logits or mean | value]``: block-diagonal layers.

        Acting needs both heads on the same observations; one matmul per layer
        instead of two halves the per-call overhead that dominates small batches.
        """
        if self.vf is None:
            return None
        tensors: dict[str, np.ndarray] = {}
        for i, (wp, bp, wv, bv) in enumerate(
            zip(self.pi.weights, self.pi.biases, self.vf.weights, self.vf.biases)
        ):
            if i == 0:
                w = np.concatenate([wp, wv], axis=1)
            else:
                w = np.zeros((wp.shape[0] + wv.shape[0], wp.shape[1] + wv.shape[1]), np.float32)
                w[: wp.shape[0], : wp.shape[1]] = wp
                w[wp.shape[0] :, wp.shape[1] :] = wv
            tensors[f"f.layers.{i}.weight"] = w.T
            tensors[f"f.layers.{i}.bias"] = np.concatenate([bp, bv])
        return _NumpyMLP(tensors, "f", self.spec.activation)

    def sample_with_value(
        self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`sample` and :meth:`value` in one pass; returns ``(actions, logp, values)``."""
        if self._fused is None:
            actions, logp = self.sample(obs, rng, deterministic)
            return actions, logp, self.value(obs)
        out = self._fused(obs)
        actions, logp = self._sample_from(out[:, :-1], rng, deterministic)
        return actions, logp, out[:, -1]

    def value(self, obs: np.ndarray) -> np.ndarray:
        """``[B]`` state values.

        Raises:
            ArtifactError: if the network has no value head.
        """
        if self.vf is None:
            raise ArtifactError("this policy carries no value network")
        return self.vf(obs)[:, 0]

    def probs(self, obs: np.ndarray) -> np.ndarray:
        """``[B, A]`` action probabilities of a categorical head."""
        logits = self.pi(obs)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def sample(
        self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Choose actions for a batch of (preprocessed) observations.

        Args:
            obs: ``[B, obs_dim]`` float32.
            rng: source of randomness for sampling.
            deterministic: take the mode (argmax / mean) instead of sampling.

        Returns:
            ``(actions, log_probs)``: ``[B]`` int64 or ``[B, act_dim]`` float32
            (unclipped), and ``[B]`` float32 log-probabilities of those actions.
        """
        return self._sample_from(self.pi(obs), rng, deterministic)

    def _sample_from(
        self, out: np.ndarray, rng: np.random.Generator, deterministic: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.spec.head == "categorical":
            out = out - out.max(axis=1, keepdims=True)
            log_z = np.log(np.exp(out).sum(axis=1, keepdims=True))
            out -= log_z  # log-probabilities
            if deterministic:
                actions = out.argmax(axis=1)
            else:
                # Inverse-CDF sampling: one uniform per row.
                cdf = np.exp(out).cumsum(axis=1)
                u = np.asarray(rng.random(out.shape[0], dtype=np.float32))[:, None] * cdf[:, -1:]
                actions = np.minimum((cdf < u).sum(axis=1), out.shape[1] - 1)
            logp = out[np.arange(out.shape[0]), actions]
            return actions.astype(np.int64), logp.astype(np.float32)
        if deterministic:
            return out, np.full(out.shape[0], self._logp_const, dtype=np.float32)
        noise = rng.standard_normal(out.shape, dtype=np.float32)
        actions = out + self.std * noise
        logp = self._logp_const - 0.5 * (noise * noise).sum(axis=1)
        return actions, logp.astype(np.float32)
