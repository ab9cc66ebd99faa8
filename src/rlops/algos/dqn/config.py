"""DQN hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlops.core.config import check


@dataclass(frozen=True, kw_only=True)
class DQNConfig:
    """Deep Q-learning (Mnih et al. 2015) with double Q, dueling heads, n-step and PER.

    One update = ``train_freq`` vector-env steps collected, then
    ``gradient_steps`` minibatch updates from replay.
    """

    name: Literal["dqn"] = "dqn"
    """Algorithm selector in YAML (``algo: {name: dqn, ...}``)."""
    lr: float = 1e-4
    """Adam learning rate."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    buffer_size: int = 100_000
    """Replay capacity in transitions."""
    learning_starts: int = 1_000
    """Env steps collected before the first gradient step."""
    batch_size: int = 32
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount factor."""
    n_step: int = 1
    """n-step returns (1 = one-step TD targets)."""
    train_freq: int = 4
    """Vector-env steps per update (one fragment)."""
    gradient_steps: int = 1
    """Gradient steps per update."""
    target_update_interval: int = 10_000
    """Env steps between target-network updates (checked at each update)."""
    tau: float = 1.0
    """Target update rate: 1 = hard copy, < 1 = Polyak averaging."""
    exploration_fraction: float = 0.1
    """Fraction of ``total_steps`` over which epsilon decays linearly."""
    exploration_initial_eps: float = 1.0
    """Epsilon at the start."""
    exploration_final_eps: float = 0.05
    """Epsilon after the decay; also the artifact's epsilon-greedy propensity."""
    max_grad_norm: float = 10.0
    """Global gradient-norm clipping threshold."""
    double_q: bool = True
    """Double DQN targets (van Hasselt et al. 2016): online argmax, target value."""
    dueling: bool = False
    """Dueling head Q = V + A - mean(A) (Wang et al. 2016)."""
    huber: bool = True
    """Huber (smooth L1) TD loss; false = squared error."""
    prioritized: bool = False
    """Prioritized replay (Schaul et al. 2016)."""
    per_alpha: float = 0.6
    """PER priority exponent."""
    per_beta: float = 0.4
    """PER importance-sampling exponent (initial; annealed to 1 over training)."""
    per_eps: float = 1e-6
    """Added to |TD error| for priorities."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden widths of the Q-network."""
    activation: Literal["tanh", "relu"] = "relu"
    """Hidden activation."""

    def __post_init__(self) -> None:
        check(self.lr > 0, "algo.lr", f"must be > 0, got {self.lr}")
        check(self.buffer_size >= 1, "algo.buffer_size", f"must be >= 1, got {self.buffer_size}")
        check(
            self.learning_starts >= 0,
            "algo.learning_starts",
            f"must be >= 0, got {self.learning_starts}",
        )
        check(self.batch_size >= 1, "algo.batch_size", f"must be >= 1, got {self.batch_size}")
        check(0 <= self.gamma <= 1, "algo.gamma", f"must be in [0, 1], got {self.gamma}")
        check(self.n_step >= 1, "algo.n_step", f"must be >= 1, got {self.n_step}")
        check(self.train_freq >= 1, "algo.train_freq", f"must be >= 1, got {self.train_freq}")
        check(
            self.gradient_steps >= 0,
            "algo.gradient_steps",
            f"must be >= 0, got {self.gradient_steps}",
        )
        check(
            self.target_update_interval >= 1,
            "algo.target_update_interval",
            f"must be >= 1, got {self.target_update_interval}",
        )
        check(0 < self.tau <= 1, "algo.tau", f"must be in (0, 1], got {self.tau}")
        check(
            0 < self.exploration_fraction <= 1,
            "algo.exploration_fraction",
            f"must be in (0, 1], got {self.exploration_fraction}",
        )
        for key in ("exploration_initial_eps", "exploration_final_eps"):
            value = getattr(self, key)
            check(0 <= value <= 1, f"algo.{key}", f"must be in [0, 1], got {value}")
        check(
            self.max_grad_norm > 0,
            "algo.max_grad_norm",
            f"must be > 0, got {self.max_grad_norm}",
        )
        check(self.per_alpha >= 0, "algo.per_alpha", f"must be >= 0, got {self.per_alpha}")
        check(0 <= self.per_beta <= 1, "algo.per_beta", f"must be in [0, 1], got {self.per_beta}")
        check(self.per_eps > 0, "algo.per_eps", f"must be > 0, got {self.per_eps}")
        check(
            all(h >= 1 for h in self.hidden_sizes),
            "algo.hidden_sizes",
            f"widths must be >= 1, got {list(self.hidden_sizes)}",
        )

    def epsilon(self, env_steps: int, total_steps: int) -> float:
        """Exploration rate after ``env_steps`` of ``total_steps`` (linear decay)."""
        progress = min(1.0, env_steps / max(1.0, self.exploration_fraction * total_steps))
        start, end = self.exploration_initial_eps, self.exploration_final_eps
        return start + progress * (end - start)
