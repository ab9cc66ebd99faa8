"""rlops/Autoscaling-v0: dynamics with known answers, trace loading, contract, HPA baseline."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlops.core.errors import ConfigError, EnvError
from rlops.envs import check_vector_env, make_vec
from rlops.envs.business.autoscaling import (
    DOWN,
    HOLD,
    OBS_LATENCY,
    OBS_PENDING,
    OBS_READY,
    OBS_UTILISATION,
    UP,
    AutoscalingParams,
    AutoscalingVectorEnv,
    HPAPolicy,
    LoadTrace,
    hold_policy,
    load_trace_csv,
    make_autoscaling_env,
    run_cost_episodes,
)
from rlops.envs.randomization import DomainRandomization

H = AutoscalingParams().history_len


def constant_trace(*loads: float) -> LoadTrace:
    """One row per step, five minutes apart from midnight."""
    rps = np.asarray(loads, dtype=np.float64)
    return LoadTrace(np.arange(rps.size) * 300.0, rps)


def trace_env(trace: LoadTrace, num_envs: int = 1, **fields: Any) -> AutoscalingVectorEnv:
    params = AutoscalingParams(trace_start="start", **fields)
    return AutoscalingVectorEnv(num_envs, params=params, trace=trace)


def step(env: AutoscalingVectorEnv, *actions: int) -> tuple[np.ndarray, np.ndarray]:
    obs, rewards, _, _, _ = env.step(np.asarray(actions, dtype=np.int64))
    return obs, rewards


# --------------------------------------------------------------------------- dynamics


def test_requests_are_conserved_replicas_stay_in_bounds_and_noops_are_counted() -> None:
    params = AutoscalingParams(min_replicas=2, max_replicas=6, initial_replicas=4)
    env = AutoscalingVectorEnv(16, params=params)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    total = np.full(16, 4)
    expected_noops = np.zeros(16, dtype=np.int64)
    for _ in range(600):  # crosses two autoresets (288 steps each)
        actions = rng.integers(0, 3, size=16)
        env.step(actions)
        m = env.last_metrics
        assert m is not None
        np.testing.assert_allclose(m.served + m.dropped, m.arrived, rtol=1e-12)
        assert (m.served >= 0).all() and (m.dropped >= 0).all()
        assert (m.ready >= params.min_replicas).all()
        assert (m.ready + m.pending <= params.max_replicas).all()
        assert (m.ready + m.pending >= params.min_replicas).all()
        refused = ((actions == UP) & (total == 6)) | ((actions == DOWN) & (total == 2))
        np.testing.assert_array_equal(m.noop, refused)
        expected_noops += refused
        total = m.ready + m.pending
        fresh = env._elapsed == 0  # the episode restarted: the fleet is back to 4
        total[fresh] = 4
    np.testing.assert_array_equal(env.noop_actions, expected_noops)
    assert expected_noops.sum() > 0


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_provisioning_delay_is_honoured_exactly(delay: int) -> None:
    env = trace_env(constant_trace(50.0), provision_delay=delay, initial_replicas=5)
    obs, _ = env.reset(seed=0)
    max_r = env.params.max_replicas
    assert round(float(obs[0, H + OBS_READY]) * max_r) == 5
    for k in range(6):
        obs, _ = step(env, UP if k == 0 else HOLD)
        m = env.last_metrics
        assert m is not None
        assert int(m.ready[0]) == (6 if k >= delay else 5), f"step {k}"
        assert int(m.pending[0]) == (1 if k < delay else 0), f"step {k}"
        assert round(float(obs[0, H + OBS_READY]) * max_r) == int(m.ready[0])
        assert round(float(obs[0, H + OBS_PENDING]) * max_r) == int(m.pending[0])


def test_scale_down_cancels_the_newest_pending_replica_first() -> None:
    env = trace_env(constant_trace(50.0), provision_delay=3, initial_replicas=5)
    env.reset(seed=0)
    step(env, UP)  # ready at step 3
    step(env, UP)  # ready at step 4
    step(env, DOWN)  # cancels the second request, ready count unchanged
    m = env.last_metrics
    assert m is not None
    assert (int(m.ready[0]), int(m.pending[0])) == (5, 1)
    step(env, HOLD)  # step 3: the first request is ready
    m = env.last_metrics
    assert m is not None
    assert (int(m.ready[0]), int(m.pending[0])) == (6, 0)
    step(env, DOWN)  # nothing pending: a ready replica stops at once
    m = env.last_metrics
    assert m is not None
    assert (int(m.ready[0]), int(m.pending[0])) == (5, 0)


def test_utilisation_latency_drops_and_reward_on_a_hand_case() -> None:
    # 10 replicas x 10 requests/s; service time 60 ms, SLO 400 ms, timeout 10 s.
    env = trace_env(constant_trace(80.0, 120.0, 50.0), initial_replicas=10)
    env.reset(seed=0)
    obs, rewards = step(env, HOLD)
    m = env.last_metrics
    assert m is not None
    assert m.utilisation[0] == pytest.approx(0.8)
    assert m.latency_ms[0] == pytest.approx(60.0 / (1 - 0.8))  # M/M/1 sojourn: 300 ms
    assert not m.violation[0] and m.dropped[0] == 0.0
    assert m.arrived[0] == pytest.approx(80.0 * 300)
    assert rewards[0] == pytest.approx(-0.01 * 10)
    assert obs[0, 0] == pytest.approx(80.0 / (10 * 50))
    assert obs[0, H + OBS_UTILISATION] == pytest.approx(0.8)
    assert obs[0, H + OBS_LATENCY] == pytest.approx(300.0 / 400.0)

    obs, rewards = step(env, UP)  # overload: rho 1.2, 20 requests/s shed
    m = env.last_metrics
    assert m is not None
    assert m.utilisation[0] == pytest.approx(1.2)
    assert m.latency_ms[0] == pytest.approx(10_000.0)  # the timeout cap
    assert m.dropped[0] == pytest.approx(20.0 * 300)
    assert m.served[0] == pytest.approx(100.0 * 300)
    assert m.violation[0]
    assert rewards[0] == pytest.approx(-(0.01 * 11 + 1.0))  # the booting replica is billed


def test_latency_violates_slo_exactly_above_its_threshold() -> None:
    # latency > 400 ms <=> 60 / (1 - rho) > 400 <=> rho > 0.85
    env = trace_env(constant_trace(84.0, 86.0), initial_replicas=10)
    env.reset(seed=0)
    step(env, HOLD)
    assert env.last_metrics is not None and not env.last_metrics.violation[0]
    step(env, HOLD)
    assert env.last_metrics is not None and env.last_metrics.violation[0]


def test_same_step_autoreset_reports_final_observations() -> None:
    env = AutoscalingVectorEnv(3, params=AutoscalingParams(max_episode_steps=5))
    env.reset(seed=0)
    for t in range(1, 6):
        obs, _, terminated, truncated, info = env.step(np.full(3, UP))
        assert not terminated.any()
        if t < 5:
            assert "final_obs" not in info and not truncated.any()
            assert set(info) == {"replica_cost", "slo_violations", "dropped_requests"}
    assert truncated.all()
    np.testing.assert_array_equal(info["_final_obs"], truncated)
    max_r = env.params.max_replicas
    # The finished episode ended with 10 + 5 replicas requested, the new one starts at 10.
    final = info["final_obs"]
    assert (
        np.rint((final[:, H + OBS_READY] + final[:, H + OBS_PENDING]) * max_r).tolist() == [15] * 3
    )
    assert np.rint(obs[:, H + OBS_READY] * max_r).tolist() == [10] * 3
    assert (obs[:, H + OBS_PENDING] == 0).all()


def test_synthetic_load_follows_the_day() -> None:
    params = AutoscalingParams(noise_std=0.0, burst_prob=0.0)
    env = AutoscalingVectorEnv(1, params=params)
    env.reset(seed=0)
    loads, hours = [], []
    for _ in range(params.max_episode_steps):
        obs, _ = step(env, HOLD)
        assert env.last_metrics is not None
        loads.append(float(env.last_metrics.load_rps[0]))
        hours.append(math.atan2(obs[0, H + 4], obs[0, H + 5]) * 24 / (2 * math.pi) % 24)
    assert min(loads) == pytest.approx(30.0) and max(loads) == pytest.approx(170.0)
    assert loads[14 * 12] == pytest.approx(170.0)  # peak at 14:00
    assert hours[12] == pytest.approx(1.0, abs=1e-4)  # step 12 is 01:00
    assert np.mean(loads) == pytest.approx(100.0, rel=1e-3)


def test_bursts_raise_the_load_by_the_multiplier_at_their_peak() -> None:
    quiet = AutoscalingParams(noise_std=0.0, burst_prob=0.0, diurnal_amplitude=0.0)
    env = AutoscalingVectorEnv(1, params=dataclasses.replace(quiet, burst_prob=1.0, burst_steps=1))
    env.reset(seed=0)
    step(env, HOLD)
    assert env.last_metrics is not None
    # A burst starts every step and lasts one step: env(0) = sin(pi / 2) = 1.
    assert env.last_metrics.load_rps[0] == pytest.approx(100.0 * 1.8)


# --------------------------------------------------------------------------- traces


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_trace_loader_reads_numbers_iso_times_and_extra_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "region,timestamp,requests_per_s\n"
        "eu,2024-05-01T00:00:00,50\n"
        "\n"
        "eu,2024-05-01T00:05:00+00:00,70.5\n"
        "eu,1714522200,60\n",
    )
    trace = load_trace_csv(path)
    assert trace.requests_per_s.tolist() == [50.0, 70.5, 60.0]
    assert trace.timestamps.tolist() == [1714521600.0, 1714521900.0, 1714522200.0]
    assert trace.source == str(path)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "empty file"),
        ("timestamp,requests_per_s\n", 2, "no data rows"),
        ("timestamp,load\n0,1\n", 1, "missing column(s) ['requests_per_s']"),
        ("time,requests_per_s\n0,1\n", 1, "missing column(s) ['timestamp']"),
        ("timestamp,requests_per_s\n0,1\n300,1\n300,2\n", 4, "not after the previous one"),
        ("timestamp,requests_per_s\n0,1\n600,1\n300,2\n", 4, "not after the previous one"),
        ("timestamp,requests_per_s\n0,1\n300,lots\n", 3, "'lots' is not a number"),
        ("timestamp,requests_per_s\n0,1\nnoon,1\n", 3, "'noon' is neither a number"),
        ("timestamp,requests_per_s\n0,1\n300,-5\n", 3, "load >= 0"),
        ("timestamp,requests_per_s\n0,1\n300,nan\n", 3, "must be finite"),
        ("timestamp,requests_per_s\n0,1\n300\n", 3, "1 fields, the header has 2"),
    ],
)
def test_trace_loader_names_file_and_line_of_each_defect(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(EnvError) as excinfo:
        load_trace_csv(path)
    message = str(excinfo.value)
    assert f"{path}, line {line}:" in message
    assert fragment in message


def test_trace_loader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EnvError, match=r"nope\.csv: load trace file not found"):
        load_trace_csv(tmp_path / "nope.csv")


def test_trace_replays_rows_cyclically_with_time_of_day(tmp_path: Path) -> None:
    # Rows at 06:00, 12:00, 18:00 (one step each), replayed from row 0.
    path = write(tmp_path, "timestamp,requests_per_s\n21600,10\n43200,20\n64800,30\n")
    env = make_autoscaling_env(1, trace_csv=str(path), trace_start="start")
    obs, _ = env.reset(seed=0)
    # Before the episode: the last rows, newest first (history wraps around).
    np.testing.assert_allclose(obs[0, :H] * 500, [30, 20, 10, 30], rtol=1e-6)
    loads, hours = [], []
    for _ in range(4):
        obs, _ = step(env, HOLD)
        assert env.last_metrics is not None
        loads.append(float(env.last_metrics.load_rps[0]))
        hours.append(math.atan2(obs[0, H + 4], obs[0, H + 5]) * 24 / (2 * math.pi) % 24)
    assert loads == [10.0, 20.0, 30.0, 10.0]
    np.testing.assert_allclose(hours, [6, 12, 18, 6], atol=1e-4)


def test_random_trace_start_differs_per_sub_env() -> None:
    trace = constant_trace(*np.arange(1.0, 101.0))
    env = AutoscalingVectorEnv(8, trace=trace)
    env.reset(seed=0)
    step(env, *[HOLD] * 8)
    assert env.last_metrics is not None
    assert len(set(env.last_metrics.load_rps.tolist())) > 1


# --------------------------------------------------------------------------- contract


def run(env: AutoscalingVectorEnv, seed: int, steps: int) -> list[np.ndarray]:
    rng = np.random.default_rng(123)
    out = [env.reset(seed=seed)[0]]
    for _ in range(steps):
        obs, rewards, _, _, _ = env.step(rng.integers(0, 3, size=env.num_envs))
        out += [obs, rewards]
    return out


def test_same_seed_same_trajectory_different_seed_differs() -> None:
    a = run(AutoscalingVectorEnv(4), seed=7, steps=300)
    b = run(AutoscalingVectorEnv(4), seed=7, steps=300)
    c = run(AutoscalingVectorEnv(4), seed=8, steps=300)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"randomize": {"base_rps": [50, 150], "provision_delay": [0, 4]}},
        {"max_episode_steps": 50, "provision_delay": 0},
    ],
)
def test_check_vector_env_passes(kwargs: dict[str, Any]) -> None:
    check_vector_env(make_vec("rlops/Autoscaling-v0", 4, **kwargs), steps=300)


def test_check_vector_env_passes_on_a_recorded_trace(tmp_path: Path) -> None:
    rows = "\n".join(f"{300 * i},{50 + 40 * math.sin(i / 20)}" for i in range(400))
    path = write(tmp_path, "timestamp,requests_per_s\n" + rows + "\n")
    env = make_vec("rlops/Autoscaling-v0", 3, trace_csv=str(path), max_episode_steps=100)
    check_vector_env(env, steps=250)


def test_randomization_redraws_per_episode_within_range() -> None:
    randomization = DomainRandomization.from_config(
        AutoscalingParams, {"base_rps": [50, 150], "provision_delay": [1, 4]}
    )
    params = AutoscalingParams(max_episode_steps=3)
    env = AutoscalingVectorEnv(6, params=params, randomization=randomization)
    env.reset(seed=0)
    draws = [env._values["base_rps"].copy()]
    delays = [env._values["provision_delay"].copy()]
    for _ in range(3):
        for _ in range(3):
            env.step(np.full(6, HOLD))
        draws.append(env._values["base_rps"].copy())
        delays.append(env._values["provision_delay"].copy())
    base, delay = np.stack(draws), np.stack(delays)
    assert ((base >= 50) & (base <= 150)).all()
    assert len(np.unique(base)) == base.size  # every episode and sub-env differs
    assert set(np.unique(delay).tolist()) <= {1.0, 2.0, 3.0, 4.0}
    assert len(np.unique(delay)) > 1
    assert env._boot.shape[1] == 4  # room for the longest drawable boot


def test_randomized_delay_is_honoured_per_sub_env() -> None:
    randomization = DomainRandomization.from_config(
        AutoscalingParams, {"provision_delay": {"choice": [0, 2, 5]}}
    )
    env = AutoscalingVectorEnv(12, randomization=randomization, trace=constant_trace(50.0))
    env.reset(seed=1)
    delay = env._values["provision_delay"].astype(int)
    ready = []
    for k in range(7):
        env.step(np.full(12, UP if k == 0 else HOLD))
        assert env.last_metrics is not None
        ready.append(env.last_metrics.ready.copy())
    became_ready = np.argmax(np.stack(ready) == 11, axis=0)
    np.testing.assert_array_equal(became_ready, delay)


def test_randomization_rejects_fixed_fields_and_invalid_bounds() -> None:
    with pytest.raises(ConfigError, match="max_replicas cannot be randomised"):
        make_autoscaling_env(2, randomize={"max_replicas": [10, 20]})
    with pytest.raises(ConfigError, match=r"randomize\.diurnal_amplitude.*1\.5"):
        make_autoscaling_env(2, randomize={"diurnal_amplitude": [0.2, 1.5]})
    with pytest.raises(ConfigError, match=r"env\.kwargs\.randomize\.nope"):
        make_autoscaling_env(2, randomize={"nope": [1, 2]})
    with pytest.raises(ConfigError, match="unbounded"):
        make_autoscaling_env(2, randomize={"base_rps": {"normal": [100, 10]}})


def test_state_dict_round_trip_continues_identically() -> None:
    randomization = DomainRandomization.from_config(
        AutoscalingParams, {"base_rps": [50, 150], "provision_delay": [1, 3]}
    )
    params = AutoscalingParams(max_episode_steps=40)
    env = AutoscalingVectorEnv(3, params=params, randomization=randomization)
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(25):
        env.step(rng.integers(0, 3, size=3))
    other = AutoscalingVectorEnv(3, params=params, randomization=randomization)
    other.load_state_dict(env.state_dict())
    for _ in range(60):  # crosses an autoreset: the generator was restored too
        actions = rng.integers(0, 3, size=3)
        a, b = env.step(actions), other.step(actions)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(env.noop_actions, other.noop_actions)


def test_load_state_dict_rejects_mismatch() -> None:
    env = AutoscalingVectorEnv(2)
    env.reset(seed=0)
    state = env.state_dict()
    with pytest.raises(EnvError, match="num_envs=2"):
        AutoscalingVectorEnv(3).load_state_dict(state)
    with pytest.raises(EnvError, match="missing keys"):
        AutoscalingVectorEnv(2).load_state_dict({"num_envs": 2})
    longer = AutoscalingVectorEnv(2, params=AutoscalingParams(max_episode_steps=10))
    with pytest.raises(EnvError, match="'load' must have shape"):
        longer.load_state_dict(state)


# --------------------------------------------------------------------------- validation


def test_params_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"AutoscalingParams\.provision_delay: must be an int"):
        AutoscalingParams(provision_delay=-1)
    with pytest.raises(ConfigError, match=r"AutoscalingParams\.min_replicas: must be <= max"):
        AutoscalingParams(min_replicas=5, max_replicas=4)
    with pytest.raises(ConfigError, match=r"AutoscalingParams\.slo_latency_ms"):
        AutoscalingParams(slo_latency_ms=50.0)  # below the 60 ms service time
    with pytest.raises(ConfigError, match=r"AutoscalingParams\.diurnal_amplitude"):
        AutoscalingParams(diurnal_amplitude=1.0)
    with pytest.raises(ConfigError, match=r"AutoscalingParams\.capacity_rps"):
        AutoscalingParams(capacity_rps=float("nan"))


def test_factory_and_step_reject_bad_input() -> None:
    with pytest.raises(EnvError, match=r"unknown AutoscalingParams field\(s\) \['replicas'\]"):
        make_vec("rlops/Autoscaling-v0", 2, replicas=3)
    env = make_autoscaling_env(2, provision_delay=1)
    with pytest.raises(EnvError, match="before reset"):
        env.step(np.array([HOLD, HOLD]))
    env.reset(seed=0)
    with pytest.raises(EnvError, match="shape"):
        env.step(np.array([HOLD]))
    with pytest.raises(EnvError, match="dtype float64"):
        env.step(np.array([1.0, 1.0]))
    with pytest.raises(EnvError, match="got 3 for env 1"):
        env.step(np.array([1, 3]))
    with pytest.raises(EnvError, match="options"):
        env.reset(options={"replicas": 3})


# --------------------------------------------------------------------------- baselines


def hpa_obs(ready: int, pending: int, rho: float, max_replicas: int = 50) -> np.ndarray:
    obs = np.zeros((1, H + 6), dtype=np.float32)
    obs[0, H + OBS_READY] = ready / max_replicas
    obs[0, H + OBS_PENDING] = pending / max_replicas
    obs[0, H + OBS_UTILISATION] = rho
    return obs


def test_hpa_rule_on_hand_cases() -> None:
    hpa = HPAPolicy(AutoscalingParams(), target_utilisation=0.6)
    assert hpa.act(hpa_obs(10, 0, 0.65)).tolist() == [HOLD]  # inside the 10 % band
    assert hpa.act(hpa_obs(10, 0, 0.9)).tolist() == [UP]  # desired ceil(10 * 1.5) = 15
    assert hpa.act(hpa_obs(10, 5, 0.9)).tolist() == [HOLD]  # 15 already requested
    assert hpa.act(hpa_obs(10, 0, 0.3)).tolist() == [DOWN]  # desired 5
    assert hpa.act(hpa_obs(10, 0, 0.6)).tolist() == [HOLD]


def test_hpa_stabilisation_window_delays_scale_down() -> None:
    hpa = HPAPolicy(AutoscalingParams(), stabilisation_steps=3)
    assert hpa.act(hpa_obs(10, 0, 0.9)).tolist() == [UP]  # recommends 15
    assert hpa.act(hpa_obs(11, 0, 0.3)).tolist() == [HOLD]  # max(15, 6) >= 11
    assert hpa.act(hpa_obs(11, 0, 0.3)).tolist() == [HOLD]
    assert hpa.act(hpa_obs(11, 0, 0.3)).tolist() == [DOWN]  # 15 left the window
    hpa.reset()
    assert hpa.act(hpa_obs(11, 0, 0.3)).tolist() == [DOWN]


def test_hpa_scales_up_under_a_spike_and_down_after() -> None:
    loads = [30.0] * 20 + [150.0] * 40 + [30.0] * 60
    env = trace_env(constant_trace(*loads), num_envs=2, initial_replicas=5)
    hpa = HPAPolicy(env.params)
    obs, _ = env.reset(seed=0)
    ready = []
    for _ in range(len(loads)):
        obs, _, _, _, _ = env.step(hpa.act(obs))
        assert env.last_metrics is not None
        ready.append(int(env.last_metrics.ready[0]))
    assert ready[19] == 5  # 30 requests/s on 5 replicas: rho 0.6
    # 150 requests/s: scaled up until rho is inside the band 0.6 -+ 10 % (24 or 25).
    assert 0.54 <= 150.0 / (10 * ready[59]) <= 0.66
    assert all(b >= a for a, b in zip(ready[20:60], ready[21:60], strict=False))
    assert max(ready) <= 25  # no overshoot: pending replicas count towards the target
    assert ready[-1] == 5


def test_hpa_rejects_bad_settings_and_shapes() -> None:
    with pytest.raises(ConfigError, match="target_utilisation"):
        HPAPolicy(AutoscalingParams(), target_utilisation=1.5)
    with pytest.raises(EnvError, match=r"expects observations \[N, 10\]"):
        HPAPolicy(AutoscalingParams()).act(np.zeros((2, 4)))


def test_run_cost_episodes_totals_hold_and_hpa() -> None:
    env = AutoscalingVectorEnv(1)
    held = run_cost_episodes(env, hold_policy, [0, 1])
    np.testing.assert_allclose(held.replica_cost, [28.8, 28.8])  # 10 replicas all day
    assert (held.violations > 100).all()  # 10 replicas cannot serve the day
    hpa = run_cost_episodes(env, HPAPolicy(env.params), [0, 1])
    assert (hpa.violations < held.violations).all()
    assert (hpa.dropped_fraction < held.dropped_fraction).all()
