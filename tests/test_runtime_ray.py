"""The ray backend: parity with inline, fault tolerance, step accounting, bad addresses.

All tests but the last share one real local Ray instance (started once for the
module); every run creates real Ray actors (``ray::RlopsActor`` worker
processes) and checks afterwards that none of them outlived it. The
unreachable-address test runs the real CLI in a subprocess, so it cannot pick
up this module's instance.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import ray

from rlops.algos.ppo import PPOConfig
from rlops.core.errors import ActorFailure
from rlops.runtime import (
    EnvConfig,
    EvalConfig,
    ExperimentConfig,
    LogConfig,
    RuntimeConfig,
    ray_backend,
    train,
)

CRASHING = "rlops/CartPoleCrashing-v0"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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


def ray_actor_pids() -> list[int]:
    """PIDs of live Ray worker processes that host an rlops actor (``ray::RlopsActor...``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline.startswith(b"ray::RlopsActor") and state != "Z":
            found.append(int(entry))
    return sorted(found)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module (RayFleet uses it and leaves it running)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 5.0
    while ray_actor_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray_actor_pids() == [], "Ray actors outlived their run"
    if ray.is_initialized():
        alive = [a for a in ray._private.state.actors().values() if a["State"] != "DEAD"]
        assert alive == [], alive


def test_one_sync_actor_matches_inline_ppo(tmp_path: Path) -> None:
    inline = train(_config(), out_dir=tmp_path / "inline")
    on_ray = train(_config(backend="ray"), out_dir=tmp_path / "ray")
    assert on_ray.weights_hash == inline.weights_hash
    assert on_ray.env_steps == inline.env_steps
    assert on_ray.metrics["runtime/policy_lag"] == 0.0
    _identity(on_ray.metrics)


def test_two_sync_actors_feed_one_batch_per_round(tmp_path: Path) -> None:
    result = train(_config(backend="ray", num_actors=2), out_dir=tmp_path)
    # 2 actors x 4 envs x 32 steps per round, one PPO update per round.
    assert result.metrics["runtime/weight_version"] == 2048 / (2 * 4 * 32)
    assert result.metrics["runtime/policy_lag_max"] == 0.0
    assert result.metrics["runtime/steps_taken"] == 2048
    _identity(result.metrics)


def test_sigkilled_actor_is_replaced_and_steps_add_up(tmp_path: Path) -> None:
    killed: list[int] = []

    def kill_one(step: int, metrics: Mapping[str, float]) -> None:
        if not killed and step >= 1024:
            pid = ray_actor_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = train(
        _config(16384, backend="ray", num_actors=2, mode="async"),
        out_dir=tmp_path,
        on_metrics=kill_one,
    )
    assert killed
    assert result.env_steps >= 16384
    assert result.metrics["runtime/actor_restarts"] >= 1
    assert result.metrics["runtime/actor_version_min"] >= 0  # the replacement delivered
    _identity(result.metrics)


def test_crashing_env_actor_is_restarted_sync(tmp_path: Path) -> None:
    env = EnvConfig(id=CRASHING, num_envs=4, kwargs={"p_crash_step": 0.002})
    result = train(_config(4096, env=env, backend="ray", num_actors=2), out_dir=tmp_path)
    metrics = result.metrics
    assert metrics["runtime/actor_restarts"] >= 1
    assert metrics["runtime/fragments_lost"] >= 1
    assert metrics["runtime/steps_dropped"] > 0  # the partial fragments, counted exactly
    assert result.env_steps == 4096  # lost fragments were redone, not half-counted
    _identity(metrics)


def test_actors_off_the_learner_node_report_their_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend the learner is on another node: actors cannot share its step counters
    # and report their counts instead (with each fragment, and with the env's error).
    monkeypatch.setattr(ray_backend, "_node_id", lambda ray: "not-this-node")
    env = EnvConfig(id=CRASHING, num_envs=4, kwargs={"p_crash_step": 0.002})
    result = train(_config(4096, env=env, backend="ray", num_actors=2), out_dir=tmp_path)
    metrics = result.metrics
    assert metrics["runtime/actor_restarts"] >= 1
    assert 0 < metrics["runtime/steps_dropped"] < 128 * metrics["runtime/fragments_lost"]
    assert result.env_steps == 4096
    _identity(metrics)


def test_hung_env_step_is_cut_off_by_the_fragment_timeout(tmp_path: Path) -> None:
    env = EnvConfig(id=CRASHING, num_envs=4, kwargs={"p_hang_step": 0.003, "hang_s": 30.0})
    started = time.monotonic()
    result = train(
        _config(1024, env=env, backend="ray", num_actors=2, fragment_timeout_s=1.0),
        out_dir=tmp_path,
    )
    assert time.monotonic() - started < 25.0
    assert result.metrics["runtime/actor_timeouts"] >= 1
    _identity(result.metrics)


def test_all_actors_crashing_without_restarts_fails_fast(tmp_path: Path) -> None:
    env = EnvConfig(id=CRASHING, num_envs=4, kwargs={"crash_after_steps": 3})
    started = time.monotonic()
    with pytest.raises(ActorFailure, match=r"EnvCrash.*restarts exhausted.*max_restarts=0"):
        train(_config(env=env, backend="ray", num_actors=2, max_restarts=0), out_dir=tmp_path)
    assert time.monotonic() - started < 20.0


def test_actor_whose_reset_always_crashes_exhausts_its_restarts(tmp_path: Path) -> None:
    env = EnvConfig(id=CRASHING, num_envs=2, kwargs={"p_crash_reset": 1.0})
    with pytest.raises(ActorFailure, match=r"actor 0 raised .*EnvCrash.*reset.*max_restarts=2"):
        train(_config(env=env, backend="ray", max_restarts=2), out_dir=tmp_path)


def test_actor_whose_env_cannot_be_built_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The learner builds the env fine; only the Ray actors get a bad id.
    real_init = ray_backend.RayFleet.__init__

    def init(self: ray_backend.RayFleet, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self._config_data["env"]["id"] = "rlops/Nope-v0"

    monkeypatch.setattr(ray_backend.RayFleet, "__init__", init)
    with pytest.raises(ActorFailure, match=r"actor 0 raised .*rlops/Nope-v0.*while starting"):
        train(_config(backend="ray"), out_dir=tmp_path)


def test_hung_actor_start_is_cut_off_counted_and_replaced(tmp_path: Path) -> None:
    # Every reset hangs, so every replacement hangs too: restarts run out, quickly.
    env = EnvConfig(id=CRASHING, num_envs=2, kwargs={"hang_on_reset_s": 30.0})
    started = time.monotonic()
    with pytest.raises(
        ActorFailure, match=r"did not start within runtime\.start_timeout_s=1 s.*max_restarts=2"
    ):
        train(
            _config(env=env, backend="ray", start_timeout_s=1.0, max_restarts=2),
            out_dir=tmp_path,
        )
    assert time.monotonic() - started < 15.0


def test_unreachable_ray_address_names_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # A bound, non-listening socket refuses connections, and no one else can take its port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        command = [
            *(sys.executable, "-m", "rlops", "train", str(CONFIGS / "cartpole_ppo.yaml")),
            *("--backend", "ray", "--set", f"runtime.ray_address={address}"),
            *("--set", "log.progress=false", "--set", "log.tensorboard=false"),
            *("--out", str(tmp_path / "run")),
        ]
        started = time.monotonic()
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert time.monotonic() - started < 30.0
    assert proc.returncode == 2, proc.stderr
    assert f"runtime.ray_address: no Ray cluster answers at '{address}'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
