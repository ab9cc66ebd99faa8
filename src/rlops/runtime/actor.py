"""Actors: step a vector env with numpy inference; on-policy Rollouts, off-policy Transitions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from rlops.artifacts import NetworkSpec, NumpyActorCritic
from rlops.core.batch import Rollout, Transitions
from rlops.envs import VectorEnv, assert_finite_obs, final_observations
from rlops.observability import PhaseTimer


class RolloutActor:
    """Collects ``n_steps`` x ``num_envs`` fragments with the newest weights.

    Truncated episodes are bootstrapped here, where the final observation is at
    hand: ``r += gamma * V(final_obs)`` (Pardo et al. 2018); terminated ones are not.

    Args:
        env: the (wrapped) same-step-autoreset vector env.
        spec: network shape of the weights :meth:`update` receives.
        n_steps: fragment length ``T``.
        gamma: discount for the truncation bootstrap.
        seed: seeds action sampling.
        timer: phase timer (``env`` and ``forward`` phases).
    """

    def __init__(
        self,
        env: VectorEnv,
        spec: NetworkSpec,
        n_steps: int,
        gamma: float,
        seed: int,
        timer: PhaseTimer,
    ) -> None:
        self.env = env
        self.spec = spec
        self.n_steps = n_steps
        self.gamma = gamma
        self.timer = timer
        self.rng = np.random.default_rng(seed)
        self.net: NumpyActorCritic | None = None
        self.version = 0
        self.steps = 0
        n = env.num_envs
        act_space = env.single_action_space
        self._box = act_space if isinstance(act_space, spaces.Box) else None
        # Discrete(n, start=s): the network indexes 0..n-1, the env expects s..s+n-1.
        self._start = int(act_space.start) if isinstance(act_space, spaces.Discrete) else 0
        act_shape: tuple[int, ...] = () if self._box is None else (spec.act_dim,)
        act_dtype = np.int64 if self._box is None else np.float32
        self._obs = np.zeros((n_steps, n, spec.obs_dim), dtype=np.float32)
        self._actions = np.zeros((n_steps, n, *act_shape), dtype=act_dtype)
        self._logp = np.zeros((n_steps, n), dtype=np.float32)
        self._values = np.zeros((n_steps, n), dtype=np.float32)
        self._rewards = np.zeros((n_steps, n), dtype=np.float32)
        self._dones = np.zeros((n_steps, n), dtype=np.float32)
        self.obs: np.ndarray | None = None

    def reset(self, seed: int) -> None:
        """Reset the envs with ``seed``; the first fragment starts from there."""
        obs, _ = self.env.reset(seed=seed)
        assert_finite_obs(obs, 0)
        self.obs = np.asarray(obs, dtype=np.float32).reshape(self.env.num_envs, -1)

    def update(self, version: int, variables: Mapping[str, np.ndarray]) -> None:
        """Install weights ``variables`` published as ``version``."""
        self.net = NumpyActorCritic(self.spec, variables)
        self.version = version

    def collect(self) -> Rollout:
        """Step every sub-env ``n_steps`` times and return the fragment.

        Raises:
            EnvError: if an env returns a non-finite observation (names env index and step).
        """
        net, obs = self.net, self.obs
        if net is None or obs is None:
            raise RuntimeError("RolloutActor: call reset() and update() before collect()")
        env, timer, n = self.env, self.timer, self.env.num_envs
        for t in range(self.n_steps):
            timer.start("forward")
            actions, logp, values = net.sample_with_value(obs, self.rng)
            timer.stop("forward")
            if self._box is None:
                env_actions = actions + self._start if self._start else actions
            else:
                env_actions = np.clip(actions, self._box.low, self._box.high)

            timer.start("env")
            next_obs, rewards, terminated, truncated, info = env.step(env_actions)
            timer.stop("env")
            self.steps += n
            step = self.steps // n  # per-sub-env step count, as users count steps
            assert_finite_obs(next_obs, step)
            rewards = np.asarray(rewards, dtype=np.float32)
            assert_finite_obs(rewards, step, name="reward")
            bootstrap = np.logical_and(truncated, np.logical_not(terminated))
            if bootstrap.any():
                idx = np.flatnonzero(bootstrap)
                final = final_observations(info, idx).astype(np.float32).reshape(len(idx), -1)
                assert_finite_obs(final, step, name="final observation", env_ids=idx)
                timer.start("forward")
                rewards = rewards.copy()
                rewards[idx] += self.gamma * net.value(final)
                timer.stop("forward")
            self._obs[t] = obs
            self._actions[t] = actions
            self._logp[t] = logp
            self._values[t] = values
            self._rewards[t] = rewards
            self._dones[t] = np.logical_or(terminated, truncated)
            obs = np.asarray(next_obs, dtype=np.float32).reshape(n, -1)
        self.obs = obs
        timer.start("forward")
        last_values = net.value(obs)
        timer.stop("forward")
        return Rollout(
            observations=self._obs.copy(),
            actions=self._actions.copy(),
            log_probs=self._logp.copy(),
            values=self._values.copy(),
            rewards=self._rewards.copy(),
            dones=self._dones.copy(),
            last_values=last_values.astype(np.float32),
            policy_version=self.version,
        )

    def state_dict(self) -> dict[str, Any]:
        """Sampling RNG, current observation and step count (env state is saved separately)."""
        return {
            "rng": self.rng.bit_generator.state,
            "obs": None if self.obs is None else self.obs.copy(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.rng.bit_generator.state = state["rng"]
        if state.get("obs") is not None:
            self.obs = np.asarray(state["obs"], dtype=np.float32)
        self.steps = int(state["steps"])


ExplorationPolicy = Callable[[np.ndarray, np.random.Generator, int], np.ndarray]
"""Acts for data collection: ``(obs [N, obs_dim], rng, env_steps) -> actions``."""


class TransitionActor:
    """Collects off-policy fragments (:class:`Transitions`) with an exploration policy.

    ``next_observations`` of a sub-env whose episode ended is that episode's
    final observation (from ``info["final_obs"]``), so a learner can bootstrap
    truncated episodes correctly.

    Args:
        env: the (wrapped) same-step-autoreset vector env.
        n_steps: vector steps per fragment.
        seed: seeds exploration.
        timer: phase timer (``env`` and ``forward`` phases).
        make_policy: builds the exploration policy from published weights.
        action_offset: added to discrete actions before they reach the env
            (``Discrete(n, start=s)``); fragments keep the 0-based index.
    """

    def __init__(
        self,
        env: VectorEnv,
        n_steps: int,
        seed: int,
        timer: PhaseTimer,
        make_policy: Callable[[Mapping[str, np.ndarray]], ExplorationPolicy],
        action_offset: int = 0,
    ) -> None:
        self.env = env
        self.action_offset = action_offset
        self.n_steps = n_steps
        self.timer = timer
        self.make_policy = make_policy
        self.rng = np.random.default_rng(seed)
        self.policy: ExplorationPolicy | None = None
        self.version = 0
        self.steps = 0
        self.obs: np.ndarray | None = None

    def reset(self, seed: int) -> None:
        """Reset the envs with ``seed``."""
        obs, _ = self.env.reset(seed=seed)
        assert_finite_obs(np.asarray(obs), 0)
        self.obs = np.asarray(obs, dtype=np.float32).reshape(self.env.num_envs, -1)

    def update(self, version: int, variables: Mapping[str, np.ndarray]) -> None:
        """Install weights ``variables`` published as ``version``."""
        self.policy = self.make_policy(variables)
        self.version = version

    def collect(self) -> Transitions:
        """Step every sub-env ``n_steps`` times and return the transitions.

        Raises:
            EnvError: on a non-finite observation, final observation or reward.
        """
        policy, obs = self.policy, self.obs
        if policy is None or obs is None:
            raise RuntimeError("TransitionActor: call reset() and update() before collect()")
        env, timer, n = self.env, self.timer, self.env.num_envs
        observations, actions, rewards, next_obs, terminated, truncated = [], [], [], [], [], []
        for _ in range(self.n_steps):
            timer.start("forward")
            action = policy(obs, self.rng, self.steps)
            timer.stop("forward")
            timer.start("env")
            nxt, reward, term, trunc, info = env.step(
                action + self.action_offset if self.action_offset else action
            )
            timer.stop("env")
            self.steps += n
            step = self.steps // n
            nxt = np.asarray(nxt, dtype=np.float32).reshape(n, -1)
            assert_finite_obs(nxt, step)
            reward = np.asarray(reward, dtype=np.float32)
            assert_finite_obs(reward, step, name="reward")
            done = np.logical_or(term, trunc)
            target = nxt
            if done.any():
                idx = np.flatnonzero(done)
                final = final_observations(info, idx).astype(np.float32).reshape(len(idx), -1)
                assert_finite_obs(final, step, name="final observation", env_ids=idx)
                target = nxt.copy()
                target[idx] = final
            observations.append(obs)
            actions.append(np.asarray(action))
            rewards.append(reward)
            next_obs.append(target)
            terminated.append(np.asarray(term, dtype=bool))
            truncated.append(np.asarray(trunc, dtype=bool))
            obs = nxt
        self.obs = obs
        return Transitions(
            observations=np.stack(observations),
            actions=np.stack(actions),
            rewards=np.stack(rewards),
            next_observations=np.stack(next_obs),
            terminated=np.stack(terminated),
            truncated=np.stack(truncated),
            policy_version=self.version,
        )

    def state_dict(self) -> dict[str, Any]:
        """Exploration RNG, current observation and step count."""
        return {
            "rng": self.rng.bit_generator.state,
            "obs": None if self.obs is None else self.obs.copy(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.rng.bit_generator.state = state["rng"]
        if state.get("obs") is not None:
            self.obs = np.asarray(state["obs"], dtype=np.float32)
        self.steps = int(state["steps"])
