"""The serving config: one frozen dataclass, every default in one place.

Pure (no server imports), so the routing / guardrail / admin modules and the
CLI can read it without starting anything.

>>> cfg = ServeConfig(artifact="runs/cartpole/artifact", mode="greedy", epsilon=0.05)
>>> cfg.host, cfg.epsilon_cap
('127.0.0.1', 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rlops.core.config import check

Mode = Literal["sample", "greedy"]
"""How the production arm turns the policy's distribution into an action."""


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """How ``rlops serve`` answers ``POST /v1/act`` and where it logs decisions.

    The served (behaviour) distribution of a discrete policy, for one request
    with eligible actions ``E`` (the mask, or all actions), is built in three
    steps, and the logged propensity is the probability of the returned action
    under exactly this distribution (returned as ``action_distribution``):

    1. base: ``mode="sample"`` -> the policy's distribution ``pi`` renormalised
       over ``E``; ``mode="greedy"`` -> all mass on ``g = argmax_E pi``;
    2. floor: ``d = (1 - epsilon) * base + epsilon * uniform(E)``;
    3. cap: if ``1 - d[g] > epsilon_cap``, ``d = (1 - l) * onehot(g) + l * d``
       with ``l = epsilon_cap / (1 - d[g])`` (a ``serving/safety`` trigger of
       kind ``exploration_capped``).

    So ``epsilon`` guarantees every eligible action a propensity of at least
    ``epsilon / |E|`` (support for off-policy evaluation), and ``epsilon_cap``
    bounds how often a served action deviates from the greedy one.
    """

    artifact: str
    """Policy artifact directory (``model.safetensors`` + ``policy.json``)."""
    host: str = "127.0.0.1"
    """Interface to bind; the loopback default keeps the server private until
    you put it behind a proxy or choose ``0.0.0.0`` deliberately."""
    port: int = 8000
    """TCP port (0: an ephemeral port chosen by the OS)."""
    mode: Mode = "sample"
    """``"sample"``: draw from the policy's own distribution (the production
    default: every decision has a known, non-degenerate propensity);
    ``"greedy"``: the most likely eligible action (continuous: the mean)."""
    epsilon: float = 0.0
    """Discrete only: probability mass spread uniformly over the eligible actions
    (``mode="greedy"`` with ``epsilon > 0`` is epsilon-greedy)."""
    epsilon_cap: float = 1.0
    """Discrete only: upper bound on the probability of serving an action other
    than the greedy one (1.0: no bound). Must be >= ``epsilon``."""
    max_batch_size: int = 64
    """Most observations one micro-batch (one numpy forward) holds."""
    max_batch_wait_ms: float = 0.0
    """How long the batcher waits for more requests after the first one arrives
    (0: take what queued up while the previous batch ran, which batches under
    load without delaying a lone request)."""
    max_request_rows: int = 1024
    """Most decisions one ``{"requests": [...]}`` body may ask for."""
    decision_log: str = "decisions.sqlite"
    """SQLite file of decision records (created, WAL mode)."""
    log_queue_size: int = 100_000
    """Decision-log entries that may wait for the writer; beyond it ``/v1/act``
    and ``/v1/feedback`` answer 503 with ``Retry-After`` instead of dropping a record."""
    log_batch_size: int = 2048
    """Most entries the writer commits in one transaction."""
    max_body_bytes: int = 1 << 20
    """Largest request body accepted (413 beyond)."""
    request_timeout_ms: float = 250.0
    """Deadline of one ``/v1/act`` request (queueing + policy); past it the
    fallback action answers."""
    fallback_action: int | tuple[float, ...] | None = None
    """Action served (``arm="fallback"``, propensity 1) when the policy raises or
    misses the deadline: a discrete action (replaced by the lowest eligible action
    when masked out) or a continuous vector (clipped to the bounds). None: answer
    503 ``policy_unavailable`` instead."""
    seed: int | None = None
    """Seed of the sampling generator (None: from the OS)."""

    def __post_init__(self) -> None:
        check(bool(self.artifact), "artifact", "must not be empty")
        check(0 <= self.port <= 65535, "port", f"must be in [0, 65535], got {self.port}")
        check(self.mode in ("sample", "greedy"), "mode", f"{self.mode!r}: use sample or greedy")
        check(0.0 <= self.epsilon <= 1.0, "epsilon", f"must be in [0, 1], got {self.epsilon}")
        check(
            0.0 <= self.epsilon_cap <= 1.0,
            "epsilon_cap",
            f"must be in [0, 1], got {self.epsilon_cap}",
        )
        check(
            self.epsilon <= self.epsilon_cap,
            "epsilon",
            f"{self.epsilon} exceeds epsilon_cap={self.epsilon_cap}; lower it or raise the cap",
        )
        for key in ("max_batch_size", "max_request_rows", "log_queue_size", "log_batch_size"):
            value = getattr(self, key)
            check(value >= 1, key, f"must be >= 1, got {value}")
        check(self.max_body_bytes >= 64, "max_body_bytes", "must be >= 64")
        check(
            math.isfinite(self.max_batch_wait_ms) and self.max_batch_wait_ms >= 0,
            "max_batch_wait_ms",
            f"must be a finite value >= 0, got {self.max_batch_wait_ms}",
        )
        check(
            math.isfinite(self.request_timeout_ms) and self.request_timeout_ms > 0,
            "request_timeout_ms",
            f"must be a finite value > 0, got {self.request_timeout_ms}",
        )
        if isinstance(self.fallback_action, tuple):
            check(
                all(math.isfinite(v) for v in self.fallback_action),
                "fallback_action",
                "must be finite",
            )
