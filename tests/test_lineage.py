"""Run lineage (``RUN_DIR/lineage.json``): what rlops train and train-offline record, how
a resume keeps it, how malformed files are refused, and that writes are atomic.

Fast tier: one tiny CartPole run shared by the module, one tiny offline run.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import rlops
from rlops.cli.offline import add_parser
from rlops.core.decisions import DecisionRecord
from rlops.core.errors import ConfigError
from rlops.runtime import RunResult, load_config, train
from rlops.runtime.lineage import (
    FORMAT,
    FORMAT_VERSION,
    LINEAGE_FILENAME,
    collect_code,
    collect_lineage,
    read_lineage,
    record_resume,
    write_lineage,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "log.tensorboard=false",
    "log.progress=false",
    "eval.episodes=2",
    "eval.num_envs=2",
    "algo.n_epochs=2",
    "total_steps=512",
    "env.num_envs=4",
    "algo.n_steps=32",
    "algo.minibatch_size=64",
    "eval.every_steps=512",
]
IN_GIT_CHECKOUT = shutil.which("git") is not None and (ROOT / ".git").exists()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lineage_json(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / LINEAGE_FILENAME).read_text())
    return data


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    cfg = load_config(str(ROOT / "configs" / "cartpole_ppo.yaml"), TINY)
    return train(cfg, out_dir=tmp_path_factory.mktemp("lineage") / "run")


def small_lineage() -> Any:
    return collect_lineage(
        "seed: 3\n", seed=3, env_id="CartPole-v1", env_kwargs={}, backend="inline", algo="ppo"
    )


# -- rlops train ---------------------------------------------------------------------------


def test_fresh_run_records_config_hash_as_file_and_manifest_do(cartpole_run: RunResult) -> None:
    run_dir = cartpole_run.run_dir
    config_bytes = (run_dir / "config.yaml").read_bytes()
    lineage = read_lineage(run_dir)
    assert lineage["format"] == FORMAT and lineage["format_version"] == FORMAT_VERSION
    assert lineage["config"].encode() == config_bytes
    assert lineage["config_sha256"] == sha256(config_bytes)
    manifest = rlops.load_policy(cartpole_run.artifact_path).manifest
    assert manifest["training"]["config_sha256"] == lineage["config_sha256"]
    assert manifest["training"]["seed"] == lineage["seed"]


def test_fresh_run_records_env_algo_runtime_packages_and_host(cartpole_run: RunResult) -> None:
    lineage = read_lineage(cartpole_run.run_dir)
    assert lineage["kind"] == "online"
    assert lineage["env"] == {"id": "rlops/CartPole-v1", "kwargs": {}}
    assert (lineage["algo"], lineage["backend"], lineage["num_actors"], lineage["mode"]) == (
        "ppo",
        "inline",
        1,
        "sync",
    )
    assert set(lineage["packages"]) == {"python", "numpy", "torch", "gymnasium"}
    assert all(isinstance(v, str) for v in lineage["packages"].values())
    assert lineage["host"]["platform"] and lineage["data"] == [] and lineage["resumes"] == []
    assert lineage["code"]["rlops_version"] == rlops.__version__
    assert Path(lineage["code"]["source"]) == Path(rlops.__file__).resolve().parent
    assert lineage["created_at"].endswith("+00:00")


@pytest.mark.skipif(not IN_GIT_CHECKOUT, reason="needs git and rlops as a git checkout")
def test_git_fields_describe_this_checkout(cartpole_run: RunResult) -> None:
    code = read_lineage(cartpole_run.run_dir)["code"]
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert code["git_commit"] is not None and re.fullmatch(r"[0-9a-f]{40}", code["git_commit"])
    assert code["git_commit"] == head
    assert isinstance(code["git_dirty"], bool)


def test_git_fields_are_null_without_git_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no git
    code = collect_code()
    assert code["git_commit"] is None and code["git_dirty"] is None
    assert code["rlops_version"] == rlops.__version__
    write_lineage(tmp_path, small_lineage())
    assert read_lineage(tmp_path)["code"]["git_commit"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_fields_are_null_when_rlops_is_untracked_in_an_enclosing_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel in a virtualenv inside some other repository: not that repository's commit."""
    repo = tmp_path / "other"
    package = repo / ".venv" / "site-packages" / "rlops"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (repo / "README").write_text("x")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(rlops, "__file__", str(package / "__init__.py"))
    code = collect_code()
    assert code["git_commit"] is None and code["git_dirty"] is None
    assert code["source"] == str(package.resolve())


def test_resume_keeps_the_original_lineage_and_appends_the_resume(
    cartpole_run: RunResult, tmp_path: Path
) -> None:
    run_dir = Path(shutil.copytree(cartpole_run.run_dir, tmp_path / "done"))
    before = lineage_json(run_dir)
    resumed = train(resume=run_dir)
    after = lineage_json(run_dir)
    assert len(after["resumes"]) == 1
    assert after["resumes"][0]["code"]["rlops_version"] == rlops.__version__
    assert {**after, "resumes": []} == before  # nothing else rewritten
    manifest = rlops.load_policy(resumed.artifact_path).manifest
    assert manifest["training"]["config_sha256"] == before["config_sha256"]


def test_resume_of_a_run_without_lineage_writes_none(
    cartpole_run: RunResult, tmp_path: Path
) -> None:
    """Its first part's code is unknown: recording today's would be a false lineage."""
    run_dir = Path(shutil.copytree(cartpole_run.run_dir, tmp_path / "old"))
    (run_dir / LINEAGE_FILENAME).unlink()
    train(resume=run_dir)
    assert not (run_dir / LINEAGE_FILENAME).exists()


def test_resume_leaves_a_malformed_lineage_alone_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / LINEAGE_FILENAME).write_text("{broken")
    with pytest.warns(UserWarning, match="not recording this resume"):
        record_resume(tmp_path)
    assert (tmp_path / LINEAGE_FILENAME).read_text() == "{broken"


# -- rlops train-offline -------------------------------------------------------------------


def test_offline_run_records_the_decision_log_hash(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(
        "".join(
            DecisionRecord(
                decision_id=f"d{i}",
                timestamp=float(i),
                unit_id=f"u{i}",
                step=0,
                observation=[float(i % 3), 1.0],
                action=i % 2,
                propensity=0.5,
                policy_version="sha256:logger",
                arm="production",
                reward=float(i % 2),
            ).to_json()
            + "\n"
            for i in range(64)
        ),
        encoding="utf-8",
    )
    out = tmp_path / "run"
    parser = argparse.ArgumentParser(prog="rlops")
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["--log", str(log), "--out", str(out), "--algo", "bandit-ips", "--n-actions", "2"]
    args = parser.parse_args(
        ["train-offline", *argv, "--steps", "5", "--seed", "4", "--no-progress"]
    )
    assert args.func(args) == 0

    lineage = read_lineage(out)
    assert lineage["kind"] == "offline" and lineage["algo"] == "bandit-ips"
    assert lineage["seed"] == 4 and lineage["env"] == {"id": None, "kwargs": {}}
    [entry] = lineage["data"]
    content = log.read_bytes()
    assert entry["sha256"] == sha256(content) and entry["bytes"] == len(content)
    assert Path(entry["path"]) == log.resolve()
    manifest = rlops.load_policy(out / "artifact").manifest
    assert entry.get("records") == 64
    assert entry.get("records_sha256") == manifest["lineage"]["log"]["records_sha256"]
    settings = yaml.safe_load(lineage["config"])
    assert settings["algo"] == "bandit-ips" and settings["seed"] == 4
    assert settings["n_actions"] == 2 and settings["action_start"] == 0
    assert settings["hyperparameters"]["steps"] == 5
    assert settings["hyperparameters"] == manifest["training"]["hyperparameters"]


# -- reading: refusals name the file and the field -----------------------------------------


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()
MALFORMED = {
    "missing_seed": ("seed", _DELETE, "'seed' is missing"),
    "seed_as_text": ("seed", "3", "'seed' must be int, got str"),
    "seed_as_bool": ("seed", True, "'seed' must be int, got bool"),
    "commit_not_hex": ("code.git_commit", "main", "'code.git_commit' must be a 40- or 64-hex"),
    "dirty_as_text": ("code.git_dirty", "yes", "'code.git_dirty' must be bool or null"),
    "missing_env_id": ("env.id", _DELETE, "'env.id' is missing"),
    "foreign_format": ("format", "something.else", "'format' must be 'rlops.lineage'"),
    "newer_version": ("format_version", 2, "'format_version' is 2; this rlops reads version 1"),
    "edited_config": ("config", "seed: 4\n", "'config_sha256' does not match"),
    "bad_data_hash": ("data", [{"path": "x", "sha256": "00", "bytes": 1}], "'data[0].sha256'"),
    "data_not_list": ("data", {}, "'data' must be list, got dict"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_lineage_is_a_config_error_naming_file_and_field(
    case: str, tmp_path: Path
) -> None:
    key, value, message = MALFORMED[case]
    lineage = copy.deepcopy(dict(small_lineage()))
    _set(lineage, key, value)
    (tmp_path / LINEAGE_FILENAME).write_text(json.dumps(lineage))
    with pytest.raises(ConfigError) as info:
        read_lineage(tmp_path)
    assert str(tmp_path / LINEAGE_FILENAME) in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must hold a JSON object")],
)
def test_unparsable_lineage_is_a_config_error(text: str, message: str, tmp_path: Path) -> None:
    (tmp_path / LINEAGE_FILENAME).write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_lineage(tmp_path)


def test_missing_lineage_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no lineage file"):
        read_lineage(tmp_path)


# -- writing -------------------------------------------------------------------------------


def test_round_trip_and_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = small_lineage()
    path = write_lineage(tmp_path, first)
    assert read_lineage(tmp_path) == first
    old = path.read_bytes()

    def refuse(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    second = copy.deepcopy(first)
    second["seed"] = 99
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_lineage(tmp_path, second)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [LINEAGE_FILENAME]  # no temp file


def test_data_files_are_hashed_in_full(tmp_path: Path) -> None:
    blob = tmp_path / "data.bin"
    content = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    blob.write_bytes(content)
    lineage = collect_lineage(
        "", seed=0, env_id=None, env_kwargs={}, backend="inline", algo="cql", data=[blob]
    )
    assert lineage["data"] == [
        {"path": str(blob.resolve()), "sha256": sha256(content), "bytes": len(content)}
    ]


def test_module_doctests() -> None:
    import doctest

    import rlops.runtime.lineage as module

    assert doctest.testmod(module).failed == 0
