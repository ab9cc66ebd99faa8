"""Automatic rollback when the canary regresses, safe to check after every feedback.

A fixed-sample t-test checked after every piece of live feedback rejects a true
null far more often than its nominal level (Armitage et al. 1969; Johari et al.
2017, "Peeking at A/B tests"). The reward comparison here instead uses a
*confidence sequence* (CS): a sequence of intervals that contains the true mean
at *every* time simultaneously with probability ``1 - alpha``, so the guardrail
may look as often as it likes and stop the first time the evidence is clear.

Reward rule (anytime-valid)
---------------------------
Rewards are clipped into ``config.reward_range = [lo, hi]`` and rescaled to
``[0, 1]``. The two arms' feedback streams are **paired in time**: a canary
reward is paired with the next production reward to arrive (and vice versa);
while one arm runs ahead, only its most recent unpaired reward is kept. Which
rewards form a pair depends on the order in which the arms report, never on
the values, so each paired difference ``D_k = (X^canary - X^production + 1) / 2``
lies in ``[0, 1]`` with mean ``(mu_canary - mu_production + 1) / 2``. Pairing
rewards that arrive close together cancels drift common to both arms (time of
day, traffic mix) and, at a 50/50 split, needs less than half the samples of
combining two per-arm intervals by a union bound (measured when this module was
written: Bernoulli(0.5) production, canary 0.1 worse, median detection after
1460 vs 3358 feedbacks).
The assumption, as for any such test: given the past, each arm's next reward
has that arm's mean, and which arm reports next does not depend on the values
(feedback delays that depend on the outcome break it).

The pair stream gets the predictable plug-in empirical-Bernstein confidence
sequence (PrPl-EB) of Waudby-Smith & Ramdas (2023), "Estimating means of
bounded random variables by betting", JRSSB 86(1), Section 3.2, Theorem 2. For
``X_1, X_2, ... in [0, 1]`` with conditional mean ``mu`` and a level ``a``::

    mu_hat_t    = (1/2 + sum_{i<=t} X_i) / (t + 1)                     (mu_hat_0 = 1/2)
    sigma2_t    = (1/4 + sum_{i<=t} (X_i - mu_hat_i)^2) / (t + 1)      (sigma2_0 = 1/4)
    lambda_t    = min(sqrt(2 log(2/a) / (sigma2_{t-1} t log(1 + t))), 1/2)
    v_t         = 4 (X_t - mu_hat_{t-1})^2
    psi_E(l)    = (-log(1 - l) - l) / 4
    C_t         = sum_i lambda_i X_i / sum_i lambda_i
                  +- (log(2/a) + sum_i v_i psi_E(lambda_i)) / sum_i lambda_i

Why it is valid: for ``xi = +-(X - mu_hat) in [-1, 1]`` and ``l in [0, 1)``,
``exp(l xi - xi^2 (-log(1 - l) - l)) <= 1 + l xi`` (Fan, Grama & Liu 2015,
Lemma 4.1), so ``prod_i exp(+-lambda_i (X_i - mu) - v_i psi_E(lambda_i))`` is a
nonnegative supermartingale for any predictable ``lambda_i`` and ``mu_hat_{i-1}``
(the empirical-Bernstein supermartingale of Howard et al. 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann.
Statist. 49(2)); Ville's inequality at ``2/a`` bounds the probability that
either side of ``C_t`` *ever* fails by ``a/2``.

The guardrail uses ``a = 2 alpha``, so the upper side alone fails with
probability at most ``alpha``, and rolls back when the upper bound of
``mu_canary - mu_production`` (``(2 U_t - 1) (hi - lo)``) falls below
``-min_effect``. If the canary is in truth worse by at most ``min_effect``,
the probability of *ever* rolling back, checking after every feedback, is at
most ``alpha``.

Other rules (not anytime-valid unless stated)
---------------------------------------------
* **error rate** (5xx or fallback share): the same time-paired PrPl-EB CS on the
  0/1 error indicators at ``error_alpha``; roll back when the lower bound of
  ``error_canary - error_production`` exceeds ``max_error_rate_increase``
  (anytime-valid).
* **p99 latency** over the last ``latency_window`` requests of each arm: roll back
  when ``p99_canary > latency_factor * p99_production`` once both arms have
  ``min_latency_samples`` requests (a threshold, not a test).
* **safety triggers** per canary request: roll back when the canary's mean
  triggers per request exceeds ``max_safety_rate`` once it has ``min_requests``
  requests (a threshold).

A rollback verdict latches: once tripped, :meth:`Guardrail.check` keeps returning
it (the CS guarantee is about the *first* crossing) until :meth:`Guardrail.reset`.

>>> g = Guardrail(GuardrailConfig(min_samples=50))
>>> for _ in range(300):
...     g.observe_reward("production", 1.0)
...     g.observe_reward("canary", 0.0)
>>> v = g.check()
>>> v.rollback, v.reason.split(":")[0]
(True, 'reward')
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import numpy.typing as npt

from rlops.core.config import check
from rlops.core.errors import ConfigError

GuardedArm = Literal["production", "canary"]
"""The two arms the guardrail compares."""

GUARDED_ARMS: tuple[GuardedArm, ...] = get_args(GuardedArm)
STATE_FORMAT = 1
"""Version of :meth:`Guardrail.state_dict`; bumped on incompatible changes."""

LAMBDA_TRUNCATION = 0.5
"""The cap ``c`` on the bets ``lambda_t`` (Waudby-Smith & Ramdas suggest 1/2 or 3/4)."""


@dataclass(frozen=True, kw_only=True)
class GuardrailConfig:
    """When the canary is rolled back."""

    reward_range: tuple[float, float] = (0.0, 1.0)
    """``[lo, hi]``: rewards are clipped into it; the CS is valid for rewards in it,
    and its width scales with ``hi - lo`` (choose it as tight as the reward allows)."""
    alpha: float = 0.05
    """Bound on the probability of a false reward rollback over the whole run, in (0, 0.5)."""
    min_effect: float = 0.0
    """Roll back only when the canary is worse by more than this (reward units)."""
    min_samples: int = 100
    """(canary, production) reward pairs before the reward rule may decide."""
    error_alpha: float = 0.05
    """Bound on the probability of a false error-rate rollback over the whole run, in (0, 0.5)."""
    max_error_rate_increase: float = 0.01
    """Tolerated increase of the canary's error rate over production's (absolute)."""
    min_requests: int = 100
    """(canary, production) request pairs before the error-rate rule, and canary
    requests before the safety rule, may decide."""
    latency_factor: float = 1.5
    """Roll back when canary p99 latency exceeds production p99 times this."""
    min_latency_samples: int = 200
    """Requests per arm before the latency rule may decide."""
    latency_window: int = 10_000
    """p99 latency is computed over the most recent this-many requests per arm."""
    max_safety_rate: float = 0.05
    """Roll back when the canary's safety triggers per request exceed this."""

    def __post_init__(self) -> None:
        lo, hi = self.reward_range
        check(
            math.isfinite(lo) and math.isfinite(hi) and lo < hi,
            "guardrail.reward_range",
            f"must be finite [lo, hi] with lo < hi, got {self.reward_range}",
        )
        for key, value in (("alpha", self.alpha), ("error_alpha", self.error_alpha)):
            # Each one-sided bound is the side of a two-sided CS at 2 * alpha.
            check(0.0 < value < 0.5, f"guardrail.{key}", f"must be in (0, 0.5), got {value}")
        check(
            self.min_effect >= 0.0, "guardrail.min_effect", f"must be >= 0, got {self.min_effect}"
        )
        check(
            0.0 <= self.max_error_rate_increase < 1.0,
            "guardrail.max_error_rate_increase",
            f"must be in [0, 1), got {self.max_error_rate_increase}",
        )
        for key, count in (
            ("min_samples", self.min_samples),
            ("min_requests", self.min_requests),
            ("min_latency_samples", self.min_latency_samples),
            ("latency_window", self.latency_window),
        ):
            check(count >= 1, f"guardrail.{key}", f"must be >= 1, got {count}")
        check(
            self.latency_window >= self.min_latency_samples,
            "guardrail.latency_window",
            f"must be >= min_latency_samples ({self.min_latency_samples}), "
            f"got {self.latency_window}",
        )
        check(
            self.latency_factor >= 1.0,
            "guardrail.latency_factor",
            f"must be >= 1, got {self.latency_factor}",
        )
        check(
            self.max_safety_rate >= 0.0,
            "guardrail.max_safety_rate",
            f"must be >= 0, got {self.max_safety_rate}",
        )


class Verdict(NamedTuple):
    """The guardrail's answer.

    Attributes:
        rollback: whether the canary must be rolled back.
        reason: the rule that tripped with its numbers, or why nothing tripped yet.
        stats: ``guardrail/...`` metrics (JSON-able floats); a statistic is absent
            until it is defined.
    """

    rollback: bool
    reason: str
    stats: dict[str, float]


# --------------------------------------------------------------------------- CS


def eb_confidence_sequence(
    x: npt.ArrayLike, alpha: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The PrPl-EB confidence sequence of the mean of ``[0, 1]`` data, at every prefix.

    Vectorised reference of :class:`EmpiricalBernsteinCS` (see the module
    docstring for the formula and its citation).

    Args:
        x: observations in ``[0, 1]``, time along the last axis ``[..., T]``.
        alpha: the CS contains the mean at all ``t`` with probability ``>= 1 - alpha``.

    Returns:
        ``(lower, upper)``, each ``[..., T]``: the interval after ``t + 1`` observations.

    Raises:
        ConfigError: ``alpha`` outside ``(0, 1)`` or data outside ``[0, 1]``.

    >>> lo, hi = eb_confidence_sequence([1.0, 0.0] * 500, alpha=0.05)
    >>> bool(lo[-1] < 0.5 < hi[-1]), bool(hi[-1] - lo[-1] < 0.2)
    (True, True)
    """
    check(0.0 < alpha < 1.0, "alpha", f"must be in (0, 1), got {alpha}")
    data = np.asarray(x, dtype=np.float64)
    if data.size and not (np.all(data >= 0.0) and np.all(data <= 1.0)):
        raise ConfigError("x: observations must lie in [0, 1]; rescale them first")
    steps = data.shape[-1]
    t = np.arange(1, steps + 1, dtype=np.float64)
    mu = (0.5 + np.cumsum(data, axis=-1)) / (t + 1.0)
    sigma2 = (0.25 + np.cumsum((data - mu) ** 2, axis=-1)) / (t + 1.0)
    mu_prev = np.concatenate([np.full_like(data[..., :1], 0.5), mu[..., :-1]], axis=-1)
    sigma2_prev = np.concatenate([np.full_like(data[..., :1], 0.25), sigma2[..., :-1]], axis=-1)
    log_term = math.log(2.0 / alpha)
    lam = np.minimum(np.sqrt(2.0 * log_term / (sigma2_prev * t * np.log1p(t))), LAMBDA_TRUNCATION)
    penalty = (data - mu_prev) ** 2 * (-np.log1p(-lam) - lam)
    lam_sum = np.cumsum(lam, axis=-1)
    center = np.cumsum(lam * data, axis=-1) / lam_sum
    margin = (log_term + np.cumsum(penalty, axis=-1)) / lam_sum
    return np.clip(center - margin, 0.0, 1.0), np.clip(center + margin, 0.0, 1.0)


class EmpiricalBernsteinCS:
    """Online PrPl-EB confidence sequence for the mean of ``[0, 1]`` data (O(1) per update).

    Matches :func:`eb_confidence_sequence` step by step.

    >>> cs = EmpiricalBernsteinCS(alpha=0.05)
    >>> for x in [1.0, 0.0] * 500:
    ...     cs.update(x)
    >>> cs.n, round(cs.mean, 3), bool(cs.lower < 0.5 < cs.upper)
    (1000, 0.5, True)
    """

    _FIELDS = ("n", "x_sum", "sq_sum", "lam_sum", "lam_x_sum", "penalty_sum")

    def __init__(self, alpha: float) -> None:
        """Args:
        alpha: two-sided level; each side fails with probability at most ``alpha/2``.
        """
        check(0.0 < alpha < 1.0, "alpha", f"must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self._log_term = math.log(2.0 / alpha)
        self.n = 0
        self.x_sum = 0.0
        self.sq_sum = 0.0
        self.lam_sum = 0.0
        self.lam_x_sum = 0.0
        self.penalty_sum = 0.0

    def update(self, x: float) -> None:
        """Add one observation in ``[0, 1]`` (the caller clips and rescales)."""
        t = self.n + 1
        mu_prev = (0.5 + self.x_sum) / t
        sigma2_prev = (0.25 + self.sq_sum) / t
        lam = min(
            math.sqrt(2.0 * self._log_term / (sigma2_prev * t * math.log1p(t))),
            LAMBDA_TRUNCATION,
        )
        # v_t psi_E(lambda_t) = 4 (x - mu_prev)^2 (-log(1 - l) - l) / 4
        self.penalty_sum += (x - mu_prev) ** 2 * (-math.log1p(-lam) - lam)
        self.lam_sum += lam
        self.lam_x_sum += lam * x
        self.x_sum += x
        self.sq_sum += (x - (0.5 + self.x_sum) / (t + 1)) ** 2
        self.n = t

    @property
    def mean(self) -> float:
        """The plain sample mean (``nan`` before any data)."""
        return self.x_sum / self.n if self.n else math.nan

    @property
    def lower(self) -> float:
        """Lower end of the CS (0 before any data)."""
        if not self.n:
            return 0.0
        center = self.lam_x_sum / self.lam_sum
        return max(0.0, center - (self._log_term + self.penalty_sum) / self.lam_sum)

    @property
    def upper(self) -> float:
        """Upper end of the CS (1 before any data)."""
        if not self.n:
            return 1.0
        center = self.lam_x_sum / self.lam_sum
        return min(1.0, center + (self._log_term + self.penalty_sum) / self.lam_sum)

    def state_dict(self) -> dict[str, float]:
        """The running sums (JSON-able)."""
        return {"n": self.n} | {name: float(getattr(self, name)) for name in self._FIELDS[1:]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ConfigError: missing or unknown fields, or a non-finite value.
        """
        _check_keys(state, set(self._FIELDS), "confidence sequence state")
        for name in self._FIELDS:
            value = state[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"confidence sequence state: {name} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"confidence sequence state: {name} must be finite and >= 0")
        if not isinstance(state["n"], int):
            raise ConfigError(
                f"confidence sequence state: n must be an integer, got {state['n']!r}"
            )
        self.n = int(state["n"])
        for name in self._FIELDS[1:]:
            setattr(self, name, float(state[name]))


# ----------------------------------------------------------------- guardrail


class PairedDifferenceCS:
    """Anytime-valid bounds on ``mean(canary) - mean(production)`` of two ``[0, 1]`` streams.

    Pairs each value with the next value of the other arm (keeping only the
    latest unpaired value of the arm that runs ahead) and runs
    :class:`EmpiricalBernsteinCS` at ``2 * alpha`` on ``(canary - production + 1) / 2``,
    so :attr:`upper` alone, and :attr:`lower` alone, each fail at any time with
    probability at most ``alpha`` (see the module docstring).

    >>> d = PairedDifferenceCS(alpha=0.05)
    >>> for _ in range(400):
    ...     d.observe("canary", 0.0)
    ...     d.observe("production", 1.0)
    >>> d.n, d.upper < -0.9
    (400, True)
    """

    def __init__(self, alpha: float) -> None:
        """Args:
        alpha: error probability of each one-sided bound, in ``(0, 0.5)``.
        """
        check(0.0 < alpha < 0.5, "alpha", f"must be in (0, 0.5), got {alpha}")
        self.alpha = alpha
        self.cs = EmpiricalBernsteinCS(2.0 * alpha)
        self.pending_arm: str | None = None
        self.pending_value = 0.0

    def observe(self, arm: GuardedArm, x: float) -> None:
        """Add one value in ``[0, 1]`` of ``arm``."""
        if self.pending_arm is None or self.pending_arm == arm:
            # The arm that runs ahead keeps only its latest value: pairs stay close in time.
            self.pending_arm, self.pending_value = arm, x
            return
        canary, production = (x, self.pending_value) if arm == "canary" else (self.pending_value, x)
        self.cs.update((canary - production + 1.0) / 2.0)
        self.pending_arm = None

    @property
    def n(self) -> int:
        """Pairs so far."""
        return self.cs.n

    @property
    def lower(self) -> float:
        """Lower bound of ``mean(canary) - mean(production)`` in ``[-1, 1]``."""
        return 2.0 * self.cs.lower - 1.0

    @property
    def upper(self) -> float:
        """Upper bound of ``mean(canary) - mean(production)`` in ``[-1, 1]``."""
        return 2.0 * self.cs.upper - 1.0

    def state_dict(self) -> dict[str, Any]:
        """The running sums and the unpaired value (JSON-able)."""
        return {
            "cs": self.cs.state_dict(),
            "pending_arm": self.pending_arm,
            "pending_value": self.pending_value,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ConfigError: malformed state.
        """
        _check_keys(state, {"cs", "pending_arm", "pending_value"}, "paired difference state")
        arm, value = state["pending_arm"], state["pending_value"]
        if arm is not None:
            _check_arm(arm)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(
                f"paired difference state: pending_value must be in [0, 1], got {value!r}"
            )
        self.cs.load_state_dict(state["cs"])
        self.pending_arm, self.pending_value = arm, float(value)


# ----------------------------------------------------------------- guardrail


class _ArmStats:
    """Plain per-arm tallies (the decisions use the paired CSs and these thresholds)."""

    _COUNTS = (
        "rewards",
        "rewards_clipped",
        "requests",
        "errors",
        "safety_triggers",
        "latency_count",
    )

    def __init__(self, config: GuardrailConfig) -> None:
        self.rewards = 0
        self.reward_sum = 0.0  # in reward units, after clipping
        self.rewards_clipped = 0
        self.requests = 0
        self.errors = 0
        self.safety_triggers = 0
        self.latency_count = 0  # all requests with a latency (the min_latency_samples rule)
        # Preallocated ring buffer, written in place: observe_request is the hot path.
        self.latencies = np.zeros(config.latency_window, dtype=np.float64)
        self._filled = 0  # valid entries in the ring
        self._pos = 0  # next write index
        self._p99: float | None = None  # cached until the next latency: check() may run often

    def add_latency(self, latency_ms: float) -> None:
        self.latencies[self._pos] = latency_ms
        self._pos = (self._pos + 1) % self.latencies.size
        self._filled = min(self._filled + 1, self.latencies.size)
        self.latency_count += 1
        self._p99 = None

    def recent_latencies(self) -> npt.NDArray[np.float64]:
        """The window, oldest first."""
        if self._filled < self.latencies.size:
            return self.latencies[: self._filled].copy()
        return np.concatenate([self.latencies[self._pos :], self.latencies[: self._pos]])

    def p99(self) -> float:
        if self._p99 is None:
            self._p99 = float(np.percentile(self.latencies[: self._filled], 99))
        return self._p99

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self._COUNTS}
        out["reward_sum"] = self.reward_sum
        out["latencies"] = self.recent_latencies().tolist()
        return out

    def load_state_dict(self, state: Mapping[str, Any], arm: str) -> None:
        what = f"guardrail state: arms.{arm}"
        _check_keys(state, {*self._COUNTS, "reward_sum", "latencies"}, what)
        for key in self._COUNTS:
            value = state[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{what}.{key}: must be an integer >= 0, got {value!r}")
        reward_sum = state["reward_sum"]
        if not isinstance(reward_sum, int | float) or not math.isfinite(reward_sum):
            raise ConfigError(f"{what}.reward_sum: must be a finite number, got {reward_sum!r}")
        try:
            latencies = np.asarray(state["latencies"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ConfigError(f"{what}.latencies: must be a list of numbers") from None
        if latencies.size > state["latency_count"] or not np.all(np.isfinite(latencies)):
            raise ConfigError(f"{what}.latencies: must be finite, at most latency_count of them")
        for key in self._COUNTS:
            setattr(self, key, state[key])
        self.reward_sum = float(reward_sum)
        # Keep the most recent window's worth (the window may have shrunk), oldest first.
        kept = latencies[latencies.size - min(latencies.size, self.latencies.size) :]
        self.latencies[: kept.size] = kept
        self._filled = kept.size
        self._pos = kept.size % self.latencies.size
        self._p99 = None


class Guardrail:
    """Compares canary and production on live traffic and says when to roll back.

    Call :meth:`observe_request` once per served request, :meth:`observe_reward`
    once per joined feedback, and :meth:`check` as often as you like (after every
    feedback is fine: the reward and error-rate rules are anytime-valid).
    Thread-safe: every method holds one lock.

    >>> g = Guardrail(GuardrailConfig(min_requests=10, max_safety_rate=0.5))
    >>> for _ in range(20):
    ...     g.observe_request("production", latency_ms=5.0, error=False, safety_triggers=0)
    ...     g.observe_request("canary", latency_ms=5.0, error=False, safety_triggers=1)
    >>> print(g.check().reason)  # doctest: +NORMALIZE_WHITESPACE
    safety: canary triggers per request 1.0000 > 0.5000 allowed
    (20 triggers over 20 requests, production 0.0000)
    """

    def __init__(self, config: GuardrailConfig | None = None) -> None:
        """Args:
        config: rollback rules; the defaults when omitted.
        """
        self.config = config or GuardrailConfig()
        self._lock = threading.Lock()
        self._arms: dict[GuardedArm, _ArmStats] = {}
        self._reward_diff = PairedDifferenceCS(self.config.alpha)
        self._error_diff = PairedDifferenceCS(self.config.error_alpha)
        self._tripped: str | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything, the rollback latch included (call when a new canary starts)."""
        with self._lock:
            self._arms = {arm: _ArmStats(self.config) for arm in GUARDED_ARMS}
            self._reward_diff = PairedDifferenceCS(self.config.alpha)
            self._error_diff = PairedDifferenceCS(self.config.error_alpha)
            self._tripped = None

    def observe_reward(self, arm: GuardedArm, reward: float) -> None:
        """Record one joined reward of a decision served by ``arm``.

        Rewards outside ``config.reward_range`` are clipped into it (counted in
        ``guardrail/rewards_clipped_<arm>``).

        Raises:
            ConfigError: unknown arm or a non-finite reward.
        """
        _check_arm(arm)
        value = float(reward)
        if not math.isfinite(value):
            raise ConfigError(f"reward: must be finite, got {reward!r}")
        lo, hi = self.config.reward_range
        clipped = min(max(value, lo), hi)
        with self._lock:
            stats = self._arms[arm]
            stats.rewards += 1
            stats.reward_sum += clipped
            stats.rewards_clipped += int(clipped != value)
            self._reward_diff.observe(arm, (clipped - lo) / (hi - lo))

    def observe_request(
        self, arm: GuardedArm, latency_ms: float, error: bool, safety_triggers: int = 0
    ) -> None:
        """Record one served request of ``arm``.

        Args:
            arm: the arm that served it.
            latency_ms: end-to-end latency.
            error: the request failed (5xx) or fell back to the fallback policy.
            safety_triggers: how many safety rules fired on it (>= 0).

        Raises:
            ConfigError: unknown arm, negative/non-finite latency, negative triggers.
        """
        _check_arm(arm)
        latency = float(latency_ms)
        if not (math.isfinite(latency) and latency >= 0.0):
            raise ConfigError(f"latency_ms: must be finite and >= 0, got {latency_ms!r}")
        if isinstance(safety_triggers, bool) or not isinstance(safety_triggers, int):
            raise ConfigError(f"safety_triggers: must be an integer, got {safety_triggers!r}")
        if safety_triggers < 0:
            raise ConfigError(f"safety_triggers: must be >= 0, got {safety_triggers}")
        with self._lock:
            stats = self._arms[arm]
            stats.requests += 1
            stats.errors += int(bool(error))
            stats.safety_triggers += safety_triggers
            stats.add_latency(latency)
            self._error_diff.observe(arm, 1.0 if error else 0.0)

    def check(self) -> Verdict:
        """Evaluate every rule; a rollback latches until :meth:`reset`.

        Returns:
            ``Verdict(rollback, reason, stats)``; ``reason`` names the metric and
            its numbers (every tripped rule, ``"; "``-separated), or says
            ``"ok"`` and which rules still wait for data.
        """
        with self._lock:
            stats = self._stats()
            if self._tripped is not None:
                return Verdict(True, self._tripped, stats)
            tripped: list[str] = []
            waiting: list[str] = []
            rules = (self._error_rule, self._safety_rule, self._latency_rule, self._reward_rule)
            for rule in rules:
                fired, message = rule()
                if fired:
                    tripped.append(message)
                elif message:
                    waiting.append(message)
            if tripped:
                self._tripped = "; ".join(tripped)
                return Verdict(True, self._tripped, stats)
            reason = "ok" if not waiting else "ok (waiting for data: " + "; ".join(waiting) + ")"
            return Verdict(False, reason, stats)

    # ------------------------------------------------------------------ rules
    # Each returns (fired, message): message is the reason when fired, what data
    # is missing while waiting, and "" when the rule has its data and is quiet.

    def _reward_rule(self) -> tuple[bool, str]:
        cfg = self.config
        diff = self._reward_diff
        if diff.n < cfg.min_samples:
            return False, f"reward {diff.n}/{cfg.min_samples} pairs"
        lo, hi = cfg.reward_range
        upper = diff.upper * (hi - lo)
        if upper < -cfg.min_effect:
            can, prod = self._arms["canary"], self._arms["production"]
            return True, (
                f"reward: canary - production upper bound {upper:.4f} < {-cfg.min_effect:.4f} "
                f"(canary mean {can.reward_sum / can.rewards:.4f} over {can.rewards}, "
                f"production mean {prod.reward_sum / prod.rewards:.4f} over {prod.rewards}, "
                f"{diff.n} pairs, confidence sequence alpha={cfg.alpha:g})"
            )
        return False, ""

    def _error_rule(self) -> tuple[bool, str]:
        cfg = self.config
        diff = self._error_diff
        if diff.n < cfg.min_requests:
            return False, f"error_rate {diff.n}/{cfg.min_requests} pairs"
        if diff.lower > cfg.max_error_rate_increase:
            can, prod = self._arms["canary"], self._arms["production"]
            return True, (
                f"error_rate: canary - production lower bound {diff.lower:.4f} > "
                f"{cfg.max_error_rate_increase:.4f} allowed (canary {can.errors / can.requests:.4f}"
                f" over {can.requests} requests, production {prod.errors / prod.requests:.4f} "
                f"over {prod.requests}, {diff.n} pairs, confidence sequence "
                f"alpha={cfg.error_alpha:g})"
            )
        return False, ""

    def _latency_rule(self) -> tuple[bool, str]:
        cfg = self.config
        can, prod = self._arms["canary"], self._arms["production"]
        if min(can.latency_count, prod.latency_count) < cfg.min_latency_samples:
            return False, (
                f"latency {can.latency_count}/{cfg.min_latency_samples} canary, "
                f"{prod.latency_count}/{cfg.min_latency_samples} production requests"
            )
        p99_can, p99_prod = can.p99(), prod.p99()
        if p99_can > cfg.latency_factor * p99_prod:
            return True, (
                f"latency: canary p99 {p99_can:.1f} ms > {cfg.latency_factor:g} x production "
                f"p99 {p99_prod:.1f} ms = {cfg.latency_factor * p99_prod:.1f} ms "
                f"(last {min(can.latency_count, cfg.latency_window)} canary, "
                f"{min(prod.latency_count, cfg.latency_window)} production requests)"
            )
        return False, ""

    def _safety_rule(self) -> tuple[bool, str]:
        cfg = self.config
        can, prod = self._arms["canary"], self._arms["production"]
        if can.requests < cfg.min_requests:
            return False, f"safety {can.requests}/{cfg.min_requests} canary requests"
        rate = can.safety_triggers / can.requests
        if rate > cfg.max_safety_rate:
            prod_rate = f"{prod.safety_triggers / prod.requests:.4f}" if prod.requests else "n/a"
            return True, (
                f"safety: canary triggers per request {rate:.4f} > {cfg.max_safety_rate:.4f} "
                f"allowed ({can.safety_triggers} triggers over {can.requests} requests, "
                f"production {prod_rate})"
            )
        return False, ""

    # ------------------------------------------------------------------ stats
    def _stats(self) -> dict[str, float]:
        lo, hi = self.config.reward_range
        out: dict[str, float] = {}
        for arm in GUARDED_ARMS:
            s = self._arms[arm]
            out[f"guardrail/rewards_{arm}"] = float(s.rewards)
            out[f"guardrail/rewards_clipped_{arm}"] = float(s.rewards_clipped)
            out[f"guardrail/requests_{arm}"] = float(s.requests)
            if s.rewards:
                out[f"guardrail/reward_mean_{arm}"] = s.reward_sum / s.rewards
            if s.requests:
                out[f"guardrail/error_rate_{arm}"] = s.errors / s.requests
                out[f"guardrail/safety_rate_{arm}"] = s.safety_triggers / s.requests
            if s.latency_count:
                out[f"guardrail/latency_p99_ms_{arm}"] = s.p99()
        out["guardrail/reward_pairs"] = float(self._reward_diff.n)
        out["guardrail/error_pairs"] = float(self._error_diff.n)
        if self._reward_diff.n:
            out["guardrail/reward_diff_lower"] = self._reward_diff.lower * (hi - lo)
            out["guardrail/reward_diff_upper"] = self._reward_diff.upper * (hi - lo)
        if self._error_diff.n:
            out["guardrail/error_diff_lower"] = self._error_diff.lower
            out["guardrail/error_diff_upper"] = self._error_diff.upper
        return out

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: tallies, latency windows, both paired CSs and the latch."""
        with self._lock:
            return {
                "format": STATE_FORMAT,
                "fingerprint": _fingerprint(self.config),
                "arms": {arm: self._arms[arm].state_dict() for arm in GUARDED_ARMS},
                "reward_diff": self._reward_diff.state_dict(),
                "error_diff": self._error_diff.state_dict(),
                "tripped": self._tripped,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (all of it or nothing).

        Raises:
            ConfigError: malformed state, or state recorded under a different
                ``alpha``, ``error_alpha`` or ``reward_range`` (the running sums
                depend on them: keep the config, or :meth:`reset` to start over).
        """
        _check_keys(
            state,
            {"format", "fingerprint", "arms", "reward_diff", "error_diff", "tripped"},
            "guardrail state",
        )
        if state["format"] != STATE_FORMAT:
            raise ConfigError(
                f"guardrail state: format {state['format']!r} is not supported "
                f"(this rlops reads format {STATE_FORMAT})"
            )
        mine, theirs = _fingerprint(self.config), state["fingerprint"]
        if theirs != mine:
            raise ConfigError(
                f"guardrail state: recorded with {theirs}, this guardrail has {mine}; the "
                "confidence sequences depend on these, so keep the config or call reset() "
                "to start a new comparison"
            )
        _check_keys(state["arms"], set(GUARDED_ARMS), "guardrail state: arms")
        tripped = state["tripped"]
        if tripped is not None and not isinstance(tripped, str):
            raise ConfigError(f"guardrail state: tripped must be a string or null, got {tripped!r}")
        arms = {arm: _ArmStats(self.config) for arm in GUARDED_ARMS}
        for arm in GUARDED_ARMS:
            arms[arm].load_state_dict(state["arms"][arm], arm)
        reward_diff = PairedDifferenceCS(self.config.alpha)
        reward_diff.load_state_dict(state["reward_diff"])
        error_diff = PairedDifferenceCS(self.config.error_alpha)
        error_diff.load_state_dict(state["error_diff"])
        with self._lock:
            self._arms, self._tripped = arms, tripped
            self._reward_diff, self._error_diff = reward_diff, error_diff


def _check_arm(arm: Any) -> None:
    if arm not in GUARDED_ARMS:
        raise ConfigError(
            f"arm: {arm!r} is not compared by the guardrail; use one of "
            f"{', '.join(GUARDED_ARMS)} (map override/fallback/shadow traffic before)"
        )


def _fingerprint(config: GuardrailConfig) -> dict[str, Any]:
    return {
        "alpha": config.alpha,
        "error_alpha": config.error_alpha,
        "reward_range": [float(config.reward_range[0]), float(config.reward_range[1])],
    }


def _check_keys(state: Any, expected: set[str], what: str) -> None:
    if not isinstance(state, Mapping):
        raise ConfigError(f"{what}: expected a mapping, got {type(state).__name__}")
    keys = set(state)
    if keys != expected:
        raise ConfigError(
            f"{what}: unknown key(s) {sorted(keys - expected)}, "
            f"missing key(s) {sorted(expected - keys)}"
        )
