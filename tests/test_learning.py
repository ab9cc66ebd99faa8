"""Learning tests: PPO reaches a return threshold within a step budget (slow tier, run in CI).

Seeds are fixed and stated; the inline backend is deterministic, so a seed
that passes here passes on every run on the same software stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlops.runtime import load_config, train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
QUIET = ["log.tensorboard=false", "log.progress=false", "runtime.checkpoint_every=0"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_solves_cartpole_within_100k_steps(seed: int, tmp_path: Path) -> None:
    config = load_config(str(CONFIGS / "cartpole_ppo.yaml"), [f"seed={seed}", *QUIET])
    assert config.total_steps == 100_000
    result = train(config, out_dir=tmp_path / "run")
    returns = [e.mean_return for e in result.evaluations]
    assert result.env_steps <= 100_000 + config.algo.n_steps * config.env.num_envs
    assert max(returns) >= 475, returns
    assert result.final_return >= 475, returns


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_beats_minus_250_on_pendulum_within_200k_steps(seed: int, tmp_path: Path) -> None:
    config = load_config(str(CONFIGS / "pendulum_ppo.yaml"), [f"seed={seed}", *QUIET])
    assert config.total_steps == 200_000
    result = train(config, out_dir=tmp_path / "run")
    returns = [round(e.mean_return, 1) for e in result.evaluations]
    assert result.final_return > -250, returns


@pytest.mark.slow
def test_dqn_solves_cartpole_within_50k_steps_on_4_of_5_seeds(tmp_path: Path) -> None:
    solved = {}
    for seed in range(5):
        config = load_config(str(CONFIGS / "cartpole_dqn.yaml"), [f"seed={seed}", *QUIET])
        assert config.total_steps == 50_000
        result = train(config, out_dir=tmp_path / f"seed{seed}")
        solved[seed] = max(e.mean_return for e in result.evaluations) >= 475
    assert sum(solved.values()) >= 4, solved


@pytest.mark.slow
def test_sac_beats_minus_250_on_pendulum_within_20k_steps(tmp_path: Path) -> None:
    config = load_config(str(CONFIGS / "pendulum_sac.yaml"), ["seed=0", *QUIET])
    assert config.total_steps == 20_000
    result = train(config, out_dir=tmp_path / "run")
    returns = [round(e.mean_return, 1) for e in result.evaluations]
    assert result.final_return >= -250, returns


@pytest.mark.slow
def test_ppo_with_crashing_envs_and_two_process_actors_reaches_450(tmp_path: Path) -> None:
    """RLlib's CartPoleCrashing test, on the process backend: actors crash and are replaced.

    Two sync actors with 4 envs each make the same 256-step batches as the
    inline config; the crash rates are per sub-env step and per reset. Seed 0.
    """
    config = load_config(
        str(CONFIGS / "cartpole_ppo.yaml"),
        [
            "seed=0",
            *QUIET,
            "env.id=rlops/CartPoleCrashing-v0",
            "env.num_envs=4",
            "env.kwargs={p_crash_step: 0.0005, p_crash_reset: 0.005}",
            "eval.env_id=rlops/CartPole-v1",
            "runtime.backend=process",
            "runtime.num_actors=2",
            "runtime.max_restarts=1000",
        ],
    )
    result = train(config, out_dir=tmp_path / "run")
    metrics = result.metrics
    returns = [e.mean_return for e in result.evaluations]
    assert metrics["runtime/actor_restarts"] >= 5, metrics
    assert max(returns) >= 450, returns
    assert metrics["runtime/steps_taken"] == (
        metrics["runtime/steps_accepted"]
        + metrics["runtime/steps_dropped"]
        + metrics["runtime/steps_discarded_at_stop"]
    )
