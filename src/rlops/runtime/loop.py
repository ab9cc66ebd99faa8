"""The training loop on the inline backend: the deterministic reference.

One iteration is the actor-learner loop of :mod:`rlops.core.interfaces`::

    actor.update(*learner.get_variables())
    batch = actor.collect()
    metrics = learner.step(batch)

plus logging, periodic evaluation, atomic checkpoints and, at the end, the
policy artifact. Same seed and config give the same final weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlops.artifacts import Policy, build_manifest, save_policy
from rlops.core import interrupt
from rlops.core.config import load_yaml
from rlops.core.errors import ConfigError, EnvError
from rlops.envs import (
    NormalizeObservation,
    ScaleReward,
    VectorEnv,
    make_vec,
    run_episodes,
)
from rlops.observability import (
    ConsoleSink,
    JsonlSink,
    MetricSink,
    MultiLogger,
    PhaseTimer,
    TensorBoardSink,
)
from rlops.runtime.agents import build_agent, make_training_env
from rlops.runtime.checkpoint import atomic_write_bytes, load_latest_checkpoint, save_checkpoint
from rlops.runtime.config import ExperimentConfig, config_from_dict, load_config
from rlops.runtime.fleet import Fleet, InlineFleet, concat_fragments
from rlops.runtime.lineage import collect_lineage, record_resume, write_lineage

ARTIFACT_DIR = "artifact"


@dataclass
class Evaluation:
    """One evaluation during training.

    Attributes:
        env_steps: training env steps when it ran.
        train_time_s: training wall time so far, evaluation time excluded.
        mean_return: mean undiscounted return over the evaluation episodes.
        std_return: standard deviation of those returns.
    """

    env_steps: int
    train_time_s: float
    mean_return: float
    std_return: float


@dataclass
class RunResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run directory (config.yaml, lineage.json, metrics.jsonl, checkpoints/,
            artifact/).
        artifact_path: the policy artifact directory.
        version: the artifact's content hash (its version id).
        env_steps: environment steps trained.
        evaluations: evaluation history, the final one last.
        metrics: the last logged metrics.
        weights_hash: sha256 of the final network weights (determinism checks).
    """

    run_dir: Path
    artifact_path: Path
    version: str
    env_steps: int
    evaluations: list[Evaluation] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    weights_hash: str = ""

    @property
    def final_return(self) -> float:
        """Mean return of the final evaluation."""
        return self.evaluations[-1].mean_return if self.evaluations else float("nan")


def weights_hash(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over sorted tensor names and bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name]).tobytes())
    return h.hexdigest()


# -- checkpoint state: arrays go to safetensors, everything else to JSON ------------
def _split(prefix: str, value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Move arrays of a nested state into ``tensors``; leave JSON-able placeholders."""
    if isinstance(value, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"__tensor__": prefix, "numpy": True}
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().clone().contiguous()
        return {"__tensor__": prefix, "numpy": False}
    if isinstance(value, Mapping):
        return {str(k): _split(f"{prefix}/{k}", v, tensors) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split(f"{prefix}/{i}", v, tensors) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _join(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_split`: arrays come back as numpy or torch, as they went in."""
    if isinstance(value, dict):
        if "__tensor__" in value and set(value) <= {"__tensor__", "numpy"}:
            t = tensors[value["__tensor__"]]
            return t.numpy() if value.get("numpy", True) else t
        return {k: _join(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value


class _Run:
    """The pieces of one training run, built from a config."""

    def __init__(self, config: ExperimentConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        cfg = config
        torch.set_num_threads(cfg.runtime.torch_threads)
        _check_backend(cfg)
        self.base_env, self.stats = make_training_env(cfg)
        env: VectorEnv = self.stats
        self.obs_norm: NormalizeObservation | None = None
        self.reward_scale: ScaleReward | None = None
        if cfg.env.normalize_obs:
            self.obs_norm = NormalizeObservation(env)
            env = self.obs_norm
        if cfg.env.scale_reward:
            self.reward_scale = ScaleReward(env, gamma=cfg.algo.gamma)
            env = self.reward_scale
        self.env = env
        self.timer = PhaseTimer()
        self.agent = build_agent(cfg, env, self.timer, num_sources=cfg.runtime.num_actors)
        self.spec = self.agent.spec
        self.learner = self.agent.learner
        self.actor = self.agent.actor
        self.env_steps = 0
        self.train_time_s = 0.0
        self.evaluations: list[Evaluation] = []
        self.last_metrics: dict[str, float] = {}

    def policy(self) -> Policy:
        """The current policy as the artifact would load it (in memory)."""
        _, tensors = self.learner.get_variables()
        manifest = build_manifest(
            observation_space=self.base_env.single_observation_space,
            action_space=self.base_env.single_action_space,
            network=self.spec,
            obs_norm=None if self.obs_norm is None else self.obs_norm.export(),
        )
        return Policy(manifest, tensors, seed=self.config.seed)

    def evaluate(self) -> Evaluation:
        cfg = self.config.eval
        policy = self.policy()
        env_id = cfg.env_id or self.config.env.id
        kwargs = cfg.env_kwargs
        if kwargs is None:
            kwargs = self.config.env.kwargs if cfg.env_id is None else {}
        env = make_vec(env_id, min(cfg.num_envs, cfg.episodes), **kwargs)
        try:
            result = run_episodes(
                env,
                lambda obs, mask=None: policy.act(obs, deterministic=cfg.deterministic, mask=mask)[
                    0
                ],
                cfg.episodes,
                seed=self.config.seed + 1_000_003,
            )
        finally:
            env.close()
        evaluation = Evaluation(
            self.env_steps, self.train_time_s, result.mean_return, result.std_return
        )
        self.evaluations.append(evaluation)
        return evaluation

    # -- checkpoints ----------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        tensors: dict[str, torch.Tensor] = {}
        state: dict[str, Any] = {
            "env_steps": self.env_steps,
            "train_time_s": self.train_time_s,
            "evaluations": [e.__dict__ for e in self.evaluations],
            "learner": _split("learner", self.learner.state_dict(), tensors),
            "actor": _split("actor", self.actor.state_dict(), tensors),
            "stats": _split("stats", self.stats.state_dict(), tensors),
        }
        if self.obs_norm is not None:
            state["obs_norm"] = _split("obs_norm", self.obs_norm.state_dict(), tensors)
        if self.reward_scale is not None:
            state["reward_scale"] = _split("reward_scale", self.reward_scale.state_dict(), tensors)
        env_state = getattr(self.base_env, "state_dict", None)
        if callable(env_state) and self.config.runtime.backend == "inline":
            state["env"] = _split("env", env_state(), tensors)
        return save_checkpoint(
            self.run_dir, self.env_steps, tensors, state, keep=self.config.runtime.keep_checkpoints
        )

    def restore(self) -> int:
        ckpt = load_latest_checkpoint(self.run_dir)
        state, tensors = ckpt.meta, ckpt.tensors
        self.learner.load_state_dict(_join(state["learner"], tensors))
        self.stats.load_state_dict(_join(state["stats"], tensors))
        if self.obs_norm is not None and "obs_norm" in state:
            self.obs_norm.load_state_dict(_join(state["obs_norm"], tensors))
        if self.reward_scale is not None and "reward_scale" in state:
            self.reward_scale.load_state_dict(_join(state["reward_scale"], tensors))
        if self.config.runtime.backend == "inline":  # other backends restart their actors fresh
            load_env = getattr(self.base_env, "load_state_dict", None)
            if "env" in state and callable(load_env):
                load_env(_join(state["env"], tensors))
                self.actor.load_state_dict(_join(state["actor"], tensors))
            else:
                # Gymnasium envs cannot restore mid-episode state: start fresh episodes.
                self.actor.load_state_dict({**_join(state["actor"], tensors), "obs": None})
                self.actor.reset(seed=self.config.seed + int(state["env_steps"]))
        self.env_steps = int(state["env_steps"])
        self.train_time_s = float(state["train_time_s"])
        self.evaluations = [Evaluation(**e) for e in state["evaluations"]]
        return ckpt.step


def _make_run_dir(config: ExperimentConfig, out_dir: str | os.PathLike[str] | None) -> Path:
    if out_dir is not None:
        run_dir = Path(out_dir)
        if (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
            raise ConfigError(
                f"--out {run_dir}: already holds a run with checkpoints; "
                f"continue it with --resume {run_dir} or choose another directory"
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{config.name}-{stamp}"
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = Path("runs") / f"{config.name}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train(
    config: ExperimentConfig | str | os.PathLike[str] | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    on_metrics: Callable[[int, Mapping[str, float]], None] | None = None,
) -> RunResult:
    """Train a policy and write its artifact.

    A fresh run first writes ``config.yaml`` and ``lineage.json`` (code, config,
    seed, env and package versions: :mod:`rlops.runtime.lineage`) to its run
    directory; a resumed run keeps both and appends the resume to the lineage.

    Args:
        config: the experiment, or the path of a YAML config file; ignored when
            ``resume`` is given (the run's own ``config.yaml`` is used). None
            means all defaults (PPO on CartPole).
        out_dir: run directory; default ``runs/<name>-<timestamp>``.
        resume: a run directory to continue from its last complete checkpoint.
        on_metrics: called with ``(env_steps, metrics)`` after every logged update.

    Returns:
        The :class:`RunResult` (artifact path, version, evaluations, metrics).

    Raises:
        ConfigError: bad config or run directory.
        EnvError: unknown env id or an env producing NaN/Inf (earlier checkpoints stay intact).
        CheckpointError: ``resume`` has no valid checkpoint.

    >>> import rlops
    >>> run = rlops.train("configs/cartpole_ppo.yaml")  # doctest: +SKIP
    >>> run = rlops.train(rlops.ExperimentConfig(total_steps=2048))  # doctest: +SKIP
    >>> rlops.load_policy(run.artifact_path).act(obs)  # doctest: +SKIP
    """
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_dir}: not a run directory (no config.yaml)")
        config = config_from_dict(load_yaml(str(run_dir / "config.yaml")))
        config_bytes = (run_dir / "config.yaml").read_bytes()
    else:
        if isinstance(config, str | os.PathLike):
            config = load_config(os.fspath(config))
        config = config or ExperimentConfig()
        run_dir = _make_run_dir(config, out_dir)
        config_text = config.to_yaml()
        config_bytes = config_text.encode()
        atomic_write_bytes(run_dir / "config.yaml", config_bytes)
        rt = config.runtime
        write_lineage(
            run_dir,
            collect_lineage(
                config_text,
                seed=config.seed,
                env_id=config.env.id,
                env_kwargs=config.env.kwargs,
                backend=rt.backend,
                algo=config.algo.name,
                num_actors=rt.num_actors,
                mode=rt.mode,
            ),
        )
    # The bytes of config.yaml, as lineage.json's config_sha256 (also on resume, where
    # re-serialising the parsed config could differ from the file in formatting).
    config_sha256 = hashlib.sha256(config_bytes).hexdigest()
    interrupt.STOP.clear()  # a stop requested before this run does not end it
    run = _Run(config, run_dir)
    if resume is not None:
        step = run.restore()
        _truncate_metrics(run_dir / "metrics.jsonl", step)
        record_resume(run_dir)  # the start's lineage stays; the resume is appended
    elif config.runtime.backend == "inline":
        run.actor.reset(seed=config.seed)  # other backends' actors reset in their own processes

    sinks: list[MetricSink] = [JsonlSink(run_dir / "metrics.jsonl")]
    if config.log.tensorboard:
        sinks.append(TensorBoardSink(run_dir / "tb"))
    if config.log.progress:
        sinks.append(
            ConsoleSink(config.total_steps, description=f"{config.algo.name} {config.env.id}")
        )
    logger = MultiLogger(sinks)
    fleet: Fleet | None = None
    try:
        try:
            fleet = make_fleet(run)
            tally = _loop(run, fleet, logger, on_metrics)
            fleet.close()
            run.last_metrics.update(_runtime_metrics(run, fleet, tally, final=True))
        except EnvError as exc:
            saved = sorted((run_dir / "checkpoints").glob("step_*"))
            where = f"last checkpoint {saved[-1].name} is intact" if saved else "no checkpoint yet"
            raise EnvError(f"{exc} (run {run_dir}: {where})") from exc
        artifact = run_dir / ARTIFACT_DIR
        _, tensors = run.learner.get_variables()
        version = save_policy(
            artifact,
            tensors=tensors,
            observation_space=run.base_env.single_observation_space,
            action_space=run.base_env.single_action_space,
            network=run.spec,
            obs_norm=None if run.obs_norm is None else run.obs_norm.export(),
            extra={
                "algo": config.algo.name,
                "env_id": config.env.id,
                "training": {
                    "seed": config.seed,
                    "total_steps": config.total_steps,
                    "config_sha256": config_sha256,
                },
            },
        )
        final = run.evaluations[-1] if run.evaluations else None
        result = RunResult(
            run_dir=run_dir,
            artifact_path=artifact,
            version=version,
            env_steps=run.env_steps,
            evaluations=run.evaluations,
            metrics=run.last_metrics,
            weights_hash=weights_hash(tensors),
        )
        summary = {
            "run_dir": str(run_dir),
            "artifact": str(artifact),
            "version": version,
            "env_steps": run.env_steps,
            "train_time_s": run.train_time_s,
            "final_eval": None if final is None else final.__dict__,
            "weights_hash": result.weights_hash,
        }
        atomic_write_bytes(
            run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode()
        )
        return result
    finally:
        if fleet is not None:
            fleet.close()
        logger.close()
        run.env.close()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after checkpoint ``step`` (they will be logged again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            if int(json.loads(line)["step"]) > step:
                continue
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a crash
        kept.append(line)
    atomic_write_bytes(path, "".join(kept).encode())


def _check_backend(config: ExperimentConfig) -> None:
    """Refuse what a distributed backend cannot do yet, before anything starts."""
    rt = config.runtime
    if rt.backend == "inline":
        return
    if config.env.normalize_obs or config.env.scale_reward:
        raise ConfigError(
            f"env.normalize_obs / env.scale_reward: not supported on the {rt.backend!r} "
            "backend yet (each actor would keep its own running statistics); "
            "use runtime.backend: inline for this config"
        )
    if rt.backend == "ray":
        from rlops.runtime.ray_backend import import_ray

        import_ray()  # a missing Ray is a ConfigError before any env is built
    limit = 4 * (os.cpu_count() or 1)
    if rt.backend == "process" and rt.num_actors > limit:
        raise ConfigError(
            f"runtime.num_actors: {rt.num_actors} actor processes on a machine with "
            f"{os.cpu_count()} CPUs; at most {limit} (4 per CPU) are allowed on the process "
            "backend; use fewer actors (more env.num_envs each) or the ray backend on a cluster"
        )


def make_fleet(run: _Run) -> Fleet:
    """The actor fleet for ``run.config.runtime.backend`` (not started yet)."""
    rt = run.config.runtime
    if rt.backend == "inline":
        return InlineFleet(run.actor, run.stats)
    _, weights = run.learner.get_variables()
    if rt.backend == "process":
        from rlops.runtime.process import ProcessFleet

        return ProcessFleet(run.config, run.actor.template(), weights, seed_offset=run.env_steps)
    from rlops.runtime.ray_backend import RayFleet

    return RayFleet(run.config, run.actor.template(), weights, seed_offset=run.env_steps)


@dataclass
class _Tally:
    """Runtime counters the loop keeps between log lines."""

    stale_fragments: int = 0
    stale_steps: int = 0
    lags: list[int] = field(default_factory=list)
    returns: list[np.ndarray] = field(default_factory=list)
    lengths: list[np.ndarray] = field(default_factory=list)
    components: dict[str, list[np.ndarray]] = field(default_factory=dict)
    episodes: int = 0
    updates: int = 0
    since: float = field(default_factory=time.perf_counter)


def _loop(
    run: _Run,
    fleet: Fleet,
    logger: MultiLogger,
    on_metrics: Callable[[int, Mapping[str, float]], None] | None,
) -> _Tally:
    cfg = run.config
    rt = cfg.runtime
    next_eval = _next_multiple(run.env_steps, cfg.eval.every_steps)
    next_ckpt = _next_multiple(run.env_steps, cfg.runtime.checkpoint_every)
    next_log = _next_multiple(run.env_steps, cfg.log.every_steps)
    tally = _Tally(episodes=run.stats.episodes)
    fleet.start(*run.learner.get_variables())
    while run.env_steps < cfg.total_steps:
        interrupt.check()  # a Ctrl-C that Python swallowed (e.g. inside a __del__) stops here
        started = time.perf_counter()
        if rt.backend != "inline":
            run.timer.start("wait")
        deliveries = fleet.gather()
        if rt.backend != "inline":
            run.timer.stop("wait")
        accepted = []
        for delivery in deliveries:
            tally.returns.append(delivery.episode_returns)
            tally.lengths.append(delivery.episode_lengths)
            for key, sums in delivery.components.items():
                tally.components.setdefault(key, []).append(sums)
            tally.episodes += len(delivery.episode_returns)
            lag = int(run.learner.version) - delivery.batch.policy_version
            if rt.max_policy_lag is not None and lag > rt.max_policy_lag:
                tally.stale_fragments += 1
                tally.stale_steps += delivery.env_steps
                continue
            tally.lags.append(lag)
            accepted.append(delivery)
        if run.agent.on_policy and rt.mode == "sync" and len(accepted) > 1:
            batches = [concat_fragments([d.batch for d in accepted])]
        else:
            batches = [d.batch for d in accepted]
        metrics: dict[str, float] = {}
        for batch in batches:
            run.timer.start("learn")
            metrics = run.learner.step(batch)
            run.timer.stop("learn")
            tally.updates += 1
            run.env_steps += batch.num_steps * batch.num_envs
            fleet.publish(*run.learner.get_variables())
        done = run.env_steps >= cfg.total_steps
        evaluate = done or (next_eval is not None and run.env_steps >= next_eval)
        if batches and (evaluate or next_log is None or run.env_steps >= next_log):
            next_log = _next_multiple(run.env_steps, cfg.log.every_steps)
            metrics.update(run.timer.report(run.env_steps))
            metrics.update(_runtime_metrics(run, fleet, tally))
            if evaluate:
                # Evaluation time is excluded from train_time_s (time-to-threshold numbers).
                run.train_time_s += time.perf_counter() - started
                evaluation = run.evaluate()
                metrics["eval/mean_return"] = evaluation.mean_return
                metrics["eval/std_return"] = evaluation.std_return
                next_eval = _next_multiple(run.env_steps, cfg.eval.every_steps)
                started = time.perf_counter()
            logger.write(metrics, run.env_steps)
            run.last_metrics = metrics
            if on_metrics is not None:
                on_metrics(run.env_steps, metrics)
        if done or (next_ckpt is not None and run.env_steps >= next_ckpt):
            run.save_checkpoint()
            next_ckpt = _next_multiple(run.env_steps, cfg.runtime.checkpoint_every)
        run.train_time_s += time.perf_counter() - started
    return tally


def _runtime_metrics(
    run: _Run, fleet: Fleet, tally: _Tally, final: bool = False
) -> dict[str, float]:
    """Episode charts and the ``runtime/*`` counters; resets the per-log-line parts."""
    out: dict[str, float] = {"charts/episodes": float(tally.episodes)}
    returns = np.concatenate(tally.returns) if tally.returns else np.zeros(0)
    lengths = np.concatenate(tally.lengths) if tally.lengths else np.zeros(0)
    if returns.size:
        out["charts/episode_return"] = float(returns.mean())
        out["charts/episode_length"] = float(lengths.mean())
    for key, chunks in tally.components.items():
        sums = np.concatenate(chunks) if chunks else np.zeros(0)
        if sums.size:
            out[f"charts/episode_{key}"] = float(sums.mean())
    counters = fleet.counters()
    now = time.perf_counter()
    out.update(
        {
            "runtime/actors_alive": float(counters.actors_alive),
            "runtime/actor_restarts": float(counters.restarts),
            "runtime/actor_timeouts": float(counters.timeouts),
            "runtime/fragments_dropped": float(counters.fragments_lost + tally.stale_fragments),
            "runtime/fragments_lost": float(counters.fragments_lost),
            "runtime/fragments_stale": float(tally.stale_fragments),
            "runtime/steps_taken": float(counters.steps_taken),
            "runtime/steps_accepted": float(counters.steps_delivered - tally.stale_steps),
            "runtime/steps_dropped": float(counters.steps_lost + tally.stale_steps),
            "runtime/steps_discarded_at_stop": float(counters.steps_discarded),
            "runtime/weight_version": float(run.learner.version),
            "perf/learner_updates_per_s": tally.updates / max(now - tally.since, 1e-9),
        }
    )
    if counters.actor_versions:
        out["runtime/actor_version_min"] = float(min(counters.actor_versions))
    if tally.lags:
        out["runtime/policy_lag"] = float(np.mean(tally.lags))
        out["runtime/policy_lag_max"] = float(np.max(tally.lags))
    if not final:
        tally.returns.clear()
        tally.lengths.clear()
        tally.components.clear()
        tally.lags.clear()
        tally.updates = 0
        tally.since = now
    return out


def _next_multiple(current: int, every: int) -> int | None:
    if every <= 0:
        return None
    return (current // every + 1) * every
