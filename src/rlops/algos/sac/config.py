"""SAC hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlops.core.config import check


@dataclass(frozen=True, kw_only=True)
class SACConfig:
    """Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications").

    Defaults and update order follow Stable-Baselines3's ``SAC``: twin critics
    with clipped double-Q targets, a tanh-squashed Gaussian actor, automatic
    entropy tuning. One update = ``train_freq`` vector-env steps collected,
    then ``gradient_steps`` minibatch updates from replay, each one
    ``alpha -> critics -> actor -> Polyak target``.

    >>> SACConfig(ent_coef=0.2).ent_coef
    0.2
    """

    name: Literal["sac"] = "sac"
    """Algorithm selector in YAML (``algo: {name: sac, ...}``)."""
    lr: float = 3e-4
    """Adam learning rate of the actor, the critics and the entropy coefficient."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""
    learning_starts: int = 100
    """Env steps collected (with uniformly random actions, as SB3) before the first update."""
    batch_size: int = 256
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount factor."""
    n_step: int = 1
    """n-step returns (1 = one-step soft TD targets); the writer stores ``gamma ** m``."""
    tau: float = 0.005
    """Polyak rate of the target critics: ``target <- tau * online + (1 - tau) * target``."""
    train_freq: int = 1
    """Vector-env steps per update (one fragment)."""
    gradient_steps: int = 1
    """Gradient steps per update."""
    target_update_interval: int = 1
    """Gradient steps between Polyak updates of the target critics."""
    ent_coef: float | None = None
    """Fixed entropy coefficient alpha; None (SB3's ``"auto"``) learns it (Haarnoja et al.
    2018, section 5)."""
    ent_coef_init: float = 1.0
    """Initial alpha when it is learned (SB3 ``"auto"`` starts at 1.0)."""
    target_entropy: float | None = None
    """Entropy target of the learned alpha; None = ``-act_dim`` (Haarnoja et al. 2018).

    Log-probabilities are of the *env-scale* action (CleanRL: the tanh-squashed
    Gaussian followed by the affine map to the Box bounds), so they are
    ``sum(log(action_scale))`` lower than SB3's, which are measured in [-1, 1].
    """
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor and of each critic."""
    activation: Literal["tanh", "relu"] = "relu"
    """Hidden activation."""
    log_std_min: float = -20.0
    """Lower clamp of the actor's log standard deviation (SB3 ``LOG_STD_MIN``)."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log standard deviation (SB3 ``LOG_STD_MAX``)."""
    max_grad_norm: float | None = None
    """Global gradient-norm clip, per network; None = no clipping (as SB3)."""

    def __post_init__(self) -> None:
        check(self.lr > 0, "algo.lr", f"must be > 0, got {self.lr}")
        check(self.adam_eps > 0, "algo.adam_eps", f"must be > 0, got {self.adam_eps}")
        check(self.buffer_size >= 1, "algo.buffer_size", f"must be >= 1, got {self.buffer_size}")
        check(
            self.learning_starts >= 0,
            "algo.learning_starts",
            f"must be >= 0, got {self.learning_starts}",
        )
        check(self.batch_size >= 1, "algo.batch_size", f"must be >= 1, got {self.batch_size}")
        check(
            self.batch_size <= self.buffer_size,
            "algo.batch_size",
            f"must be <= algo.buffer_size = {self.buffer_size}, got {self.batch_size}",
        )
        check(0 <= self.gamma <= 1, "algo.gamma", f"must be in [0, 1], got {self.gamma}")
        check(self.n_step >= 1, "algo.n_step", f"must be >= 1, got {self.n_step}")
        check(0 < self.tau <= 1, "algo.tau", f"must be in (0, 1], got {self.tau}")
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
        if self.ent_coef is not None:
            check(
                self.ent_coef >= 0,
                "algo.ent_coef",
                f"must be >= 0 (or null to learn it), got {self.ent_coef}",
            )
        check(
            self.ent_coef_init > 0,
            "algo.ent_coef_init",
            f"must be > 0 (alpha is learned as log alpha), got {self.ent_coef_init}",
        )
        check(
            all(h >= 1 for h in self.hidden_sizes),
            "algo.hidden_sizes",
            f"widths must be >= 1, got {list(self.hidden_sizes)}",
        )
        check(
            self.log_std_min < self.log_std_max,
            "algo.log_std_min",
            f"must be < algo.log_std_max = {self.log_std_max}, got {self.log_std_min}",
        )
        if self.max_grad_norm is not None:
            check(
                self.max_grad_norm > 0,
                "algo.max_grad_norm",
                f"must be > 0 (or null for no clipping), got {self.max_grad_norm}",
            )

    @property
    def learn_alpha(self) -> bool:
        """Whether the entropy coefficient is learned (``ent_coef`` is None)."""
        return self.ent_coef is None
