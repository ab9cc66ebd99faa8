"""Off-policy evaluation: estimate a policy's value from logged decisions, with intervals.

See :mod:`rlops.evaluation.ope.data` for reading logs into arrays.
"""

from rlops.evaluation.ope.data import (
    BanditData,
    EpisodeData,
    load_decisions,
    policy_distributions,
    to_bandit,
    to_episodes,
)
from rlops.evaluation.ope.estimate import Estimate
from rlops.evaluation.ope.sequential import (
    SEQUENTIAL_ESTIMATORS,
    FQEConfig,
    FQEResult,
    evaluate_sequential,
    fit_fqe,
    fqe,
    pdis,
    seq_dr,
    wpdis,
)

__all__ = [
    "SEQUENTIAL_ESTIMATORS",
    "BanditData",
    "EpisodeData",
    "Estimate",
    "FQEConfig",
    "FQEResult",
    "evaluate_sequential",
    "fit_fqe",
    "fqe",
    "load_decisions",
    "pdis",
    "policy_distributions",
    "seq_dr",
    "to_bandit",
    "to_episodes",
    "wpdis",
]

# One-step (contextual bandit) estimators, their intervals, diagnostics and reward models.
from rlops.evaluation.ope.bandit import (
    ESTIMATORS,
    dm,
    dr,
    evaluate_bandit,
    ips,
    mixture_propensities,
    sndr,
    snips,
    switch_dr,
)
from rlops.evaluation.ope.diagnostics import (
    OverlapDiagnostics,
    effective_sample_size,
    overlap_diagnostics,
)
from rlops.evaluation.ope.intervals import (
    IntervalConfig,
    bootstrap_ci,
    empirical_bernstein_ci,
    hoeffding_ci,
    streaming_ips_cs,
)
from rlops.evaluation.ope.reward_model import RewardModel, RewardModelConfig, cross_fit

__all__ += [
    "ESTIMATORS",
    "IntervalConfig",
    "OverlapDiagnostics",
    "RewardModel",
    "RewardModelConfig",
    "bootstrap_ci",
    "cross_fit",
    "dm",
    "dr",
    "effective_sample_size",
    "empirical_bernstein_ci",
    "evaluate_bandit",
    "hoeffding_ci",
    "ips",
    "mixture_propensities",
    "overlap_diagnostics",
    "sndr",
    "snips",
    "streaming_ips_cs",
    "switch_dr",
]
