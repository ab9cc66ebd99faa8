"""Record simulated decisions in the decision-record shape (JSONL), propensities included.

``record_decisions(policy, env_id, episodes, path)`` runs a policy (sampling,
so there is something to learn from off-policy) and writes one
:class:`~rlops.core.decisions.DecisionRecord` per decision with
``arm="simulation"``, the full action distribution (discrete) or the log-density
(continuous), the action mask if the env has one, and the reward joined in.
The same files feed off-policy evaluation as production decision logs do.

The file is written to a temporary name and renamed when complete, so a
crash never leaves a half-written log under ``path``.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from rlops.artifacts import Policy
from rlops.core.decisions import DecisionRecord
from rlops.envs import action_masks, make_vec

__all__ = ["record_decisions"]


def record_decisions(
    policy: Policy,
    env_id: str,
    episodes: int,
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    num_envs: int = 4,
    deterministic: bool = False,
    unit_prefix: str = "sim",
    **env_kwargs: Any,
) -> int:
    """Run ``episodes`` episodes and write every decision to ``path`` (JSONL).

    Args:
        policy: the deciding policy.
        env_id: the simulator.
        episodes: episodes to record (spread over ``num_envs`` sub-envs).
        path: output file (replaced atomically).
        seed: reset seed.
        num_envs: parallel sub-envs.
        deterministic: take the mode (propensity is then that of the mode).
        unit_prefix: unit ids are ``{unit_prefix}-{sub-env}``.
        **env_kwargs: env constructor kwargs.

    Returns:
        The number of records written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = make_vec(env_id, max(1, min(num_envs, episodes)), **env_kwargs)
    n = env.num_envs
    discrete = policy.discrete
    quota = np.full(n, episodes // n, dtype=np.int64)
    quota[: episodes % n] += 1
    done = np.zeros(n, dtype=np.int64)
    step_in_episode = np.zeros(n, dtype=np.int64)
    episode_ids = [uuid.uuid4().hex for _ in range(n)]
    written = 0
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            obs, _ = env.reset(seed=seed)
            masked = action_masks(env) is not None
            while not (done >= quota).all():
                mask = action_masks(env) if masked else None
                actions, logp = policy.act(obs, deterministic=deterministic, mask=mask)
                dist = policy.action_distribution(obs, mask=mask) if discrete else None
                next_obs, rewards, terminated, truncated, _ = env.step(actions)
                now = time.time()
                flat = np.asarray(obs, dtype=np.float64).reshape(n, -1)
                for i in range(n):
                    if done[i] >= quota[i]:
                        continue
                    action: int | list[float]
                    if discrete:
                        action = int(np.asarray(actions)[i])
                        assert dist is not None
                        start = int(getattr(policy.action_space, "start", 0))
                        propensity = float(dist[i][action - start])
                    else:
                        action = np.asarray(actions[i], dtype=np.float64).ravel().tolist()
                        propensity = float(min(1.0, np.exp(logp[i])))
                    record = DecisionRecord(
                        decision_id=uuid.uuid4().hex,
                        timestamp=now,
                        unit_id=f"{unit_prefix}-{i}",
                        episode_id=episode_ids[i],
                        step=int(step_in_episode[i]),
                        observation=flat[i].tolist(),
                        action_mask=None if mask is None else mask[i].tolist(),
                        action=action,
                        action_distribution=None if dist is None else dist[i].round(8).tolist(),
                        logp=None if discrete else float(logp[i]),
                        propensity=propensity,
                        policy_version=policy.version,
                        arm="simulation",
                        reward=float(rewards[i]),
                    )
                    fh.write(record.to_json() + "\n")
                    written += 1
                step_in_episode += 1
                for j in np.flatnonzero(np.logical_or(terminated, truncated)):
                    done[j] += 1
                    step_in_episode[j] = 0
                    episode_ids[j] = uuid.uuid4().hex
                obs = next_obs
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        env.close()
    return written
