"""Suites: regret arithmetic on a known case, CIs, violations, reports, decision recording."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rlops.artifacts import NetworkSpec, Policy, build_manifest
from rlops.core.decisions import DecisionRecord
from rlops.core.errors import ConfigError
from rlops.envs import VectorEnv, register
from rlops.evaluation.recording import record_decisions
from rlops.evaluation.report import format_table, write_report
from rlops.evaluation.suites import Scenario, Suite, run_suite, t_quantile_975
from rlops.testing import MaskedChoice


class PayAction(gym.vector.VectorEnv):  # type: ignore[type-arg]
    """Reward = chosen action, ``length`` steps per episode, obs all ones; no randomness."""

    metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(self, num_envs: int, length: int = 5, n: int = 3) -> None:
        self.num_envs, self.length = num_envs, length
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.single_action_space = gym.spaces.Discrete(n)
        self.t = np.zeros(num_envs, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        self.t[:] = 0
        return np.ones((self.num_envs, 2), np.float32), {}

    def step(self, actions: Any) -> Any:
        self.t += 1
        trunc = self.t >= self.length
        info: dict[str, Any] = {"cost": np.ones(self.num_envs)}
        if trunc.any():
            info.update(final_obs=np.ones((self.num_envs, 2), np.float32), _final_obs=trunc.copy())
        self.t[trunc] = 0
        rewards = np.asarray(actions, dtype=np.float64)
        return (
            np.ones((self.num_envs, 2), np.float32),
            rewards,
            np.zeros(self.num_envs, bool),
            trunc,
            info,
        )


register("test/PayAction-v0", PayAction, "reward = action", overwrite=True)
register("test/MaskedChoice-v0", MaskedChoice, "masked test env", overwrite=True)


def _policy(action: int, n: int = 3, obs_dim: int = 2) -> Policy:
    """A linear categorical policy that (deterministically) picks ``action``."""
    spec = NetworkSpec(
        obs_dim=obs_dim, act_dim=n, hidden_sizes=(), activation="tanh", head="categorical"
    )
    bias = np.full(n, -5.0, np.float32)
    bias[action] = 5.0
    tensors = {"pi.layers.0.weight": np.zeros((n, obs_dim), np.float32), "pi.layers.0.bias": bias}
    manifest = build_manifest(
        observation_space=gym.spaces.Box(0.0, 1.0, (obs_dim,), np.float32),
        action_space=gym.spaces.Discrete(n),
        network=spec,
    )
    manifest["version"] = f"sha256:test-{action}"
    return Policy(manifest, tensors, seed=0)


def _constant(action: int) -> Any:
    def factory(scenario: Scenario, env: VectorEnv) -> Any:
        return lambda obs, mask=None: np.full(len(obs), action, dtype=np.int64)

    return factory


def _suite(**kwargs: Any) -> Suite:
    return Suite(
        name="pay",
        description="reward = action",
        scenarios=(
            Scenario("short", "test/PayAction-v0", {"length": 5}, seed=0, episodes=6),
            Scenario("long", "test/PayAction-v0", {"length": 10}, seed=1, episodes=6, kind="edge"),
        ),
        baselines={"zero": _constant(0), "one": _constant(1)},
        optimum=lambda s: 2.0 * s.env_kwargs["length"],
        info_keys=("cost",),
        **kwargs,
    )


def test_regret_arithmetic_on_a_known_case() -> None:
    report = run_suite(_policy(1), _suite())
    short, long = report.scenarios
    assert short.policy.mean_return == 5.0 and long.policy.mean_return == 10.0
    assert short.policy.ci95 == (5.0, 5.0)  # no variance: a zero-width interval
    assert short.baselines["zero"].mean_return == 0.0
    assert short.regret["zero"] == {"value": -5.0, "ci_low": -5.0, "ci_high": -5.0}
    assert short.regret["one"]["value"] == 0.0
    assert short.regret["optimum"]["value"] == 5.0  # optimum 10, policy 5
    assert long.regret["optimum"]["value"] == 10.0
    assert short.policy.safety == {"cost": 5.0}  # summed per episode
    assert short.policy.mean_length == 5.0 and short.policy.episodes == 6
    assert short.policy.action_distribution == [0.0, 1.0, 0.0]
    overall = report.overall
    assert overall["all"]["regret_vs_optimum"] == 7.5
    assert overall["all"]["ratio_to_optimum"] == pytest.approx(15.0 / 30.0)
    assert overall["holdout"]["scenarios"] == 1 and overall["edge"]["scenarios"] == 1


def test_confidence_interval_uses_student_t() -> None:
    assert t_quantile_975(1) == 12.706
    assert math.isclose(t_quantile_975(60), 2.000, abs_tol=1e-3)
    assert math.isclose(t_quantile_975(1e9), 1.95996, abs_tol=1e-4)


def test_unknown_baseline_names_the_choices() -> None:
    with pytest.raises(
        ConfigError, match="'nope' is not a baseline of suite 'pay'; choose from zero, one"
    ):
        run_suite(_policy(1), _suite(), baselines=["nope"])


def test_violations_count_actions_outside_the_mask() -> None:
    suite = Suite(
        name="masked",
        description="",
        scenarios=(Scenario("m", "test/MaskedChoice-v0", {}, seed=0, episodes=8),),
        baselines={"always-0": _constant(0)},
    )
    report = run_suite(_policy(3, n=4, obs_dim=4), suite)
    result = report.scenarios[0]
    assert result.policy.violations_attempted == 0.0  # the policy honours masks
    assert result.baselines["always-0"].violations_attempted > 0.0  # a blind baseline does not


def test_report_files(tmp_path: Path) -> None:
    report = run_suite(_policy(1), _suite())
    paths = write_report(report, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["scenarios"][0]["policy"]["mean_return"] == 5.0
    markdown = paths["markdown"].read_text()
    assert "| `short` | holdout | 5.00 (5.00 .. 5.00)" in markdown
    assert paths["returns"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["actions"].stat().st_size > 0
    table = format_table(report)
    assert "short" in table and "% of opt" in table


def test_record_decisions_writes_decision_records_with_propensities(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    count = record_decisions(_policy(3, n=4, obs_dim=4), "test/MaskedChoice-v0", 3, path, seed=0)
    records = [DecisionRecord.from_json(line) for line in path.read_text().splitlines()]
    assert count == len(records) == 3 * 10
    for r in records:
        assert r.arm == "simulation" and r.action_mask is not None
        assert r.action_mask[r.action]  # never an ineligible action
        assert r.action_distribution is not None
        assert r.propensity == pytest.approx(r.action_distribution[r.action], abs=1e-6)
        assert sum(r.action_distribution) == pytest.approx(1.0, abs=1e-5)
        assert r.reward is not None and r.policy_version == "sha256:test-3"
    assert {r.step for r in records} == set(range(10))
    assert len({r.episode_id for r in records}) == 3
