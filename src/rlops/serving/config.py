"""The serving config: one frozen dataclass, every default in one place.

Pure (no server imports), so the routing / guardrail / admin modules and the
CLI can read it without starting anything.

>>> cfg = ServeConfig(artifact="runs/cartpole/artifact", mode="greedy", epsilon=0.05)
>>> cfg.host, cfg.epsilon_cap
('127.0.0.1', 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlops.core.config import check
from rlops.serving.guardrail import GuardrailConfig

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
    inference: Literal["auto", "thread"] = "auto"
    """Where the policy's forward runs: ``"auto"`` runs a rlops artifact's numpy
    forward on the event loop while its average stays under 0.5 ms (no thread
    hand-off: lower latency) and on the worker thread otherwise; ``"thread"``
    always uses the worker thread, where the request deadline can pre-empt a
    slow forward."""
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
    canary: str | None = None
    """Canary policy artifact (same observation and action spaces as production),
    served to ``canary_share`` of units for whole episodes (sticky by unit_id)."""
    canary_share: float = 0.0
    """Fraction of units on the canary at first start, in [0, 1] (a fraction, not
    a percent). Admin changes and automatic rollbacks persist in ``state_file``
    and win over this value on restart."""
    salt: str | None = None
    """Assignment salt of the canary split (None: the canary's content hash, so a
    new canary reshuffles units and the same one keeps them across restarts)."""
    shadow: str | None = None
    """Shadow policy artifact: evaluated off the response path, its distribution
    joined to the decision's log row (``shadow_distribution``), never served."""
    shadow_share: float = 1.0
    """Fraction of units (sticky, like the canary) the shadow policy runs on."""
    guardrail: GuardrailConfig = field(default_factory=GuardrailConfig)
    """When the canary is rolled back automatically (reward, errors, latency, safety)."""
    guardrail_interval_s: float = 1.0
    """How often the guardrail is checked while a canary serves traffic."""
    admin_token: str | None = field(default=None, repr=False)
    """Bearer token of the ``/v1/admin/*`` endpoints. None: ``$RLOPS_ADMIN_TOKEN``,
    else a random token generated and printed once at start. Never defaulted."""
    admin_log: str | None = None
    """Append-only, hash-chained JSONL log of admin actions (None: next to the
    decision log, ``<decision_log>.admin.jsonl``)."""
    state_file: str | None = None
    """Routing state (canary share, shadow, overrides, kill switch, guardrail)
    kept across restarts (None: ``<decision_log>.state.json``)."""

    @property
    def admin_log_path(self) -> Path:
        """Where admin actions are logged."""
        return Path(self.admin_log or f"{self.decision_log}.admin.jsonl")

    @property
    def state_path(self) -> Path:
        """Where routing state persists."""
        return Path(self.state_file or f"{self.decision_log}.state.json")

    def __post_init__(self) -> None:
        check(bool(self.artifact), "artifact", "must not be empty")
        check(0 <= self.port <= 65535, "port", f"must be in [0, 65535], got {self.port}")
        check(self.mode in ("sample", "greedy"), "mode", f"{self.mode!r}: use sample or greedy")
        check(
            self.inference in ("auto", "thread"),
            "inference",
            f"{self.inference!r}: use auto or thread",
        )
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
        for key in ("canary_share", "shadow_share"):
            value = getattr(self, key)
            check(
                not isinstance(value, bool)
                and isinstance(value, int | float)
                and math.isfinite(value)
                and 0.0 <= value <= 1.0,
                key,
                f"must be a fraction in [0, 1] (not a percent), got {value!r}",
            )
        check(
            self.canary is not None or self.canary_share == 0.0,
            "canary_share",
            "needs a canary policy (canary=PATH, --canary PATH)",
        )
        check(self.canary is None or bool(self.canary), "canary", "must not be empty")
        check(self.shadow is None or bool(self.shadow), "shadow", "must not be empty")
        check(self.salt is None or bool(self.salt), "salt", "must not be empty")
        check(
            math.isfinite(self.guardrail_interval_s) and self.guardrail_interval_s > 0,
            "guardrail_interval_s",
            f"must be a finite value > 0, got {self.guardrail_interval_s}",
        )
        if isinstance(self.fallback_action, tuple):
            check(
                all(math.isfinite(v) for v in self.fallback_action),
                "fallback_action",
                "must be finite",
            )
