"""Vector-env wrappers: episode statistics, observation normalisation, reward scaling.

Each wrapper is a ``gymnasium.vector.VectorWrapper`` (so it wraps any vector
env) with ``state_dict`` / ``load_state_dict`` (so a resumed run continues with
the same statistics). Typical stack, innermost first::

    env = EpisodeStatistics(make_vec("rlops/Pendulum-v1", 4))   # raw returns
    env = NormalizeObservation(env)                              # stats go in the artifact
    env = ScaleReward(env, gamma=0.99)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from rlops.core.errors import EnvError
from rlops.envs.base import VectorEnv


class RunningMeanStd:
    """Running mean and variance over batches (Chan et al. parallel algorithm).

    >>> rms = RunningMeanStd(shape=())
    >>> rms.update(np.array([1.0, 2.0, 3.0]))
    >>> round(float(rms.mean), 3), round(float(rms.var), 3)
    (2.0, 0.667)
    """

    def __init__(self, shape: tuple[int, ...], epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        # A tiny prior count keeps the first update well-defined (as SB3/Gymnasium do).
        self.count = epsilon

    def update(self, batch: np.ndarray) -> None:
        """Fold a ``[B, *shape]`` batch into the statistics."""
        batch_mean = batch.mean(axis=0)
        batch_var = batch.var(axis=0)
        batch_count = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count
        m2 += delta**2 * self.count * batch_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        """Return mean, var and count."""
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": float(self.count)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.mean = np.asarray(state["mean"], dtype=np.float64).reshape(self.mean.shape)
        self.var = np.asarray(state["var"], dtype=np.float64).reshape(self.var.shape)
        self.count = float(state["count"])


class EpisodeStatistics(gym.vector.VectorWrapper):
    """Track the undiscounted return and length of every finished episode.

    Place it innermost so it sees raw rewards. :meth:`pop_episodes` hands the
    finished episodes since the last call to the training loop;
    :meth:`pop_components` the per-episode sums of the ``info_keys`` (an env's
    reward components or business metrics, e.g. ``replica_cost``).

    Args:
        env: the vector env.
        info_keys: per-step ``info`` entries (``[N]`` numbers) to sum per episode.
    """

    def __init__(self, env: VectorEnv, info_keys: tuple[str, ...] = ()) -> None:
        super().__init__(env)
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._done_returns: list[np.ndarray] = []
        self._done_lengths: list[np.ndarray] = []
        self.info_keys = tuple(info_keys)
        self._sums = {key: np.zeros(self.num_envs) for key in self.info_keys}
        self._done_sums: dict[str, list[np.ndarray]] = {key: [] for key in self.info_keys}
        self.episodes = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the env and the running counters."""
        self._returns[:] = 0.0
        self._lengths[:] = 0
        for sums in self._sums.values():
            sums[:] = 0.0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step and record the episodes that ended."""
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        self._returns += rewards
        self._lengths += 1
        for key, sums in self._sums.items():
            if key not in info:
                raise EnvError(
                    f"info key {key!r} (env.info_metrics / env.reward_shaping) is not in "
                    f"the env's step info; it has: {sorted(k for k in info if k[0] != '_')}"
                )
            sums += np.asarray(info[key], dtype=np.float64).reshape(self.num_envs)
        done = np.logical_or(terminations, truncations)
        if done.any():
            self._done_returns.append(self._returns[done].copy())
            self._done_lengths.append(self._lengths[done].copy())
            for key, sums in self._sums.items():
                self._done_sums[key].append(sums[done].copy())
                sums[done] = 0.0
            self.episodes += int(done.sum())
            self._returns[done] = 0.0
            self._lengths[done] = 0
        return obs, rewards, terminations, truncations, info

    def pop_components(self) -> dict[str, np.ndarray]:
        """Per-episode sums of each of ``info_keys`` for the episodes since the last call."""
        out = {}
        for key, chunks in self._done_sums.items():
            out[key] = np.concatenate(chunks) if chunks else np.zeros(0)
            chunks.clear()
        return out

    def pop_episodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(returns, lengths)`` of episodes finished since the last call."""
        if not self._done_returns:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        returns = np.concatenate(self._done_returns)
        lengths = np.concatenate(self._done_lengths)
        self._done_returns.clear()
        self._done_lengths.clear()
        return returns, lengths

    def state_dict(self) -> dict[str, Any]:
        """Running returns, lengths and component sums of the unfinished episodes."""
        return {
            "returns": self._returns.copy(),
            "lengths": self._lengths.copy(),
            "episodes": self.episodes,
            "sums": {key: sums.copy() for key, sums in self._sums.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self._returns[:] = np.asarray(state["returns"])
        self._lengths[:] = np.asarray(state["lengths"])
        self.episodes = int(state["episodes"])
        for key, sums in (state.get("sums") or {}).items():
            if key in self._sums:
                self._sums[key][:] = np.asarray(sums)


class ShapeReward(gym.vector.VectorWrapper):
    """``reward += sum_k weight_k * info[k]``: reward shaping from named components.

    Envs that report their reward's parts in ``info`` (the autoscaling sim's
    ``replica_cost`` and ``slo_violations``, say) can be re-weighted without
    touching the env; the unshaped reward stays in ``info["reward_unshaped"]``.
    Log the components separately with ``env.info_metrics``.

    Args:
        env: the vector env.
        weights: ``info`` key -> weight added to the reward per unit.

    Raises:
        EnvError: on a step whose ``info`` lacks a weighted key.
    """

    def __init__(self, env: VectorEnv, weights: Mapping[str, float]) -> None:
        super().__init__(env)
        self.weights = dict(weights)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step and add the weighted components to the reward."""
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        shaped = np.array(rewards, dtype=np.float64)
        for key, weight in self.weights.items():
            if key not in info:
                raise EnvError(
                    f"env.reward_shaping: info key {key!r} is not in the env's step info; "
                    f"it has: {sorted(k for k in info if not k.startswith('_'))}"
                )
            shaped += weight * np.asarray(info[key], dtype=np.float64).reshape(self.num_envs)
        info = {**info, "reward_unshaped": np.asarray(rewards, dtype=np.float64)}
        return obs, shaped, terminations, truncations, info


class NormalizeObservation(gym.vector.VectorWrapper):
    """Normalise observations with running statistics: ``clip((o - mean) / sqrt(var + eps))``.

    Statistics update on every observation while ``training`` is true and are
    exported with :meth:`export` into the policy artifact, which applies the
    same transform at inference. ``info["final_obs"]`` is normalised too (never
    used for updates) so value bootstraps see the same scale as the policy.

    Args:
        env: the vector env (Box observations).
        clip: absolute clip after normalisation.
        epsilon: added to the variance.
    """

    def __init__(self, env: VectorEnv, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__(env)
        shape = env.single_observation_space.shape
        assert shape is not None
        self.rms = RunningMeanStd(tuple(shape))
        self.clip = clip
        self.epsilon = epsilon
        self.training = True

    def _normalize(self, obs: np.ndarray) -> np.ndarray:
        std = np.sqrt(self.rms.var + self.epsilon)
        return np.clip((obs - self.rms.mean) / std, -self.clip, self.clip).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset and normalise the first observations."""
        obs, info = self.env.reset(seed=seed, options=options)
        if self.training:
            self.rms.update(np.asarray(obs, dtype=np.float64))
        return self._normalize(obs), info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step, update the statistics, normalise observations and final observations."""
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        if self.training:
            self.rms.update(np.asarray(obs, dtype=np.float64))
        if "final_obs" in info:
            final = info["final_obs"]
            mask = info["_final_obs"]
            if final.dtype == object:
                info["final_obs"] = np.array(
                    [self._normalize(f) if m else None for f, m in zip(final, mask)], dtype=object
                )
            else:
                info["final_obs"] = self._normalize(final)
        return self._normalize(obs), rewards, terminations, truncations, info

    def export(self) -> dict[str, Any]:
        """Statistics in the artifact's ``preprocessing.obs_norm`` shape."""
        return {
            "mean": self.rms.mean.copy(),
            "var": self.rms.var.copy(),
            "epsilon": self.epsilon,
            "clip": self.clip,
        }

    def state_dict(self) -> dict[str, Any]:
        """Running statistics."""
        return self.rms.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.rms.load_state_dict(state)


class ScaleReward(gym.vector.VectorWrapper):
    """Divide rewards by the running std of the discounted return (as SB3's VecNormalize).

    Keeps value targets near unit scale without shifting the reward (shifting
    would change which policy is optimal). Episode statistics placed inside
    this wrapper still report raw returns.

    Args:
        env: the vector env.
        gamma: discount used for the running return.
        clip: absolute clip of the scaled reward.
        epsilon: added to the variance.
    """

    def __init__(
        self, env: VectorEnv, gamma: float = 0.99, clip: float = 10.0, epsilon: float = 1e-8
    ) -> None:
        super().__init__(env)
        self.rms = RunningMeanStd(())
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon
        self._ret = np.zeros(self.num_envs, dtype=np.float64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the env and the running return."""
        self._ret[:] = 0.0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step and scale the rewards."""
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        self._ret = self._ret * self.gamma + rewards
        self.rms.update(self._ret)
        scaled = np.clip(rewards / np.sqrt(self.rms.var + self.epsilon), -self.clip, self.clip)
        self._ret[np.logical_or(terminations, truncations)] = 0.0
        return obs, scaled.astype(np.float32), terminations, truncations, info

    def state_dict(self) -> dict[str, Any]:
        """Running statistics and returns."""
        return {**self.rms.state_dict(), "ret": self._ret.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.rms.load_state_dict(state)
        self._ret[:] = np.asarray(state["ret"])
