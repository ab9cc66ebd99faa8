"""The result every off-policy estimator returns: a value, its interval, its diagnostics.

>>> est = Estimate(name="ips", value=0.52, ci_low=0.48, ci_high=0.56, ci_method="bootstrap",
...                n=10_000, diagnostics={"ess": 4100.0})
>>> est.to_dict()["lower_95"]
0.48
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Estimate"]


@dataclass(frozen=True)
class Estimate:
    """One estimator's answer.

    Attributes:
        name: estimator id (``dm``, ``ips``, ``snips``, ``dr``, ``sndr``,
            ``switch_dr``, ``pdis``, ``wpdis``, ``seq_dr``, ``fqe``...).
        value: the point estimate of the evaluation policy's value (mean reward
            per decision for one-step estimators, mean discounted return per
            episode for sequential ones).
        ci_low: lower end of the ``level`` confidence interval (None if not computed).
        ci_high: upper end.
        ci_method: how the interval was made (``bootstrap``, ``empirical_bernstein``,
            ``hoeffding``, ``t``...).
        n: decisions (one-step) or episodes (sequential) used.
        level: nominal coverage of the interval.
        diagnostics: numbers that say how much to trust it (``ess``,
            ``max_weight``, ``mean_weight``, ``no_support_share``...).
        warnings: plain-language reasons not to trust the estimate, if any.
    """

    name: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    n: int = 0
    level: float = 0.95
    diagnostics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``lower_95``/``upper_95`` keys name the level (for gate files)."""
        pct = round(self.level * 100)
        return {
            "name": self.name,
            "value": _clean(self.value),
            f"lower_{pct}": _clean(self.ci_low),
            f"upper_{pct}": _clean(self.ci_high),
            "ci_method": self.ci_method,
            "n": self.n,
            "level": self.level,
            "diagnostics": {k: _clean(v) for k, v in self.diagnostics.items()},
            "warnings": list(self.warnings),
        }


def _clean(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
