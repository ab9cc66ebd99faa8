"""Experiment config: packaged YAML loads, bad keys and values fail early and say why.

Fast tier: no training, no envs; every test asserts concrete values or the
exact key named in the error message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rlops.algos.ppo import PPOConfig
from rlops.core.config import apply_overrides, load_yaml
from rlops.core.errors import ConfigError
from rlops.runtime import (
    EvalConfig,
    ExperimentConfig,
    LogConfig,
    RuntimeConfig,
    config_from_dict,
    load_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CARTPOLE = str(CONFIGS / "cartpole_ppo.yaml")
PENDULUM = str(CONFIGS / "pendulum_ppo.yaml")

TOP_LEVEL_KEYS = "name, seed, total_steps, env, algo, eval, runtime, log"


# --- packaged configs -------------------------------------------------------------------------


def _assert_matches_file(cfg: ExperimentConfig, data: dict[str, object], where: str = "") -> None:
    """Every key the YAML file sets has that value, typed, in the loaded config."""
    for key, value in data.items():
        got = getattr(cfg, key)
        if isinstance(value, dict) and key != "kwargs":
            _assert_matches_file(got, value, f"{where}{key}.")
        elif isinstance(value, list):
            assert got == tuple(value), f"{where}{key}"
        else:
            assert got == value, f"{where}{key}"
            assert type(got) is type(value) or isinstance(value, int), f"{where}{key}"


@pytest.mark.parametrize("path", [CARTPOLE, PENDULUM])
def test_packaged_config_loads_every_value_it_sets(path: str) -> None:
    cfg = load_config(path)
    data = load_yaml(path)
    assert {"name", "env", "algo"} <= set(data)
    _assert_matches_file(cfg, data)
    # Keys the file leaves out take the dataclass defaults.
    assert cfg.log == LogConfig()
    assert cfg.algo.vf_coef == PPOConfig().vf_coef
    assert cfg.runtime.keep_checkpoints == RuntimeConfig().keep_checkpoints


def test_cartpole_config_essentials() -> None:
    cfg = load_config(CARTPOLE)
    assert cfg.name == "cartpole-ppo"
    assert cfg.env.id == "rlops/CartPole-v1"
    assert not cfg.env.normalize_obs and not cfg.env.scale_reward
    assert cfg.algo.name == "ppo"
    assert isinstance(cfg.algo.lr, float)
    assert isinstance(cfg.algo.hidden_sizes, tuple)
    assert cfg.runtime.backend == "inline"


def test_pendulum_config_essentials() -> None:
    cfg = load_config(PENDULUM)
    assert cfg.name == "pendulum-ppo"
    assert cfg.env.id == "rlops/Pendulum-v1"
    assert cfg.env.normalize_obs and cfg.env.scale_reward
    assert cfg.algo.name == "ppo"
    batch = cfg.algo.n_steps * cfg.env.num_envs
    assert batch % cfg.algo.minibatch_size == 0


def test_no_path_means_all_defaults() -> None:
    assert load_config(None) == ExperimentConfig()


# --- unknown keys -----------------------------------------------------------------------------


def test_unknown_top_level_key_lists_allowed_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CARTPOLE, ["foo=1"])
    message = str(info.value)
    assert "unknown key 'foo'" in message
    assert f"allowed keys: {TOP_LEVEL_KEYS}" in message
    assert "did you mean" not in message  # nothing close to "foo"


def test_unknown_top_level_near_miss_suggests_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'total_step' \(did you mean 'total_steps'\?\)"
    ):
        load_config(CARTPOLE, ["total_step=5"])


@pytest.mark.parametrize(
    ("override", "dotted", "suggestion", "section", "allowed"),
    [
        ("env.num_env=2", "env.num_env", "num_envs", "env", "id, num_envs, normalize_obs"),
        ("algo.lrr=1", "algo.lrr", "lr", "algo", "name, n_steps, n_epochs, minibatch_size, lr,"),
        ("log.progres=true", "log.progres", "progress", "log", "tensorboard, progress"),
        ("runtime.torch_thread=1", "runtime.torch_thread", "torch_threads", "runtime", "backend,"),
    ],
)
def test_unknown_nested_key_names_dotted_key_and_allowed_keys(
    override: str, dotted: str, suggestion: str, section: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CARTPOLE, [override])
    message = str(info.value)
    assert f"unknown key '{dotted}'" in message
    assert f"(did you mean '{suggestion}'?)" in message
    assert f"allowed keys under '{section}': {allowed}" in message


def test_unknown_key_in_yaml_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("env:\n  id: rlops/CartPole-v1\n  normalise_obs: true\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'env\.normalise_obs' \(did you mean 'normalize_obs'\?\)"
    ):
        load_config(str(path))


def test_unknown_algorithm_name_lists_choices() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^algo\.name: unknown algorithm 'a2c'; choose one of 'ppo', 'dqn', 'sac'$",
    ):
        load_config(CARTPOLE, ["algo.name=a2c"])


# --- wrong types and values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("total_steps=abc", "total_steps: expected an integer, got 'abc'"),
        ("seed=1.5", "seed: expected an integer, got 1.5"),
        ("seed=true", "seed: expected an integer, got True"),
        ("algo.lr=true", "algo.lr: expected a number, got True"),
        ("algo.gamma=high", "algo.gamma: expected a number, got 'high'"),
        (
            "algo.lr_schedule=cosine",
            "algo.lr_schedule: 'cosine' is not allowed; choose one of 'constant', 'linear'",
        ),
        (
            "algo.activation=gelu",
            "algo.activation: 'gelu' is not allowed; choose one of 'tanh', 'relu'",
        ),
        (
            "runtime.backend=rey",
            "runtime.backend: 'rey' is not allowed; choose one of 'inline', 'process', 'ray'",
        ),
        ("env.normalize_obs=1", "env.normalize_obs: expected true or false, got 1"),
        ("env.id=5", "env.id: expected a string, got 5"),
        ("algo.hidden_sizes=32", "algo.hidden_sizes: expected a list, got 32"),
        ("algo.hidden_sizes=[32,x]", "algo.hidden_sizes[1]: expected an integer, got 'x'"),
        ("algo.clip_vf=abc", "algo.clip_vf: expected float | null, got 'abc'"),
        ("env.kwargs=[1]", "env.kwargs: expected a mapping, got [1]"),
        ("env=3", "env: expected a mapping of EnvConfig fields, got 3"),
    ],
)
def test_wrong_type_names_the_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CARTPOLE, [override])
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("algo.lr=-1", "algo.lr: must be > 0, got -1.0"),
        ("algo.lr=0", "algo.lr: must be > 0, got 0.0"),
        ("algo.gamma=2", "algo.gamma: must be in [0, 1], got 2.0"),
        ("algo.gae_lambda=-0.1", "algo.gae_lambda: must be in [0, 1], got -0.1"),
        ("algo.n_steps=0", "algo.n_steps: must be >= 1, got 0"),
        ("algo.clip_vf=0", "algo.clip_vf: must be > 0 or null, got 0.0"),
        ("algo.hidden_sizes=[32,0]", "algo.hidden_sizes: widths must be >= 1, got [32, 0]"),
        ("env.num_envs=0", "env.num_envs: must be >= 1, got 0"),
        ("eval.episodes=0", "eval.episodes: must be >= 1, got 0"),
        ("runtime.keep_checkpoints=0", "runtime.keep_checkpoints: must be >= 1, got 0"),
        ("total_steps=0", "total_steps: must be >= 1, got 0"),
        # 32 steps x 8 envs = 256 transitions per update; 100 does not divide it.
        (
            "algo.minibatch_size=100",
            "algo.minibatch_size: must divide algo.n_steps * env.num_envs = 256, got 100",
        ),
    ],
)
def test_out_of_range_value_names_the_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CARTPOLE, [override])
    assert str(info.value) == expected


def test_minibatch_divisibility_uses_the_overridden_batch() -> None:
    # 64 steps x 3 envs = 192: 64 divides it, 128 does not.
    ok = load_config(CARTPOLE, ["env.num_envs=3", "algo.n_steps=64", "algo.minibatch_size=64"])
    assert ok.algo.minibatch_size == 64
    with pytest.raises(ConfigError, match=r"= 192, got 128$"):
        load_config(CARTPOLE, ["env.num_envs=3", "algo.n_steps=64", "algo.minibatch_size=128"])


def test_config_error_is_a_value_error() -> None:
    # Callers that catch ValueError (argparse-style) also catch config errors.
    with pytest.raises(ValueError):
        ExperimentConfig(total_steps=0)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"^algo\.gamma: "):
        PPOConfig(gamma=1.5)
    with pytest.raises(ConfigError, match=r"^eval\.num_envs: "):
        EvalConfig(num_envs=0)
    with pytest.raises(ConfigError, match=r"^runtime\.torch_threads: "):
        RuntimeConfig(torch_threads=0)


# --- --set overrides --------------------------------------------------------------------------


def test_overrides_produce_typed_values() -> None:
    cfg = load_config(
        CARTPOLE, ["algo.lr=3e-4", "env.id=gym:CartPole-v1", "algo.hidden_sizes=[32,32]"]
    )
    assert cfg.algo.lr == 3e-4
    assert type(cfg.algo.lr) is float
    assert cfg.env.id == "gym:CartPole-v1"
    assert cfg.algo.hidden_sizes == (32, 32)
    assert type(cfg.algo.hidden_sizes) is tuple
    # Untouched values keep the file's values.
    assert cfg.algo.n_steps == 32
    assert cfg.env.num_envs == 8


def test_override_coercions() -> None:
    cfg = load_config(
        CARTPOLE,
        [
            "total_steps=1e3",  # an integral float is accepted for an int
            "algo.lr=1",  # an int is accepted for a float
            "algo.clip_vf=null",
            "algo.target_kl=0.02",
            "env.kwargs={gravity: 9.8}",
            "name=",  # empty value is the empty string
            "seed=7",
        ],
    )
    assert cfg.total_steps == 1000
    assert type(cfg.total_steps) is int
    assert cfg.algo.lr == 1.0
    assert type(cfg.algo.lr) is float
    assert cfg.algo.clip_vf is None
    assert cfg.algo.target_kl == 0.02
    assert cfg.env.kwargs == {"gravity": 9.8}
    assert cfg.name == ""
    assert cfg.seed == 7


def test_later_override_wins() -> None:
    assert load_config(CARTPOLE, ["seed=1", "seed=2"]).seed == 2


def test_apply_overrides_does_not_modify_its_input() -> None:
    data = {"algo": {"lr": 0.001}, "seed": 0}
    result = apply_overrides(data, ["algo.lr=3e-4", "env.num_envs=2"])
    assert data == {"algo": {"lr": 0.001}, "seed": 0}
    assert result == {"algo": {"lr": 3e-4}, "seed": 0, "env": {"num_envs": 2}}


@pytest.mark.parametrize("bad", ["nokey", "=3", "  =x"])
def test_malformed_override_errors(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CARTPOLE, [bad])
    assert str(info.value) == f"--set {bad!r}: expected KEY=VALUE, e.g. algo.lr=3e-4"


# --- YAML files ------------------------------------------------------------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"^config file not found: {re.escape(str(missing))}$"):
        load_config(str(missing))


def test_non_mapping_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping of keys, got list"):
        load_config(str(path))


def test_invalid_yaml_file_gives_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("algo: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith(f"{path}: not valid YAML")
    assert "\n" not in str(info.value)


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(str(path)) == ExperimentConfig()


def test_exponent_float_in_yaml_file_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) would read 3e-4 as a string; configs read it as users mean it.
    path = tmp_path / "exp.yaml"
    path.write_text("algo:\n  lr: 3e-4\n  adam_eps: 1E-8\nname: 1e3x\n")
    cfg = load_config(str(path))
    assert cfg.algo.lr == 3e-4
    assert cfg.algo.adam_eps == 1e-8
    assert cfg.name == "1e3x"  # not every string with an e is a number


# --- serialisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CARTPOLE, PENDULUM])
def test_to_yaml_round_trips_to_an_equal_config(path: str) -> None:
    cfg = load_config(
        path,
        [
            "algo.clip_vf=0.2",
            "algo.target_kl=0.015",
            "algo.adam_eps=1e-7",
            "algo.hidden_sizes=[16, 8]",
            "env.kwargs={gravity: 9.81}",
            "seed=11",
        ],
    )
    text = cfg.to_yaml()
    back = config_from_dict(yaml.safe_load(text))
    assert back == cfg
    assert back.algo.hidden_sizes == (16, 8)
    assert back.algo.adam_eps == 1e-7
    # Every section is written out, so the run dir's config.yaml is self-contained.
    assert list(yaml.safe_load(text)) == [
        "name",
        "seed",
        "total_steps",
        "env",
        "algo",
        "eval",
        "runtime",
        "log",
    ]


def test_to_dict_is_plain_data() -> None:
    data = ExperimentConfig().to_dict()
    assert data["algo"]["hidden_sizes"] == [64, 64]
    assert data["env"] == {
        "id": "rlops/CartPole-v1",
        "num_envs": 8,
        "normalize_obs": False,
        "scale_reward": False,
        "kwargs": {},
        "reward_shaping": {},
        "info_metrics": [],
    }
    assert yaml.safe_load(yaml.safe_dump(data)) == data


def test_replace_revalidates() -> None:
    cfg = ExperimentConfig()
    assert cfg.replace(seed=3).seed == 3
    with pytest.raises(ConfigError, match=r"^total_steps: must be >= 1, got -5$"):
        cfg.replace(total_steps=-5)


def test_config_is_frozen() -> None:
    cfg = ExperimentConfig()
    with pytest.raises(AttributeError):
        cfg.seed = 1  # type: ignore[misc]
