"""Hyperparameters of the offline learners (contextual bandit and discrete CQL)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rlops.core.config import check

Objective = Literal["ips", "dr"]
"""Off-policy estimate the bandit learner maximises."""


def _check_common(
    prefix: str, steps: int, batch_size: int, lr: float, hidden: tuple[int, ...], threads: int
) -> None:
    check(threads >= 1, f"{prefix}.torch_threads", f"must be >= 1, got {threads}")
    check(steps >= 1, f"{prefix}.steps", f"must be >= 1, got {steps}")
    check(batch_size >= 1, f"{prefix}.batch_size", f"must be >= 1, got {batch_size}")
    check(lr > 0, f"{prefix}.lr", f"must be > 0, got {lr}")
    check(
        all(h >= 1 for h in hidden),
        f"{prefix}.hidden_sizes",
        f"widths must be >= 1, got {list(hidden)}",
    )


@dataclass(frozen=True, kw_only=True)
class BanditConfig:
    """Contextual-bandit policy learning from logged decisions.

    A softmax policy ``pi(a|x)`` is trained by gradient ascent on an
    off-policy estimate of its value on the log:
    ``mean_i sum_a pi(a|x_i) * term_i(a)`` with the IPS term
    ``1[a = a_i] w_i (r_i - b)`` or the doubly robust term
    ``q(x_i, a) + 1[a = a_i] w_i (r_i - q(x_i, a_i))``, ``w_i = 1 / p_i``
    (Dudik et al. 2011; Swaminathan & Joachims 2015, "counterfactual risk
    minimisation"), plus an entropy bonus.
    """

    objective: Objective = "dr"
    """``ips`` (inverse propensity scoring) or ``dr`` (doubly robust: a cross-fitted
    reward model as control variate; lower variance, usually better)."""
    steps: int = 2_000
    """Gradient steps of the policy."""
    batch_size: int = 256
    """Logged decisions per gradient step (the whole log if it is smaller)."""
    lr: float = 3e-3
    """Adam learning rate of the policy."""
    weight_decay: float = 0.0
    """AdamW weight decay of the policy (a guard against fitting the log's noise)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy MLP (empty: a linear softmax policy)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden activation of the policy MLP."""
    entropy_coef: float = 0.01
    """Weight of the policy's mean entropy in the objective: keeps the policy from
    collapsing onto actions the log barely supports, and keeps propensities for
    the next round of off-policy evaluation."""
    max_weight: float | None = None
    """Clip importance weights ``1 / p`` at this value (lower variance, some bias);
    None keeps the unbiased weights."""
    ips_baseline: bool = True
    """IPS only: subtract the log's mean reward from the rewards. Translating the
    rewards does not change the expected objective but stops the estimate from
    rewarding "more mass on logged actions" (propensity overfitting; Joachims
    et al. 2018, BanditNet)."""
    reward_model_steps: int = 1_000
    """DR only: gradient steps of each fold's reward regression."""
    reward_model_folds: int = 2
    """DR only: cross-fitting folds; each decision's reward estimate comes from a
    model that never saw it (Chernozhukov et al. 2018)."""
    reward_model_hidden_sizes: tuple[int, ...] = (64,)
    """DR only: hidden widths of the reward regression MLP."""
    reward_model_lr: float = 1e-3
    """DR only: Adam learning rate of the reward regression."""
    normalize_obs: bool = True
    """Standardise observations with the log's mean and variance (stored in the
    artifact's ``preprocessing.obs_norm``, so serving applies the same)."""
    torch_threads: int = 1
    """``torch.set_num_threads`` while training (restored after): small MLPs run
    fastest on one thread, and on a busy machine several threads can be 10x slower."""

    def __post_init__(self) -> None:
        _check_common(
            "bandit",
            self.steps,
            self.batch_size,
            self.lr,
            self.hidden_sizes,
            self.torch_threads,
        )
        check(
            self.objective in ("ips", "dr"),
            "bandit.objective",
            f"must be 'ips' or 'dr', got {self.objective!r}",
        )
        check(
            self.weight_decay >= 0, "bandit.weight_decay", f"must be >= 0, got {self.weight_decay}"
        )
        check(
            self.entropy_coef >= 0, "bandit.entropy_coef", f"must be >= 0, got {self.entropy_coef}"
        )
        check(
            self.max_weight is None or self.max_weight >= 1,
            "bandit.max_weight",
            f"must be >= 1 (weights 1/p are >= 1) or None, got {self.max_weight}",
        )
        check(
            self.reward_model_steps >= 1,
            "bandit.reward_model_steps",
            f"must be >= 1, got {self.reward_model_steps}",
        )
        check(
            self.reward_model_lr > 0,
            "bandit.reward_model_lr",
            f"must be > 0, got {self.reward_model_lr}",
        )
        check(
            self.reward_model_folds >= 2,
            "bandit.reward_model_folds",
            f"must be >= 2 (cross-fitting), got {self.reward_model_folds}",
        )

    @property
    def total_steps(self) -> int:
        """Gradient steps of a run: the reward models' (DR) and then the policy's."""
        fits = self.reward_model_folds * self.reward_model_steps if self.objective == "dr" else 0
        return fits + self.steps


@dataclass(frozen=True, kw_only=True)
class CQLConfig:
    """Discrete conservative Q-learning, CQL(H) (Kumar et al. 2020, eq. 4).

    Loss per minibatch: ``TD(Q(s, a), r + gamma * (1 - done) * Q_target(s', a*))
    + alpha * mean(logsumexp_a Q(s, a) - Q(s, a_data))``. The second term pushes
    down Q-values of actions the log does not take, so the greedy policy stays
    where the data can vouch for it.
    """

    steps: int = 10_000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per gradient step."""
    lr: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    alpha: float = 1.0
    """Weight of the conservative penalty (0 = plain offline DQN; Kumar et al. use
    0.5 to 5 on discrete tasks)."""
    tau: float = 0.005
    """Target-network update rate: 1 = hard copy, < 1 = Polyak averaging."""
    target_update_interval: int = 1
    """Gradient steps between target-network updates."""
    double_q: bool = True
    """Double-Q targets (van Hasselt et al. 2016): online argmax, target value."""
    huber: bool = True
    """Huber (smooth L1) TD loss; false = squared error."""
    reward_scale: float | None = None
    """Rewards are multiplied by this before learning. None: ``1 / max(|r|)``
    over the log, so the Huber threshold (1) and the conservative penalty
    mean the same whether rewards are in cents or in thousands (on pricing
    revenue in the tens, unscaled CQL learned a policy 28% below the baseline).
    The greedy policy does not depend on the scale; the artifact's Q-values are
    in scaled units."""
    max_grad_norm: float = 10.0
    """Global gradient-norm clipping threshold."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden widths of the Q-network."""
    activation: Literal["tanh", "relu"] = "relu"
    """Hidden activation."""
    epsilon: float = 0.05
    """The artifact's epsilon-greedy exploration: serving samples a uniform action
    with this probability, so every action keeps a propensity for the next
    round of off-policy evaluation (as DQN artifacts do)."""
    normalize_obs: bool = True
    """Standardise observations with the log's mean and variance (stored in the
    artifact's ``preprocessing.obs_norm``, so serving applies the same)."""
    torch_threads: int = 1
    """``torch.set_num_threads`` while training (restored after): small MLPs run
    fastest on one thread, and on a busy machine several threads can be 10x slower."""

    def __post_init__(self) -> None:
        _check_common(
            "cql", self.steps, self.batch_size, self.lr, self.hidden_sizes, self.torch_threads
        )
        check(0 <= self.gamma <= 1, "cql.gamma", f"must be in [0, 1], got {self.gamma}")
        check(self.alpha >= 0, "cql.alpha", f"must be >= 0, got {self.alpha}")
        check(0 < self.tau <= 1, "cql.tau", f"must be in (0, 1], got {self.tau}")
        check(
            self.target_update_interval >= 1,
            "cql.target_update_interval",
            f"must be >= 1, got {self.target_update_interval}",
        )
        check(self.max_grad_norm > 0, "cql.max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        check(0 <= self.epsilon <= 1, "cql.epsilon", f"must be in [0, 1], got {self.epsilon}")
        check(
            self.reward_scale is None
            or (math.isfinite(self.reward_scale) and self.reward_scale > 0),
            "cql.reward_scale",
            f"must be a finite value > 0 (or null for automatic), got {self.reward_scale}",
        )

    @property
    def total_steps(self) -> int:
        """Gradient steps of a run."""
        return self.steps
