"""make_vec / register / list_envs, and the env checker against good and broken envs."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from rlops.core.errors import EnvError
from rlops.envs import (
    CartPoleVectorEnv,
    PendulumVectorEnv,
    assert_finite_obs,
    check_vector_env,
    final_observations,
    list_envs,
    make_vec,
    register,
)
from rlops.envs.classic import CartPoleParams
from rlops.testing import FaultyVectorEnv

# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("env_id", "cls", "obs_dim"),
    [("rlops/CartPole-v1", CartPoleVectorEnv, 4), ("rlops/Pendulum-v1", PendulumVectorEnv, 3)],
)
def test_make_vec_builtin(env_id: str, cls: type, obs_dim: int) -> None:
    env = make_vec(env_id, 3)
    assert isinstance(env, cls)
    assert env.num_envs == 3
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, obs_dim)


def test_make_vec_does_not_reset() -> None:
    env = make_vec("rlops/CartPole-v1", 2)
    with pytest.raises(EnvError, match="before reset"):
        env.step(np.zeros(2, np.int64))


def test_make_vec_passes_params_fields_as_kwargs() -> None:
    env = make_vec("rlops/CartPole-v1", 2, gravity=12.0, max_episode_steps=7)
    assert isinstance(env, CartPoleVectorEnv)
    assert env.params.gravity == 12.0 and env.params.max_episode_steps == 7
    base = CartPoleParams(length=1.0)
    env = make_vec("rlops/CartPole-v1", 2, params=base, force_mag=5.0)
    assert isinstance(env, CartPoleVectorEnv)
    assert (env.params.length, env.params.force_mag) == (1.0, 5.0)
    with pytest.raises(EnvError, match=r"unknown CartPoleParams field\(s\) \['gravty'\]"):
        make_vec("rlops/CartPole-v1", 2, gravty=12.0)


def test_make_vec_seed_makes_action_sampling_reproducible() -> None:
    a = make_vec("rlops/Pendulum-v1", 4, seed=3).action_space.sample()
    b = make_vec("rlops/Pendulum-v1", 4, seed=3).action_space.sample()
    np.testing.assert_array_equal(a, b)


def test_gym_prefix_builds_same_step_sync_env() -> None:
    env = make_vec("gym:CartPole-v1", 3)
    assert type(env).__name__ == "SyncVectorEnv"
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    env.reset(seed=0)
    ended = False
    for _ in range(200):
        obs, _, terminated, truncated, info = env.step(np.ones(3, np.int64))
        done = terminated | truncated
        if done.any():
            ended = True
            index = np.flatnonzero(done)
            last = final_observations(info, index)
            # Pushing right always ends by the angle threshold; the returned obs is a reset one.
            assert np.all(np.abs(last[:, 2]) > 0.2094)
            assert np.all(np.abs(obs[index]) <= 0.05)
    assert ended


def test_gym_prefix_passes_kwargs_and_module_syntax() -> None:
    env = make_vec("gym:Pendulum-v1", 2, g=9.81)
    assert env.get_attr("g") == (9.81, 9.81)
    env = make_vec("gym:rlops.testing:NaNCartPole-v0", 2, nan_step=3)
    assert env.get_attr("nan_step") == (3, 3)


def test_unknown_id_lists_known_ids_and_gym_prefix() -> None:
    with pytest.raises(EnvError) as err:
        make_vec("rlops/CartPol-v1")
    message = str(err.value)
    assert "Did you mean 'rlops/CartPole-v1'?" in message
    for known in ("rlops/CartPole-v1", "rlops/CartPoleCrashing-v0", "rlops/Pendulum-v1"):
        assert known in message
    assert "'gym:' prefix" in message
    with pytest.raises(EnvError, match="Did you mean 'gym:Acrobot-v1'"):
        make_vec("Acrobot-v1")


def test_unknown_gym_id_and_module_are_env_errors() -> None:
    with pytest.raises(EnvError, match="Gymnasium could not make 'NoSuchEnv-v0'"):
        make_vec("gym:NoSuchEnv-v0")
    with pytest.raises(EnvError, match="could not import"):
        make_vec("gym:no_such_module_xyz:Env-v0")
    with pytest.raises(EnvError, match="could not build"):
        make_vec("gym:CartPole-v1", 2, no_such_kwarg=1)


@pytest.mark.parametrize("num_envs", [0, -1])
def test_num_envs_must_be_positive(num_envs: int) -> None:
    with pytest.raises(EnvError, match="num_envs"):
        make_vec("rlops/CartPole-v1", num_envs)
    with pytest.raises(EnvError, match="num_envs"):
        make_vec("gym:CartPole-v1", num_envs)


def test_register_and_list_envs() -> None:
    register("test/Faulty-v0", lambda num_envs: FaultyVectorEnv(num_envs), "a fake", overwrite=True)
    env = make_vec("test/Faulty-v0", 2)
    assert isinstance(env, FaultyVectorEnv)
    infos = {info.id: info for info in list_envs(with_spaces=True)}
    assert infos["test/Faulty-v0"].description == "a fake"
    assert infos["rlops/CartPole-v1"].action_space == "Discrete(2)"
    assert "(3,)" in (infos["rlops/Pendulum-v1"].observation_space or "")
    with pytest.raises(EnvError, match="already registered"):
        register("test/Faulty-v0", FaultyVectorEnv, "again")
    with pytest.raises(EnvError, match="gym:"):
        register("gym:Mine-v0", FaultyVectorEnv, "reserved prefix")


# ----------------------------------------------------------------------------- checker


@pytest.mark.parametrize(
    "env_id", ["rlops/CartPole-v1", "rlops/Pendulum-v1", "gym:CartPole-v1", "gym:Pendulum-v1"]
)
def test_checker_passes_good_envs(env_id: str) -> None:
    check_vector_env(make_vec(env_id, 4), steps=250)


def test_checker_catches_nan_from_gym_env() -> None:
    env = make_vec("gym:rlops.testing:NaNCartPole-v0", 2, nan_step=17)
    with pytest.raises(EnvError, match=r"observation of env 0 at step 17 contains NaN: \[\s*nan"):
        check_vector_env(env)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("nan", r"\[obs-finite\] observation of env 3 at step 17 contains NaN"),
        ("inf", r"observation of env 3 at step 17 contains \+Inf"),
        ("obs_dtype", r"\[obs-dtype\] observations at step 17 have dtype float64"),
        ("obs_shape", r"\[obs-shape\] observations at step 17 have shape \(4, 2\)"),
        ("reward_shape", r"\[reward\] rewards at step 17 must be .* shape \(4,\)"),
        ("flags_dtype", r"\[terminations\] terminations at step 17 must be a bool array"),
        ("no_final_obs", r"\[final-obs\] sub-envs \[0, 1, 2, 3\] ended at step 20"),
    ],
)
def test_checker_names_check_env_and_step(fault: str, message: str) -> None:
    env = FaultyVectorEnv(4, fault=fault, fault_env=3, fault_step=17)  # type: ignore[arg-type]
    with pytest.raises(EnvError, match=message):
        check_vector_env(env, steps=30)


def test_checker_rejects_unsupported_spaces_and_modes() -> None:
    from gymnasium import spaces

    env = FaultyVectorEnv(2)
    env.single_action_space = spaces.MultiBinary(3)
    with pytest.raises(EnvError, match=r"\[spaces\] single_action_space must be a Box or Discrete"):
        check_vector_env(env)
    env = FaultyVectorEnv(2)
    env.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
    with pytest.raises(EnvError, match=r"\[autoreset-mode\]"):
        check_vector_env(env)
    with pytest.raises(EnvError, match=r"\[env-type\]"):
        check_vector_env(object())  # type: ignore[arg-type]


def test_checker_passes_well_behaved_fake() -> None:
    check_vector_env(FaultyVectorEnv(3, fault="none"), steps=30)


def test_assert_finite_obs() -> None:
    assert_finite_obs(np.zeros((4, 3), np.float32), step=0)
    assert_finite_obs(np.zeros((4, 3), np.uint8), step=0)
    assert_finite_obs(np.full((2, 2), 3e38, np.float32), step=0)  # large is fine
    obs = np.zeros((5, 2, 2), np.float32)
    obs[2, 1, 0] = -np.inf
    with pytest.raises(EnvError, match="observation of env 2 at step 9 contains -Inf"):
        assert_finite_obs(obs, step=9)
    obs[1, 0, 0] = np.nan
    with pytest.raises(EnvError, match="env 1 at step 9 contains NaN"):
        assert_finite_obs(obs, step=9)
