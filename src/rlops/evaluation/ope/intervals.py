"""Confidence intervals for off-policy estimates.

* :func:`bootstrap_ci`: percentile bootstrap over independent units (decisions
  for one-step estimators, episodes for sequential ones), any statistic,
  vectorised over resamples, seeded (the same data give the same interval).
  Asymptotic: its coverage is close to nominal when the statistic is roughly
  normal, which fails when a few huge importance weights dominate.
* :func:`empirical_bernstein_ci` and :func:`hoeffding_ci`: finite-sample
  intervals for the mean of independent terms with a *known* range
  ``[low, high]`` (IPS terms ``w_i r_i`` lie in ``[0, w_max r_max]`` for
  rewards in ``[0, r_max]``). Valid at every ``n``, never below nominal
  coverage when the assumptions hold, but conservative: their width grows with
  the range, i.e. with the largest possible importance weight.
* :func:`streaming_ips_cs`: an anytime-valid confidence sequence for IPS on a
  stream of decisions (valid at every prefix simultaneously, so a monitor may
  check after every decision); it reuses the serving guardrail's
  empirical-Bernstein confidence sequence.
* :class:`IntervalConfig`: which interval an estimator reports.

Assumptions shared by all of them: decisions are independent draws (the same
logging policy, contexts drawn independently; many decisions of one user are
not independent and make every interval here too narrow), and the reward
model, if any, is held fixed (intervals of DM and DR ignore the reward
model's own estimation error beyond what cross-fitting removes).

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(1.0, 1.0, size=2000)
>>> lo, hi = bootstrap_ci(lambda idx: x[idx].mean(axis=-1), len(x), seed=0)
>>> bool(lo < 1.0 < hi)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rlops.core.config import check
from rlops.core.errors import DataError

__all__ = [
    "IntervalConfig",
    "IntervalMethod",
    "bootstrap_ci",
    "empirical_bernstein_ci",
    "hoeffding_ci",
    "streaming_ips_cs",
]

IntervalMethod = Literal["bootstrap", "empirical_bernstein", "hoeffding"]

DEFAULT_RESAMPLES = 1000


def bootstrap_ci(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    chunk: int = 100,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``n`` independent units.

    Args:
        statistic: maps an index array ``[B, n]`` (each row one resample of
            ``range(n)`` with replacement) to ``[B]`` estimates; it must treat
            rows independently.
        n: number of units.
        level: nominal coverage.
        resamples: bootstrap resamples.
        seed: resampling seed.
        chunk: resamples evaluated per call (bounds memory at ``chunk * n`` indices).

    Returns:
        ``(low, high)``; NaN resamples (e.g. a self-normalised estimator with
        zero total weight in a resample) are ignored, and ``(nan, nan)`` is
        returned if all are NaN.
    """
    if n < 1:
        raise ValueError("bootstrap_ci: needs at least one unit")
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        values.append(np.asarray(statistic(idx), dtype=np.float64).reshape(b))
    all_values = np.concatenate(values)
    finite = all_values[np.isfinite(all_values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True, kw_only=True)
class IntervalConfig:
    """Which confidence interval an estimator reports, and what it may assume.

    >>> IntervalConfig(level=0.9, method="empirical_bernstein", reward_range=(0.0, 1.0)).level
    0.9
    """

    level: float = 0.95
    """Nominal two-sided coverage, in (0, 1)."""
    method: IntervalMethod = "bootstrap"
    """``bootstrap`` (percentile, over decisions; any estimator),
    ``empirical_bernstein`` or ``hoeffding`` (finite-sample, for estimators that
    are a mean of bounded per-decision terms: IPS, clipped IPS, DR, Switch-DR)."""
    resamples: int = DEFAULT_RESAMPLES
    """Bootstrap resamples."""
    seed: int = 0
    """Bootstrap resampling seed."""
    reward_range: tuple[float, float] | None = None
    """Known ``[lo, hi]`` of a reward. None: the observed minimum and maximum,
    which is exact for binary rewards that took both values but otherwise
    makes the concentration bounds slightly optimistic (the range is then
    estimated from the same data)."""
    weight_bound: float | None = None
    """Known largest importance weight (e.g. ``1 / min propensity`` when the
    logger has an exploration floor). None: the largest observed weight, with
    the same caveat as ``reward_range``."""

    def __post_init__(self) -> None:
        check(0.0 < self.level < 1.0, "level", f"must be in (0, 1), got {self.level}")
        check(
            self.method in ("bootstrap", "empirical_bernstein", "hoeffding"),
            "method",
            f"must be 'bootstrap', 'empirical_bernstein' or 'hoeffding', got {self.method!r}",
        )
        check(self.resamples >= 10, "resamples", f"must be >= 10, got {self.resamples}")
        if self.reward_range is not None:
            lo, hi = self.reward_range
            check(
                math.isfinite(lo) and math.isfinite(hi) and lo <= hi,
                "reward_range",
                f"must be finite [lo, hi] with lo <= hi, got {self.reward_range}",
            )
        if self.weight_bound is not None:
            check(
                math.isfinite(self.weight_bound) and self.weight_bound > 0,
                "weight_bound",
                f"must be finite and > 0, got {self.weight_bound}",
            )


def _bounded_terms(terms: np.ndarray, low: float, high: float, level: float) -> np.ndarray:
    x = np.asarray(terms, dtype=np.float64).reshape(-1)
    check(0.0 < level < 1.0, "level", f"must be in (0, 1), got {level}")
    check(
        math.isfinite(low) and math.isfinite(high) and low <= high,
        "range",
        f"must be finite [low, high] with low <= high, got [{low}, {high}]",
    )
    if x.size == 0:
        raise DataError("terms: no decisions to bound")
    bad = int(np.sum(~np.isfinite(x)))
    if bad:
        raise DataError(f"terms: {bad} per-decision term(s) are NaN or infinite")
    tol = 1e-9 * max(1.0, abs(low), abs(high))
    outside = int(np.sum((x < low - tol) | (x > high + tol)))
    if outside:
        raise DataError(
            f"terms: {outside} per-decision term(s) lie outside the assumed range "
            f"[{low:.6g}, {high:.6g}]; the bound needs a range every term respects "
            "(raise weight_bound or widen reward_range)"
        )
    return x


def hoeffding_ci(
    terms: np.ndarray, *, low: float, high: float, level: float = 0.95
) -> tuple[float, float]:
    """Hoeffding's interval for the mean of independent terms in ``[low, high]``.

    ``mean +- (high - low) sqrt(log(2 / delta) / (2 n))`` with ``delta = 1 - level``
    (Hoeffding 1963, two-sided by a union bound over the two tails). Ignores
    the variance, so it is the widest interval here; use it as the simple,
    assumption-light reference.

    Args:
        terms: ``[n]`` per-decision terms (e.g. ``w_i r_i`` for IPS).
        low: a lower bound every term respects, known before seeing the data.
        high: the matching upper bound.
        level: nominal coverage.

    Returns:
        ``(low, high)`` of the interval, clipped to ``[low, high]``.

    Raises:
        DataError: a term is NaN or outside ``[low, high]``.

    >>> hoeffding_ci(np.full(10_000, 0.5), low=0.0, high=1.0)
    (0.4864..., 0.5135...)
    """
    x = _bounded_terms(terms, low, high, level)
    half = (high - low) * math.sqrt(math.log(2.0 / (1.0 - level)) / (2.0 * x.size))
    mean = float(x.mean())
    return max(low, mean - half), min(high, mean + half)


def empirical_bernstein_ci(
    terms: np.ndarray, *, low: float, high: float, level: float = 0.95
) -> tuple[float, float]:
    """Empirical-Bernstein interval for the mean of independent terms in ``[low, high]``.

    Maurer & Pontil (2009), "Empirical Bernstein bounds and sample variance
    penalization", Theorem 4: for i.i.d. ``Z_i`` in ``[0, 1]`` and ``n >= 2``,
    with probability at least ``1 - delta``::

        E Z <= mean(Z) + sqrt(2 V_n log(2 / delta) / n) + 7 log(2 / delta) / (3 (n - 1))

    where ``V_n`` is the unbiased sample variance. Applied to both tails at
    ``delta / 2`` each (union bound: ``log(4 / delta)``) and rescaled from
    ``[0, 1]`` to ``[low, high]`` (``R = high - low``)::

        mean +- ( sqrt(2 V_n log(4 / delta) / n) + 7 R log(4 / delta) / (3 (n - 1)) )

    Tighter than Hoeffding when the terms vary much less than their range (IPS
    with a few large weights), but the ``R / n`` term still grows with the
    largest possible weight. Assumes independent terms and a range known
    before seeing the data.

    Args:
        terms: ``[n]`` per-decision terms.
        low: a lower bound every term respects.
        high: the matching upper bound.
        level: nominal coverage.

    Returns:
        ``(low, high)`` of the interval, clipped to ``[low, high]``; the whole
        range when ``n < 2``.

    Raises:
        DataError: a term is NaN or outside ``[low, high]``.

    >>> lo, hi = empirical_bernstein_ci(np.tile([0.0, 1.0], 5000), low=0.0, high=1.0)
    >>> round(lo, 4), round(hi, 4)
    (0.4842, 0.5158)
    """
    x = _bounded_terms(terms, low, high, level)
    n = x.size
    if n < 2:
        return low, high
    log_term = math.log(4.0 / (1.0 - level))
    variance = float(x.var(ddof=1))
    half = math.sqrt(2.0 * variance * log_term / n) + 7.0 * (high - low) * log_term / (
        3.0 * (n - 1)
    )
    mean = float(x.mean())
    return max(low, mean - half), min(high, mean + half)


def streaming_ips_cs(
    rewards: np.ndarray,
    weights: np.ndarray,
    *,
    reward_range: tuple[float, float],
    weight_bound: float,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Anytime-valid confidence sequence for the IPS value after every decision of a stream.

    The per-decision IPS terms ``w_t r_t`` lie in ``[min(0, W lo), max(0, W hi)]``
    for weights in ``[0, W]`` (``W = weight_bound``) and rewards in
    ``[lo, hi]``; they are rescaled to ``[0, 1]`` and given the predictable
    plug-in empirical-Bernstein confidence sequence of Waudby-Smith & Ramdas
    (2023), implemented once in :func:`rlops.serving.guardrail.eb_confidence_sequence`
    (see that module for the formula and its validity). With probability at
    least ``level`` the evaluation policy's value lies in *every* interval of
    the sequence at once, so the stream may be checked after each decision and
    stopped as soon as the interval clears a threshold, without the inflated
    error of repeatedly applying a fixed-``n`` interval.

    Assumptions: given the past, each decision's context is a fresh draw and
    its action was drawn from the logged propensity (the logger may change over
    time, as long as the logged propensities are the ones it used); ``W`` and
    ``[lo, hi]`` are known in advance (they set the width: a large ``W`` makes
    the sequence wide for a long time).

    Args:
        rewards: ``[T]`` rewards in arrival order.
        weights: ``[T]`` importance weights ``pi_e(a_t|x_t) / mu(a_t|x_t)``.
        reward_range: ``[lo, hi]`` every reward respects.
        weight_bound: ``W``, a bound every weight respects.
        level: coverage of the whole sequence.

    Returns:
        ``(lower, upper)``, each ``[T]``: the interval after ``t + 1`` decisions.

    Raises:
        DataError: a reward or weight outside its declared range, or NaN.

    >>> rng = np.random.default_rng(0)
    >>> r = (rng.random(20_000) < 0.3).astype(float)
    >>> lo, hi = streaming_ips_cs(r, np.ones(20_000), reward_range=(0, 1), weight_bound=1.0)
    >>> bool(lo[-1] < 0.3 < hi[-1]), bool(hi[-1] - lo[-1] < 0.05)
    (True, True)
    """
    # Lazy import: the confidence-sequence math lives with the serving guardrail
    # (it was written there first); evaluation must not import serving at module
    # load (layering), and this keeps a single implementation.
    from rlops.serving.guardrail import eb_confidence_sequence

    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if r.shape != w.shape:
        raise DataError(f"weights: expected {r.shape[0]} weights to match rewards, got {w.size}")
    lo_r, hi_r = reward_range
    check(
        math.isfinite(weight_bound) and weight_bound > 0,
        "weight_bound",
        f"must be finite and > 0, got {weight_bound}",
    )
    bad_w = int(np.sum(~np.isfinite(w) | (w < 0) | (w > weight_bound * (1 + 1e-12))))
    if bad_w:
        raise DataError(f"weights: {bad_w} weight(s) are NaN, negative or above {weight_bound}")
    bad_r = int(np.sum(~np.isfinite(r) | (r < lo_r) | (r > hi_r)))
    if bad_r:
        raise DataError(f"reward: {bad_r} reward(s) are NaN or outside [{lo_r}, {hi_r}]")
    low = min(0.0, weight_bound * lo_r)
    high = max(0.0, weight_bound * hi_r)
    if high <= low:
        return np.full(r.shape, low), np.full(r.shape, high)
    scaled = np.clip((w * r - low) / (high - low), 0.0, 1.0)
    lower, upper = eb_confidence_sequence(scaled, alpha=1.0 - level)
    return low + (high - low) * lower, low + (high - low) * upper
