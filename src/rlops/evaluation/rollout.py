"""Evaluate a policy artifact by running episodes on an environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rlops.artifacts import Policy, load_policy
from rlops.core.errors import EnvError
from rlops.envs import make_vec, run_episodes


@dataclass(frozen=True)
class EvalReport:
    """Result of :func:`evaluate`.

    Attributes:
        env_id: environment evaluated on.
        policy_version: the artifact's content hash.
        episodes: number of episodes.
        mean_return: mean undiscounted return.
        std_return: standard deviation of the returns.
        min_return: worst episode.
        max_return: best episode.
        mean_length: mean episode length.
        returns: every episode's return.
    """

    env_id: str
    policy_version: str
    episodes: int
    mean_return: float
    std_return: float
    min_return: float
    max_return: float
    mean_length: float
    returns: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dict(self.__dict__)


def evaluate(
    policy: Policy | str,
    env_id: str,
    episodes: int = 10,
    *,
    seed: int = 0,
    num_envs: int = 5,
    deterministic: bool = True,
    **env_kwargs: Any,
) -> EvalReport:
    """Run ``episodes`` episodes of ``policy`` on ``env_id`` and report the returns.

    Args:
        policy: a loaded :class:`Policy` or an artifact path.
        env_id: environment id (``rlops envs`` lists them).
        episodes: number of episodes (>= 1).
        seed: reset seed of the evaluation envs.
        num_envs: parallel sub-envs.
        deterministic: act with the most likely action.
        **env_kwargs: env constructor arguments.

    Returns:
        An :class:`EvalReport`.

    Raises:
        EnvError: unknown env, or its spaces do not match the policy's.
        ArtifactError: the artifact cannot be loaded.

    >>> report = rlops.evaluate("runs/demo/artifact", "rlops/CartPole-v1", 10)  # doctest: +SKIP
    """
    if episodes < 1:
        raise EnvError(f"episodes: must be >= 1, got {episodes}")
    if isinstance(policy, str):
        policy = load_policy(policy, seed=seed)
    env = make_vec(env_id, max(1, min(num_envs, episodes)), **env_kwargs)
    try:
        if env.single_observation_space.shape != policy.observation_space.shape:
            raise EnvError(
                f"env {env_id!r} observations have shape {env.single_observation_space.shape}, "
                f"the policy expects {policy.observation_space.shape}"
            )
        if env.single_action_space != policy.action_space:
            raise EnvError(
                f"env {env_id!r} action space {env.single_action_space} differs from "
                f"the policy's {policy.action_space}"
            )
        result = run_episodes(
            env,
            lambda obs, mask=None: policy.act(obs, deterministic=deterministic, mask=mask)[0],
            episodes,
            seed=seed,
        )
    finally:
        env.close()
    returns = result.returns
    return EvalReport(
        env_id=env_id,
        policy_version=policy.version,
        episodes=int(returns.size),
        mean_return=float(np.mean(returns)),
        std_return=float(np.std(returns)),
        min_return=float(np.min(returns)),
        max_return=float(np.max(returns)),
        mean_length=float(np.mean(result.lengths)),
        returns=[float(r) for r in returns],
    )
