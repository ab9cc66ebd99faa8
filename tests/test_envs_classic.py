"""rlops' numpy CartPole/Pendulum against Gymnasium, step by step, plus their own contract.

Parity tests run N Gymnasium single envs in lockstep with one rlops vector env
from identical float64 states and identical actions, and compare every output.
When an rlops sub-env autoresets, its Gymnasium twin is reset and given the
same fresh state, so the comparison covers many episodes, terminations and the
500-/200-step truncations.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rlops.core.errors import EnvError
from rlops.envs.classic import (
    CartPoleParams,
    CartPoleVectorEnv,
    PendulumParams,
    PendulumVectorEnv,
)


@pytest.fixture(autouse=True)
def _quiet_gym() -> Iterator[None]:
    # Gymnasium's passive env checker warns about out-of-bound Pendulum actions;
    # clipping them is exactly what is under test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _twins(env_id: str, states: np.ndarray) -> list[gym.Env[Any, Any]]:
    twins = []
    for i, state in enumerate(states):
        twin = gym.make(env_id)
        twin.reset(seed=i)
        twin.unwrapped.state = state.copy()  # type: ignore[attr-defined]
        twins.append(twin)
    return twins


def _balance(obs: np.ndarray) -> np.ndarray:
    """A linear controller that keeps CartPole up for the whole 500 steps."""
    x, x_dot, theta, theta_dot = obs.T
    return (10 * theta + 2 * theta_dot + 0.5 * x + x_dot > 0).astype(np.int64)


def _lockstep(
    env: CartPoleVectorEnv | PendulumVectorEnv,
    twins: list[gym.Env[Any, Any]],
    actions: np.ndarray,
    reward_atol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One lockstep step; returns (obs, terminated, truncated) of the rlops env."""
    obs, rewards, terminated, truncated, info = env.step(actions)
    for i, twin in enumerate(twins):
        twin_obs, twin_reward, twin_term, twin_trunc, _ = twin.step(actions[i])
        ended = terminated[i] or truncated[i]
        assert ended == ("_final_obs" in info and info["_final_obs"][i])
        last_obs = info["final_obs"][i] if ended else obs[i]
        np.testing.assert_array_equal(last_obs, twin_obs, err_msg=f"env {i}")
        assert abs(rewards[i] - twin_reward) <= reward_atol, (i, rewards[i], twin_reward)
        assert (terminated[i], truncated[i]) == (twin_term, twin_trunc), i
        if ended:
            twin.reset()
            twin.unwrapped.state = env.get_state()[i].copy()  # type: ignore[attr-defined]
    return obs, terminated, truncated


# ----------------------------------------------------------------------------- parity


def test_cartpole_matches_gymnasium_bit_for_bit_incl_termination_and_truncation() -> None:
    n = 6
    env = CartPoleVectorEnv(n)
    obs, _ = env.reset(seed=3)
    twins = _twins("CartPole-v1", env.get_state())
    rng = np.random.default_rng(0)
    # Sub-env 0 follows the controller (reaches the 500-step truncation); the
    # others take increasingly many random actions and terminate.
    explore = np.linspace(0.0, 0.6, n)
    n_term = n_trunc = 0
    for _ in range(1100):
        actions = np.where(rng.random(n) < explore, rng.integers(0, 2, n), _balance(obs))
        obs, terminated, truncated = _lockstep(env, twins, actions, reward_atol=0.0)
        n_term += int(terminated.sum())
        n_trunc += int(truncated.sum())
    assert n_term >= 10
    assert n_trunc >= 2


def test_cartpole_semi_implicit_integrator_matches_gymnasium() -> None:
    n = 4
    env = CartPoleVectorEnv(n, params=CartPoleParams(integrator="semi_implicit_euler"))
    obs, _ = env.reset(seed=4)
    twins = _twins("CartPole-v1", env.get_state())
    for twin in twins:
        twin.unwrapped.kinematics_integrator = "semi-implicit"  # type: ignore[attr-defined]
    rng = np.random.default_rng(2)
    for _ in range(200):
        actions = np.where(rng.random(n) < 0.3, rng.integers(0, 2, n), _balance(obs))
        obs, _, _ = _lockstep(env, twins, actions, reward_atol=0.0)


def test_cartpole_terminates_past_thresholds_with_reward_one() -> None:
    env = CartPoleVectorEnv(3)
    # Just inside the x / theta thresholds, moving outwards; the third is calm.
    env.set_state([[2.39, 1.0, 0.0, 0.0], [0.0, 0.0, 0.209, 1.0], [0.0, 0.0, 0.0, 0.0]])
    twins = _twins("CartPole-v1", env.get_state())
    obs, rewards, terminated, truncated, info = env.step(np.array([1, 1, 1]))
    assert terminated.tolist() == [True, True, False]
    assert not truncated.any()
    assert rewards.tolist() == [1.0, 1.0, 1.0]
    for i, twin in enumerate(twins):
        twin_obs, twin_reward, twin_term, _, _ = twin.step(1)
        last = info["final_obs"][i] if terminated[i] else obs[i]
        np.testing.assert_array_equal(last, twin_obs)
        assert twin_reward == 1.0 and twin_term == terminated[i]


def test_pendulum_matches_gymnasium_incl_clipping_and_truncation() -> None:
    n = 4
    env = PendulumVectorEnv(n)
    env.reset(seed=5)
    twins = _twins("Pendulum-v1", env.get_state())
    rng = np.random.default_rng(1)
    n_trunc = 0
    for _ in range(450):
        # Half of the torques fall outside [-2, 2] and must be clipped.
        actions = rng.uniform(-4.0, 4.0, size=(n, 1)).astype(np.float32)
        # Gymnasium squares the float32 torque with libm powf, rlops with an exact
        # x*x; they differ by one float32 ulp in ~0.1% of steps (|reward diff| < 1e-9).
        _, terminated, truncated = _lockstep(env, twins, actions, reward_atol=1e-9)
        assert not terminated.any()
        n_trunc += int(truncated.sum())
    assert n_trunc == 2 * n  # at steps 200 and 400


def test_pendulum_clips_torque_and_speed() -> None:
    env = PendulumVectorEnv(2)
    env.set_state([[0.0, 7.99], [0.0, 0.0]])
    _, rewards, _, _, _ = env.step(np.array([[100.0], [-100.0]], dtype=np.float32))
    theta, theta_dot = env.get_state().T
    assert theta_dot[0] == 8.0  # max_speed
    # Clipped torque -2: theta_dot = (3 / (m l^2)) * (-2) * dt = -0.3.
    assert theta_dot[1] == pytest.approx(-0.3)
    assert rewards[1] == pytest.approx(-0.001 * 4.0)
    assert theta[1] == pytest.approx(-0.3 * 0.05)


def test_custom_params_change_dynamics() -> None:
    heavy = CartPoleVectorEnv(1, params=CartPoleParams(gravity=20.0))
    light = CartPoleVectorEnv(1)
    for env in (heavy, light):
        env.set_state([[0.0, 0.0, 0.1, 0.0]])
        for _ in range(5):
            env.step(np.array([0]))
    assert heavy.get_state()[0, 2] > light.get_state()[0, 2]
    short = PendulumVectorEnv(1, params=PendulumParams(max_episode_steps=3))
    short.reset(seed=0)
    truncs = [bool(short.step(np.zeros((1, 1), np.float32))[3][0]) for _ in range(3)]
    assert truncs == [False, False, True]


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("env_cls", [CartPoleVectorEnv, PendulumVectorEnv])
def test_spaces_and_metadata(env_cls: type[CartPoleVectorEnv | PendulumVectorEnv]) -> None:
    env = env_cls(5)
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert env.num_envs == 5
    assert env.observation_space.shape == (5, *env.single_observation_space.shape)
    obs, info = env.reset(seed=0)
    assert info == {}
    assert obs.dtype == np.float32 and obs.flags.c_contiguous
    assert env.observation_space.contains(obs)


def _rollout(env: CartPoleVectorEnv, actions: np.ndarray) -> list[np.ndarray]:
    out = []
    for a in actions:
        obs, rewards, terminated, truncated, info = env.step(a)
        out += [obs, rewards, terminated, truncated, info.get("final_obs", np.zeros(0))]
    return out


def test_same_seed_same_trajectory_different_seed_differs() -> None:
    actions = np.random.default_rng(0).integers(0, 2, size=(300, 8))
    runs = []
    for seed in (7, 7, 8):
        env = CartPoleVectorEnv(8)
        first, _ = env.reset(seed=seed)
        runs.append([first, *_rollout(env, actions)])
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_reset_without_seed_continues_the_generator() -> None:
    env = CartPoleVectorEnv(4)
    first, _ = env.reset(seed=0)
    second, _ = env.reset()
    assert not np.array_equal(first, second)
    again, _ = env.reset(seed=0)
    np.testing.assert_array_equal(first, again)


def test_cartpole_autoreset_same_step() -> None:
    env = CartPoleVectorEnv(3)
    env.reset(seed=0)
    env.set_state([[2.39, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -0.209, -1.0]])
    obs, _, terminated, truncated, info = env.step(np.array([1, 0, 0]))
    assert terminated.tolist() == [True, False, True]
    assert info["_final_obs"].tolist() == [True, False, True]
    final = info["final_obs"]
    assert final.shape == (3, 4) and final.dtype == np.float32
    # The final observation is the real post-step state past the threshold...
    assert final[0, 0] > 2.4
    assert final[2, 2] < -0.2094
    # ... while the returned observation is already a fresh reset state.
    for i in (0, 2):
        assert np.all(np.abs(obs[i]) <= 0.05)
        np.testing.assert_array_equal(obs[i], env.get_state()[i].astype(np.float32))
    assert np.array_equal(final[1], obs[1])  # unmasked rows: that step's observation
    # The next step is step 1 of the new episodes, not a reset step.
    _, rewards, terminated, truncated, info = env.step(np.array([0, 0, 0]))
    assert rewards.tolist() == [1.0, 1.0, 1.0]
    assert not terminated.any() and not truncated.any() and info == {}


def test_truncation_resets_step_counter() -> None:
    env = PendulumVectorEnv(2)
    env.reset(seed=0)
    zeros = np.zeros((2, 1), np.float32)
    for t in range(1, 201):
        obs, _, _, truncated, info = env.step(zeros)
        assert truncated.all() == (t == 200)
    final = info["final_obs"]
    assert final.shape == (2, 3)
    assert not np.array_equal(final, obs)
    theta, theta_dot = env.get_state().T
    assert np.all(np.abs(theta) <= np.pi) and np.all(np.abs(theta_dot) <= 1.0)
    np.testing.assert_allclose(obs[:, 0], np.cos(theta), rtol=1e-6)
    for _ in range(199):
        assert not env.step(zeros)[3].any()
    assert env.step(zeros)[3].all()


@pytest.mark.parametrize("env_cls", [CartPoleVectorEnv, PendulumVectorEnv])
def test_state_dict_round_trip_continues_identically(
    env_cls: type[CartPoleVectorEnv | PendulumVectorEnv],
) -> None:
    n = 16
    env = env_cls(n)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    if env_cls is CartPoleVectorEnv:
        actions = rng.integers(0, 2, size=(400, n))
    else:
        actions = rng.uniform(-2, 2, size=(400, n, 1)).astype(np.float32)
    for a in actions[:137]:  # mid-episode, after some autoresets
        env.step(a)
    state = env.state_dict()
    # Everything but the arrays is JSON (the generator state included).
    state["rng"] = json.loads(json.dumps(state["rng"]))
    assert isinstance(state["state"], np.ndarray) and isinstance(state["elapsed_steps"], np.ndarray)
    restored = env_cls(n)
    restored.load_state_dict(state)
    for a in actions[137:]:
        for x, y in zip(env.step(a), restored.step(a), strict=True):
            if isinstance(x, dict):
                assert x.keys() == y.keys()
                for key in x:
                    np.testing.assert_array_equal(x[key], y[key])
            else:
                np.testing.assert_array_equal(x, y)


def test_load_state_dict_rejects_mismatch() -> None:
    env = CartPoleVectorEnv(4)
    env.reset(seed=0)
    state = env.state_dict()
    with pytest.raises(EnvError, match="num_envs=4"):
        CartPoleVectorEnv(3).load_state_dict(state)
    with pytest.raises(EnvError, match="missing keys"):
        CartPoleVectorEnv(4).load_state_dict({"state": state["state"]})
    with pytest.raises(EnvError, match="bit_generator"):
        CartPoleVectorEnv(4).load_state_dict({**state, "rng": {"bit_generator": "os.system"}})


def test_returned_arrays_are_not_reused() -> None:
    env = CartPoleVectorEnv(2)
    obs0, _ = env.reset(seed=0)
    kept = obs0.copy()
    obs1, rewards1, *_ = env.step(np.array([0, 1]))
    obs2, rewards2, *_ = env.step(np.array([0, 1]))
    np.testing.assert_array_equal(obs0, kept)
    assert obs1 is not obs2 and rewards1 is not rewards2
    assert not np.array_equal(obs1, obs2)


# ----------------------------------------------------------------------------- validation


def test_cartpole_rejects_bad_actions() -> None:
    env = CartPoleVectorEnv(4)
    with pytest.raises(EnvError, match="before reset"):
        env.step(np.zeros(4, np.int64))
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"shape \(4,\)"):
        env.step(np.zeros((4, 1), np.int64))
    with pytest.raises(EnvError, match=r"shape \(4,\)"):
        env.step(np.zeros(3, np.int64))
    with pytest.raises(EnvError, match="must be 0 or 1, got 2 for env 1"):
        env.step(np.array([0, 2, 1, 0]))
    with pytest.raises(EnvError, match="must be 0 or 1, got -1 for env 3"):
        env.step(np.array([0, 1, 1, -1]))
    with pytest.raises(EnvError, match="integer actions"):
        env.step(np.array([0.0, 1.0, 1.0, 0.0]))
    # Lists, bools and unsigned ints are fine.
    env.step([0, 1, 1, 0])
    env.step(np.array([True, False, True, False]))
    env.step(np.array([1, 0, 1, 0], dtype=np.uint8))


def test_pendulum_rejects_bad_actions() -> None:
    env = PendulumVectorEnv(3)
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"shape \(3, 1\)"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(EnvError, match="env 1 is NaN"):
        env.step(np.array([[0.0], [np.nan], [0.0]], np.float32))
    env.step(np.zeros((3, 1), np.float64))  # float64 is cast to the space's float32


def test_constructor_and_state_validation() -> None:
    with pytest.raises(EnvError, match="num_envs"):
        CartPoleVectorEnv(0)
    with pytest.raises(EnvError, match="masspole"):
        CartPoleParams(masspole=-1.0)
    with pytest.raises(EnvError, match="max_episode_steps"):
        PendulumParams(max_episode_steps=0)
    with pytest.raises(EnvError, match="options"):
        CartPoleVectorEnv(1).reset(options={"low": -0.1})
    with pytest.raises(EnvError, match=r"\(2, 4\)"):
        CartPoleVectorEnv(2).set_state(np.zeros((2, 3)))
    with pytest.raises(EnvError, match="finite"):
        PendulumVectorEnv(1).set_state([[np.nan, 0.0]])
