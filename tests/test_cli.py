"""The real ``rlops`` command line, in subprocesses, with tiny budgets.

Smoke tier: every deliberate error exits 2 with exactly one ``rlops: error:``
line on stderr and no traceback; a run killed with SIGKILL resumes to the same
weights as an uninterrupted run. The bad-input processes are started together
(they are mostly interpreter start-up) to keep the module fast.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import rlops
from rlops.runtime.checkpoint import load_checkpoint, load_latest_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TIMEOUT = 120

QUIET = ["--set", "log.tensorboard=false", "--set", "log.progress=false"]


def rlops_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlops", *args]


def run_rlops(*args: str, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        rlops_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch cwd holding a copy of the packaged configs under ``configs/``."""
    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(CONFIGS, root / "configs")
    return root


@pytest.fixture(scope="module")
def trained(workdir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``rlops train configs/cartpole_ppo.yaml`` with a 1024-step budget."""
    proc = run_rlops(
        "train",
        "configs/cartpole_ppo.yaml",
        "--set",
        "total_steps=1024",
        "--set",
        "log.tensorboard=false",
        "--out",
        "run",
        cwd=workdir,
    )
    return proc, workdir / "run"


# --- happy paths ------------------------------------------------------------------------------


def test_envs_lists_builtin_ids(workdir: Path) -> None:
    proc = run_rlops("envs", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    ids = [line.split()[0] for line in proc.stdout.splitlines()]
    builtin = ["rlops/CartPole-v1", "rlops/CartPoleCrashing-v0", "rlops/Pendulum-v1"]
    assert set(builtin) <= set(ids)
    assert ids[-1] == "gym:<id>" and ids[:-1] == sorted(ids[:-1])
    as_json = json.loads(run_rlops("envs", "--json", cwd=workdir).stdout)
    assert [e["id"] for e in as_json] == ids[:-1]
    assert all(e["description"] for e in as_json)


def test_train_prints_the_artifact_and_writes_the_run(
    trained: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, run_dir = trained
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 1024
    artifact_lines = [line for line in proc.stdout.splitlines() if line.startswith("policy")]
    assert len(artifact_lines) == 1
    assert f"{Path('run') / 'artifact'}  ({summary['version'][:23]}" in artifact_lines[0]
    assert "after 1024 env steps" in proc.stdout
    assert not (run_dir / "tb").exists()  # --set log.tensorboard=false
    assert rlops.load_policy(run_dir / "artifact").version == summary["version"]


def test_eval_json_prints_one_object(
    trained: tuple[subprocess.CompletedProcess[str], Path], workdir: Path
) -> None:
    _, run_dir = trained
    proc = run_rlops(
        "eval",
        "run/artifact",
        "--env",
        "rlops/CartPole-v1",
        "--episodes",
        "3",
        "--json",
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["episodes"] == 3
    assert len(report["returns"]) == 3
    assert report["mean_return"] == pytest.approx(float(np.mean(report["returns"])))
    assert 1.0 <= report["mean_return"] <= 500.0
    assert report["env_id"] == "rlops/CartPole-v1"
    assert report["policy_version"] == rlops.load_policy(run_dir / "artifact").version
    # The CLI reports what the library computes for the same seed.
    expected = rlops.evaluate(str(run_dir / "artifact"), "rlops/CartPole-v1", 3, seed=0)
    assert report["returns"] == expected.returns


def test_resume_of_a_completed_run(
    trained: tuple[subprocess.CompletedProcess[str], Path], workdir: Path
) -> None:
    _, run_dir = trained
    copy = Path(shutil.copytree(run_dir, workdir / "run-resumed"))
    before = json.loads((copy / "summary.json").read_text())
    proc = run_rlops("train", "--resume", "run-resumed", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert f"{Path('run-resumed') / 'artifact'}" in proc.stdout
    after = json.loads((copy / "summary.json").read_text())
    assert after["weights_hash"] == before["weights_hash"]
    assert after["version"] == before["version"]
    assert after["env_steps"] == 1024


# --- bad input: exit 2, one line, no traceback ------------------------------------------------

# Every sub-env returns NaN on its NAN_STEP-th step (the 7th update of 16 steps x 4
# sub-envs); a sub-env whose episode ends on that very step hides it in final_obs
# (terminated: never read), but not all 4 do.
NAN_STEP = 100
NAN_RUN = [
    "train",
    "configs/cartpole_ppo.yaml",
    *QUIET,
    "--set", "env.id=gym:rlops.testing:NaNCartPole-v0",
    "--set", f"env.kwargs={{nan_step: {NAN_STEP}}}",
    "--set", "env.num_envs=4",
    "--set", "algo.n_steps=16",
    "--set", "algo.minibatch_size=32",
    "--set", "algo.n_epochs=2",
    "--set", "total_steps=2000",
    "--set", "runtime.checkpoint_every=64",
    "--out", "nan-run",
]  # fmt: skip

TRAIN = ["train", "configs/cartpole_ppo.yaml", *QUIET]
BAD_INPUTS: dict[str, tuple[list[str], list[str]]] = {
    "unknown_config_key": (
        [*TRAIN, "--set", "algo.lrr=1"],
        ["unknown key 'algo.lrr' (did you mean 'lr'?)", "allowed keys under 'algo':"],
    ),
    "bad_value": ([*TRAIN, "--set", "algo.lr=-1"], ["algo.lr: must be > 0, got -1.0"]),
    "missing_config": (
        ["train", "configs/nope.yaml"],
        ["config file not found: configs/nope.yaml"],
    ),
    "unknown_env": (
        [*TRAIN, "--set", "env.id=rlops/CartPoel-v1", "--out", "unknown-env-run"],
        ["unknown env id 'rlops/CartPoel-v1'", "rlops/CartPole-v1", "rlops/Pendulum-v1"],
    ),
    "wrong_format_version": (
        ["eval", "bad-version", "--env", "rlops/CartPole-v1", "--episodes", "1"],
        ["format_version 99 is not supported"],
    ),
    "tampered_manifest": (
        ["eval", "bad-manifest", "--env", "rlops/CartPole-v1", "--episodes", "1"],
        ["content hash mismatch"],
    ),
    "tampered_tensor": (
        ["eval", "bad-tensor", "--env", "rlops/CartPole-v1", "--episodes", "1"],
        ["content hash mismatch"],
    ),
    "eval_env_mismatch": (
        ["eval", "run/artifact", "--env", "rlops/Pendulum-v1", "--episodes", "1"],
        ["observations have shape (3,), the policy expects (4,)"],
    ),
    "resume_not_a_run": (["train", "--resume", "no-such-run"], ["not a run directory"]),
    "resume_with_set": (
        ["train", "--resume", "run", "--set", "seed=1"],
        ["--set, --backend, --num-actors and --mode are not allowed"],
    ),
    "nan_from_env": (NAN_RUN, [f"at step {NAN_STEP} contains NaN", "observation of env "]),
    "backend_typo": (
        ["train", "configs/cartpole_ppo.yaml", "--backend", "proces"],
        ["runtime.backend: 'proces' is not allowed", "'inline', 'process', 'ray'"],
    ),
    "actor_cannot_start": (
        [
            "train",
            "configs/cartpole_ppo.yaml",
            *QUIET,
            "--backend",
            "process",
            "--set",
            "env.id=rlops/CartPoleCrashing-v0",
            "--set",
            "env.kwargs={p_crash_reset: 1.0}",
            "--set",
            "runtime.max_restarts=0",
            "--out",
            "cannot-start",
        ],
        ["actor 0 raised", "EnvCrash", "restarts exhausted (runtime.max_restarts=0"],
    ),
    "resume_with_backend": (
        ["train", "--resume", "run", "--backend", "process"],
        ["--backend", "not allowed"],
    ),
}


def _damaged_artifacts(artifact: Path, root: Path) -> None:
    bad_version = Path(shutil.copytree(artifact, root / "bad-version"))
    manifest = json.loads((bad_version / "policy.json").read_text())
    manifest["format_version"] = 99
    (bad_version / "policy.json").write_text(json.dumps(manifest))

    bad_manifest = Path(shutil.copytree(artifact, root / "bad-manifest"))
    manifest = json.loads((bad_manifest / "policy.json").read_text())
    manifest["env_id"] = "rlops/Pendulum-v1"
    (bad_manifest / "policy.json").write_text(json.dumps(manifest))

    bad_tensor = Path(shutil.copytree(artifact, root / "bad-tensor"))
    tensors = load_file(str(bad_tensor / "model.safetensors"))
    name = sorted(tensors)[-1]
    tensors[name] = tensors[name] + np.float32(0.5)
    save_file(tensors, str(bad_tensor / "model.safetensors"))


@pytest.fixture(scope="module")
def bad_input_results(
    trained: tuple[subprocess.CompletedProcess[str], Path], workdir: Path
) -> dict[str, tuple[int, str, str]]:
    """Run every BAD_INPUTS command concurrently; ``name -> (returncode, stdout, stderr)``."""
    _, run_dir = trained
    _damaged_artifacts(run_dir / "artifact", workdir)
    procs = {
        name: subprocess.Popen(
            rlops_cmd(*args),
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in BAD_INPUTS.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=TIMEOUT)
        results[name] = (proc.returncode, out, err)
    return results


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_error_line(
    case: str, bad_input_results: dict[str, tuple[int, str, str]]
) -> None:
    code, out, err = bad_input_results[case]
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rlops: error: ")
    for expected in BAD_INPUTS[case][1]:
        assert expected in lines[0]
    assert code == 2


def test_nan_keeps_earlier_checkpoints_intact(
    bad_input_results: dict[str, tuple[int, str, str]], workdir: Path
) -> None:
    code, _, _ = bad_input_results["nan_from_env"]
    assert code == 2
    run_dir = workdir / "nan-run"
    # Checkpoints every 64 env steps (one update of 16 x 4) up to the last update
    # before the NaN (env steps 385..448);
    # keep_checkpoints=3 keeps the newest three.
    steps = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert steps == ["step_000000000256", "step_000000000320", "step_000000000384"]
    for name in steps:
        assert load_checkpoint(run_dir / "checkpoints" / name).step == int(name[5:])
    latest = load_latest_checkpoint(run_dir)
    assert latest.step == 384
    assert latest.meta["env_steps"] == 384
    assert not (run_dir / "artifact").exists()
    assert not (run_dir / "summary.json").exists()


def test_eval_on_an_env_producing_nan_fails(
    trained: tuple[subprocess.CompletedProcess[str], Path], workdir: Path
) -> None:
    # NaNCartPole's default nan_step is 50: within the first few episodes.
    proc = run_rlops(
        "eval", "run/artifact", "--env", "gym:rlops.testing:NaNCartPole-v0", "--episodes", "5",
        cwd=workdir,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("rlops: error: ")
    assert "contains NaN" in proc.stderr


# --- interruption -----------------------------------------------------------------------------


def _wait_for_checkpoints(run_dir: Path, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ckpts = run_dir / "checkpoints"
        if ckpts.is_dir() and len(list(ckpts.glob("step_*"))) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: rc={proc.returncode} {proc.stderr}")
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint in {run_dir} after {TIMEOUT} s")


def test_sigint_exits_130_with_a_resume_hint(workdir: Path) -> None:
    proc = subprocess.Popen(
        rlops_cmd(
            "train",
            "configs/cartpole_ppo.yaml",
            *QUIET,
            "--set",
            "total_steps=1000000",
            "--set",
            "runtime.checkpoint_every=1024",
            "--out",
            "interrupted",
        ),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_checkpoints(workdir / "interrupted", 1, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err.splitlines() == [
        "rlops: interrupted; continue with: rlops train --resume interrupted"
    ]
    assert load_latest_checkpoint(workdir / "interrupted").step >= 1024


KILL_STEPS = 81920  # ~10 s of training on one core


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(workdir: Path) -> None:
    args = [
        "train", "configs/cartpole_ppo.yaml", *QUIET,
        "--set", f"total_steps={KILL_STEPS}",
        "--set", "runtime.checkpoint_every=4096",
        "--set", "eval.episodes=2",
        "--set", "eval.every_steps=0",
    ]  # fmt: skip
    reference = subprocess.Popen(
        rlops_cmd(*args, "--out", "reference"),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = subprocess.Popen(
        rlops_cmd(*args, "--out", "killed"),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_checkpoints(workdir / "killed", 2, victim)
        time.sleep(0.05)  # land the kill somewhere inside a later update
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=TIMEOUT)
        assert victim.returncode == -signal.SIGKILL
        assert not (workdir / "killed" / "summary.json").exists()
        assert not (workdir / "killed" / "artifact").exists()
        killed_at = load_latest_checkpoint(workdir / "killed").step
        assert 0 < killed_at < KILL_STEPS

        resumed = run_rlops("train", "--resume", "killed", cwd=workdir)
        assert resumed.returncode == 0, resumed.stderr
        assert "Traceback" not in resumed.stderr
        _, ref_err = reference.communicate(timeout=TIMEOUT)
        assert reference.returncode == 0, ref_err
    finally:
        for proc in (victim, reference):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    want = json.loads((workdir / "reference" / "summary.json").read_text())
    got = json.loads((workdir / "killed" / "summary.json").read_text())
    assert got["env_steps"] == want["env_steps"] == KILL_STEPS
    assert got["weights_hash"] == want["weights_hash"]
    assert got["version"] == want["version"]


def test_process_backend_killed_run_leaves_no_actors_and_resumes(workdir: Path) -> None:
    """SIGKILL the learner of a 2-actor process run: its actors die with it; --resume finishes."""
    from rlops.testing import actor_processes

    total = 40960
    victim = subprocess.Popen(
        rlops_cmd(
            "train",
            "configs/cartpole_ppo.yaml",
            *QUIET,
            "--backend",
            "process",
            "--num-actors",
            "2",
            "--set",
            f"total_steps={total}",
            "--set",
            "runtime.checkpoint_every=4096",
            "--out",
            "proc-killed",
        ),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_checkpoints(workdir / "proc-killed", 1, victim)
        actors = actor_processes(victim.pid)
        assert len(actors) == 2
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=TIMEOUT)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in actors) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in actors), "orphaned actors"
    killed_at = load_latest_checkpoint(workdir / "proc-killed").step
    assert 0 < killed_at < total

    resumed = run_rlops("train", "--resume", "proc-killed", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((workdir / "proc-killed" / "summary.json").read_text())
    assert summary["env_steps"] == total
    steps = [
        json.loads(line)["step"]
        for line in (workdir / "proc-killed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # monotonic counters


def test_quickstart_smoke_with_a_tiny_budget(workdir: Path) -> None:
    """What `make demo` runs: train on Pricing, evaluate on both suites, write the reports."""
    proc = run_rlops("quickstart", "--steps", "16384", "--out", "qs", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "pricing-holdout" in out and "pricing-edge" in out
    assert "% of opt" in out and "best_fixed_price" in out
    assert "of the DP-optimal revenue" in out
    for suite in ("pricing-holdout", "pricing-edge"):
        report = workdir / "qs" / "reports" / suite
        data = json.loads((report / "report.json").read_text())
        assert data["overall"]["all"]["optimum_mean_return"] > 0
        assert (report / "report.md").is_file() and (report / "returns.png").is_file()
    assert (workdir / "qs" / "artifact" / "policy.json").is_file()
    # It ends in the registry: pricing@1 at candidate, its reports recorded as evidence.
    assert "registered pricing@1" in out and "promote pricing 1 --to production" in out
    show = run_rlops("registry", "show", "pricing@candidate", cwd=workdir)
    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)
    assert shown["aliases"] == ["candidate"] and set(shown["evidence"]) == {"holdout", "edge"}
    assert shown["lineage"]["complete"] is True
    # Twice: training is deterministic, the second run finds its policy already registered.
    again = run_rlops("quickstart", "--steps", "16384", "--out", "qs-again", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "pricing@1 is already this policy" in again.stdout


def test_evaluate_unknown_suite_and_baseline(workdir: Path) -> None:
    proc = run_rlops("evaluate", "no-artifact", "--suite", "nope", cwd=workdir)
    assert proc.returncode == 2
    assert proc.stderr.startswith("rlops: error: --suite: unknown suite 'nope'; choose one of")
    assert "Traceback" not in proc.stderr
