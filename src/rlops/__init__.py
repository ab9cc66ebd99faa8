"""rlops: from a sequential decision problem to a policy serving production traffic safely.

The short path::

    import rlops
    run = rlops.train(rlops.load_config("configs/cartpole_ppo.yaml"))
    policy = rlops.load_policy(run.artifact_path)
    actions, log_probs = policy.act(observations, deterministic=True)

Heavy modules (torch, the training loop) load on first use, so ``import rlops``
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlops.core.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "train": "rlops.runtime",
    "load_config": "rlops.runtime",
    "ExperimentConfig": "rlops.runtime",
    "EnvConfig": "rlops.runtime",
    "EvalConfig": "rlops.runtime",
    "RuntimeConfig": "rlops.runtime",
    "LogConfig": "rlops.runtime",
    "RunResult": "rlops.runtime",
    "PPOConfig": "rlops.algos.ppo",
    "load_policy": "rlops.artifacts",
    "Policy": "rlops.artifacts",
    "make_vec": "rlops.envs",
    "list_envs": "rlops.envs",
    "evaluate": "rlops.evaluation",
}

if TYPE_CHECKING:
    from rlops.algos.ppo import PPOConfig
    from rlops.artifacts import Policy, load_policy
    from rlops.envs import list_envs, make_vec
    from rlops.evaluation import evaluate
    from rlops.runtime import (
        EnvConfig,
        EvalConfig,
        ExperimentConfig,
        LogConfig,
        RunResult,
        RuntimeConfig,
        load_config,
        train,
    )


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "EnvConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LogConfig",
    "PPOConfig",
    "Policy",
    "RunResult",
    "RuntimeConfig",
    "__version__",
    "evaluate",
    "list_envs",
    "load_config",
    "load_policy",
    "make_vec",
    "train",
]
