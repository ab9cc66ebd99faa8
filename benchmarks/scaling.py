"""PPO env throughput across backends and actor counts, and against Ray RLlib, in one run.

Two workloads, both PPO with RLlib's default batch shape (train batch 2048 env
steps, minibatch 256, 10 epochs; [64, 64] tanh MLPs; gamma 0.98, lambda 0.8,
clip 0.2, lr 1e-3 constant):

* ``cartpole``: Gymnasium's ``CartPole-v1`` (``gym:CartPole-v1`` in rlops,
  ``"CartPole-v1"`` in RLlib), 8 envs per actor. Runs rlops ``inline``, then
  ``process`` and ``ray`` with 1, 2 and 4 actors, and RLlib PPO with the same
  number of env runners, 8 envs each, and the same train batch size.
  ``rllib_ratio`` = rlops-on-ray steps/s / RLlib steps/s at the same actor
  count (the headline is the median over actor counts).
* ``slow_env``: ``rlops/CartPoleCrashing-v0`` with no faults but
  ``step_cost_s`` of busy CPU work per sub-env step (default 100 us: an
  expensive simulator, so that env stepping dominates, as the issue allows);
  rlops ``inline`` vs ``process`` with 1, 2 and 4 actors.
  ``process2_vs_inline`` = process with 2 actors / inline.

The n-step fragment length is ``2048 / (8 * actors)`` so every backend learns
from the same 2048-step batches; all rlops runs are sync. steps/s = env steps
/ training wall time, actor start-up excluded (rlops: ``train_time_s``,
which also excludes evaluation; RLlib: summed ``algo.train()`` time, Ray
start-up and algorithm build excluded). Both sides use 1 torch thread.

RLlib runs in its own virtualenv (it pins gymnasium 1.2.2)::

    python3.11 -m venv .venv-rllib
    .venv-rllib/bin/pip install -r benchmarks/requirements-rllib.txt

and this script calls ``benchmarks/_rllib_ppo.py`` with it (``--rllib-python``);
without that venv the RLlib fields are null and a note says why. Run::

    .venv/bin/python benchmarks/scaling.py                    # everything, ~10 min
    .venv/bin/python benchmarks/scaling.py --quick            # 1 and 2 actors, fewer steps
    .venv/bin/python benchmarks/scaling.py --backends inline process --no-rllib

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from rlops.algos.ppo import PPOConfig
from rlops.runtime import (
    EnvConfig,
    EvalConfig,
    ExperimentConfig,
    LogConfig,
    RuntimeConfig,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
TRAIN_BATCH = 2048
ENVS_PER_ACTOR = 8


def ppo_config(
    env: EnvConfig, backend: str, actors: int, total_steps: int, seed: int
) -> ExperimentConfig:
    """The shared PPO setup for ``actors`` actors on ``backend``."""
    n_steps = TRAIN_BATCH // (ENVS_PER_ACTOR * actors)
    return ExperimentConfig(
        name=f"scaling-{backend}-{actors}",
        seed=seed,
        total_steps=total_steps,
        env=env,
        algo=PPOConfig(
            n_steps=n_steps,
            minibatch_size=256,
            n_epochs=10,
            lr=1e-3,
            gamma=0.98,
            gae_lambda=0.8,
            clip_coef=0.2,
            hidden_sizes=(64, 64),
        ),
        eval=EvalConfig(episodes=1, num_envs=1, env_id="gym:CartPole-v1"),
        log=LogConfig(progress=False, tensorboard=False),
        runtime=RuntimeConfig(
            backend=backend,  # type: ignore[arg-type]
            num_actors=actors,
            torch_threads=1,
            checkpoint_every=0,
            fragment_timeout_s=300.0,
            start_timeout_s=300.0,
        ),
    )


def run_rlops(config: ExperimentConfig) -> dict[str, Any]:
    """Train once; steps/s over training time (start-up and evaluation excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(config, out_dir=Path(tmp) / "run")
        wall = time.perf_counter() - started
    train_s = float(result.evaluations[-1].train_time_s)
    return {
        "steps_per_s": round(result.env_steps / train_s, 1),
        "env_steps": result.env_steps,
        "train_time_s": round(train_s, 3),
        "wall_s": round(wall, 3),
        "restarts": result.metrics.get("runtime/actor_restarts", 0.0),
        "final_return": round(result.final_return, 1),
    }


def run_rllib(python: str, actors: int, total_steps: int, seed: int) -> dict[str, Any]:
    """RLlib PPO in its own venv; the JSON its runner printed."""
    cmd = [
        python,
        str(ROOT / "benchmarks" / "_rllib_ppo.py"),
        "--num-env-runners",
        str(actors),
        "--num-envs-per-runner",
        str(ENVS_PER_ACTOR),
        "--train-batch-size",
        str(TRAIN_BATCH),
        "--minibatch-size",
        "256",
        "--epochs",
        "10",
        "--total-steps",
        str(total_steps),
        "--seed",
        str(seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"RLlib run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total-steps", type=int, default=40_960)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--backends", nargs="+", default=["inline", "process", "ray"], help="rlops backends"
    )
    parser.add_argument("--step-cost-s", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rllib-python", default=str(ROOT / ".venv-rllib" / "bin" / "python"))
    parser.add_argument("--no-rllib", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 and 2 actors, 20k steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.actors, args.total_steps = [1, 2], 20_480
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    workloads = {
        "cartpole": EnvConfig(id="gym:CartPole-v1", num_envs=ENVS_PER_ACTOR),
        "slow_env": EnvConfig(
            id="rlops/CartPoleCrashing-v0",
            num_envs=ENVS_PER_ACTOR,
            kwargs={"step_cost_s": args.step_cost_s},
        ),
    }
    results: dict[str, dict[str, Any]] = {name: {} for name in workloads}
    for name, env in workloads.items():
        backends = [b for b in args.backends if name == "cartpole" or b != "ray"]
        for backend in backends:
            for actors in [1] if backend == "inline" else args.actors:
                key = f"{backend}_{actors}"
                config = ppo_config(env, backend, actors, args.total_steps, args.seed)
                stats = run_rlops(config)
                results[name][key] = stats
                log(f"{name:9s} {key:10s} {stats['steps_per_s']:>9.1f} steps/s")

    rllib: dict[str, Any] = {}
    note = None
    if args.no_rllib:
        note = "RLlib skipped (--no-rllib)"
    elif not Path(args.rllib_python).exists():
        note = (
            f"RLlib skipped: {args.rllib_python} not found; create it with "
            "python3.11 -m venv .venv-rllib && "
            ".venv-rllib/bin/pip install -r benchmarks/requirements-rllib.txt"
        )
    else:
        for actors in args.actors:
            out = run_rllib(args.rllib_python, actors, args.total_steps, args.seed)
            rllib[f"rllib_{actors}"] = out
            log(f"cartpole  rllib_{actors:<4d} {out['rllib_steps_per_s']:>9.1f} steps/s")
    if note:
        log(note)

    cart, slow = results["cartpole"], results["slow_env"]
    ratios: dict[str, float] = {}
    for actors in args.actors:
        if f"ray_{actors}" in cart and f"rllib_{actors}" in rllib:
            ours = cart[f"ray_{actors}"]["steps_per_s"]
            theirs = rllib[f"rllib_{actors}"]["rllib_steps_per_s"]
            ratios[str(actors)] = round(ours / theirs, 3)
    headline = sorted(ratios.values())[len(ratios) // 2] if ratios else None
    process2 = None
    if "process_2" in slow and "inline_1" in slow:
        process2 = round(slow["process_2"]["steps_per_s"] / slow["inline_1"]["steps_per_s"], 3)
    print(
        json.dumps(
            {
                "benchmark": "scaling",
                "total_steps": args.total_steps,
                "train_batch": TRAIN_BATCH,
                "envs_per_actor": ENVS_PER_ACTOR,
                "step_cost_s": args.step_cost_s,
                "rllib_ratio": headline,
                "rllib_ratio_per_actors": ratios,
                "process2_vs_inline": process2,
                "steps_per_s": {
                    "cartpole": {k: v["steps_per_s"] for k, v in cart.items()},
                    "slow_env": {k: v["steps_per_s"] for k, v in slow.items()},
                    "rllib": {k: v["rllib_steps_per_s"] for k, v in rllib.items()},
                },
                "runs": results,
                "rllib_runs": rllib,
                "note": note,
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
