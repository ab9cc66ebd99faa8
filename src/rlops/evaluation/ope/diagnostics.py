"""How far to trust an off-policy estimate: overlap diagnostics and plain-language warnings.

Importance weighting re-weights logged decisions by ``w_i = pi_e(a_i|x_i) /
mu(a_i|x_i)``. It only works where the two policies overlap, and it is only as
precise as the number of decisions that carry the weight. The numbers here say
how well that holds:

* ``ess``: Kish's effective sample size ``(sum w)^2 / sum w^2`` (Kish 1965;
  Owen 2013, "Monte Carlo theory, methods and examples", Section 9.3): how
  many equally weighted decisions the weighted sample is worth;
* ``max_weight``, ``max_weight_share``: the largest weight and its share of
  the total (one decision with 10% of the weight moves the estimate alone);
* ``mean_weight``: ``E_mu[w] = 1`` when the propensities are right and the
  logger covers every action the evaluation policy takes, so a mean far from
  1 (beyond its standard error ``mean_weight_se``) points at wrong
  propensities or missing support;
* ``no_support_share`` / ``no_support_mass``: decisions where the evaluation
  policy gives probability to actions the logger could not take
  (``mu(a|x) = 0``), and the mean probability it puts there. No estimator can
  see the reward of those actions in the log: IPS-type estimates drop that
  part of the value; DM and DR fill it in with the reward model. This needs
  the logger's full distribution per decision (``BanditData.behaviour``);
  without it, support cannot be checked and only ``logged_support_share`` (the
  share of logged actions the evaluation policy could also take) is reported.

>>> w = np.array([1.0, 1.0, 1.0, 9.0])
>>> round(effective_sample_size(w), 2)
1.71
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "MIN_ESS",
    "OverlapDiagnostics",
    "effective_sample_size",
    "importance_weights",
    "overlap_diagnostics",
    "overlap_warnings",
]

MIN_ESS = 30.0
"""Below this effective sample size an importance-weighted estimate is not to be trusted."""
LOW_ESS_SHARE = 0.1
"""Below this share of ``n`` the effective sample size earns a warning."""
MAX_WEIGHT_SHARE = 0.1
"""A single decision carrying more than this share of the total weight earns a warning."""


def importance_weights(
    actions: np.ndarray, propensities: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """``w_i = target[i, a_i] / propensities[i]`` ``[n]`` (inputs assumed validated)."""
    out: np.ndarray = target[np.arange(len(actions)), actions] / propensities
    return out


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (0 when every weight is 0)."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


@dataclass(frozen=True)
class OverlapDiagnostics:
    """Overlap between the evaluation policy and the logger on ``n`` logged decisions.

    Attributes:
        n: decisions.
        ess: Kish's effective sample size.
        max_weight: the largest importance weight.
        max_weight_share: the largest weight over the sum of weights.
        mean_weight: the mean importance weight (expected ``1 - no_support_mass``).
        mean_weight_se: its standard error ``std(w) / sqrt(n)``.
        logged_support_share: share of decisions whose logged action the
            evaluation policy gives positive probability.
        support_checked: whether the logger's full distributions were available.
        no_support_share: share of decisions where the evaluation policy puts
            mass on actions the logger gave probability 0 (nan if not checked).
        no_support_mass: mean evaluation-policy probability on such actions
            (nan if not checked).
        propensity_mismatch_share: share of decisions whose logged propensity
            differs from their logged distribution at the chosen action (nan if
            not checked).
    """

    n: int
    ess: float
    max_weight: float
    max_weight_share: float
    mean_weight: float
    mean_weight_se: float
    logged_support_share: float
    support_checked: bool
    no_support_share: float = math.nan
    no_support_mass: float = math.nan
    propensity_mismatch_share: float = math.nan

    def to_dict(self) -> dict[str, float]:
        """The numbers for :attr:`Estimate.diagnostics` (unchecked ones left out)."""
        out = {
            "ess": self.ess,
            "ess_share": self.ess / self.n if self.n else 0.0,
            "max_weight": self.max_weight,
            "max_weight_share": self.max_weight_share,
            "mean_weight": self.mean_weight,
            "mean_weight_se": self.mean_weight_se,
            "logged_support_share": self.logged_support_share,
            "support_checked": float(self.support_checked),
        }
        if self.support_checked:
            out["no_support_share"] = self.no_support_share
            out["no_support_mass"] = self.no_support_mass
            out["propensity_mismatch_share"] = self.propensity_mismatch_share
        return out


def overlap_diagnostics(
    actions: np.ndarray,
    propensities: np.ndarray,
    target: np.ndarray,
    behaviour: np.ndarray | None = None,
) -> OverlapDiagnostics:
    """Overlap diagnostics of validated inputs.

    Args:
        actions: ``[n]`` logged actions.
        propensities: ``[n]`` the logger's probability of each logged action.
        target: ``[n, K]`` the evaluation policy's distributions.
        behaviour: ``[n, K]`` the logger's full distributions, if logged.

    >>> target = np.array([[0.5, 0.5], [0.5, 0.5]])
    >>> behaviour = np.array([[1.0, 0.0], [1.0, 0.0]])
    >>> d = overlap_diagnostics(np.array([0, 0]), np.array([1.0, 1.0]), target, behaviour)
    >>> d.no_support_share, d.no_support_mass, d.mean_weight
    (1.0, 0.5, 0.5)
    """
    n = len(actions)
    w = importance_weights(actions, propensities, target)
    total = float(w.sum())
    mean = float(w.mean()) if n else math.nan
    se = float(w.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    diag = OverlapDiagnostics(
        n=n,
        ess=effective_sample_size(w),
        max_weight=float(w.max()) if n else 0.0,
        max_weight_share=float(w.max()) / total if total > 0 else 0.0,
        mean_weight=mean,
        mean_weight_se=se,
        logged_support_share=float(np.mean(w > 0)) if n else 0.0,
        support_checked=behaviour is not None,
    )
    if behaviour is None:
        return diag
    unsupported = np.where(behaviour <= 0.0, target, 0.0).sum(axis=1)
    logged = behaviour[np.arange(n), actions]
    mismatch = np.abs(logged - propensities) > 1e-6 * np.maximum(1.0, propensities)
    return replace(
        diag,
        no_support_share=float(np.mean(unsupported > 1e-12)),
        no_support_mass=float(np.mean(unsupported)),
        propensity_mismatch_share=float(np.mean(mismatch)),
    )


def _pct(share: float) -> str:
    """A share as a percentage with enough digits to not read as 0% or 100%."""
    if 0.0 < share < 0.01:
        return f"{share:.1%}"
    if 0.99 < share < 1.0:
        return f"{share:.1%}"
    return f"{share:.0%}"


def overlap_warnings(
    diag: OverlapDiagnostics, *, uses_weights: bool = True, uses_model: bool = False
) -> list[str]:
    """Plain-language reasons not to trust an estimate, from its overlap diagnostics.

    Args:
        diag: the diagnostics.
        uses_weights: the estimator weights decisions (IPS, SNIPS, DR, ...):
            warn about effective sample size, dominant and mis-calibrated weights.
        uses_model: the estimator relies on a reward model (DM, DR, ...): where
            support is missing it extrapolates rather than dropping value.

    Returns:
        Warnings; the same situation gives the same sentence for every
        estimator (reports de-duplicate them).

    >>> d = OverlapDiagnostics(n=10_000, ess=312.0, max_weight=40.0, max_weight_share=0.004,
    ...                        mean_weight=1.01, mean_weight_se=0.05,
    ...                        logged_support_share=0.03, support_checked=False)
    >>> for w in overlap_warnings(d):
    ...     print(w)  # doctest: +NORMALIZE_WHITESPACE
    Only 3% effective sample size (312 of 10,000 decisions): the evaluation policy
    differs a lot from the logger, so importance-weighted estimates are noisy;
    read the interval, not the point value.
    The log has no full behaviour distributions, so support cannot be checked:
    actions the logger never takes would go unnoticed (the evaluation policy
    could take the logged action in 3% of decisions).
    """
    out: list[str] = []
    n = diag.n
    if uses_weights:
        share = diag.ess / n if n else 0.0
        if diag.ess < MIN_ESS:
            out.append(
                f"Only {_pct(share)} effective sample size ({diag.ess:,.0f} of {n:,} "
                "decisions): the estimate rests on a few decisions; do not trust it."
            )
        elif share < LOW_ESS_SHARE:
            out.append(
                f"Only {_pct(share)} effective sample size ({diag.ess:,.0f} of {n:,} "
                "decisions): the evaluation policy differs a lot from the logger, so "
                "importance-weighted estimates are noisy; read the interval, not the point value."
            )
        if diag.max_weight_share > MAX_WEIGHT_SHARE and n > 1:
            out.append(
                f"One decision carries {_pct(diag.max_weight_share)} of the total importance "
                f"weight (weight {diag.max_weight:.3g}): it alone moves the estimate; clip the "
                "weights or log more data."
            )
        expected = 1.0 - diag.no_support_mass if diag.support_checked else 1.0
        tolerance = max(0.1, 4.0 * diag.mean_weight_se)
        if n > 1 and abs(diag.mean_weight - expected) > tolerance:
            out.append(
                f"Mean importance weight {diag.mean_weight:.2f} (expected ~{expected:.2f}): "
                "the propensities may be wrong or the policies do not overlap."
            )
    if diag.support_checked and diag.no_support_mass > 1e-3:
        where = (
            f"The evaluation policy puts {_pct(diag.no_support_mass)} of its probability on "
            f"actions the logger never took (in {_pct(diag.no_support_share)} of decisions)"
        )
        if uses_model:
            out.append(
                f"{where}: DM and DR rely on the reward model's extrapolation there; check it."
            )
        else:
            out.append(
                f"{where}: IPS-type estimates cannot see the reward there and are biased "
                "(downward for non-negative rewards)."
            )
    if uses_weights and diag.support_checked and diag.propensity_mismatch_share > 0:
        out.append(
            f"{_pct(diag.propensity_mismatch_share)} of decisions log a propensity that differs "
            "from their logged distribution at the chosen action: check the logging (for "
            "mixture propensities, pass the mixture distribution as behaviour too)."
        )
    if uses_weights and not diag.support_checked:
        out.append(
            "The log has no full behaviour distributions, so support cannot be checked: "
            "actions the logger never takes would go unnoticed (the evaluation policy could "
            f"take the logged action in {_pct(diag.logged_support_share)} of decisions)."
        )
    return out
