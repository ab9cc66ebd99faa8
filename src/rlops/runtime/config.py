"""The experiment config: one frozen dataclass tree, YAML as its serialisation.

>>> cfg = load_config("configs/cartpole_ppo.yaml", ["seed=3", "algo.lr=5e-4"])  # doctest: +SKIP
>>> cfg = ExperimentConfig(env=EnvConfig(id="rlops/CartPole-v1"), algo=PPOConfig(n_steps=32))
>>> cfg.algo.n_steps
32
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from rlops.algos.dqn.config import DQNConfig
from rlops.algos.ppo.config import PPOConfig
from rlops.algos.sac.config import SACConfig
from rlops.core.config import apply_overrides, check, from_mapping, load_yaml, to_mapping
from rlops.core.errors import ConfigError

AlgoConfig = PPOConfig | DQNConfig | SACConfig
"""Union of the algorithm configs (``algo.name`` selects one)."""

ALGO_CONFIGS: dict[str, type[Any]] = {"ppo": PPOConfig, "dqn": DQNConfig, "sac": SACConfig}
"""``algo.name`` -> config class."""


@dataclass(frozen=True, kw_only=True)
class EnvConfig:
    """Which environment to train on and how to wrap it."""

    id: str = "rlops/CartPole-v1"
    """Env id: ``rlops/...`` (see ``rlops envs``) or ``gym:<any Gymnasium id>``."""
    num_envs: int = 8
    """Parallel sub-environments per actor."""
    normalize_obs: bool = False
    """Running observation normalisation (statistics saved into the artifact)."""
    scale_reward: bool = False
    """Divide rewards by the running std of the discounted return."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the env constructor."""
    reward_shaping: dict[str, float] = field(default_factory=dict)
    """``info`` key -> weight: ``reward += weight * info[key]`` every step (the env
    must report the key, e.g. the autoscaling sim's ``replica_cost``)."""
    info_metrics: tuple[str, ...] = ()
    """Per-step ``info`` keys summed per episode and logged as
    ``charts/episode_<key>`` (shaping keys are logged too)."""

    def __post_init__(self) -> None:
        check(self.num_envs >= 1, "env.num_envs", f"must be >= 1, got {self.num_envs}")
        check(bool(self.id), "env.id", "must not be empty")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Periodic and final evaluation with deterministic actions."""

    every_steps: int = 0
    """Evaluate every this many env steps during training; 0 = only at the end."""
    episodes: int = 10
    """Episodes per evaluation."""
    num_envs: int = 5
    """Parallel evaluation sub-envs."""
    deterministic: bool = True
    """Act with the most likely action (argmax / mean)."""
    env_id: str | None = None
    """Evaluate on this env id instead of ``env.id`` (e.g. without the fault
    injection or domain randomization used in training); null = ``env.id``."""
    env_kwargs: dict[str, Any] | None = None
    """Constructor kwargs for the evaluation env; null = ``env.kwargs`` when
    ``env_id`` is null, none otherwise."""

    def __post_init__(self) -> None:
        check(self.every_steps >= 0, "eval.every_steps", f"must be >= 0, got {self.every_steps}")
        check(self.episodes >= 1, "eval.episodes", f"must be >= 1, got {self.episodes}")
        check(self.num_envs >= 1, "eval.num_envs", f"must be >= 1, got {self.num_envs}")


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Where actors and learner run, and how failures are handled."""

    backend: Literal["inline", "process", "ray"] = "inline"
    """``inline``: one process, the deterministic reference; ``process``: actor
    processes with shared-memory fragments; ``ray``: Ray actors (``pip install
    'rlops[ray]'``; on a cluster set ``ray_address``)."""
    num_actors: int = 1
    """Actors (each steps its own ``env.num_envs`` sub-envs); ``inline`` has exactly 1."""
    mode: Literal["sync", "async"] = "sync"
    """``sync``: every round waits for one fragment per actor, all from the newest
    weights (reproducible); ``async``: the learner takes fragments as they
    arrive (stale ones are V-trace-corrected for PPO; see ``max_policy_lag``)."""
    max_policy_lag: int | None = None
    """Async: drop fragments whose weights are more than this many versions behind
    the learner (counted in ``runtime/fragments_dropped``); null keeps them all."""
    max_restarts: int = 10
    """Actor replacements allowed in the whole run (after a crash, kill or
    timeout); one more failure stops training with the cause. 0: none."""
    fragment_timeout_s: float = 60.0
    """An actor that delivers no fragment for this long is hung: killed and replaced."""
    start_timeout_s: float = 60.0
    """An actor that is not ready this long after its start is killed and replaced."""
    ray_address: str | None = None
    """``ray`` backend: the cluster to join (``ray.init(address=...)``, e.g.
    ``"ray://head:10001"`` or ``"auto"``); null starts a local Ray instance."""
    torch_threads: int = 1
    """``torch.set_num_threads`` for the learner (small MLPs run fastest on 1)."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many env steps; 0 = only at the end."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept on disk."""

    def __post_init__(self) -> None:
        check(self.num_actors >= 1, "runtime.num_actors", f"must be >= 1, got {self.num_actors}")
        check(
            self.backend != "inline" or self.num_actors == 1,
            "runtime.num_actors",
            f"the inline backend runs exactly 1 actor, got {self.num_actors}; "
            "use backend 'process' or 'ray' for more",
        )
        check(
            self.backend != "inline" or self.mode == "sync",
            "runtime.mode",
            "the inline backend is sync only; use backend 'process' or 'ray' for async",
        )
        check(
            self.max_policy_lag is None or self.max_policy_lag >= 0,
            "runtime.max_policy_lag",
            f"must be >= 0 or null, got {self.max_policy_lag}",
        )
        check(
            self.max_restarts >= 0, "runtime.max_restarts", f"must be >= 0, got {self.max_restarts}"
        )
        for key in ("fragment_timeout_s", "start_timeout_s"):
            value = getattr(self, key)
            check(value > 0, f"runtime.{key}", f"must be > 0 seconds, got {value}")
        check(
            self.torch_threads >= 1,
            "runtime.torch_threads",
            f"must be >= 1, got {self.torch_threads}",
        )
        check(
            self.checkpoint_every >= 0,
            "runtime.checkpoint_every",
            f"must be >= 0, got {self.checkpoint_every}",
        )
        check(
            self.keep_checkpoints >= 1,
            "runtime.keep_checkpoints",
            f"must be >= 1, got {self.keep_checkpoints}",
        )


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    """Where metrics go (``metrics.jsonl`` in the run dir is always written)."""

    tensorboard: bool = True
    """Write TensorBoard event files under ``<run_dir>/tb``."""
    progress: bool = True
    """Show the live progress bar on the console."""
    every_steps: int = 0
    """Log metrics when env steps cross a multiple of this; 0 = after every update.

    Off-policy runs that update every env step should log every ~1000 steps."""

    def __post_init__(self) -> None:
        check(self.every_steps >= 0, "log.every_steps", f"must be >= 0, got {self.every_steps}")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """A whole training run."""

    name: str = "run"
    """Run name; the run directory is ``runs/<name>-<timestamp>`` unless ``--out`` is given."""
    seed: int = 0
    """Seeds envs, parameter init and sampling (same seed + config = same weights, inline)."""
    total_steps: int = 100_000
    """Training budget in environment steps (all sub-envs together)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Environment."""
    algo: AlgoConfig = field(default_factory=PPOConfig)
    """Algorithm and its hyperparameters; ``algo.name`` selects the algorithm."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Backend and checkpointing."""
    log: LogConfig = field(default_factory=LogConfig)
    """Metric sinks."""

    def __post_init__(self) -> None:
        check(self.total_steps >= 1, "total_steps", f"must be >= 1, got {self.total_steps}")
        if isinstance(self.algo, PPOConfig):
            batch = self.algo.n_steps * self.env.num_envs
            check(
                batch % min(self.algo.minibatch_size, batch) == 0,
                "algo.minibatch_size",
                f"must divide algo.n_steps * env.num_envs = {batch}, "
                f"got {self.algo.minibatch_size}",
            )

    def replace(self, **changes: Any) -> ExperimentConfig:
        """Return a copy with top-level fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to ``config.yaml`` in the run dir."""
        return to_mapping(self)

    def to_yaml(self) -> str:
        """YAML text that :func:`config_from_dict` reads back to an equal config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a parsed config mapping into an :class:`ExperimentConfig`.

    Raises:
        ConfigError: naming the first bad key and what is allowed.
    """
    data = dict(data)
    algo = data.get("algo", {})
    if isinstance(algo, Mapping):
        name = algo.get("name", "ppo")
        if name not in ALGO_CONFIGS:
            raise ConfigError(
                f"algo.name: unknown algorithm {name!r}; choose one of "
                + ", ".join(repr(n) for n in ALGO_CONFIGS)
            )
        data["algo"] = from_mapping(ALGO_CONFIGS[name], algo, prefix="algo")
    return from_mapping(ExperimentConfig, data)


def load_config(path: str | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load a YAML config file (or the defaults if ``path`` is None) and apply overrides.

    Args:
        path: YAML file path, or None for the built-in defaults.
        overrides: ``key.sub=value`` strings (``--set`` on the CLI).

    Returns:
        The validated config.

    Raises:
        ConfigError: on a missing file, bad YAML, an unknown key or a bad value.
    """
    data = load_yaml(path) if path else {}
    return config_from_dict(apply_overrides(data, overrides))
