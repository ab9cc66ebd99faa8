"""Algorithm plug-ins for the training loop: how to build an actor and a learner.

The loop (:mod:`rlops.runtime.loop`) only knows the core protocols: actors
``collect()`` fragments, learners ``step()`` on them and publish versioned
weights. Each algorithm contributes one builder here that wires its learner,
its actor (on-policy :class:`RolloutActor` or off-policy
:class:`TransitionActor`) and the artifact's network description.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from rlops.algos.dqn import DQNConfig
from rlops.algos.ppo import PPOConfig
from rlops.algos.sac import SACConfig
from rlops.artifacts import NetworkSpec, NumpyActorCritic
from rlops.artifacts.numpy_net import LOG_STD_MAX, LOG_STD_MIN
from rlops.core.errors import ConfigError, EnvError
from rlops.envs import VectorEnv
from rlops.observability import PhaseTimer
from rlops.runtime.actor import ExplorationPolicy, RolloutActor, TransitionActor
from rlops.runtime.config import ExperimentConfig


@dataclass
class Agent:
    """An actor-learner pair and what the artifact needs to know about the network.

    Attributes:
        actor: collects fragments (``reset``, ``update``, ``collect``, state dicts).
        learner: updates on fragments (``step``, ``get_variables``, state dicts).
        spec: the artifact's network description.
        fragment_steps: env steps (all sub-envs) per fragment.
    """

    actor: Any
    learner: Any
    spec: NetworkSpec
    fragment_steps: int


def _box_obs_dim(env: VectorEnv, env_id: str, algo: str) -> int:
    space = env.single_observation_space
    if not isinstance(space, spaces.Box):
        raise EnvError(
            f"env {env_id!r}: observation space {space} is not supported; "
            f"rlops {algo} needs a Box observation space"
        )
    return int(np.prod(space.shape))


def build_ppo(config: ExperimentConfig, env: VectorEnv, timer: PhaseTimer) -> Agent:
    """PPO: :class:`~rlops.algos.ppo.PPOLearner` + :class:`RolloutActor`."""
    from rlops.algos.ppo import PPOLearner

    cfg = config.algo
    assert isinstance(cfg, PPOConfig)
    act_space = env.single_action_space
    if isinstance(act_space, spaces.Discrete):
        head, act_dim = "categorical", int(act_space.n)
    elif isinstance(act_space, spaces.Box) and len(act_space.shape) == 1:
        head, act_dim = "gaussian", int(act_space.shape[0])
    else:
        raise EnvError(
            f"env {config.env.id!r}: action space {act_space} is not supported by PPO; "
            "use Discrete or a 1-D Box"
        )
    spec = NetworkSpec(
        obs_dim=_box_obs_dim(env, config.env.id, "PPO"),
        act_dim=act_dim,
        hidden_sizes=cfg.hidden_sizes,
        activation=cfg.activation,
        head=head,  # type: ignore[arg-type]
    )
    learner = PPOLearner(cfg, spec, config.total_steps, config.seed)
    actor = RolloutActor(env, spec, cfg.n_steps, cfg.gamma, config.seed + 1, timer)
    return Agent(actor, learner, spec, cfg.n_steps * env.num_envs)


def build_dqn(config: ExperimentConfig, env: VectorEnv, timer: PhaseTimer) -> Agent:
    """DQN: :class:`~rlops.algos.dqn.DQNLearner` + epsilon-greedy :class:`TransitionActor`."""
    from rlops.algos.dqn import DQNLearner
    from rlops.replay import make_replay

    cfg = config.algo
    assert isinstance(cfg, DQNConfig)
    act_space = env.single_action_space
    if not isinstance(act_space, spaces.Discrete):
        raise EnvError(
            f"env {config.env.id!r}: action space {act_space} is not supported by DQN; "
            "DQN needs Discrete actions (use SAC or PPO for continuous actions)"
        )
    obs_dim = _box_obs_dim(env, config.env.id, "DQN")
    n_actions = int(act_space.n)
    start = int(act_space.start)
    replay, writer = make_replay(
        obs_dim=obs_dim,
        action_shape=(),
        action_dtype=np.int64,
        capacity=cfg.buffer_size,
        num_envs=env.num_envs,
        n_step=cfg.n_step,
        gamma=cfg.gamma,
        prioritized=cfg.prioritized,
        alpha=cfg.per_alpha,
        beta=cfg.per_beta,
        seed=config.seed,
    )
    learner = DQNLearner(cfg, obs_dim, n_actions, config.total_steps, replay, writer, config.seed)
    spec = learner.net.spec(epsilon=cfg.exploration_final_eps)

    def make_policy(variables: Mapping[str, np.ndarray]) -> ExplorationPolicy:
        net = NumpyActorCritic(spec, variables)

        def explore(obs: np.ndarray, rng: np.random.Generator, env_steps: int) -> np.ndarray:
            epsilon = cfg.epsilon(env_steps, config.total_steps)
            return net.epsilon_greedy(obs, rng, epsilon)[0]

        return explore

    actor = TransitionActor(
        env, cfg.train_freq, config.seed + 1, timer, make_policy, action_offset=start
    )
    return Agent(actor, learner, spec, cfg.train_freq * env.num_envs)


def build_sac(config: ExperimentConfig, env: VectorEnv, timer: PhaseTimer) -> Agent:
    """SAC: :class:`~rlops.algos.sac.SACLearner` + tanh-Gaussian :class:`TransitionActor`.

    Before ``learning_starts`` env steps the actor samples uniformly from the
    action space (as SB3 does), then from the squashed-Gaussian policy.
    """
    from rlops.algos.sac import SACLearner
    from rlops.replay import make_replay

    cfg = config.algo
    assert isinstance(cfg, SACConfig)
    act_space = env.single_action_space
    if not (isinstance(act_space, spaces.Box) and len(act_space.shape) == 1):
        raise EnvError(
            f"env {config.env.id!r}: action space {act_space} is not supported by SAC; "
            "SAC needs a 1-D Box (use DQN or PPO for discrete actions)"
        )
    if not (np.isfinite(act_space.low).all() and np.isfinite(act_space.high).all()):
        raise EnvError(
            f"env {config.env.id!r}: SAC squashes actions into the Box bounds, "
            f"which must be finite; got low={act_space.low}, high={act_space.high}"
        )
    if (cfg.log_std_min, cfg.log_std_max) != (LOG_STD_MIN, LOG_STD_MAX):
        raise ConfigError(
            f"algo.log_std_min/log_std_max: the policy artifact's tanh_gaussian head "
            f"uses [{LOG_STD_MIN}, {LOG_STD_MAX}]; got [{cfg.log_std_min}, {cfg.log_std_max}]"
        )
    obs_dim = _box_obs_dim(env, config.env.id, "SAC")
    act_dim = int(act_space.shape[0])
    replay, writer = make_replay(
        obs_dim=obs_dim,
        action_shape=(act_dim,),
        action_dtype=np.float32,
        capacity=cfg.buffer_size,
        num_envs=env.num_envs,
        n_step=cfg.n_step,
        gamma=cfg.gamma,
        seed=config.seed,
    )
    learner = SACLearner(
        cfg,
        obs_dim,
        act_dim,
        act_space.low,
        act_space.high,
        config.total_steps,
        replay,
        writer,
        config.seed,
    )
    spec = NetworkSpec(
        obs_dim=obs_dim,
        act_dim=act_dim,
        hidden_sizes=cfg.hidden_sizes,
        activation=cfg.activation,
        head="tanh_gaussian",
    )
    low = act_space.low.astype(np.float32)
    high = act_space.high.astype(np.float32)

    def make_policy(variables: Mapping[str, np.ndarray]) -> ExplorationPolicy:
        net = NumpyActorCritic(spec, variables)

        def explore(obs: np.ndarray, rng: np.random.Generator, env_steps: int) -> np.ndarray:
            if env_steps < cfg.learning_starts:
                uniform: np.ndarray = rng.uniform(low, high, size=(obs.shape[0], act_dim))
                return uniform.astype(np.float32)
            actions: np.ndarray = np.clip(net.sample(obs, rng)[0], low, high)
            return actions

        return explore

    actor = TransitionActor(env, cfg.train_freq, config.seed + 1, timer, make_policy)
    return Agent(actor, learner, spec, cfg.train_freq * env.num_envs)


BUILDERS: dict[str, Callable[[ExperimentConfig, VectorEnv, PhaseTimer], Agent]] = {
    "ppo": build_ppo,
    "dqn": build_dqn,
    "sac": build_sac,
}
"""``algo.name`` -> builder."""
