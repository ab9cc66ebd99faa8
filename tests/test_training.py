"""Training on the inline backend: determinism, run-directory contents, exact resume.

Fast tier (tiny budgets, ~1 s per run). The inline backend is the deterministic
reference: same seed + config must give bit-identical weights, and resuming from
a mid-run checkpoint must reproduce the uninterrupted run exactly.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from rlops.algos.ppo import PPOConfig, PPOLearner
from rlops.artifacts import NetworkSpec, load_policy
from rlops.core.errors import CheckpointError, ConfigError, EnvError
from rlops.observability import PhaseTimer
from rlops.runtime import (
    ExperimentConfig,
    RolloutActor,
    RunResult,
    config_from_dict,
    load_config,
    train,
)
from rlops.runtime.checkpoint import load_latest_checkpoint
from rlops.runtime.loop import weights_hash
from rlops.testing import FaultyVectorEnv, InjectNonFinite, TruncateAt

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY = [
    "log.tensorboard=false",
    "log.progress=false",
    "eval.episodes=2",
    "eval.num_envs=2",
    "algo.n_epochs=2",
]
CARTPOLE = [
    "total_steps=1024",
    "env.num_envs=4",
    "algo.n_steps=32",
    "algo.minibatch_size=64",
    "eval.every_steps=512",
]
EXPECTED_KEYS = {
    "losses/policy",
    "losses/value",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clip_fraction",
    "losses/explained_variance",
    "losses/grad_norm",
    "perf/env_steps_per_s",
    "perf/time_env_s",
    "perf/time_forward_s",
    "perf/time_learn_s",
}


def tiny(config: str, *overrides: str) -> ExperimentConfig:
    return load_config(str(CONFIGS / config), [*TINY, *overrides])


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*"))


@pytest.fixture(scope="module")
def cartpole_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, RunResult]:
    """The same tiny CartPole config trained twice in separate run dirs."""
    cfg = tiny("cartpole_ppo.yaml", *CARTPOLE)
    root = tmp_path_factory.mktemp("training")
    return train(cfg, out_dir=root / "a"), train(cfg, out_dir=root / "b")


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_and_config_give_identical_weights(
    cartpole_pair: tuple[RunResult, RunResult],
) -> None:
    a, b = cartpole_pair
    assert len(a.weights_hash) == 64
    assert a.weights_hash == b.weights_hash
    assert a.version == b.version
    assert [e.mean_return for e in a.evaluations] == [e.mean_return for e in b.evaluations]
    losses = [
        {k: v for k, v in m.items() if k.startswith("losses/")} for m in read_metrics(a.run_dir)
    ]
    losses_b = [
        {k: v for k, v in m.items() if k.startswith("losses/")} for m in read_metrics(b.run_dir)
    ]
    assert losses == losses_b


def test_weights_hash_is_that_of_the_artifact_tensors(
    cartpole_pair: tuple[RunResult, RunResult],
) -> None:
    run = cartpole_pair[0]
    tensors = load_file(str(run.artifact_path / "model.safetensors"))
    assert weights_hash(tensors) == run.weights_hash
    assert load_policy(run.artifact_path).version == run.version


def test_different_seed_gives_different_weights(
    cartpole_pair: tuple[RunResult, RunResult], tmp_path: Path
) -> None:
    other = train(tiny("cartpole_ppo.yaml", *CARTPOLE, "seed=1"), out_dir=tmp_path / "seed1")
    assert other.weights_hash != cartpole_pair[0].weights_hash
    assert other.version != cartpole_pair[0].version


def test_pendulum_with_normalisation_is_deterministic(tmp_path: Path) -> None:
    cfg = tiny(
        "pendulum_ppo.yaml",
        "total_steps=512",
        "env.num_envs=2",
        "algo.n_steps=64",
        "algo.minibatch_size=64",
        "eval.every_steps=0",
    )
    a = train(cfg, out_dir=tmp_path / "a")
    b = train(cfg, out_dir=tmp_path / "b")
    assert a.weights_hash == b.weights_hash
    assert a.version == b.version


# --- what a run leaves behind -----------------------------------------------------------------


def test_result_counts_steps_and_evaluations(cartpole_pair: tuple[RunResult, RunResult]) -> None:
    run = cartpole_pair[0]
    assert run.env_steps == 1024
    # eval.every_steps=512 plus the final evaluation at 1024 (not twice).
    assert [e.env_steps for e in run.evaluations] == [512, 1024]
    assert all(1.0 <= e.mean_return <= 500.0 for e in run.evaluations)
    assert run.final_return == run.evaluations[-1].mean_return
    assert run.metrics["eval/mean_return"] == run.final_return


def test_metrics_jsonl_has_namespaced_keys(cartpole_pair: tuple[RunResult, RunResult]) -> None:
    run = cartpole_pair[0]
    lines = read_metrics(run.run_dir)
    # One line per update: 1024 steps / (32 steps x 4 envs).
    assert [line["step"] for line in lines] == list(range(128, 1025, 128))
    for line in lines:
        assert set(line) >= EXPECTED_KEYS, EXPECTED_KEYS - set(line)
        assert all("/" in key for key in line if key not in ("step", "time")), (
            "metric keys are namespaced"
        )
        assert 0.0 <= line["losses/clip_fraction"] <= 1.0
        assert line["losses/entropy"] > 0.0
        assert line["perf/env_steps_per_s"] > 0.0
        assert line["perf/time_env_s"] > 0.0
        assert line["perf/time_learn_s"] > 0.0
    assert any("charts/episode_return" in line for line in lines)
    for line in lines:
        if "charts/episode_return" in line:
            # CartPole pays 1 per step: the mean return is the mean length.
            assert line["charts/episode_return"] == line["charts/episode_length"]
    evals = {line["step"]: line["eval/mean_return"] for line in lines if "eval/mean_return" in line}
    assert evals == {e.env_steps: e.mean_return for e in run.evaluations}


def test_run_dir_holds_config_and_summary(cartpole_pair: tuple[RunResult, RunResult]) -> None:
    run = cartpole_pair[0]
    names = {p.name for p in run.run_dir.iterdir()}
    assert {"config.yaml", "summary.json", "metrics.jsonl", "checkpoints", "artifact"} <= names
    assert "tb" not in names  # log.tensorboard=false
    config = config_from_dict(yaml.safe_load((run.run_dir / "config.yaml").read_text()))
    assert config == tiny("cartpole_ppo.yaml", *CARTPOLE)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["weights_hash"] == run.weights_hash
    assert summary["version"] == run.version
    assert summary["env_steps"] == 1024
    assert Path(summary["artifact"]) == run.artifact_path
    assert summary["final_eval"]["mean_return"] == run.final_return
    assert summary["train_time_s"] > 0.0
    # checkpoint_every from the packaged config (25k) exceeds the budget: only the final one.
    assert checkpoint_steps(run.run_dir) == [1024]


def test_on_metrics_callback_sees_every_update(tmp_path: Path) -> None:
    seen: list[tuple[int, float]] = []
    train(
        tiny("cartpole_ppo.yaml", *CARTPOLE, "total_steps=512"),
        out_dir=tmp_path / "run",
        on_metrics=lambda step, m: seen.append((step, m["losses/value"])),
    )
    assert [s for s, _ in seen] == [128, 256, 384, 512]
    assert all(math.isfinite(v) and v >= 0 for _, v in seen)


def test_out_dir_with_checkpoints_is_refused(
    cartpole_pair: tuple[RunResult, RunResult],
) -> None:
    with pytest.raises(ConfigError, match="already holds a run with checkpoints; continue it"):
        train(tiny("cartpole_ppo.yaml", *CARTPOLE), out_dir=cartpole_pair[0].run_dir)


def test_resume_requires_a_run_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        train(resume=tmp_path)


def test_resume_without_checkpoints_fails(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(tiny("cartpole_ppo.yaml", *CARTPOLE).to_yaml())
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        train(resume=run)


# --- resume -----------------------------------------------------------------------------------

RESUME_CASES = {
    "cartpole": (
        "cartpole_ppo.yaml",
        ["env.num_envs=4", "algo.n_steps=32", "algo.minibatch_size=64"],
    ),
    # Observation normalisation and reward scaling carry running state too.
    "pendulum": (
        "pendulum_ppo.yaml",
        ["env.num_envs=2", "algo.n_steps=64", "algo.minibatch_size=64"],
    ),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_from_mid_run_checkpoint_reproduces_uninterrupted_run(
    case: str, tmp_path: Path
) -> None:
    config_file, overrides = RESUME_CASES[case]
    cfg = tiny(
        config_file,
        *overrides,
        "total_steps=4096",
        "runtime.checkpoint_every=1024",
        "eval.every_steps=1024",
    )
    a = train(cfg, out_dir=tmp_path / "a")
    b = train(cfg, out_dir=tmp_path / "b")
    assert b.weights_hash == a.weights_hash
    assert checkpoint_steps(b.run_dir) == [2048, 3072, 4096]  # keep_checkpoints=3

    # "Interrupt" B after step 2048: drop what it wrote later.
    for step in checkpoint_steps(b.run_dir):
        if step > 2048:
            shutil.rmtree(b.run_dir / "checkpoints" / f"step_{step:012d}")
    shutil.rmtree(b.artifact_path)
    (b.run_dir / "summary.json").unlink()
    lines_before = len(read_metrics(b.run_dir))

    resumed = train(resume=b.run_dir)
    assert resumed.env_steps == 4096
    assert resumed.weights_hash == a.weights_hash
    assert resumed.version == a.version
    assert [(e.env_steps, e.mean_return) for e in resumed.evaluations] == [
        (e.env_steps, e.mean_return) for e in a.evaluations
    ]
    assert [e.env_steps for e in resumed.evaluations] == [1024, 2048, 3072, 4096]
    summary = json.loads((b.run_dir / "summary.json").read_text())
    assert summary["weights_hash"] == a.weights_hash
    # Lines logged after the checkpoint are dropped on resume and logged again,
    # with exactly the losses the uninterrupted run logged: one line per update.
    batch = cfg.algo.n_steps * cfg.env.num_envs
    steps = [m["step"] for m in read_metrics(b.run_dir)]
    assert steps == list(range(batch, 4097, batch))
    assert lines_before == len(steps)
    new_lines = [m for m in read_metrics(b.run_dir) if m["step"] > 2048]
    a_lines = {m["step"]: m for m in read_metrics(a.run_dir)}
    for line in new_lines:
        for key in ("losses/policy", "losses/value", "losses/approx_kl", "losses/grad_norm"):
            assert line[key] == a_lines[line["step"]][key], (line["step"], key)


def test_resume_of_a_completed_run_changes_nothing(
    cartpole_pair: tuple[RunResult, RunResult], tmp_path: Path
) -> None:
    src = cartpole_pair[1]
    run_dir = Path(shutil.copytree(src.run_dir, tmp_path / "done"))
    lines_before = len(read_metrics(run_dir))
    resumed = train(resume=run_dir)
    assert resumed.env_steps == 1024
    assert resumed.weights_hash == src.weights_hash
    assert resumed.version == src.version
    assert [e.env_steps for e in resumed.evaluations] == [512, 1024]
    assert len(read_metrics(run_dir)) == lines_before  # no update ran


# --- non-finite env output --------------------------------------------------------------------
# Error messages count steps per sub-env (the n-th step() of each sub-env).


def faulty_actor(env: gym.vector.VectorEnv, n_steps: int = 8) -> RolloutActor:
    spec = NetworkSpec(
        obs_dim=3, act_dim=2, hidden_sizes=(8,), activation="tanh", head="categorical"
    )
    learner = PPOLearner(PPOConfig(hidden_sizes=(8,)), spec, total_steps=1000, seed=0)
    actor = RolloutActor(env, spec, n_steps=n_steps, gamma=0.99, seed=0, timer=PhaseTimer())
    actor.reset(seed=0)
    actor.update(*learner.get_variables())
    return actor


def test_actor_refuses_nan_observation_naming_env_and_step() -> None:
    actor = faulty_actor(FaultyVectorEnv(2, fault="nan", fault_env=1, fault_step=3))
    with pytest.raises(EnvError, match=r"^observation of env 1 at step 3 contains NaN"):
        actor.collect()


def test_actor_refuses_inf_observation() -> None:
    actor = faulty_actor(FaultyVectorEnv(3, fault="inf", fault_env=2, fault_step=5))
    with pytest.raises(EnvError, match=r"^observation of env 2 at step 5 contains \+Inf"):
        actor.collect()


def test_actor_collects_a_clean_fake_env() -> None:
    rollout = faulty_actor(FaultyVectorEnv(2, episode_length=5), n_steps=10).collect()
    assert rollout.rewards.shape == (10, 2)
    assert np.isfinite(rollout.rewards).all()
    # Truncation after 5 steps is bootstrapped: the reward there is 1 + gamma * V(final).
    assert (rollout.rewards[4] != 1.0).all() and (rollout.rewards[:4] == 1.0).all()
    np.testing.assert_array_equal(rollout.dones[:, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0, 1])


def test_actor_refuses_nan_reward() -> None:
    env = InjectNonFinite(FaultyVectorEnv(2), where="reward", step=2, env_index=1)
    with pytest.raises(EnvError, match=r"^reward of env 1 at step 2 contains NaN"):
        faulty_actor(env).collect()
    assert env.injected


def test_actor_refuses_nan_final_obs_of_truncated_episode() -> None:
    # All sub-envs truncate together at step 5; sub-env 0's final observation is NaN.
    env = InjectNonFinite(FaultyVectorEnv(2, episode_length=5), where="final_obs", step=1)
    with pytest.raises(EnvError, match=r"^final observation of env 0 at step 5 contains NaN"):
        faulty_actor(env).collect()
    assert env.injected


def test_nan_final_obs_message_names_the_right_sub_env() -> None:
    env = InjectNonFinite(
        TruncateAt(FaultyVectorEnv(3, episode_length=1000), env_index=2, step=3),
        where="final_obs",
        env_index=2,
    )
    with pytest.raises(EnvError) as info:
        faulty_actor(env).collect()
    assert str(info.value).startswith("final observation of env 2 at step 3 contains NaN")


def test_train_stops_on_nan_and_keeps_checkpoints(tmp_path: Path) -> None:
    cfg = tiny(
        "cartpole_ppo.yaml",
        "env.id=gym:rlops.testing:NaNCartPole-v0",
        "env.kwargs={nan_step: 100}",
        "env.num_envs=4",
        "algo.n_steps=16",
        "algo.minibatch_size=32",
        "total_steps=2000",
        "runtime.checkpoint_every=64",
    )
    # Every sub-env's 100th step returns NaN: inside the 7th update (env steps 385..448).
    with pytest.raises(EnvError, match="at step 100 contains NaN"):
        train(cfg, out_dir=tmp_path / "run")
    assert checkpoint_steps(tmp_path / "run") == [256, 320, 384]
    assert load_latest_checkpoint(tmp_path / "run").step == 384
    assert not (tmp_path / "run" / "artifact").exists()


def test_a_stop_request_ends_the_run_at_the_next_iteration(tmp_path: Path) -> None:
    """Ctrl-C swallowed by Python (e.g. inside a __del__) still stops training via the flag."""
    from rlops.core import interrupt
    from rlops.runtime import EnvConfig, ExperimentConfig, LogConfig, train

    seen: list[int] = []

    def stop_after_first(step: int, metrics: object) -> None:
        seen.append(step)
        interrupt.STOP.set()

    config = ExperimentConfig(
        total_steps=100_000,
        env=EnvConfig(num_envs=4),
        log=LogConfig(progress=False, tensorboard=False),
    )
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config, out_dir=tmp_path, on_metrics=stop_after_first)
    finally:
        interrupt.STOP.clear()
    assert len(seen) == 1
