"""Sequential off-policy estimators: the value of a policy from logged episodes, with intervals.

Given ``E`` logged episodes (:class:`~rlops.evaluation.ope.data.EpisodeData`,
padded to ``[E, T]``) and the evaluation ("target") policy's action
distributions on the logged observations, ``target [E, T, K]`` (from
:func:`~rlops.evaluation.ope.data.policy_distributions`), each estimator returns
an :class:`~rlops.evaluation.ope.estimate.Estimate` of the target's expected
discounted return per episode, ``E[sum_t gamma^t r_t]``.

With ``rho_t = pi_e(a_t|s_t) / pi_b(a_t|s_t)`` the per-step ratio and
``w_t = rho_0 * ... * rho_t`` the cumulative importance weight:

* :func:`pdis`, per-decision importance sampling (Precup, Sutton & Singh 2000):
  ``mean_e sum_t gamma^t w_{e,t} r_{e,t}``. Unbiased when the behaviour policy
  covers the target; its variance grows with the horizon.
* :func:`wpdis`, weighted (self-normalised) PDIS: each step's weights are
  normalised across episodes, ``sum_t gamma^t sum_e w_{e,t} r_{e,t} / sum_e w_{e,t}``
  (Mahmood, van Hasselt & Sutton 2014; Thomas & Brunskill 2016). Biased but
  consistent, and much less variable.
* :func:`seq_dr`, sequential doubly robust (Jiang & Li 2016), the recursion
  ``V_DR = V(s_t) + rho_t (r_t + gamma V_DR' - Q(s_t, a_t))`` with ``Q`` a model
  of the target's action values and ``V(s) = sum_a pi_e(a|s) Q(s, a)``;
  unrolled, ``sum_t gamma^t (w_{t-1} V(s_t) + w_t (r_t - Q(s_t, a_t)))``.
* :func:`fqe`, fitted Q evaluation (Le, Voloshin & Yue 2019): regress
  ``Q_k(s, a) <- r + gamma sum_a' pi_e(a'|s') Q_{k-1}(s', a')`` on the logged
  transitions, then average ``V(s_0)`` over episodes. Its Q is the default model
  of :func:`seq_dr`.

Conventions. An episode's consecutive records give ``s'``; its last logged step is
terminal (nothing is bootstrapped past it). After an episode ends its weight
stays at its final value and its rewards are 0, so a short episode still counts
in WPDIS's per-step normalisers, as an absorbing state would (this keeps WPDIS
exact on-policy with episodes of different lengths).

Intervals are percentile bootstraps over episodes
(:func:`~rlops.evaluation.ope.intervals.bootstrap_ci`). For ``seq_dr`` and
``fqe`` the fitted Q is held fixed across resamples unless
:attr:`FQEConfig.refits` asks for refitting, so by default those intervals
exclude the variance of fitting the model (``ci_method`` says so).

Discrete actions only (:mod:`rlops.evaluation.ope.data` refuses continuous logs);
evaluating a continuous policy through sampled actions is not implemented.

>>> data = to_episodes(load_decisions("simulation.jsonl"))  # doctest: +SKIP
>>> target = policy_distributions(policy, data.observations, data.masks)  # doctest: +SKIP
>>> estimates = evaluate_sequential(data, target, gamma=1.0)  # doctest: +SKIP
>>> [e.name for e in estimates]  # doctest: +SKIP
['pdis', 'wpdis', 'seq_dr', 'fqe']
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

import numpy as np

from rlops.core.config import check
from rlops.core.errors import ConfigError, DataError
from rlops.evaluation.ope.data import EpisodeData
from rlops.evaluation.ope.estimate import Estimate
from rlops.evaluation.ope.intervals import DEFAULT_RESAMPLES, bootstrap_ci

if TYPE_CHECKING:
    import torch

__all__ = [
    "SEQUENTIAL_ESTIMATORS",
    "FQEConfig",
    "FQEResult",
    "check_target",
    "cumulative_weights",
    "evaluate_sequential",
    "fit_fqe",
    "fqe",
    "pdis",
    "seq_dr",
    "wpdis",
]

SEQUENTIAL_ESTIMATORS: Final = ("pdis", "wpdis", "seq_dr", "fqe")
"""Names accepted by :func:`evaluate_sequential`."""

_SUM_TOL: Final = 1e-6
"""How far a target row may sum from 1 (float32 softmax outputs sum to 1 +- 1e-7)."""
_ESS_WARN_SHARE: Final = 0.1
"""Warn when the effective sample size is below this share of the episodes..."""
_ESS_WARN_MIN: Final = 30.0
"""...or below this many episodes."""
_MAX_ITERATIONS: Final = 200
"""Cap on FQE's default iteration count (one Bellman backup per iteration)."""


# --------------------------------------------------------------------------- inputs


def check_target(data: EpisodeData, target: np.ndarray) -> np.ndarray:
    """Validate the target policy's distributions against the log; return them as float64.

    Args:
        data: the logged episodes.
        target: ``[E, T, K]`` the evaluation policy's probabilities of every
            action at every logged observation (padded steps are ignored).

    Returns:
        ``target`` as a float64 array.

    Raises:
        DataError: wrong shape; or, on valid steps, probabilities that are not
            finite, negative, do not sum to 1, or fall on actions the logged mask
            excludes. The message names the field and the count.
    """
    t = np.asarray(target, dtype=np.float64)
    e, h, k = data.n_episodes, data.horizon, data.n_actions
    if t.shape != (e, h, k):
        hint = (
            "; continuous-action policies (evaluation through sampled actions) are not "
            "supported by the sequential estimators"
            if t.ndim != 3
            else ""
        )
        raise DataError(
            f"target: shape {t.shape}, expected [episodes, horizon, actions] = {(e, h, k)} "
            f"(use policy_distributions(policy, data.observations, data.masks)){hint}"
        )
    rows = t[data.valid]  # [n_valid, K]
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise DataError(f"target: {int(bad.sum())} valid step(s) have NaN or Inf probabilities")
    negative = (rows < 0).any(axis=1)
    if negative.any():
        raise DataError(f"target: {int(negative.sum())} valid step(s) have negative probabilities")
    off = np.abs(rows.sum(axis=1) - 1.0) > _SUM_TOL
    if off.any():
        worst = float(np.abs(rows.sum(axis=1) - 1.0).max())
        raise DataError(
            f"target: {int(off.sum())} valid step(s) have probabilities that do not sum to 1 "
            f"(worst off by {worst:.3g}); pass distributions, not logits or scores"
        )
    if data.masks is not None:
        masked = ((rows > 1e-9) & ~data.masks[data.valid]).any(axis=1)
        if masked.any():
            raise DataError(
                f"target: {int(masked.sum())} valid step(s) put probability on actions the "
                "logged mask excludes; compute the target with the masks "
                "(policy_distributions(policy, data.observations, data.masks))"
            )
    return t


def cumulative_weights(data: EpisodeData, target: np.ndarray) -> np.ndarray:
    """Cumulative importance weights ``w_{e,t} = prod_{i<=t} pi_e(a_i|s_i) / pi_b(a_i|s_i)``.

    Padded steps have ratio 1, so each row keeps its final weight after the
    episode ends.

    Args:
        data: the logged episodes.
        target: ``[E, T, K]`` checked distributions (:func:`check_target`).

    Returns:
        float64 ``[E, T]``.

    Raises:
        DataError: the product overflows float64 (the ratios are astronomically large).
    """
    t = np.asarray(target, dtype=np.float64)
    chosen = np.take_along_axis(t, data.actions[..., None], axis=-1)[..., 0]
    ratios = np.where(data.valid, chosen / data.propensities, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        weights = np.cumprod(ratios, axis=1)
    if not np.isfinite(weights).all():
        raise DataError(
            "propensity: cumulative importance weights overflow float64 in "
            f"{int((~np.isfinite(weights[:, -1])).sum())} episode(s); importance sampling "
            "cannot evaluate this target on this log (use fqe, or shorter episodes)"
        )
    return weights


class _Prepared(NamedTuple):
    """What every estimator shares: checked inputs, weights, discounts, diagnostics."""

    target: np.ndarray  # [E, T, K]
    weights: np.ndarray  # [E, T] cumulative w_t
    discounts: np.ndarray  # [T] gamma^t
    rewards: np.ndarray  # [E, T], 0 on padding
    diagnostics: dict[str, float]
    support_violations: int  # valid steps where the target has mass the behaviour lacks


def _prepare(data: EpisodeData, target: np.ndarray, gamma: float) -> _Prepared:
    _check_gamma(gamma)
    if data.n_episodes < 1:
        raise DataError("episodes: the log has no episode")
    empty = int((data.lengths < 1).sum())
    if empty:
        raise DataError(f"lengths: {empty} episode(s) have no logged step")
    t = check_target(data, target)
    weights = cumulative_weights(data, t)
    final = weights[:, -1]
    diagnostics = _weight_diagnostics(final)
    diagnostics["horizon"] = float(data.horizon)
    diagnostics["mean_length"] = float(data.lengths.mean())
    diagnostics["gamma"] = float(gamma)
    violations = 0
    if data.behaviour is not None:
        # IS is unbiased only if the behaviour covers the target (Precup et al. 2000);
        # with logged distributions that is checkable.
        gap = (t > 1e-9) & (data.behaviour <= 0.0)
        violations = int((gap.any(axis=-1) & data.valid).sum())
        diagnostics["support_violation_steps"] = float(violations)
    return _Prepared(
        target=t,
        weights=weights,
        discounts=float(gamma) ** np.arange(data.horizon, dtype=np.float64),
        rewards=np.where(data.valid, data.rewards, 0.0),
        diagnostics=diagnostics,
        support_violations=violations,
    )


def _check_gamma(gamma: float) -> None:
    number = isinstance(gamma, int | float | np.number) and not isinstance(gamma, bool)
    if not (number and math.isfinite(gamma) and 0.0 <= gamma <= 1.0):
        raise ConfigError(f"gamma: must be a number in [0, 1], got {gamma!r}")


def _check_level(level: float) -> None:
    if not (isinstance(level, int | float | np.number) and 0.0 < level < 1.0):
        raise ConfigError(f"level: must be in (0, 1), got {level!r}")


# --------------------------------------------------------------------------- diagnostics


def _weight_diagnostics(final: np.ndarray) -> dict[str, float]:
    """ESS (Kong 1992) and the spread of the episodes' final cumulative weights."""
    total = float(final.sum())
    squares = float(np.square(final).sum())
    positive = final[final > 0]
    if total > 0:
        ordered = np.sort(final)[::-1]
        half = int(np.searchsorted(np.cumsum(ordered), 0.5 * total) + 1)
    else:
        half = 0
    return {
        "ess": total**2 / squares if squares > 0 else 0.0,
        "ess_share": (total**2 / squares if squares > 0 else 0.0) / final.size,
        "max_weight": float(final.max()),
        "mean_weight": float(final.mean()),
        "min_positive_weight": float(positive.min()) if positive.size else 0.0,
        "no_support_share": float((final == 0).mean()),
        "episodes_for_half_weight": float(half),
    }


def _weight_warnings(name: str, prep: _Prepared, n_episodes: int) -> list[str]:
    """Plain-language reasons not to trust an importance-weighted estimate."""
    d = prep.diagnostics
    out: list[str] = []
    if d["ess"] == 0.0:
        out.append(
            f"every episode has cumulative importance weight 0 (the target policy puts zero "
            f"probability on at least one logged action in each of the {n_episodes} "
            f"episodes); the log says nothing about the target's full episodes and {name} "
            "is not informative"
        )
        return out
    if d["ess"] < max(_ESS_WARN_MIN, _ESS_WARN_SHARE * n_episodes):
        out.append(
            f"cumulative importance weights span {d['min_positive_weight']:.0e} to "
            f"{d['max_weight']:.0e} over a horizon of {int(d['horizon'])}; {name} is "
            f"dominated by {int(d['episodes_for_half_weight'])} episode(s) (half the total "
            f"weight), effective sample size {d['ess']:.0f} of {n_episodes}; "
            + (
                "its correction term is as noisy as those weights: compare with fqe"
                if name == "seq_dr"
                else "prefer seq_dr or fqe, a closer target, or shorter episodes"
            )
        )
    if d["no_support_share"] > 0.5:
        out.append(
            f"{d['no_support_share']:.0%} of episodes have cumulative weight 0 (the target "
            "never takes one of their logged actions); only the rest inform the estimate "
            "beyond that step"
        )
    final = prep.weights[:, -1]
    se = float(final.std()) / math.sqrt(n_episodes)
    if abs(d["mean_weight"] - 1.0) > max(0.1, 3.0 * se):
        out.append(
            f"the mean cumulative weight is {d['mean_weight']:.3g}, not ~1 as it is when the "
            "logged propensities are right and the behaviour covers the target; "
            f"{name} may be biased (the unnormalised estimators more than wpdis)"
        )
    if prep.support_violations:
        out.append(
            f"on {prep.support_violations} logged step(s) the target puts probability on "
            "actions the behaviour policy never takes; importance sampling cannot see those "
            "actions' rewards and is biased"
        )
    return out


def _fixed_ci(
    per_episode: np.ndarray, level: float, seed: int, resamples: int
) -> tuple[float, float]:
    return bootstrap_ci(
        lambda idx: per_episode[idx].mean(axis=-1),
        per_episode.size,
        level=level,
        seed=seed,
        resamples=resamples,
    )


# --------------------------------------------------------------------------- IS estimators


def _pdis_terms(prep: _Prepared) -> np.ndarray:
    """Per-episode PDIS sums ``sum_t gamma^t w_t r_t``, ``[E]``."""
    return np.asarray((prep.weights * prep.rewards) @ prep.discounts)


def pdis(
    data: EpisodeData,
    target: np.ndarray,
    *,
    gamma: float = 1.0,
    level: float = 0.95,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> Estimate:
    """Per-decision importance sampling (Precup, Sutton & Singh 2000).

    ``value = mean_e sum_t gamma^t w_{e,t} r_{e,t}``: each reward is reweighted
    by the ratios of the decisions before it only, not the whole episode's.

    Args:
        data: logged episodes (with propensities of the logged actions).
        target: ``[E, T, K]`` the evaluation policy's distributions on the logged
            observations.
        gamma: discount in ``[0, 1]`` (1 for finite-horizon episodes).
        level: interval coverage.
        seed: bootstrap seed.
        resamples: bootstrap resamples.

    Returns:
        An :class:`Estimate` named ``pdis`` with a bootstrap interval over episodes.

    Raises:
        DataError: a bad ``target`` (see :func:`check_target`).
        ConfigError: ``gamma`` or ``level`` out of range.

    >>> import numpy as np
    >>> from rlops.evaluation.ope.data import EpisodeData
    >>> data = EpisodeData(observations=np.zeros((2, 1, 1)), actions=np.array([[0], [1]]),
    ...     rewards=np.array([[1.0], [3.0]]), propensities=np.full((2, 1), 0.5),
    ...     valid=np.ones((2, 1), bool), lengths=np.array([1, 1]), n_actions=2)
    >>> pdis(data, np.full((2, 1, 2), [0.25, 0.75])).value  # (0.5 * 1 + 1.5 * 3) / 2
    2.5
    """
    _check_level(level)
    prep = _prepare(data, target, gamma)
    terms = _pdis_terms(prep)
    low, high = _fixed_ci(terms, level, seed, resamples)
    return Estimate(
        name="pdis",
        value=float(terms.mean()),
        ci_low=low,
        ci_high=high,
        ci_method="bootstrap",
        n=data.n_episodes,
        level=level,
        diagnostics=dict(prep.diagnostics),
        warnings=_weight_warnings("pdis", prep, data.n_episodes),
    )


def _wpdis_value(weighted: np.ndarray, weights: np.ndarray, discounts: np.ndarray) -> np.ndarray:
    """``sum_t gamma^t num_t / den_t`` on ``[..., T]`` sums, a step with ``den_t = 0`` adding 0."""
    ratio = np.divide(weighted, weights, out=np.zeros_like(weighted), where=weights > 0)
    return np.asarray(ratio @ discounts)


def wpdis(
    data: EpisodeData,
    target: np.ndarray,
    *,
    gamma: float = 1.0,
    level: float = 0.95,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> Estimate:
    """Weighted (self-normalised) per-decision importance sampling.

    ``value = sum_t gamma^t (sum_e w_{e,t} r_{e,t}) / (sum_e w_{e,t})``
    (Mahmood et al. 2014; Thomas & Brunskill 2016, "WPDIS"). On-policy (all
    weights 1) it is the mean logged return.

    A step at which every episode's cumulative weight is 0 (the target never
    takes some logged action in every episode, so no logged episode follows it
    this far) has no data; it adds 0 to the value and a warning says how many
    steps are affected: the value then covers only the supported steps. It is
    never NaN. Bootstrap resamples use the same rule.

    Args:
        data: logged episodes.
        target: ``[E, T, K]`` the evaluation policy's distributions.
        gamma: discount in ``[0, 1]``.
        level: interval coverage.
        seed: bootstrap seed.
        resamples: bootstrap resamples.

    Returns:
        An :class:`Estimate` named ``wpdis``; its diagnostics add
        ``unsupported_steps``.

    Raises:
        DataError: a bad ``target`` (see :func:`check_target`).
        ConfigError: ``gamma`` or ``level`` out of range.

    >>> import numpy as np
    >>> from rlops.evaluation.ope.data import EpisodeData
    >>> data = EpisodeData(observations=np.zeros((2, 1, 1)), actions=np.array([[0], [1]]),
    ...     rewards=np.array([[1.0], [3.0]]), propensities=np.full((2, 1), 0.5),
    ...     valid=np.ones((2, 1), bool), lengths=np.array([1, 1]), n_actions=2)
    >>> wpdis(data, np.full((2, 1, 2), [0.25, 0.75])).value  # (0.5 * 1 + 1.5 * 3) / 2
    2.5
    """
    _check_level(level)
    prep = _prepare(data, target, gamma)
    weighted = prep.weights * prep.rewards  # [E, T]
    value = float(_wpdis_value(weighted.sum(axis=0), prep.weights.sum(axis=0), prep.discounts))
    n = data.n_episodes

    def statistic(idx: np.ndarray) -> np.ndarray:
        # Per-step sums of a resample as counts @ per-episode rows: [B, E] @ [E, T].
        b = idx.shape[0]
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n)
        counts = counts.reshape(b, n).astype(np.float64)
        return _wpdis_value(counts @ weighted, counts @ prep.weights, prep.discounts)

    low, high = bootstrap_ci(statistic, n, level=level, seed=seed, resamples=resamples)
    unsupported = int((prep.weights.sum(axis=0)[data.valid.any(axis=0)] <= 0).sum())
    diagnostics = dict(prep.diagnostics, unsupported_steps=float(unsupported))
    warnings = _weight_warnings("wpdis", prep, n)
    if unsupported and prep.diagnostics["ess"] > 0:
        warnings.append(
            f"at {unsupported} step(s) no logged episode has positive cumulative weight; "
            "wpdis counts those steps' rewards as 0, so it covers only the supported steps"
        )
    return Estimate(
        name="wpdis",
        value=value,
        ci_low=low,
        ci_high=high,
        ci_method="bootstrap",
        n=n,
        level=level,
        diagnostics=diagnostics,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- FQE


@dataclass(frozen=True, kw_only=True)
class FQEConfig:
    """How :func:`fit_fqe` fits the target policy's Q function.

    The defaults fit ~10^4 transitions of a 20-step problem in a few seconds on
    one CPU core.
    """

    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the Q network (``K`` outputs); ``()`` is a linear model
    on the (standardised) features."""
    iterations: int | None = None
    """Bellman backups. None: ``T + 5`` for the longest episode ``T`` (a finite-horizon
    backup is exact after ``T`` iterations from ``Q_0 = 0``; the extra ones refine
    the fit and show whether ``V(s_0)`` has settled), at most 200."""
    steps_per_iteration: int = 100
    """Adam steps regressing onto each iteration's targets (warm-started from the
    previous iterate)."""
    batch_size: int = 512
    """Transitions per Adam step."""
    learning_rate: float = 1e-3
    """Adam step size at the start of each regression (on targets scaled to about 1),
    annealed linearly to a tenth of it by the regression's last step."""
    torch_threads: int = 1
    """``torch.set_num_threads`` while fitting (restored after): small MLPs run fastest
    on one thread, and on a busy machine several threads can be 20x slower."""
    time_feature: bool = True
    """Append ``t / T`` to the observation: finite-horizon values depend on the steps
    left, which not every observation encodes."""
    refits: int = 0
    """If > 0, :func:`fqe` refits on this many bootstrap resamples of episodes for its
    interval (``ci_method`` ``bootstrap_refit``); 0 bootstraps only the final
    average of ``V(s_0)`` with the Q held fixed (``bootstrap_v0_only``), which
    excludes the model's fitting variance and is too narrow."""

    def __post_init__(self) -> None:
        sizes = self.hidden_sizes
        check(
            isinstance(sizes, tuple | list)
            and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in sizes),
            "FQEConfig.hidden_sizes",
            f"must be a list of positive ints, got {sizes!r}",
        )
        object.__setattr__(self, "hidden_sizes", tuple(sizes))  # a YAML list is accepted
        check(
            self.iterations is None or self.iterations >= 1,
            "FQEConfig.iterations",
            f"must be >= 1 or null, got {self.iterations}",
        )
        for name in ("steps_per_iteration", "batch_size", "torch_threads"):
            value = getattr(self, name)
            check(value >= 1, f"FQEConfig.{name}", f"must be >= 1, got {value}")
        check(
            self.learning_rate > 0,
            "FQEConfig.learning_rate",
            f"must be > 0, got {self.learning_rate}",
        )
        check(self.refits >= 0, "FQEConfig.refits", f"must be >= 0, got {self.refits}")


class FQEResult(NamedTuple):
    """A fitted Q function, evaluated on the logged states."""

    q_values: np.ndarray
    """``[E, T, K]`` ``Q(s_{e,t}, a)`` for every action (0 on padded steps)."""
    state_values: np.ndarray
    """``[E, T]`` ``V(s_{e,t}) = sum_a pi_e(a|s_{e,t}) Q(s_{e,t}, a)`` (0 on padding)."""
    iterations: int
    """Bellman backups run."""
    fit_r2: float
    """Share of the last iteration's target variance the network explains (1 is a
    perfect fit; low values mean the network is too small or under-trained)."""
    last_change: float
    """Mean absolute change of ``V(s_0)`` in the last iteration, relative to the
    mean absolute return: after convergence, the optimisation noise of the value
    (about 0.02 on the Pricing test); larger means the backups have not converged."""

    @property
    def initial_values(self) -> np.ndarray:
        """``[E]`` ``V(s_0)`` per episode; their mean is the FQE estimate."""
        return self.state_values[:, 0]


def fit_fqe(
    data: EpisodeData,
    target: np.ndarray,
    *,
    gamma: float = 1.0,
    config: FQEConfig | None = None,
    seed: int = 0,
) -> FQEResult:
    """Fitted Q evaluation (Le, Voloshin & Yue 2019) of the target on the logged transitions.

    Iteration ``k`` regresses ``Q_k(s_t, a_t)`` onto
    ``r_t + gamma * sum_a' pi_e(a'|s_{t+1}) Q_{k-1}(s_{t+1}, a')`` (0 past the last
    logged step of an episode), starting from ``Q_0 = 0``, with a small MLP over the
    standardised observation (plus ``t / T``). Rewards are scaled by the mean
    absolute return so the network fits targets of about 1. Deterministic for a
    given ``seed`` (torch's global generator is left untouched).

    Args:
        data: logged episodes.
        target: ``[E, T, K]`` the evaluation policy's distributions.
        gamma: discount in ``[0, 1]``.
        config: network and iteration settings.
        seed: initialisation and minibatch seed.

    Returns:
        :class:`FQEResult` with ``Q`` and ``V`` on every logged state.

    Raises:
        DataError: a bad ``target`` (see :func:`check_target`).
        ConfigError: ``gamma`` out of range.
    """
    _check_gamma(gamma)
    t = check_target(data, target)
    return _fit_fqe(data, t, gamma, config or FQEConfig(), seed)


def _fit_fqe(
    data: EpisodeData, target: np.ndarray, gamma: float, config: FQEConfig, seed: int
) -> FQEResult:
    import torch  # lazy: `import rlops` stays light

    threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    try:
        return _fqe_loop(data, target, gamma, config, seed)
    finally:
        torch.set_num_threads(threads)


def _fqe_loop(
    data: EpisodeData, target: np.ndarray, gamma: float, config: FQEConfig, seed: int
) -> FQEResult:
    import torch

    from rlops.nets.mlp import MLP

    e, h, k = data.n_episodes, data.horizon, data.n_actions
    valid = data.valid
    features = _features(data, config.time_feature)  # [E, T, F] float32
    # Transitions: every valid step; its successor is the next step if that is valid.
    has_next = np.zeros_like(valid)
    has_next[:, :-1] = valid[:, 1:] & valid[:, :-1]
    ei, ti = np.nonzero(valid)
    nxt = has_next[ei, ti]
    rewards = np.where(valid, data.rewards, 0.0)
    returns = rewards @ (gamma ** np.arange(h, dtype=np.float64))
    scale = float(np.abs(returns).mean()) or float(np.abs(rewards).max()) or 1.0

    x = torch.from_numpy(features[ei, ti])
    a = torch.from_numpy(data.actions[ei, ti])
    r = torch.from_numpy((rewards[ei, ti] / scale).astype(np.float32))
    x_next = torch.from_numpy(features[ei[nxt], np.minimum(ti[nxt] + 1, h - 1)])
    pi_next = torch.from_numpy(target[ei[nxt], np.minimum(ti[nxt] + 1, h - 1)].astype(np.float32))
    next_rows = torch.from_numpy(np.flatnonzero(nxt))
    x0 = torch.from_numpy(features[:, 0])
    pi0 = torch.from_numpy(target[:, 0].astype(np.float32))

    iterations = config.iterations or min(h + 5, _MAX_ITERATIONS)
    n = int(x.shape[0])
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MLP(features.shape[-1], config.hidden_sizes, k, activation="relu")
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    y = r.clone()
    v0_prev = torch.zeros(e)
    last_change = float("inf")
    for it in range(iterations):
        if it > 0:  # Q_0 = 0: the first targets are the rewards alone
            with torch.no_grad():
                v_next = (_predict(net, x_next) * pi_next).sum(dim=-1)
                y = r.clone()
                y[next_rows] += gamma * v_next
        for j in range(config.steps_per_iteration):
            # Anneal within each regression so its last steps average out minibatch noise.
            for group in opt.param_groups:
                group["lr"] = config.learning_rate * (1.0 - 0.9 * j / config.steps_per_iteration)
            batch = torch.randint(0, n, (min(config.batch_size, n),), generator=gen)
            q = net(x[batch]).gather(1, a[batch, None])[:, 0]
            loss = torch.mean((q - y[batch]) ** 2)
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            opt.step()
        with torch.no_grad():
            v0 = (_predict(net, x0) * pi0).sum(dim=-1)
        last_change = float((v0 - v0_prev).abs().mean())
        v0_prev = v0
    with torch.no_grad():
        q_rows = _predict(net, x)  # rows of np.nonzero(valid): the order of valid's mask
        q_fit = q_rows.gather(1, a[:, None])[:, 0]
        var = float(y.var()) if n > 1 else 0.0
        fit_r2 = 1.0 - float(torch.mean((q_fit - y) ** 2)) / var if var > 0 else 1.0
    q_values = np.zeros((e, h, k))
    q_values[valid] = q_rows.numpy().astype(np.float64) * scale
    state_values = np.zeros((e, h))
    state_values[valid] = (q_values[valid] * target[valid]).sum(axis=-1)
    return FQEResult(
        q_values=q_values,
        state_values=state_values,
        iterations=iterations,
        fit_r2=fit_r2,
        last_change=last_change,
    )


def _predict(net: torch.nn.Module, x: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
    """``net(x)`` in chunks of rows (bounds the hidden activations' memory)."""
    import torch

    if x.shape[0] <= chunk:
        return net(x)  # type: ignore[no-any-return]
    return torch.cat([net(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


def _features(data: EpisodeData, time_feature: bool) -> np.ndarray:
    """Standardised observations (over valid steps), plus ``t / T``: float32 ``[E, T, F]``."""
    obs = data.observations.reshape(data.n_episodes, data.horizon, -1).astype(np.float64)
    rows = obs[data.valid]
    mean = rows.mean(axis=0)
    std = rows.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)  # constant features stay constant (0)
    out = (obs - mean) / std
    if time_feature:
        steps = np.broadcast_to(
            np.arange(data.horizon, dtype=np.float64) / data.horizon,
            (data.n_episodes, data.horizon),
        )
        out = np.concatenate([out, steps[..., None]], axis=-1)
    return np.asarray(out, dtype=np.float32)


def _fqe_diagnostics(result: FQEResult) -> tuple[dict[str, float], list[str]]:
    diagnostics = {
        "fqe_iterations": float(result.iterations),
        "fqe_fit_r2": result.fit_r2,
        "fqe_last_change": result.last_change,
    }
    warnings = []
    # A few % is the minibatch noise of the last regression (seed-to-seed spread of
    # the same order); more means the backups have not converged.
    if result.last_change > 0.05:
        warnings.append(
            f"FQE did not settle: V(s_0) still moved by {result.last_change:.1%} of the mean "
            "return in its last iteration; raise FQEConfig.iterations or steps_per_iteration"
        )
    if result.fit_r2 < 0.0:
        # Noisy rewards keep R^2 well below 1 even for the true Q; below 0 the network
        # fits worse than a constant, which no noise explains.
        warnings.append(
            f"the FQE network fits its last targets worse than a constant (R^2 "
            f"{result.fit_r2:.2f}); raise steps_per_iteration or check the observations"
        )
    return diagnostics, warnings


def _take(data: EpisodeData, idx: np.ndarray) -> EpisodeData:
    """The episodes ``idx`` (with repeats) as a new :class:`EpisodeData`."""
    return EpisodeData(
        observations=data.observations[idx],
        actions=data.actions[idx],
        rewards=data.rewards[idx],
        propensities=data.propensities[idx],
        valid=data.valid[idx],
        lengths=data.lengths[idx],
        n_actions=data.n_actions,
        masks=None if data.masks is None else data.masks[idx],
        behaviour=None if data.behaviour is None else data.behaviour[idx],
    )


def fqe(
    data: EpisodeData,
    target: np.ndarray,
    *,
    gamma: float = 1.0,
    level: float = 0.95,
    seed: int = 0,
    config: FQEConfig | None = None,
    fitted: FQEResult | None = None,
    resamples: int = DEFAULT_RESAMPLES,
) -> Estimate:
    """Fitted Q evaluation: ``mean_e V(s_{e,0})`` with the Q of :func:`fit_fqe`.

    The interval: with ``config.refits == 0`` (default) a bootstrap of the final
    average over episodes with Q held fixed (``ci_method="bootstrap_v0_only:
    excludes model-fitting variance"``). It reflects only the spread of initial
    states: with one initial state it has width 0 whatever the error of the fit,
    so do not read it as the estimate's uncertainty. With ``config.refits = B``
    the Q is refitted on ``B`` bootstrap resamples of episodes and the percentile
    interval of their values is reported (``bootstrap_refit``), at ``B`` times
    the cost; it still misses any bias of the function class.

    Args:
        data: logged episodes.
        target: ``[E, T, K]`` the evaluation policy's distributions.
        gamma: discount in ``[0, 1]``.
        level: interval coverage.
        seed: fitting and bootstrap seed.
        config: FQE settings.
        fitted: a :class:`FQEResult` already fitted on ``data`` and ``target``
            (spares the fit when :func:`seq_dr` shares it).
        resamples: bootstrap resamples of the fixed-Q interval.

    Returns:
        An :class:`Estimate` named ``fqe``. Its diagnostics hold the fit's
        (``fqe_iterations``, ``fqe_fit_r2``, ``fqe_last_change``) and, as a
        measure of how far the target's state distribution may be from the log's
        (where the Q is extrapolated), the importance-weight ones.

    Raises:
        DataError: a bad ``target`` (see :func:`check_target`).
        ConfigError: ``gamma`` or ``level`` out of range.
    """
    _check_level(level)
    cfg = config or FQEConfig()
    prep = _prepare(data, target, gamma)
    result = fitted if fitted is not None else _fit_fqe(data, prep.target, gamma, cfg, seed)
    v0 = result.initial_values
    if cfg.refits > 0:
        rng = np.random.default_rng(seed)
        values = []
        for b in range(cfg.refits):
            idx = rng.integers(0, data.n_episodes, size=data.n_episodes)
            refit = _fit_fqe(_take(data, idx), prep.target[idx], gamma, cfg, seed + 1 + b)
            values.append(float(refit.initial_values.mean()))
        alpha = (1.0 - level) / 2.0
        low, high = (float(q) for q in np.quantile(values, [alpha, 1.0 - alpha]))
        method = f"bootstrap_refit({cfg.refits})"
    else:
        low, high = _fixed_ci(v0, level, seed, resamples)
        method = "bootstrap_v0_only: excludes model-fitting variance"
    fit_diag, warnings = _fqe_diagnostics(result)
    d = prep.diagnostics
    if d["ess"] < max(_ESS_WARN_MIN, _ESS_WARN_SHARE * data.n_episodes):
        warnings.append(
            f"the target's episodes differ a lot from the log's (importance-weight effective "
            f"sample size {d['ess']:.0f} of {data.n_episodes}); FQE's value rests on how "
            "its Q network extrapolates to states and actions the log rarely visits"
        )
    return Estimate(
        name="fqe",
        value=float(v0.mean()),
        ci_low=low,
        ci_high=high,
        ci_method=method,
        n=data.n_episodes,
        level=level,
        diagnostics={**d, **fit_diag},
        warnings=warnings,
    )


# --------------------------------------------------------------------------- DR


def seq_dr(
    data: EpisodeData,
    target: np.ndarray,
    *,
    gamma: float = 1.0,
    level: float = 0.95,
    seed: int = 0,
    q_values: np.ndarray | None = None,
    config: FQEConfig | None = None,
    resamples: int = DEFAULT_RESAMPLES,
) -> Estimate:
    """Sequential doubly robust (Jiang & Li 2016).

    Per episode, ``sum_t gamma^t (w_{t-1} V(s_t) + w_t (r_t - Q(s_t, a_t)))``
    with ``w_{-1} = 1`` and ``V(s) = sum_a pi_e(a|s) Q(s, a)``, the unrolled form
    of ``V_DR = V(s_t) + rho_t (r_t + gamma V_DR' - Q(s_t, a_t))``; the value is
    the mean over episodes. Unbiased when the behaviour covers the target
    whatever ``Q`` is; a good ``Q`` removes most of PDIS's variance.

    The interval bootstraps the per-episode terms with ``Q`` held fixed
    (``ci_method="bootstrap_fixed_q"``). When ``Q`` is fitted on the same
    episodes (the default) this ignores the fit's variance and the small
    dependence between ``Q`` and the terms (no cross-fitting).

    Args:
        data: logged episodes.
        target: ``[E, T, K]`` the evaluation policy's distributions.
        gamma: discount in ``[0, 1]``.
        level: interval coverage.
        seed: bootstrap (and FQE) seed.
        q_values: ``[E, T, K]`` a model's ``Q(s_{e,t}, a)`` on the logged states;
            None fits one with :func:`fit_fqe`.
        config: FQE settings when ``q_values`` is None.
        resamples: bootstrap resamples.

    Returns:
        An :class:`Estimate` named ``seq_dr``.

    Raises:
        DataError: a bad ``target`` or ``q_values`` of the wrong shape or not finite.
        ConfigError: ``gamma`` or ``level`` out of range.
    """
    _check_level(level)
    prep = _prepare(data, target, gamma)
    extra: dict[str, float] = {}
    warnings: list[str] = []
    if q_values is None:
        result = _fit_fqe(data, prep.target, gamma, config or FQEConfig(), seed)
        q = result.q_values
        extra, warnings = _fqe_diagnostics(result)
    else:
        q = np.asarray(q_values, dtype=np.float64)
        expected = prep.target.shape
        if q.shape != expected:
            raise DataError(f"q_values: shape {q.shape}, expected {expected} like target")
        bad = int((~np.isfinite(q[data.valid])).any(axis=-1).sum())
        if bad:
            raise DataError(f"q_values: {bad} valid step(s) have NaN or Inf values")
    terms = _dr_terms(data, prep, q)
    low, high = _fixed_ci(terms, level, seed, resamples)
    return Estimate(
        name="seq_dr",
        value=float(terms.mean()),
        ci_low=low,
        ci_high=high,
        ci_method="bootstrap_fixed_q",
        n=data.n_episodes,
        level=level,
        diagnostics={**prep.diagnostics, **extra},
        warnings=_weight_warnings("seq_dr", prep, data.n_episodes) + warnings,
    )


def _dr_terms(data: EpisodeData, prep: _Prepared, q: np.ndarray) -> np.ndarray:
    """Per-episode DR sums ``[E]``."""
    valid = data.valid
    q = np.where(valid[..., None], q, 0.0)
    v = (q * prep.target).sum(axis=-1)  # [E, T]
    q_taken = np.take_along_axis(q, data.actions[..., None], axis=-1)[..., 0]
    before = np.ones_like(prep.weights)
    before[:, 1:] = prep.weights[:, :-1]  # w_{t-1}, w_{-1} = 1
    per_step = np.where(valid, before * v + prep.weights * (prep.rewards - q_taken), 0.0)
    return np.asarray(per_step @ prep.discounts)


# --------------------------------------------------------------------------- all


def evaluate_sequential(
    data: EpisodeData,
    target: np.ndarray,
    *,
    gamma: float = 1.0,
    level: float = 0.95,
    seed: int = 0,
    estimators: Sequence[str] = SEQUENTIAL_ESTIMATORS,
    fqe_config: FQEConfig | None = None,
) -> list[Estimate]:
    """Run several sequential estimators on one log; FQE is fitted once and shared with DR.

    Args:
        data: logged episodes (:func:`~rlops.evaluation.ope.data.to_episodes`).
        target: ``[E, T, K]`` the evaluation policy's distributions on
            ``data.observations``
            (:func:`~rlops.evaluation.ope.data.policy_distributions`).
        gamma: discount in ``[0, 1]`` (1 for finite-horizon episodes).
        level: interval coverage.
        seed: bootstrap and FQE seed.
        estimators: names from :data:`SEQUENTIAL_ESTIMATORS`, in the order wanted.
        fqe_config: settings of the FQE fit (used by ``fqe`` and ``seq_dr``).

    Returns:
        One :class:`Estimate` per name, in order.

    Raises:
        ConfigError: an unknown estimator name, or ``gamma``/``level`` out of range.
        DataError: a bad ``target`` (see :func:`check_target`).

    >>> from rlops.evaluation.ope import policy_distributions, to_episodes  # doctest: +SKIP
    >>> data = to_episodes(load_decisions("sim.jsonl"))  # doctest: +SKIP
    >>> target = policy_distributions(policy, data.observations, data.masks)  # doctest: +SKIP
    >>> for est in evaluate_sequential(data, target, gamma=1.0):  # doctest: +SKIP
    ...     print(est.name, est.value, est.ci_low, est.ci_high, est.warnings)
    """
    names = list(estimators)
    unknown = sorted(set(names) - set(SEQUENTIAL_ESTIMATORS))
    if unknown:
        raise ConfigError(
            f"estimators: unknown {unknown}; choose from {list(SEQUENTIAL_ESTIMATORS)}"
        )
    _check_level(level)
    cfg = fqe_config or FQEConfig()
    prep = _prepare(data, target, gamma)  # validates once, before any fitting
    fitted = None
    if "fqe" in names or "seq_dr" in names:
        fitted = _fit_fqe(data, prep.target, gamma, cfg, seed)
    out = []
    for name in names:
        if name == "pdis":
            out.append(pdis(data, prep.target, gamma=gamma, level=level, seed=seed))
        elif name == "wpdis":
            out.append(wpdis(data, prep.target, gamma=gamma, level=level, seed=seed))
        elif name == "seq_dr":
            assert fitted is not None
            est = seq_dr(
                data, prep.target, gamma=gamma, level=level, seed=seed, q_values=fitted.q_values
            )
            diag, warns = _fqe_diagnostics(fitted)
            out.append(
                dataclasses.replace(
                    est, diagnostics={**est.diagnostics, **diag}, warnings=est.warnings + warns
                )
            )
        else:
            out.append(
                fqe(
                    data,
                    prep.target,
                    gamma=gamma,
                    level=level,
                    seed=seed,
                    config=cfg,
                    fitted=fitted,
                )
            )
    return out
