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
HEADS = ("categorical", "gaussian", "q", "tanh_gaussian")
"""Policy heads the artifact can run."""
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""Bounds of a ``tanh_gaussian`` head's log-std (as SB3's SAC)."""


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """Shape of an MLP actor-critic, as stored in ``policy.json``.

    Attributes:
        obs_dim: flattened observation size.
        act_dim: number of discrete actions, or the continuous action size.
        hidden_sizes: hidden widths of both the policy and the value MLP.
        activation: ``"tanh"`` or ``"relu"``.
        head: ``"categorical"`` (discrete policy), ``"gaussian"`` (continuous,
            state-independent log-std) or ``"q"`` (discrete Q-values: greedy, or
            epsilon-greedy with ``epsilon`` so that propensities exist) or
            ``"tanh_gaussian"`` (continuous, state-dependent log-std, squashed by
            tanh into the action bounds: SAC).
        epsilon: exploration rate of a ``"q"`` head's stochastic action distribution.
    """

    obs_dim: int
    act_dim: int
    hidden_sizes: tuple[int, ...]
    activation: Literal["tanh", "relu"]
    head: Literal["categorical", "gaussian", "q", "tanh_gaussian"]
    epsilon: float = 0.0

    def to_json(self) -> dict[str, object]:
        """Return the spec as JSON-able data."""
        data: dict[str, object] = {
            "kind": "mlp_actor_critic",
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "head": self.head,
        }
        if self.head == "q":
            data["epsilon"] = self.epsilon
        return data

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
            if activation not in ("tanh", "relu") or head not in HEADS:
                raise ValueError(f"activation={activation!r} head={head!r}")
            epsilon = float(str(data.get("epsilon", 0.0)))
            if not 0.0 <= epsilon <= 1.0:
                raise ValueError(f"epsilon={epsilon!r} is not in [0, 1]")
            hidden = data["hidden_sizes"]
            assert isinstance(hidden, list)
            return cls(
                obs_dim=int(str(data["obs_dim"])),
                act_dim=int(str(data["act_dim"])),
                hidden_sizes=tuple(int(h) for h in hidden),
                activation=activation,  # type: ignore[arg-type]
                head=head,  # type: ignore[arg-type]
                epsilon=epsilon,
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
        if spec.head == "tanh_gaussian":
            for name in ("action_scale", "action_bias"):
                if name not in tensors:
                    raise ArtifactError(f"tanh_gaussian policy without an '{name}' tensor")
            self.action_scale = np.asarray(tensors["action_scale"], dtype=np.float32)
            self.action_bias = np.asarray(tensors["action_bias"], dtype=np.float32)
            self._log_scale_sum = float(np.log(self.action_scale).sum())
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
        self,
        obs: np.ndarray,
        rng: np.random.Generator,
        deterministic: bool = False,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`sample` and :meth:`value` in one pass; returns ``(actions, logp, values)``."""
        if self._fused is None:
            actions, logp = self.sample(obs, rng, deterministic, mask)
            return actions, logp, self.value(obs)
        out = self._fused(obs)
        actions, logp = self._sample_from(out[:, :-1], rng, deterministic, mask)
        return actions, logp, out[:, -1]

    def value(self, obs: np.ndarray) -> np.ndarray:
        """``[B]`` state values.

        Raises:
            ArtifactError: if the network has no value head.
        """
        if self.vf is None:
            raise ArtifactError("this policy carries no value network")
        return self.vf(obs)[:, 0]

    def probs(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """``[B, A]`` action probabilities (categorical, or epsilon-greedy for a Q head).

        With ``mask`` (``[B, A]`` bool, True = eligible) ineligible actions get
        probability 0 and the rest is renormalised over the eligible ones.
        """
        logits = self.pi(obs)
        if self.spec.head == "q":
            if mask is not None:
                logits = np.where(mask, logits, -np.inf)
                eligible = mask.sum(axis=1, keepdims=True)
                probs = np.where(mask, self.spec.epsilon / eligible, 0.0).astype(np.float32)
            else:
                n = logits.shape[1]
                probs = np.full(logits.shape, self.spec.epsilon / n, dtype=np.float32)
            probs[np.arange(logits.shape[0]), logits.argmax(axis=1)] += 1.0 - self.spec.epsilon
            return probs
        if mask is not None:
            logits = np.where(mask, logits, -np.inf).astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def sample(
        self,
        obs: np.ndarray,
        rng: np.random.Generator,
        deterministic: bool = False,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Choose actions for a batch of (preprocessed) observations.

        Args:
            obs: ``[B, obs_dim]`` float32.
            rng: source of randomness for sampling.
            deterministic: take the mode (argmax / mean) instead of sampling.
            mask: ``[B, A]`` bool eligible actions (discrete heads); an ineligible
                action is never returned and log-probabilities are those of the
                distribution renormalised over the eligible actions.

        Returns:
            ``(actions, log_probs)``: ``[B]`` int64 or ``[B, act_dim]`` float32
            (unclipped), and ``[B]`` float32 log-probabilities of those actions.
        """
        if self.spec.head == "tanh_gaussian":
            return self._sample_squashed(self.pi(obs), rng, deterministic)
        if self.spec.head == "q":
            eps = self.spec.epsilon
            if not deterministic:
                return self.epsilon_greedy(obs, rng, eps, mask)
            # Greedy action, reported with its probability under the policy's
            # epsilon-greedy distribution (as argmax of a categorical head is).
            actions, _ = self.epsilon_greedy(obs, rng, 0.0, mask)
            n = self.spec.act_dim if mask is None else mask.sum(axis=1)
            logp = np.log(1.0 - eps + eps / np.asarray(n, dtype=np.float64)).astype(np.float32)
            return actions, np.broadcast_to(logp, actions.shape).copy()
        return self._sample_from(self.pi(obs), rng, deterministic, mask)

    def epsilon_greedy(
        self,
        obs: np.ndarray,
        rng: np.random.Generator,
        epsilon: float,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Epsilon-greedy actions of a Q head and their log-probabilities.

        Args:
            obs: ``[B, obs_dim]`` float32.
            rng: source of randomness.
            epsilon: probability of a uniformly random action.

        Returns:
            ``(actions [B] int64, log_probs [B] float32)`` under the
            epsilon-greedy distribution ``epsilon / n + (1 - epsilon) [a = argmax]``.
        """
        q = self.pi(obs)
        batch, n = q.shape
        if mask is not None:
            q = np.where(mask, q, -np.inf)
        greedy = q.argmax(axis=1)
        actions = greedy
        eligible: np.ndarray | int = n if mask is None else mask.sum(axis=1)
        if epsilon > 0.0:
            explore = rng.random(batch) < epsilon
            if mask is None:
                uniform = rng.integers(0, n, size=batch)
            else:  # uniform over each row's eligible actions
                cdf = np.cumsum(mask, axis=1)
                pick = (rng.random(batch) * cdf[:, -1]).astype(np.int64)
                uniform = (cdf <= pick[:, None]).sum(axis=1)
            actions = np.where(explore, uniform, greedy)
        probs = epsilon / np.asarray(eligible, dtype=np.float64) + (1.0 - epsilon) * (
            actions == greedy
        )
        return actions.astype(np.int64), np.log(probs).astype(np.float32)

    def _sample_squashed(
        self, out: np.ndarray, rng: np.random.Generator, deterministic: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``a = tanh(u) * scale + bias``, ``u ~ N(mean, std)``; log-prob with the
        change-of-variables correction (Haarnoja et al. 2018, appendix C)."""
        d = self.spec.act_dim
        mean = out[:, :d]
        log_std = np.clip(out[:, d:], LOG_STD_MIN, LOG_STD_MAX)
        noise = (
            np.zeros_like(mean) if deterministic else rng.standard_normal(mean.shape, np.float32)
        )
        u = mean + np.exp(log_std) * noise
        squashed = np.tanh(u)
        logp = (-0.5 * noise * noise - log_std).sum(axis=1) - 0.5 * _LOG_2PI * d
        logp -= np.log(1.0 - squashed * squashed + 1e-6).sum(axis=1) + self._log_scale_sum
        return squashed * self.action_scale + self.action_bias, logp.astype(np.float32)

    def _sample_from(
        self,
        out: np.ndarray,
        rng: np.random.Generator,
        deterministic: bool,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.spec.head == "q":
            raise AssertionError("Q heads sample through epsilon_greedy")
        if self.spec.head == "categorical":
            if mask is not None:
                out = np.where(mask, out, -np.inf).astype(np.float32)
            out = out - out.max(axis=1, keepdims=True)
            log_z = np.log(np.exp(out).sum(axis=1, keepdims=True))
            out -= log_z  # log-probabilities
            if deterministic:
                actions = out.argmax(axis=1)
            else:
                # Inverse-CDF sampling: one uniform per row.
                cdf = np.exp(out).cumsum(axis=1)
                u = np.asarray(rng.random(out.shape[0], dtype=np.float32))[:, None] * cdf[:, -1:]
                if mask is None:
                    actions = np.minimum((cdf < u).sum(axis=1), out.shape[1] - 1)
                else:
                    # First index whose cdf exceeds u: never a zero-probability
                    # (masked) action; rounding past the end maps to the last eligible.
                    last = out.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
                    actions = np.minimum((cdf <= u).sum(axis=1), last)
            logp = out[np.arange(out.shape[0]), actions]
            return actions.astype(np.int64), logp.astype(np.float32)
        if deterministic:
            return out, np.full(out.shape[0], self._logp_const, dtype=np.float32)
        noise = rng.standard_normal(out.shape, dtype=np.float32)
        actions = out + self.std * noise
        logp = self._logp_const - 0.5 * (noise * noise).sum(axis=1)
        return actions, logp.astype(np.float32)
