"""Policy artifacts from real (tiny) training runs: acting, preprocessing, refusal to load.

Fast tier: one tiny CartPole run and one tiny Pendulum run (observation
normalisation on) per module, ~1 s each; every test below works on copies.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from safetensors.numpy import load_file, save_file

import rlops
from rlops.artifacts import Policy, load_policy, save_policy
from rlops.artifacts.policy import FORMAT_VERSION, content_hash
from rlops.core.errors import ArtifactError
from rlops.envs import make_vec
from rlops.runtime import ExperimentConfig, RunResult, load_config, train
from rlops.runtime.checkpoint import load_latest_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY = [
    "log.tensorboard=false",
    "log.progress=false",
    "eval.episodes=2",
    "eval.num_envs=2",
    "eval.every_steps=0",
    "algo.n_epochs=2",
]


def tiny(config: str, *overrides: str) -> ExperimentConfig:
    return load_config(str(CONFIGS / config), [*TINY, *overrides])


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    cfg = tiny(
        "cartpole_ppo.yaml",
        "total_steps=1024",
        "env.num_envs=4",
        "algo.n_steps=32",
        "algo.minibatch_size=64",
    )
    return train(cfg, out_dir=tmp_path_factory.mktemp("artifacts") / "cartpole")


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    cfg = tiny(
        "pendulum_ppo.yaml",
        "total_steps=512",
        "env.num_envs=2",
        "algo.n_steps=64",
        "algo.minibatch_size=64",
    )
    assert cfg.env.normalize_obs
    return train(cfg, out_dir=tmp_path_factory.mktemp("artifacts") / "pendulum")


@pytest.fixture
def cartpole_copy(cartpole_run: RunResult, tmp_path: Path) -> Path:
    """A private copy of the CartPole artifact that a test may damage."""
    return Path(shutil.copytree(cartpole_run.artifact_path, tmp_path / "artifact"))


def cartpole_obs(n: int, seed: int = 0) -> np.ndarray:
    env = make_vec("rlops/CartPole-v1", n)
    obs, _ = env.reset(seed=seed)
    # Spread the batch over more of the state space than the reset distribution.
    return obs + np.random.default_rng(seed).normal(0, 0.5, obs.shape).astype(np.float32)


def pendulum_obs(n: int, seed: int = 0) -> np.ndarray:
    env = make_vec("rlops/Pendulum-v1", n)
    obs, _ = env.reset(seed=seed)
    return obs


def edit_manifest(artifact: Path, **changes: Any) -> None:
    path = artifact / "policy.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


# --- layout -----------------------------------------------------------------------------------


def test_artifact_holds_exactly_two_files(cartpole_run: RunResult, pendulum_run: RunResult) -> None:
    for run in (cartpole_run, pendulum_run):
        assert sorted(p.name for p in run.artifact_path.iterdir()) == [
            "model.safetensors",
            "policy.json",
        ]
        # The atomic save leaves no temporary directories next to the artifact.
        assert not [p for p in run.run_dir.iterdir() if p.name.startswith(".artifact")]


def test_manifest_describes_the_policy(cartpole_run: RunResult) -> None:
    manifest = json.loads((cartpole_run.artifact_path / "policy.json").read_text())
    assert manifest["format"] == "rlops.policy"
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["version"] == cartpole_run.version
    assert manifest["version"].startswith("sha256:") and len(manifest["version"]) == 7 + 64
    assert manifest["algo"] == "ppo"
    assert manifest["env_id"] == "rlops/CartPole-v1"
    assert manifest["action_space"] == {"type": "Discrete", "n": 2, "start": 0}
    assert manifest["observation_space"]["shape"] == [4]
    assert manifest["network"]["head"] == "categorical"
    assert manifest["network"]["hidden_sizes"] == [64, 64]
    assert manifest["preprocessing"] == {"obs_norm": None}
    assert manifest["training"]["seed"] == 0
    assert manifest["training"]["total_steps"] == 1024
    tensors = load_file(str(cartpole_run.artifact_path / "model.safetensors"))
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert content_hash(tensors, manifest) == manifest["version"]


# --- acting: discrete -------------------------------------------------------------------------


def test_load_policy_reports_its_version(cartpole_run: RunResult) -> None:
    policy = rlops.load_policy(cartpole_run.artifact_path)
    assert isinstance(policy, Policy)
    assert policy.version == cartpole_run.version
    assert policy.path == cartpole_run.artifact_path
    assert policy.action_space == spaces.Discrete(2)
    # The manifest file itself is accepted as the path too.
    assert load_policy(cartpole_run.artifact_path / "policy.json").version == policy.version


def test_single_observation_gives_scalar_action_and_logp(cartpole_run: RunResult) -> None:
    policy = load_policy(cartpole_run.artifact_path, seed=0)
    action, logp = policy.act(cartpole_obs(1)[0])
    assert np.shape(action) == () and np.shape(logp) == ()
    assert np.issubdtype(np.asarray(action).dtype, np.integer)
    assert int(action) in (0, 1)
    assert np.isfinite(logp) and float(logp) <= 0.0  # log of a probability
    # A plain Python list is an observation too.
    action, _ = policy.act([0.0, 0.0, 0.0, 0.0], deterministic=True)
    assert np.shape(action) == ()


def test_batch_observation_gives_batched_arrays(cartpole_run: RunResult) -> None:
    policy = load_policy(cartpole_run.artifact_path, seed=0)
    obs = cartpole_obs(7)
    actions, logp = policy.act(obs)
    assert actions.shape == (7,) and logp.shape == (7,)
    assert set(np.unique(actions).tolist()) <= {0, 1}
    assert policy.value(obs).shape == (7,)
    assert policy.action_distribution(obs).shape == (7, 2)


def test_deterministic_act_is_argmax_and_repeatable(cartpole_run: RunResult) -> None:
    obs = cartpole_obs(64, seed=1)
    a = load_policy(cartpole_run.artifact_path, seed=1)
    b = load_policy(cartpole_run.artifact_path, seed=2)
    first, logp1 = a.act(obs, deterministic=True)
    again, logp2 = a.act(obs, deterministic=True)
    other, _ = b.act(obs, deterministic=True)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, other)
    np.testing.assert_array_equal(logp1, logp2)
    probs = a.action_distribution(obs)
    np.testing.assert_array_equal(first, probs.argmax(axis=1))
    # The policy is not constant over the batch, or argmax would be a weak check.
    assert 0 < first.sum() < first.size


def test_sampling_is_seeded(cartpole_run: RunResult) -> None:
    obs = cartpole_obs(200, seed=2)
    a1, _ = load_policy(cartpole_run.artifact_path, seed=5).act(obs)
    a2, _ = load_policy(cartpole_run.artifact_path, seed=5).act(obs)
    a3, _ = load_policy(cartpole_run.artifact_path, seed=6).act(obs)
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, a3)


def test_action_distribution_and_logp_agree(cartpole_run: RunResult) -> None:
    policy = load_policy(cartpole_run.artifact_path, seed=3)
    obs = cartpole_obs(256, seed=3)
    probs = policy.action_distribution(obs)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert (probs > 0).all()
    actions, logp = policy.act(obs, deterministic=False)
    np.testing.assert_allclose(logp, np.log(probs[np.arange(256), actions]), rtol=1e-5, atol=1e-6)
    # Single observation: [n] probabilities.
    single = policy.action_distribution(obs[0])
    np.testing.assert_allclose(single, probs[0], rtol=1e-6)


def test_sampled_action_frequencies_match_distribution(cartpole_run: RunResult) -> None:
    policy = load_policy(cartpole_run.artifact_path, seed=4)
    obs = np.repeat(cartpole_obs(1, seed=4), 4000, axis=0)
    actions, _ = policy.act(obs)
    p1 = float(policy.action_distribution(obs[0])[1])
    assert actions.mean() == pytest.approx(p1, abs=0.03)


def test_wrong_observation_shape_is_refused(cartpole_run: RunResult) -> None:
    policy = load_policy(cartpole_run.artifact_path)
    with pytest.raises(ArtifactError, match=r"observation shape \(3,\) does not match"):
        policy.act(np.zeros(3, np.float32))
    with pytest.raises(ArtifactError, match=r"observation shape \(2, 5\)"):
        policy.act(np.zeros((2, 5), np.float32))


# --- acting: continuous, normalised -----------------------------------------------------------


def test_continuous_single_and_batch_shapes(pendulum_run: RunResult) -> None:
    policy = load_policy(pendulum_run.artifact_path, seed=0)
    obs = pendulum_obs(5)
    action, logp = policy.act(obs[0])
    assert action.shape == (1,) and np.shape(logp) == ()
    actions, logps = policy.act(obs)
    assert actions.shape == (5, 1) and logps.shape == (5,)
    assert actions.dtype == np.float32
    with pytest.raises(ArtifactError, match="only defined for discrete actions"):
        policy.action_distribution(obs)


def test_continuous_actions_are_clipped_into_bounds(pendulum_run: RunResult) -> None:
    policy = load_policy(pendulum_run.artifact_path, seed=9)
    obs = np.repeat(pendulum_obs(4, seed=1), 500, axis=0)
    actions, logp = policy.act(obs)
    assert actions.min() >= -2.0 and actions.max() <= 2.0
    # The same draws before clipping: std exp(0) = 1 around a small mean leaves
    # [-2, 2] often, so the clip is exercised and must be exactly np.clip.
    raw, raw_logp = policy.net.sample(policy.preprocess(obs), np.random.default_rng(9))
    assert (np.abs(raw) > 2.0).mean() > 0.01
    np.testing.assert_array_equal(actions, np.clip(raw, -2.0, 2.0))
    # log-probabilities are those of the unclipped samples.
    np.testing.assert_array_equal(logp, raw_logp)


def test_obs_norm_stats_are_stored_from_training(pendulum_run: RunResult) -> None:
    manifest = json.loads((pendulum_run.artifact_path / "policy.json").read_text())
    norm = manifest["preprocessing"]["obs_norm"]
    assert set(norm) == {"mean", "var", "epsilon", "clip"}
    assert norm["epsilon"] == 1e-8 and norm["clip"] == 10.0
    # They equal the running statistics the final checkpoint saved for the wrapper.
    ckpt = load_latest_checkpoint(pendulum_run.run_dir)
    assert ckpt.step == 512
    ref = ckpt.meta["obs_norm"]
    mean = ckpt.tensors[ref["mean"]["__tensor__"]].numpy()
    var = ckpt.tensors[ref["var"]["__tensor__"]].numpy()
    np.testing.assert_array_equal(np.asarray(norm["mean"]), mean)
    np.testing.assert_array_equal(np.asarray(norm["var"]), var)
    # Real statistics, not the initial mean 0 / var 1.
    assert np.abs(np.asarray(norm["mean"])).max() > 1e-3
    assert np.abs(np.asarray(norm["var"]) - 1.0).max() > 1e-2


def test_obs_norm_is_applied_when_acting(pendulum_run: RunResult) -> None:
    policy = load_policy(pendulum_run.artifact_path)
    norm = policy.manifest["preprocessing"]["obs_norm"]
    mean, var = np.asarray(norm["mean"]), np.asarray(norm["var"])
    raw = pendulum_obs(16, seed=2)
    raw[0, 2] = 1e4  # an outlier: normalisation clips it to +10
    manual = np.clip((raw - mean) / np.sqrt(var + norm["epsilon"]), -10, 10).astype(np.float32)
    assert manual[0, 2] == 10.0
    np.testing.assert_allclose(policy.preprocess(raw), manual, rtol=1e-6, atol=1e-6)
    want, _ = policy.net.sample(manual, np.random.default_rng(0), deterministic=True)
    got, _ = policy.act(raw, deterministic=True)
    np.testing.assert_allclose(got, np.clip(want, -2, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy.value(raw), policy.net.value(manual), rtol=1e-5, atol=1e-5)
    # Skipping the normalisation gives different actions: it is not a no-op.
    unnormalised, _ = policy.net.sample(raw.astype(np.float32), np.random.default_rng(0), True)
    assert np.abs(unnormalised - want).max() > 1e-3


# --- refusing to load -------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["model.safetensors", "policy.json"])
def test_missing_file_is_refused(cartpole_copy: Path, missing: str) -> None:
    (cartpole_copy / missing).unlink()
    with pytest.raises(ArtifactError, match="not a policy artifact"):
        load_policy(cartpole_copy)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"expected policy\.json and model\.safetensors"):
        load_policy(tmp_path / "nowhere")


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_format_version_is_refused(cartpole_copy: Path, version: Any) -> None:
    edit_manifest(cartpole_copy, format_version=version)
    with pytest.raises(ArtifactError) as info:
        load_policy(cartpole_copy)
    assert f"format_version {version!r} is not supported" in str(info.value)
    assert "reads format_version 1" in str(info.value)


def test_wrong_format_is_refused(cartpole_copy: Path) -> None:
    edit_manifest(cartpole_copy, format="sb3.zip")
    with pytest.raises(ArtifactError, match="not an rlops policy manifest"):
        load_policy(cartpole_copy)


def test_invalid_json_is_refused(cartpole_copy: Path) -> None:
    (cartpole_copy / "policy.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_policy(cartpole_copy)


@pytest.mark.parametrize(
    "change",
    [
        {"env_id": "rlops/Pendulum-v1"},
        {"algo": "dqn"},
        {"action_space": {"type": "Discrete", "n": 3, "start": 0}},
        {
            "preprocessing": {
                "obs_norm": {"mean": [0.0] * 4, "var": [1.0] * 4, "epsilon": 1e-8, "clip": 10.0}
            }
        },
        {"version": "sha256:" + "0" * 64},
    ],
    ids=["env_id", "algo", "action_space", "obs_norm", "version"],
)
def test_tampered_manifest_is_refused(cartpole_copy: Path, change: dict[str, Any]) -> None:
    edit_manifest(cartpole_copy, **change)
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        load_policy(cartpole_copy)


def test_unhashed_created_at_may_change(cartpole_copy: Path, cartpole_run: RunResult) -> None:
    edit_manifest(cartpole_copy, created_at="1999-01-01T00:00:00Z")
    assert load_policy(cartpole_copy).version == cartpole_run.version


def test_tampered_tensor_bytes_are_refused(cartpole_copy: Path) -> None:
    path = cartpole_copy / "model.safetensors"
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] += np.float32(1e-3)
    save_file(tensors, str(path))
    with pytest.raises(ArtifactError) as info:
        load_policy(cartpole_copy)
    assert "content hash mismatch" in str(info.value)
    assert "modified after it was written" in str(info.value)


def test_extra_tensor_is_refused(cartpole_copy: Path) -> None:
    path = cartpole_copy / "model.safetensors"
    tensors = load_file(str(path))
    tensors["backdoor"] = np.zeros(3, np.float32)
    save_file(tensors, str(path))
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        load_policy(cartpole_copy)


def test_garbage_safetensors_is_refused(cartpole_copy: Path) -> None:
    (cartpole_copy / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ArtifactError, match="unreadable safetensors file"):
        load_policy(cartpole_copy)


# --- versions and no pickle -------------------------------------------------------------------


def _resave(policy: Policy, path: Path) -> str:
    tensors = load_file(str(policy.path / "model.safetensors"))
    manifest = policy.manifest
    return save_policy(
        path,
        tensors=tensors,
        observation_space=policy.observation_space,
        action_space=policy.action_space,
        network=policy.spec,
        obs_norm=manifest["preprocessing"]["obs_norm"],
        extra={k: manifest[k] for k in ("algo", "env_id", "training")},
    )


@pytest.mark.parametrize("run_name", ["cartpole_run", "pendulum_run"])
def test_version_is_stable_across_saves(
    run_name: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run: RunResult = request.getfixturevalue(run_name)
    policy = load_policy(run.artifact_path)
    first = _resave(policy, tmp_path / "a")
    # A later save (different created_at) of the same content has the same version.
    import rlops.artifacts.policy as policy_module

    monkeypatch.setattr(policy_module.time, "gmtime", lambda *a: (2001, 2, 3, 4, 5, 6, 5, 34, 0))
    second = _resave(policy, tmp_path / "b")
    assert first == second == run.version
    a = json.loads((tmp_path / "a" / "policy.json").read_text())
    b = json.loads((tmp_path / "b" / "policy.json").read_text())
    assert a["created_at"] != b["created_at"] == "2001-02-03T04:05:06Z"
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    assert load_policy(tmp_path / "b").version == run.version


def test_different_weights_give_a_different_version(
    cartpole_run: RunResult, tmp_path: Path
) -> None:
    policy = load_policy(cartpole_run.artifact_path)
    tensors = load_file(str(policy.path / "model.safetensors"))
    tensors = {k: v * np.float32(1.001) for k, v in tensors.items()}
    version = save_policy(
        tmp_path / "scaled",
        tensors=tensors,
        observation_space=policy.observation_space,
        action_space=policy.action_space,
        network=policy.spec,
    )
    assert version != cartpole_run.version
    assert load_policy(tmp_path / "scaled").version == version


def test_save_replaces_an_existing_artifact(cartpole_run: RunResult, tmp_path: Path) -> None:
    target = Path(shutil.copytree(cartpole_run.artifact_path, tmp_path / "artifact"))
    (target / "stale.txt").write_text("from an older save")
    version = _resave(load_policy(cartpole_run.artifact_path), target)
    assert version == cartpole_run.version
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors", "policy.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_loading_never_unpickles(
    cartpole_run: RunResult, pendulum_run: RunResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("policy loading must not unpickle")

    class RefusingUnpickler:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    for run in (cartpole_run, pendulum_run):
        policy = load_policy(run.artifact_path, seed=0)
        assert policy.version == run.version
        obs = policy.observation_space.sample()
        policy.act(obs, deterministic=True)


def test_discrete_start_offsets_actions(tmp_path: Path) -> None:
    from rlops.artifacts import NetworkSpec

    spec = NetworkSpec(obs_dim=2, act_dim=3, hidden_sizes=(), activation="tanh", head="categorical")
    # Logits favour index 0 strongly, i.e. the action -1 of Discrete(3, start=-1).
    tensors = {
        "pi.layers.0.weight": np.zeros((3, 2), np.float32),
        "pi.layers.0.bias": np.array([5.0, 0.0, 0.0], np.float32),
    }
    save_policy(
        tmp_path / "p",
        tensors=tensors,
        observation_space=spaces.Box(-1, 1, (2,), np.float32),
        action_space=spaces.Discrete(3, start=-1),
        network=spec,
    )
    policy = load_policy(tmp_path / "p", seed=0)
    action, _ = policy.act(np.zeros(2, np.float32), deterministic=True)
    assert int(action) == -1
    actions, logp = policy.act(np.zeros((3000, 2), np.float32))
    assert set(np.unique(actions).tolist()) == {-1, 0, 1}
    probs = policy.action_distribution(np.zeros(2, np.float32))
    # Distribution columns are indexed from 0: column k is action start + k.
    np.testing.assert_allclose(logp, np.log(probs[actions + 1]), rtol=1e-5)
