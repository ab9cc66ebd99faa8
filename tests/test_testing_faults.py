"""CrashingCartPole: rlops' CartPole with injected crashes and hangs (rlops.testing)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from rlops.core.errors import ConfigError, EnvError
from rlops.envs import CartPoleVectorEnv, check_vector_env, list_envs, make_vec
from rlops.envs.classic import CartPoleParams
from rlops.testing import CrashConfig, CrashingCartPole, EnvCrash, make_crashing_cartpole

ENV_ID = "rlops/CartPoleCrashing-v0"


def _actions(num_envs: int, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(steps, num_envs))


def _crash_steps(env: CrashingCartPole, steps: int) -> list[int]:
    """Step ``steps`` times with fixed actions; the 1-based steps that raised EnvCrash."""
    crashed = []
    for t, actions in enumerate(_actions(env.num_envs, steps), start=1):
        try:
            env.step(actions)
        except EnvCrash:
            crashed.append(t)
    return crashed


# ----------------------------------------------------------------------------- no faults


def test_no_faults_is_bit_identical_to_cartpole() -> None:
    # 700 steps with random actions cover terminations, autoresets and truncation at 500.
    ref, env = CartPoleVectorEnv(4), CrashingCartPole(4)
    np.testing.assert_array_equal(ref.reset(seed=7)[0], env.reset(seed=7)[0])
    for actions in _actions(4, 700):
        expected, got = ref.step(actions), env.step(actions)
        for want, have in zip(expected[:4], got[:4]):
            assert want.dtype == have.dtype
            np.testing.assert_array_equal(want, have)
        assert expected[4].keys() == got[4].keys()
        for key in expected[4]:
            np.testing.assert_array_equal(expected[4][key], got[4][key])
    assert env.single_observation_space == ref.single_observation_space
    assert env.single_action_space == ref.single_action_space
    assert env.metadata["autoreset_mode"] == ref.metadata["autoreset_mode"]


def test_passes_the_env_checker() -> None:
    check_vector_env(CrashingCartPole(3))


def test_step_before_reset_is_an_env_error() -> None:
    env = CrashingCartPole(2, crash=CrashConfig(crash_after_steps=1))
    with pytest.raises(EnvError, match="before reset"):
        env.step(np.zeros(2, np.int64))


# ----------------------------------------------------------------------------- crashes


def test_crash_after_steps_raises_exactly_on_that_step() -> None:
    env = CrashingCartPole(2, crash=CrashConfig(crash_after_steps=5))
    env.reset(seed=0)
    for _ in range(4):
        env.step(np.zeros(2, np.int64))
    with pytest.raises(EnvCrash, match=r"injected crash at step 5 \(crash_after_steps=5\)"):
        env.step(np.zeros(2, np.int64))
    # Once per reset: later steps run, and a reset re-arms the crash.
    assert _crash_steps(env, 10) == []
    env.reset()
    assert _crash_steps(env, 10) == [5]


def test_crash_step_leaves_the_cartpoles_unstepped() -> None:
    env = CrashingCartPole(2, crash=CrashConfig(crash_after_steps=1))
    env.reset(seed=0)
    before = env.state_dict()["cartpole"]["state"]
    with pytest.raises(EnvCrash):
        env.step(np.ones(2, np.int64))
    np.testing.assert_array_equal(env.state_dict()["cartpole"]["state"], before)


def test_p_crash_reset_one_raises_on_every_reset() -> None:
    env = CrashingCartPole(2, crash=CrashConfig(p_crash_reset=1.0))
    for seed in (0, None, 1):
        with pytest.raises(EnvCrash, match=r"injected crash in reset\(\) \(p_crash_reset=1.0\)"):
            env.reset(seed=seed)
    assert isinstance(EnvCrash("x"), RuntimeError)


@pytest.mark.parametrize("num_envs", [1, 4])
def test_p_crash_step_empirical_rate(num_envs: int) -> None:
    # Each sub-env crashes with p per step, so a vector step crashes with 1 - (1 - p)^N.
    p, steps = 0.05, 4000
    env = CrashingCartPole(num_envs, crash=CrashConfig(p_crash_step=p))
    env.reset(seed=123)
    rate = len(_crash_steps(env, steps)) / steps
    expected = 1.0 - (1.0 - p) ** num_envs
    # Binomial std at these sizes is <= 0.0062: the bound is over 4 sigma.
    assert abs(rate - expected) < 0.025, (rate, expected)


def test_crash_message_names_step_sub_env_and_probability() -> None:
    env = CrashingCartPole(3, crash=CrashConfig(p_crash_step=1.0))
    env.reset(seed=0)
    with pytest.raises(EnvCrash) as excinfo:
        env.step(np.zeros(3, np.int64))
    assert str(excinfo.value) == (
        "CrashingCartPole: injected crash at step 1 in sub-env 0 (p_crash_step=1.0)"
    )


def test_same_seed_same_crash_steps_other_seed_other_steps() -> None:
    def crashes(seed: int) -> list[int]:
        env = CrashingCartPole(2, crash=CrashConfig(p_crash_step=0.02, p_crash_reset=0.0))
        env.reset(seed=seed)
        return _crash_steps(env, 500)

    first = crashes(0)
    assert first, "p_crash_step=0.02 over 500 steps of 2 sub-envs should crash"
    assert crashes(0) == first
    assert crashes(1) != first


def test_unseeded_fault_stream_comes_from_the_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    def crashes(pid: int) -> list[int]:
        monkeypatch.setattr("rlops.testing.os.getpid", lambda: pid)
        env = CrashingCartPole(1, crash=CrashConfig(p_crash_step=0.05))
        env.reset()  # no seed: the fault generator keeps its pid seeding
        return _crash_steps(env, 300)

    assert crashes(1000) == crashes(1000)
    assert crashes(1000) != crashes(1001)


# ----------------------------------------------------------------------------- hangs


def test_p_hang_step_one_makes_every_step_take_hang_s() -> None:
    env = CrashingCartPole(2, crash=CrashConfig(p_hang_step=1.0, hang_s=0.05))
    env.reset(seed=0)
    start = time.perf_counter()
    env.step(np.zeros(2, np.int64))
    assert time.perf_counter() - start >= 0.05


def test_hang_on_reset_s_delays_every_reset() -> None:
    env = CrashingCartPole(1, crash=CrashConfig(hang_on_reset_s=0.05))
    start = time.perf_counter()
    env.reset(seed=0)
    assert time.perf_counter() - start >= 0.05


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p_crash_step": 1.5}, r"^p_crash_step: must be in \[0, 1\], got 1.5$"),
        ({"p_crash_reset": -0.1}, r"^p_crash_reset: must be in \[0, 1\]"),
        ({"p_hang_step": float("nan")}, r"^p_hang_step: must be in \[0, 1\]"),
        ({"p_crash_step": True}, r"^p_crash_step: must be in \[0, 1\], got True"),
        ({"hang_s": -1.0}, r"^hang_s: must be seconds >= 0, got -1.0"),
        ({"hang_on_reset_s": float("inf")}, r"^hang_on_reset_s: must be seconds >= 0"),
        ({"p_hang_step": 0.1}, r"^hang_s: must be > 0 when p_hang_step > 0"),
        ({"crash_after_steps": -1}, r"^crash_after_steps: must be an int >= 0"),
        ({"crash_after_steps": 2.5}, r"^crash_after_steps: must be an int >= 0"),
    ],
)
def test_bad_parameters_raise_config_error_naming_the_field(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        CrashConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        make_vec(ENV_ID, 2, **kwargs)


def test_unknown_kwarg_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"p_crash_stp: .*did you mean 'p_crash_step'"):
        make_vec(ENV_ID, 2, p_crash_stp=0.1)


# ----------------------------------------------------------------------------- registry


def test_make_vec_builds_it_from_flat_kwargs() -> None:
    env = make_vec(ENV_ID, 2, p_crash_step=0.1)
    assert isinstance(env, CrashingCartPole)
    assert env.num_envs == 2
    assert env.crash == CrashConfig(p_crash_step=0.1)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 4)
    # As from a YAML config: env.kwargs may mix fault fields and CartPole constants.
    env = make_vec(ENV_ID, 4, p_crash_step=0.0005, p_crash_reset=0.005, max_episode_steps=7)
    assert isinstance(env, CrashingCartPole)
    assert env.params == CartPoleParams(max_episode_steps=7)
    assert env.crash == CrashConfig(p_crash_step=0.0005, p_crash_reset=0.005)


def test_listed_with_cartpole_spaces() -> None:
    infos = {info.id: info for info in list_envs(with_spaces=True)}
    assert infos[ENV_ID].observation_space == infos["rlops/CartPole-v1"].observation_space
    assert infos[ENV_ID].action_space == "Discrete(2)"


def test_factory_overrides_base_configs() -> None:
    env = make_crashing_cartpole(
        1, crash=CrashConfig(p_crash_reset=0.5), params=CartPoleParams(gravity=3.0), length=1.0
    )
    assert env.crash == CrashConfig(p_crash_reset=0.5)
    assert env.params == CartPoleParams(gravity=3.0, length=1.0)


# ----------------------------------------------------------------------------- state


def test_state_dict_round_trip_resumes_dynamics_and_faults() -> None:
    crash = CrashConfig(p_crash_step=0.03)
    env = CrashingCartPole(3, crash=crash)
    env.reset(seed=5)
    _crash_steps(env, 50)
    state = json.loads(json.dumps(env.state_dict(), default=np.ndarray.tolist))
    clone = CrashingCartPole(3, crash=crash)
    clone.load_state_dict(state)
    assert clone.state_dict()["steps"] == env.state_dict()["steps"]
    for actions in _actions(3, 300, seed=1):
        outcomes = []
        for e in (env, clone):
            try:
                outcomes.append(e.step(actions)[0])
            except EnvCrash as crash_error:
                outcomes.append(str(crash_error))
        if isinstance(outcomes[0], str):
            assert outcomes[0] == outcomes[1]
        else:
            np.testing.assert_array_equal(outcomes[0], outcomes[1])


def test_load_state_dict_rejects_a_bad_state() -> None:
    env = CrashingCartPole(2)
    env.reset(seed=0)
    state = env.state_dict()
    with pytest.raises(EnvError, match=r"missing keys \['fault_rng'\]"):
        env.load_state_dict({k: v for k, v in state.items() if k != "fault_rng"})
    with pytest.raises(EnvError, match="'steps' must be an int >= 0"):
        env.load_state_dict({**state, "steps": -1})
    with pytest.raises(EnvError, match="PCG64"):
        env.load_state_dict({**state, "fault_rng": {"bit_generator": "MT19937"}})
    with pytest.raises(EnvError, match="num_envs"):
        CrashingCartPole(3).load_state_dict(state)


def test_step_cost_burns_cpu_time_per_sub_env_step() -> None:
    env = make_vec("rlops/CartPoleCrashing-v0", 4, step_cost_s=0.001)
    env.reset(seed=0)
    started = time.thread_time()
    for _ in range(5):
        env.step(np.zeros(4, dtype=np.int64))
    assert time.thread_time() - started >= 5 * 4 * 0.001
