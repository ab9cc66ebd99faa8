"""Actors: step a vector env with numpy inference; on-policy Rollouts, off-policy Transitions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from rlops.artifacts import NetworkSpec, NumpyActorCritic
from rlops.core.batch import Rollout, Transitions
from rlops.envs import VectorEnv, action_masks, assert_finite_obs, final_observations
from rlops.observability import PhaseTimer


class EnvCursor:
    """The env side both actors share: current observation, step count, RNG, checked steps.

    Every step is validated the same way for every algorithm: non-finite
    observations, rewards and final observations raise :class:`EnvError`
    naming the sub-env and its step.

    Args:
        env: a same-step-autoreset vector env.
        seed: seeds the actor's sampling RNG (:attr:`rng`).
    """

    def __init__(self, env: VectorEnv, seed: int) -> None:
        self.env = env
        self.rng = np.random.default_rng(seed)
        self.obs: np.ndarray | None = None
        self.steps = 0

    def reset(self, seed: int) -> None:
        """Reset the envs with ``seed``."""
        obs, _ = self.env.reset(seed=seed)
        assert_finite_obs(np.asarray(obs), 0)
        self.obs = np.asarray(obs, dtype=np.float32).reshape(self.env.num_envs, -1)

    def step(
        self, actions: np.ndarray, timer: PhaseTimer
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the env, check what it returned, and advance :attr:`obs`.

        Returns:
            ``(next_obs [N, obs_dim] f32, rewards [N] f32, terminated [N] bool,
            truncated [N] bool, ended [K] indices, final_obs [K, obs_dim] f32)``
            where ``ended`` are the sub-envs whose episode ended and
            ``final_obs`` their last observations (``next_obs`` already holds
            the first observation of their next episode).
        """
        n = self.env.num_envs
        timer.start("env")
        next_obs, rewards, terminated, truncated, info = self.env.step(actions)
        timer.stop("env")
        self.steps += n
        step = self.steps // n  # per-sub-env step count, as users count steps
        next_obs = np.asarray(next_obs, dtype=np.float32).reshape(n, -1)
        assert_finite_obs(next_obs, step)
        rewards = np.array(rewards, dtype=np.float32)  # a copy: actors add bootstraps to it
        assert_finite_obs(rewards, step, name="reward")
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        ended = np.flatnonzero(np.logical_or(terminated, truncated))
        final = np.zeros((0, next_obs.shape[1]), dtype=np.float32)
        if ended.size:
            final = final_observations(info, ended).astype(np.float32).reshape(len(ended), -1)
            assert_finite_obs(final, step, name="final observation", env_ids=ended)
        self.obs = next_obs
        return next_obs, rewards, terminated, truncated, ended, final

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
        self.cursor = EnvCursor(env, seed)
        self.spec = spec
        self.n_steps = n_steps
        self.gamma = gamma
        self.timer = timer
        self.net: NumpyActorCritic | None = None
        self.version = 0
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
        self._masks: np.ndarray | None = None
        if self._box is None and hasattr(env.unwrapped, "action_masks"):
            self._masks = np.zeros((n_steps, n, spec.act_dim), dtype=bool)

    def reset(self, seed: int) -> None:
        """Reset the envs with ``seed``; the first fragment starts from there."""
        self.cursor.reset(seed)

    def update(self, version: int, variables: Mapping[str, np.ndarray]) -> None:
        """Install weights ``variables`` published as ``version``."""
        self.net = NumpyActorCritic(self.spec, variables)
        self.version = version

    def collect(self) -> Rollout:
        """Step every sub-env ``n_steps`` times and return the fragment.

        Raises:
            EnvError: if an env returns a non-finite observation (names env index and step).
        """
        net, obs, cursor = self.net, self.cursor.obs, self.cursor
        if net is None or obs is None:
            raise RuntimeError("RolloutActor: call reset() and update() before collect()")
        timer = self.timer
        masks = self._masks
        for t in range(self.n_steps):
            mask = None
            if masks is not None:
                current = action_masks(self.env)
                assert current is not None
                masks[t] = current
                mask = masks[t]
            timer.start("forward")
            actions, logp, values = net.sample_with_value(obs, cursor.rng, mask=mask)
            timer.stop("forward")
            if self._box is None:
                env_actions = actions + self._start if self._start else actions
            else:
                env_actions = np.clip(actions, self._box.low, self._box.high)
            next_obs, rewards, terminated, truncated, ended, final = cursor.step(env_actions, timer)
            if ended.size:
                # Bootstrap truncated, not terminated, episodes here, where the
                # final observation is at hand (Pardo et al. 2018).
                bootstrap = truncated[ended] & ~terminated[ended]
                if bootstrap.any():
                    timer.start("forward")
                    rewards[ended[bootstrap]] += self.gamma * net.value(final[bootstrap])
                    timer.stop("forward")
            self._obs[t] = obs
            self._actions[t] = actions
            self._logp[t] = logp
            self._values[t] = values
            self._rewards[t] = rewards
            self._dones[t] = np.logical_or(terminated, truncated)
            obs = next_obs
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
            last_observations=obs.copy(),
            action_masks=None if masks is None else masks.copy(),
        )

    def template(self) -> Rollout:
        """A zero fragment with the shapes and dtypes :meth:`collect` returns."""
        n = self.env.num_envs
        return Rollout(
            observations=np.zeros_like(self._obs),
            actions=np.zeros_like(self._actions),
            log_probs=np.zeros_like(self._logp),
            values=np.zeros_like(self._values),
            rewards=np.zeros_like(self._rewards),
            dones=np.zeros_like(self._dones),
            last_values=np.zeros(n, dtype=np.float32),
            last_observations=np.zeros((n, self.spec.obs_dim), dtype=np.float32),
            action_masks=None if self._masks is None else np.zeros_like(self._masks),
        )

    def state_dict(self) -> dict[str, Any]:
        """The env cursor's state (env state itself is saved separately)."""
        return self.cursor.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.cursor.load_state_dict(state)


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
        self.cursor = EnvCursor(env, seed)
        self.action_offset = action_offset
        self.n_steps = n_steps
        self.timer = timer
        self.make_policy = make_policy
        self.policy: ExplorationPolicy | None = None
        self.version = 0

    def reset(self, seed: int) -> None:
        """Reset the envs with ``seed``."""
        self.cursor.reset(seed)

    def update(self, version: int, variables: Mapping[str, np.ndarray]) -> None:
        """Install weights ``variables`` published as ``version``."""
        self.policy = self.make_policy(variables)
        self.version = version

    def collect(self) -> Transitions:
        """Step every sub-env ``n_steps`` times and return the transitions.

        Raises:
            EnvError: on a non-finite observation, final observation or reward.
        """
        policy, obs, cursor = self.policy, self.cursor.obs, self.cursor
        if policy is None or obs is None:
            raise RuntimeError("TransitionActor: call reset() and update() before collect()")
        timer = self.timer
        observations, actions, rewards, next_obs, terminated, truncated = [], [], [], [], [], []
        for _ in range(self.n_steps):
            timer.start("forward")
            action = policy(obs, cursor.rng, cursor.steps)
            timer.stop("forward")
            nxt, reward, term, trunc, ended, final = cursor.step(
                action + self.action_offset if self.action_offset else action, timer
            )
            target = nxt
            if ended.size:
                target = nxt.copy()
                target[ended] = final
            observations.append(obs)
            actions.append(np.asarray(action))
            rewards.append(reward)
            next_obs.append(target)
            terminated.append(term)
            truncated.append(trunc)
            obs = nxt
        return Transitions(
            observations=np.stack(observations),
            actions=np.stack(actions),
            rewards=np.stack(rewards),
            next_observations=np.stack(next_obs),
            terminated=np.stack(terminated),
            truncated=np.stack(truncated),
            policy_version=self.version,
        )

    def template(self) -> Transitions:
        """A zero fragment with the shapes and dtypes :meth:`collect` returns."""
        t, n = self.n_steps, self.env.num_envs
        space = self.env.single_observation_space
        obs_dim = int(np.prod(space.shape)) if space.shape else 1
        act_space = self.env.single_action_space
        act_shape = () if act_space.shape is None else tuple(act_space.shape)
        dtype = np.int64 if isinstance(act_space, spaces.Discrete) else np.float32
        actions: np.ndarray = np.zeros((t, n, *act_shape), dtype=dtype)
        obs = np.zeros((t, n, obs_dim), dtype=np.float32)
        flags = np.zeros((t, n), dtype=bool)
        return Transitions(
            observations=obs,
            actions=actions,
            rewards=np.zeros((t, n), dtype=np.float32),
            next_observations=obs.copy(),
            terminated=flags,
            truncated=flags.copy(),
        )

    def state_dict(self) -> dict[str, Any]:
        """The env cursor's state (exploration RNG, observation, step count)."""
        return self.cursor.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.cursor.load_state_dict(state)
