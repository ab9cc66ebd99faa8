"""PPO hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlops.core.config import check


@dataclass(frozen=True, kw_only=True)
class PPOConfig:
    """Proximal Policy Optimization (Schulman et al. 2017) with the usual details.

    Defaults are general-purpose; ``configs/*.yaml`` hold tuned values per env.
    """

    name: Literal["ppo"] = "ppo"
    """Algorithm selector in YAML (``algo: {name: ppo, ...}``)."""
    n_steps: int = 128
    """Steps per environment in one rollout fragment (``T``)."""
    n_epochs: int = 10
    """Passes over each rollout."""
    minibatch_size: int = 256
    """Transitions per gradient step; must divide ``n_steps * num_envs``."""
    lr: float = 3e-4
    """Adam learning rate (initial value if ``lr_schedule`` is linear)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """``linear`` anneals the learning rate to 0 over ``total_steps``."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (1 = Monte-Carlo advantages, 0 = TD(0))."""
    clip_coef: float = 0.2
    """Policy ratio clipping epsilon (initial value if ``clip_schedule`` is linear)."""
    clip_schedule: Literal["constant", "linear"] = "constant"
    """``linear`` anneals the clip range to 0 over ``total_steps``."""
    clip_vf: float | None = None
    """Clip value updates to this range around the old value; null disables it."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clipping threshold."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    target_kl: float | None = None
    """Stop the epochs of an update early once approx KL exceeds this; null disables."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy and value MLPs (separate networks)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden activation."""
    log_std_init: float = 0.0
    """Initial state-independent log standard deviation (continuous actions)."""
    ortho_init: bool = True
    """Orthogonal initialisation (gain sqrt 2 hidden, 0.01 policy out, 1 value out)."""
    off_policy_correction: Literal["vtrace", "none"] = "vtrace"
    """How to learn from a stale fragment (``policy_version`` older than the learner's,
    as in asynchronous runs): ``vtrace`` replaces GAE with V-trace targets and
    advantages of the current policy (Espeholt et al. 2018); ``none`` uses it as
    if on-policy. Fresh fragments always take the plain PPO path."""
    vtrace_rho_bar: float = 1.0
    """V-trace truncation of the importance weights in the TD errors and advantages."""
    vtrace_c_bar: float = 1.0
    """V-trace truncation of the trace coefficients; must be <= ``vtrace_rho_bar``."""

    def __post_init__(self) -> None:
        check(self.n_steps >= 1, "algo.n_steps", f"must be >= 1, got {self.n_steps}")
        check(self.n_epochs >= 1, "algo.n_epochs", f"must be >= 1, got {self.n_epochs}")
        check(
            self.minibatch_size >= 1,
            "algo.minibatch_size",
            f"must be >= 1, got {self.minibatch_size}",
        )
        check(self.lr > 0, "algo.lr", f"must be > 0, got {self.lr}")
        check(self.adam_eps > 0, "algo.adam_eps", f"must be > 0, got {self.adam_eps}")
        check(0 <= self.gamma <= 1, "algo.gamma", f"must be in [0, 1], got {self.gamma}")
        check(
            0 <= self.gae_lambda <= 1,
            "algo.gae_lambda",
            f"must be in [0, 1], got {self.gae_lambda}",
        )
        check(self.clip_coef > 0, "algo.clip_coef", f"must be > 0, got {self.clip_coef}")
        check(
            self.clip_vf is None or self.clip_vf > 0,
            "algo.clip_vf",
            f"must be > 0 or null, got {self.clip_vf}",
        )
        check(self.ent_coef >= 0, "algo.ent_coef", f"must be >= 0, got {self.ent_coef}")
        check(self.vf_coef >= 0, "algo.vf_coef", f"must be >= 0, got {self.vf_coef}")
        check(
            self.max_grad_norm > 0,
            "algo.max_grad_norm",
            f"must be > 0, got {self.max_grad_norm}",
        )
        check(
            self.target_kl is None or self.target_kl > 0,
            "algo.target_kl",
            f"must be > 0 or null, got {self.target_kl}",
        )
        check(
            all(h >= 1 for h in self.hidden_sizes),
            "algo.hidden_sizes",
            f"widths must be >= 1, got {list(self.hidden_sizes)}",
        )
        check(
            self.off_policy_correction in ("vtrace", "none"),
            "algo.off_policy_correction",
            f"must be 'vtrace' or 'none', got {self.off_policy_correction!r}",
        )
        check(
            self.vtrace_rho_bar > 0,
            "algo.vtrace_rho_bar",
            f"must be > 0, got {self.vtrace_rho_bar}",
        )
        check(
            0 < self.vtrace_c_bar <= self.vtrace_rho_bar,
            "algo.vtrace_c_bar",
            f"must be in (0, vtrace_rho_bar = {self.vtrace_rho_bar}], got {self.vtrace_c_bar}"
            " (Espeholt et al. 2018 assume c_bar <= rho_bar)",
        )
