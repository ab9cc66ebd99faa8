"""The process backend: parity with inline, fault tolerance, step accounting, bad input.

Every test runs real actor processes (``python -m rlops.runtime._actor_main``)
exchanging fragments through real shared memory, and checks afterwards that
no actor process is left behind.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from rlops.algos.dqn import DQNConfig
from rlops.algos.ppo import PPOConfig
from rlops.core.errors import ActorFailure, ConfigError
from rlops.runtime import (
    EnvConfig,
    EvalConfig,
    ExperimentConfig,
    LogConfig,
    RuntimeConfig,
    load_config,
    train,
)
from rlops.testing import actor_processes

CRASHING = "rlops/CartPoleCrashing-v0"


def _config(
    total_steps: int = 2048, env: EnvConfig | None = None, **runtime: Any
) -> ExperimentConfig:
    return ExperimentConfig(
        total_steps=total_steps,
        env=env or EnvConfig(num_envs=4),
        algo=PPOConfig(n_steps=32, minibatch_size=64, n_epochs=2),
        eval=EvalConfig(episodes=2, num_envs=2),
        log=LogConfig(progress=False, tensorboard=False),
        runtime=RuntimeConfig(**runtime),
    )


def _identity(metrics: Mapping[str, float]) -> None:
    """Every env step an actor took is accepted, dropped or discarded at stop: never lost count."""
    taken = metrics["runtime/steps_taken"]
    parts = (
        metrics["runtime/steps_accepted"]
        + metrics["runtime/steps_dropped"]
        + metrics["runtime/steps_discarded_at_stop"]
    )
    assert taken == parts, (taken, parts)


@pytest.fixture(autouse=True)
def _no_orphans() -> Any:
    yield
    deadline = time.monotonic() + 5.0
    while actor_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert actor_processes() == [], "actor processes outlived their run"


def test_one_sync_actor_matches_inline_ppo(tmp_path: Path) -> None:
    inline = train(_config(), out_dir=tmp_path / "inline")
    process = train(_config(backend="process"), out_dir=tmp_path / "process")
    assert process.weights_hash == inline.weights_hash
    assert process.env_steps == inline.env_steps
    assert process.metrics["runtime/policy_lag"] == 0.0
    _identity(process.metrics)


def test_one_sync_actor_matches_inline_dqn(tmp_path: Path) -> None:
    def cfg(**runtime: Any) -> ExperimentConfig:
        return ExperimentConfig(
            total_steps=1024,
            env=EnvConfig(num_envs=2),
            algo=DQNConfig(
                learning_starts=256, train_freq=64, gradient_steps=8, n_step=3, buffer_size=5000
            ),
            eval=EvalConfig(episodes=2, num_envs=2),
            log=LogConfig(progress=False, tensorboard=False),
            runtime=RuntimeConfig(**runtime),
        )

    inline = train(cfg(), out_dir=tmp_path / "inline")
    process = train(cfg(backend="process"), out_dir=tmp_path / "process")
    assert process.weights_hash == inline.weights_hash


def test_two_sync_actors_feed_one_batch_per_round(tmp_path: Path) -> None:
    result = train(_config(backend="process", num_actors=2), out_dir=tmp_path)
    # 2 actors x 4 envs x 32 steps per round, one PPO update per round.
    assert result.metrics["runtime/weight_version"] == 2048 / (2 * 4 * 32)
    assert result.metrics["runtime/policy_lag_max"] == 0.0
    _identity(result.metrics)


def test_two_actors_with_separate_nstep_streams_dqn(tmp_path: Path) -> None:
    cfg = ExperimentConfig(
        total_steps=1024,
        env=EnvConfig(num_envs=2),
        algo=DQNConfig(learning_starts=256, train_freq=64, gradient_steps=4, n_step=3),
        eval=EvalConfig(episodes=2, num_envs=2),
        log=LogConfig(progress=False, tensorboard=False),
        runtime=RuntimeConfig(backend="process", num_actors=2, mode="async"),
    )
    result = train(cfg, out_dir=tmp_path)
    assert result.env_steps >= 1024
    assert result.metrics["replay/size"] > 0
    _identity(result.metrics)


def test_async_records_policy_lag_and_max_lag_drops_stale_fragments(tmp_path: Path) -> None:
    result = train(
        _config(4096, backend="process", num_actors=2, mode="async", max_policy_lag=0),
        out_dir=tmp_path,
    )
    metrics = result.metrics
    assert metrics["runtime/fragments_stale"] > 0  # actors run ahead of the learner
    assert metrics["runtime/policy_lag_max"] == 0.0  # what was accepted was fresh
    _identity(metrics)


def test_sigkilled_actor_is_replaced_and_steps_add_up(tmp_path: Path) -> None:
    killed: list[int] = []

    def kill_one(step: int, metrics: Mapping[str, float]) -> None:
        if not killed and step >= 1024:
            pid = actor_processes()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = train(
        _config(4096, backend="process", num_actors=2, mode="async"),
        out_dir=tmp_path,
        on_metrics=kill_one,
    )
    assert killed
    assert result.env_steps >= 4096
    assert result.metrics["runtime/actor_restarts"] >= 1
    _identity(result.metrics)


def test_crashing_env_actor_is_restarted_sync(tmp_path: Path) -> None:
    env = EnvConfig(id=CRASHING, num_envs=4, kwargs={"p_crash_step": 0.002})
    result = train(_config(4096, env=env, backend="process", num_actors=2), out_dir=tmp_path)
    metrics = result.metrics
    assert metrics["runtime/actor_restarts"] >= 1
    assert metrics["runtime/fragments_lost"] >= 1
    assert result.env_steps == 4096  # lost fragments were redone, not half-counted
    _identity(metrics)


def test_hung_env_step_is_cut_off_by_the_fragment_timeout(tmp_path: Path) -> None:
    env = EnvConfig(id=CRASHING, num_envs=4, kwargs={"p_hang_step": 0.003, "hang_s": 30.0})
    started = time.monotonic()
    result = train(
        _config(2048, env=env, backend="process", num_actors=2, fragment_timeout_s=1.0),
        out_dir=tmp_path,
    )
    assert time.monotonic() - started < 25.0
    assert result.metrics["runtime/actor_timeouts"] >= 1
    _identity(result.metrics)


def test_all_actors_crashing_without_restarts_fails_fast(tmp_path: Path) -> None:
    env = EnvConfig(id=CRASHING, num_envs=4, kwargs={"crash_after_steps": 3})
    started = time.monotonic()
    with pytest.raises(ActorFailure, match=r"EnvCrash.*restarts exhausted.*max_restarts=0"):
        train(_config(env=env, backend="process", num_actors=2, max_restarts=0), out_dir=tmp_path)
    assert time.monotonic() - started < 20.0


def test_actor_whose_reset_always_crashes_exhausts_its_restarts(tmp_path: Path) -> None:
    env = EnvConfig(id=CRASHING, num_envs=2, kwargs={"p_crash_reset": 1.0})
    with pytest.raises(ActorFailure, match=r"actor 0 raised .*EnvCrash.*reset.*max_restarts=2"):
        train(_config(env=env, backend="process", max_restarts=2), out_dir=tmp_path)


def test_actor_whose_env_cannot_be_built_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The learner process builds the env fine; only the actor processes get a bad id.
    from rlops.runtime.process import ProcessFleet

    real_init = ProcessFleet.__init__

    def init(self: ProcessFleet, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self._config_data["env"]["id"] = "rlops/Nope-v0"

    monkeypatch.setattr(ProcessFleet, "__init__", init)
    with pytest.raises(ActorFailure, match=r"actor 0 raised .*rlops/Nope-v0.*while starting"):
        train(_config(backend="process"), out_dir=tmp_path)


def test_hung_actor_start_is_cut_off_counted_and_replaced(tmp_path: Path) -> None:
    # Every reset hangs, so every replacement hangs too: restarts run out, quickly.
    env = EnvConfig(id=CRASHING, num_envs=2, kwargs={"hang_on_reset_s": 30.0})
    started = time.monotonic()
    with pytest.raises(
        ActorFailure, match=r"did not start within runtime\.start_timeout_s=1 s.*max_restarts=2"
    ):
        train(
            _config(env=env, backend="process", start_timeout_s=1.0, max_restarts=2),
            out_dir=tmp_path,
        )
    assert time.monotonic() - started < 15.0


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("runtime.backend=proces", "runtime.backend"),
        ("runtime.num_actors=0", "runtime.num_actors"),
        ("runtime.num_actors=2", "runtime.num_actors"),  # inline runs exactly one
        ("runtime.mode=eventually", "runtime.mode"),
        ("runtime.max_policy_lag=-1", "runtime.max_policy_lag"),
        ("runtime.fragment_timeout_s=0", "runtime.fragment_timeout_s"),
    ],
)
def test_bad_runtime_config_names_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_more_actors_than_the_machine_can_start(tmp_path: Path) -> None:
    too_many = 4 * (os.cpu_count() or 1) + 1
    with pytest.raises(ConfigError, match=r"runtime\.num_actors"):
        train(_config(backend="process", num_actors=too_many), out_dir=tmp_path)
