"""SAC on Pendulum-v1: rlops vs Stable-Baselines3, throughput and final return.

Both libraries train SAC on Gymnasium's ``Pendulum-v1`` with the RL Zoo
hyperparameters for SB3 (``sac.yml``: learning rate 1e-3, everything else SB3's
default: MLP (256, 256) ReLU actor and twin critics, 1 env, buffer 1e6, learning
starts 100, batch 256, tau 0.005, gamma 0.99, train_freq 1 env step with 1
gradient step, entropy coefficient learned from 1.0 ("auto"), 2e4 env steps, CPU):

* ``sb3``: ``SAC("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1))`` (DummyVecEnv);
* ``rlops``: :func:`rlops.runtime.train` on ``gym:Pendulum-v1`` (Gymnasium
  ``SyncVectorEnv``, same-step autoreset) with the same hyperparameters and
  SB3's update order (alpha -> critics -> actor -> Polyak target).

rlops keeps its default entropy target ``-act_dim`` on the log-probability of
the env-scale action, SB3 uses ``-act_dim`` on that of the [-1, 1] action; see
:class:`rlops.algos.sac.SACConfig` (``target_entropy``).

Both evaluate 10 deterministic (mean-action) episodes on separate Pendulum-v1
envs (5 in parallel) at the first update boundary at or past every 5k env
steps, and once more at the end. Measured, per seed:

* ``steps_per_s``: total training env steps / training wall time, where the
  training clock is paused during evaluations (rlops: ``Evaluation.train_time_s``;
  SB3: a callback that stops the clock around ``evaluate_policy``);
* ``final_return``: mean return of the last evaluation (target: >= -200);
* rlops only, ``phase_s``: seconds per timed phase of the training loop (``env``,
  ``forward``, ``learn``, ...), summed from the ``perf/time_*_s`` metrics
  (logged every 1000 env steps).

Runs are interleaved (sb3 seed 0, rlops seed 0, rlops seed 1, sb3 seed 1, ...;
the order alternates per seed), both use ``torch.set_num_threads(--threads)``,
and a short untimed warm-up of each goes first, so machine-load drift hits both
alike; ``throughput_ratio`` is the median over seeds of the per-seed rlops/sb3
ratio. SAC makes one gradient step per env step, so a run takes minutes; the
default is one seed. Progress goes to stderr, one line per run; the last stdout
line is one JSON object. Run it with::

    .venv/bin/python benchmarks/sac_vs_sb3.py                 # 1 seed, 2e4 steps
    .venv/bin/python benchmarks/sac_vs_sb3.py --quick         # smoke run: 3000 steps, 1 seed
    .venv/bin/python benchmarks/sac_vs_sb3.py --seeds 0 1 2 --threads 1

Needs stable-baselines3 (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from _harness import median, phase_seconds, rounded, sb3_eval_clock
from rlops.algos.sac import SACConfig
from rlops.runtime import (
    EnvConfig,
    EvalConfig,
    ExperimentConfig,
    LogConfig,
    RuntimeConfig,
    train,
)

ENV_ID = "Pendulum-v1"
TARGET_RETURN = -200.0
TARGET_RATIO = 2.0
NUM_ENVS = 1
LR = 1e-3
BUFFER_SIZE = 1_000_000
LEARNING_STARTS = 100
BATCH_SIZE = 256
TAU = 0.005
GAMMA = 0.99
TRAIN_FREQ = 1
GRADIENT_STEPS = 1
ENT_COEF_INIT = 1.0
HIDDEN_SIZES = (256, 256)
EVAL_EVERY = 5_000
EVAL_EPISODES = 10
EVAL_ENVS = 5
EVAL_SEED_OFFSET = 1_000_003  # same offset rlops uses for its evaluation envs
LOG_EVERY = 1_000  # rlops metrics window (one update per env step: log sparsely)
WARMUP_STEPS = 500  # past learning_starts, so gradient steps are warmed up too
INSTALL_HINT = (
    "sac_vs_sb3: stable-baselines3 is not installed; "
    "install with `pip install -e '.[bench]'` (or run `make bench`)"
)


@dataclass
class RunStats:
    """One training run of one library.

    Attributes:
        lib: ``"rlops"`` or ``"sb3"``.
        seed: the run's seed.
        env_steps: training env steps done.
        train_time_s: training wall time, evaluation excluded.
        wall_s: wall time of the whole call (setup, evaluations, saving included).
        evals: ``(env_steps, train_time_s, mean_return)`` per evaluation.
        phase_s: rlops only: seconds per timed loop phase (``perf/time_<phase>_s``).
    """

    lib: str
    seed: int
    env_steps: int
    train_time_s: float
    wall_s: float
    evals: list[tuple[int, float, float]] = field(default_factory=list)
    phase_s: dict[str, float] = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        return self.env_steps / self.train_time_s

    @property
    def final_return(self) -> float | None:
        return self.evals[-1][2] if self.evals else None

    @property
    def best_return(self) -> float | None:
        return max(ret for _, _, ret in self.evals) if self.evals else None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seed": self.seed,
            "env_steps": self.env_steps,
            "train_time_s": round(self.train_time_s, 3),
            "wall_s": round(self.wall_s, 3),
            "steps_per_s": round(self.steps_per_s, 1),
            "final_return": rounded(self.final_return, 2),
            "best_return": rounded(self.best_return, 2),
            "evals": [[s, round(t, 3), round(r, 2)] for s, t, r in self.evals],
        }
        if self.phase_s:
            out["phase_s"] = {k: round(v, 3) for k, v in self.phase_s.items()}
        return out


def run_rlops(seed: int, total_steps: int, threads: int) -> RunStats:
    """Train rlops SAC with the RL Zoo Pendulum hyperparameters."""
    cfg = ExperimentConfig(
        name="bench-sac-vs-sb3",
        seed=seed,
        total_steps=total_steps,
        env=EnvConfig(id=f"gym:{ENV_ID}", num_envs=NUM_ENVS),
        algo=SACConfig(
            lr=LR,
            buffer_size=BUFFER_SIZE,
            learning_starts=LEARNING_STARTS,
            batch_size=BATCH_SIZE,
            gamma=GAMMA,
            n_step=1,
            tau=TAU,
            train_freq=TRAIN_FREQ,
            gradient_steps=GRADIENT_STEPS,
            target_update_interval=1,
            ent_coef=None,  # learned, as SB3's "auto"
            ent_coef_init=ENT_COEF_INIT,
            hidden_sizes=HIDDEN_SIZES,
            activation="relu",
            max_grad_norm=None,
        ),
        eval=EvalConfig(
            every_steps=EVAL_EVERY,
            episodes=EVAL_EPISODES,
            num_envs=EVAL_ENVS,
            deterministic=True,
        ),
        runtime=RuntimeConfig(torch_threads=threads, checkpoint_every=0),
        log=LogConfig(tensorboard=False, progress=False, every_steps=LOG_EVERY),
    )
    torch.set_num_threads(threads)  # train() sets it too, from runtime.torch_threads
    with tempfile.TemporaryDirectory(prefix="rlops-bench-") as tmp:
        start = time.perf_counter()
        result = train(cfg, out_dir=tmp)
        wall = time.perf_counter() - start
        phases = phase_seconds(Path(result.run_dir) / "metrics.jsonl")
    evals = [(e.env_steps, e.train_time_s, e.mean_return) for e in result.evaluations]
    # The final evaluation runs at the last step, so its train_time_s is the total.
    return RunStats("rlops", seed, result.env_steps, evals[-1][1], wall, evals, phases)


def run_sb3(seed: int, total_steps: int, threads: int) -> RunStats:
    """Train SB3 SAC with the RL Zoo Pendulum hyperparameters (``sac.yml``)."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)
    start = time.perf_counter()
    env = make_vec_env(ENV_ID, n_envs=NUM_ENVS, seed=seed)
    eval_env = make_vec_env(ENV_ID, n_envs=EVAL_ENVS, seed=seed + EVAL_SEED_OFFSET)
    model = SAC(
        "MlpPolicy",
        env,
        learning_rate=LR,
        buffer_size=BUFFER_SIZE,
        learning_starts=LEARNING_STARTS,
        batch_size=BATCH_SIZE,
        tau=TAU,
        gamma=GAMMA,
        train_freq=TRAIN_FREQ,
        gradient_steps=GRADIENT_STEPS,
        ent_coef="auto",
        target_update_interval=1,
        policy_kwargs={"net_arch": list(HIDDEN_SIZES)},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    clock = sb3_eval_clock(eval_env, EVAL_EVERY, EVAL_EPISODES)
    model.learn(total_timesteps=total_steps, callback=clock)
    wall = time.perf_counter() - start
    env.close()
    eval_env.close()
    return RunStats("sb3", seed, int(model.num_timesteps), clock.train_time_s, wall, clock.evals)


RUNNERS = {"rlops": run_rlops, "sb3": run_sb3}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print the JSON result as the last stdout line.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The result dict that was printed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-steps", type=int, default=None, help="default 20000")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3000 steps, seed 0 (unless given)"
    )
    parser.add_argument(
        "--only",
        choices=sorted(RUNNERS),
        default=None,
        help="run one library only (no ratio); for checking one side",
    )
    args = parser.parse_args(argv)
    total_steps: int = args.total_steps or (3_000 if args.quick else 20_000)
    seeds: list[int] = args.seeds or [0]
    libs = [args.only] if args.only else list(RUNNERS)

    try:
        import stable_baselines3
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(2)

    # Untimed warm-up: lazy imports, first torch ops, CPU frequency.
    for lib in libs:
        RUNNERS[lib](seeds[0], WARMUP_STEPS, args.threads)
        print(f"warmed up {lib}", file=sys.stderr)

    runs: dict[str, list[RunStats]] = {"rlops": [], "sb3": []}
    for i, seed in enumerate(seeds):
        order = ["sb3", "rlops"] if i % 2 == 0 else ["rlops", "sb3"]
        for lib in order:
            if lib not in libs:
                continue
            stats = RUNNERS[lib](seed, total_steps, args.threads)
            runs[lib].append(stats)
            print(
                f"{lib:5s} seed {seed}: {stats.env_steps} steps in {stats.train_time_s:.1f}s "
                f"train ({stats.wall_s:.1f}s wall) = {stats.steps_per_s:.0f} steps/s, "
                f"final return {stats.final_return}",
                file=sys.stderr,
            )

    ratios = [
        r.steps_per_s / s.steps_per_s
        for r, s in zip(runs["rlops"], runs["sb3"], strict=len(libs) == 2)
    ]
    finals = {
        lib: [r.final_return for r in rs if r.final_return is not None] for lib, rs in runs.items()
    }
    ratio = median(ratios)
    rlops_final = median(finals["rlops"])
    result: dict[str, Any] = {
        "benchmark": "sac_vs_sb3",
        "env": ENV_ID,
        "seeds": seeds,
        "threads": args.threads,
        "total_steps": total_steps,
        "rlops_steps_per_s": rounded(median([r.steps_per_s for r in runs["rlops"]]), 1),
        "sb3_steps_per_s": rounded(median([r.steps_per_s for r in runs["sb3"]]), 1),
        "throughput_ratio": rounded(ratio, 3),
        "throughput_ratio_per_seed": [round(x, 3) for x in ratios],
        "rlops_final_return": rounded(rlops_final, 2),
        "sb3_final_return": rounded(median(finals["sb3"]), 2),
        "targets": {
            "throughput_ratio": TARGET_RATIO,
            "rlops_final_return": TARGET_RETURN,
            "throughput_ratio_met": None if ratio is None else ratio >= TARGET_RATIO,
            "rlops_final_return_met": None if rlops_final is None else rlops_final >= TARGET_RETURN,
        },
        "rlops_per_seed": [r.summary() for r in runs["rlops"]],
        "sb3_per_seed": [r.summary() for r in runs["sb3"]],
        "hyperparameters": {
            "num_envs": NUM_ENVS,
            "lr": LR,
            "buffer_size": BUFFER_SIZE,
            "learning_starts": LEARNING_STARTS,
            "batch_size": BATCH_SIZE,
            "tau": TAU,
            "gamma": GAMMA,
            "train_freq": TRAIN_FREQ,
            "gradient_steps": GRADIENT_STEPS,
            "target_update_interval": 1,
            "ent_coef": f"auto (init {ENT_COEF_INIT})",
            "target_entropy": "-act_dim",
            "net_arch": list(HIDDEN_SIZES),
            "activation": "relu",
            "eval": {"every": EVAL_EVERY, "episodes": EVAL_EPISODES, "deterministic": True},
            "rlops_log_every": LOG_EVERY,
        },
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
