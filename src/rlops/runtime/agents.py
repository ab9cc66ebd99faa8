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
from rlops.envs import EpisodeStatistics, ShapeReward, VectorEnv, make_vec
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
        on_policy: fragments from several actors of one round are one batch
            (PPO); off-policy learners take them one by one into replay.
    """

    actor: Any
    learner: Any
    spec: NetworkSpec
    fragment_steps: int
    on_policy: bool = True


@dataclass(frozen=True)
class AlgoPlugin:
    """How the runtime builds one algorithm's parts.

    The parts are separate so that an actor process builds only the actor
    (numpy inference, no learner, no replay): ``spec(config, env)`` describes
    the network, ``actor(config, env, spec, timer, seed)`` collects fragments,
    ``learner(config, env, spec, num_sources)`` updates on them (``num_sources``:
    how many actor streams feed it, each with its own n-step state).
    """

    spec: Callable[[ExperimentConfig, VectorEnv], NetworkSpec]
    actor: Callable[[ExperimentConfig, VectorEnv, NetworkSpec, PhaseTimer, int], Any]
    learner: Callable[[ExperimentConfig, VectorEnv, NetworkSpec, int], Any]
    on_policy: bool
    fragment_length: Callable[[ExperimentConfig], int]


def _box_obs_dim(env: VectorEnv, env_id: str, algo: str) -> int:
    space = env.single_observation_space
    if not isinstance(space, spaces.Box):
        raise EnvError(
            f"env {env_id!r}: observation space {space} is not supported; "
            f"rlops {algo} needs a Box observation space"
        )
    return int(np.prod(space.shape))


# -- PPO --------------------------------------------------------------------------------
def _ppo_spec(config: ExperimentConfig, env: VectorEnv) -> NetworkSpec:
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
    return NetworkSpec(
        obs_dim=_box_obs_dim(env, config.env.id, "PPO"),
        act_dim=act_dim,
        hidden_sizes=cfg.hidden_sizes,
        activation=cfg.activation,
        head=head,  # type: ignore[arg-type]
    )


def _ppo_actor(
    config: ExperimentConfig, env: VectorEnv, spec: NetworkSpec, timer: PhaseTimer, seed: int
) -> RolloutActor:
    cfg = config.algo
    assert isinstance(cfg, PPOConfig)
    return RolloutActor(env, spec, cfg.n_steps, cfg.gamma, seed, timer)


def _ppo_learner(
    config: ExperimentConfig, env: VectorEnv, spec: NetworkSpec, num_sources: int
) -> Any:
    from rlops.algos.ppo import PPOLearner

    cfg = config.algo
    assert isinstance(cfg, PPOConfig)
    return PPOLearner(cfg, spec, config.total_steps, config.seed)


# -- DQN --------------------------------------------------------------------------------
def _dqn_spec(config: ExperimentConfig, env: VectorEnv) -> NetworkSpec:
    cfg = config.algo
    assert isinstance(cfg, DQNConfig)
    act_space = env.single_action_space
    if not isinstance(act_space, spaces.Discrete):
        raise EnvError(
            f"env {config.env.id!r}: action space {act_space} is not supported by DQN; "
            "DQN needs Discrete actions (use SAC or PPO for continuous actions)"
        )
    return NetworkSpec(
        obs_dim=_box_obs_dim(env, config.env.id, "DQN"),
        act_dim=int(act_space.n),
        hidden_sizes=cfg.hidden_sizes,
        activation=cfg.activation,
        head="q",
        epsilon=cfg.exploration_final_eps,
    )


def _dqn_actor(
    config: ExperimentConfig, env: VectorEnv, spec: NetworkSpec, timer: PhaseTimer, seed: int
) -> TransitionActor:
    cfg = config.algo
    assert isinstance(cfg, DQNConfig)
    act_space = env.single_action_space
    assert isinstance(act_space, spaces.Discrete)

    def make_policy(variables: Mapping[str, np.ndarray]) -> ExplorationPolicy:
        net = NumpyActorCritic(spec, variables)

        def explore(obs: np.ndarray, rng: np.random.Generator, env_steps: int) -> np.ndarray:
            epsilon = cfg.epsilon(env_steps, config.total_steps)
            return net.epsilon_greedy(obs, rng, epsilon)[0]

        return explore

    return TransitionActor(
        env, cfg.train_freq, seed, timer, make_policy, action_offset=int(act_space.start)
    )


def _dqn_learner(
    config: ExperimentConfig, env: VectorEnv, spec: NetworkSpec, num_sources: int
) -> Any:
    from rlops.algos.dqn import DQNLearner
    from rlops.replay import NStepWriter, make_replay

    cfg = config.algo
    assert isinstance(cfg, DQNConfig)
    replay, writer = make_replay(
        obs_dim=spec.obs_dim,
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
    writers = [writer] + [
        NStepWriter(cfg.n_step, cfg.gamma, env.num_envs) for _ in range(num_sources - 1)
    ]
    learner = DQNLearner(
        cfg, spec.obs_dim, spec.act_dim, config.total_steps, replay, writers, config.seed
    )
    return learner


# -- SAC --------------------------------------------------------------------------------
def _sac_spec(config: ExperimentConfig, env: VectorEnv) -> NetworkSpec:
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
    return NetworkSpec(
        obs_dim=_box_obs_dim(env, config.env.id, "SAC"),
        act_dim=int(act_space.shape[0]),
        hidden_sizes=cfg.hidden_sizes,
        activation=cfg.activation,
        head="tanh_gaussian",
    )


def _sac_actor(
    config: ExperimentConfig, env: VectorEnv, spec: NetworkSpec, timer: PhaseTimer, seed: int
) -> TransitionActor:
    """Before ``learning_starts`` env steps the actor samples uniformly from the
    action space (as SB3 does), then from the squashed-Gaussian policy."""
    cfg = config.algo
    assert isinstance(cfg, SACConfig)
    act_space = env.single_action_space
    assert isinstance(act_space, spaces.Box)
    low = act_space.low.astype(np.float32)
    high = act_space.high.astype(np.float32)
    act_dim = spec.act_dim

    def make_policy(variables: Mapping[str, np.ndarray]) -> ExplorationPolicy:
        net = NumpyActorCritic(spec, variables)

        def explore(obs: np.ndarray, rng: np.random.Generator, env_steps: int) -> np.ndarray:
            if env_steps < cfg.learning_starts:
                uniform: np.ndarray = rng.uniform(low, high, size=(obs.shape[0], act_dim))
                return uniform.astype(np.float32)
            actions: np.ndarray = np.clip(net.sample(obs, rng)[0], low, high)
            return actions

        return explore

    return TransitionActor(env, cfg.train_freq, seed, timer, make_policy)


def _sac_learner(
    config: ExperimentConfig, env: VectorEnv, spec: NetworkSpec, num_sources: int
) -> Any:
    from rlops.algos.sac import SACLearner
    from rlops.replay import NStepWriter, make_replay

    cfg = config.algo
    assert isinstance(cfg, SACConfig)
    act_space = env.single_action_space
    assert isinstance(act_space, spaces.Box)
    replay, writer = make_replay(
        obs_dim=spec.obs_dim,
        action_shape=(spec.act_dim,),
        action_dtype=np.float32,
        capacity=cfg.buffer_size,
        num_envs=env.num_envs,
        n_step=cfg.n_step,
        gamma=cfg.gamma,
        seed=config.seed,
    )
    writers = [writer] + [
        NStepWriter(cfg.n_step, cfg.gamma, env.num_envs) for _ in range(num_sources - 1)
    ]
    return SACLearner(
        cfg,
        spec.obs_dim,
        spec.act_dim,
        act_space.low,
        act_space.high,
        config.total_steps,
        replay,
        writers,
        config.seed,
    )


def _n_steps(config: ExperimentConfig) -> int:
    algo = config.algo
    return algo.n_steps if isinstance(algo, PPOConfig) else algo.train_freq


PLUGINS: dict[str, AlgoPlugin] = {
    "ppo": AlgoPlugin(_ppo_spec, _ppo_actor, _ppo_learner, True, _n_steps),
    "dqn": AlgoPlugin(_dqn_spec, _dqn_actor, _dqn_learner, False, _n_steps),
    "sac": AlgoPlugin(_sac_spec, _sac_actor, _sac_learner, False, _n_steps),
}
"""``algo.name`` -> how to build its parts."""


def make_training_env(config: ExperimentConfig) -> tuple[VectorEnv, EpisodeStatistics]:
    """``(base env, episode statistics over it)``: the env every backend's actor steps.

    Reward shaping (``env.reward_shaping``) sits under the statistics so that
    the logged return is the one the learner optimises; its components and
    ``env.info_metrics`` are summed per episode.
    """
    env_cfg = config.env
    base = make_vec(env_cfg.id, env_cfg.num_envs, **env_cfg.kwargs)
    shaped: VectorEnv = base
    if env_cfg.reward_shaping:
        shaped = ShapeReward(base, env_cfg.reward_shaping)
    keys = tuple(dict.fromkeys([*env_cfg.info_metrics, *env_cfg.reward_shaping]))
    return base, EpisodeStatistics(shaped, info_keys=keys)


def actor_seed(config: ExperimentConfig, actor_id: int, incarnation: int = 0) -> int:
    """Seed of actor ``actor_id`` (its ``incarnation``-th start): actor 0's first is inline's."""
    return config.seed + 1 + 1_000 * actor_id + 1_000_003 * incarnation


def env_seed(config: ExperimentConfig, actor_id: int, incarnation: int = 0) -> int:
    """Env reset seed of actor ``actor_id``: actor 0's first is the inline run's ``seed``."""
    return config.seed + 10_007 * actor_id + 1_000_033 * incarnation


def build_agent(
    config: ExperimentConfig, env: VectorEnv, timer: PhaseTimer, num_sources: int = 1
) -> Agent:
    """The learner, a local actor (actor 0) and the network spec for ``config``."""
    plugin = PLUGINS[config.algo.name]
    spec = plugin.spec(config, env)
    learner = plugin.learner(config, env, spec, num_sources)
    actor = plugin.actor(config, env, spec, timer, actor_seed(config, 0))
    return Agent(
        actor, learner, spec, plugin.fragment_length(config) * env.num_envs, plugin.on_policy
    )
