"""DQN on CartPole-v1: rlops vs Stable-Baselines3, throughput and time to solve.

Both libraries train DQN on Gymnasium's ``CartPole-v1`` with the RL Zoo
hyperparameters for SB3 (``dqn.yml``: MLP (256, 256) ReLU, 1 env, learning rate
2.3e-3, batch 64, buffer 1e5, learning starts 1000, gamma 0.99, target update
every 10 env steps, train_freq 256 env steps with 128 gradient steps each,
epsilon 1 -> 0.04 over the first 16% of training, 5e4 env steps, CPU):

* ``sb3``: ``DQN("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1))`` (DummyVecEnv);
* ``rlops``: :func:`rlops.runtime.train` on ``gym:CartPole-v1`` (Gymnasium
  ``SyncVectorEnv``, same-step autoreset) with the same hyperparameters and the
  same algorithm as SB3's DQN: no double Q, no dueling head, 1-step targets,
  uniform replay, Huber loss, hard target copies, gradient-norm clip 10.

Both evaluate 10 deterministic (greedy) episodes on separate CartPole-v1 envs
(5 in parallel) at the first update boundary at or past every 5k env steps, and
once more at the end. Measured, per seed:

* ``steps_per_s``: total training env steps / training wall time, where the
  training clock is paused during evaluations (rlops: ``Evaluation.train_time_s``;
  SB3: a callback that stops the clock around ``evaluate_policy``);
* ``s_to_475``: training time at the first evaluation whose mean return is >= 475
  ("solved"); null if no evaluation reached it;
* rlops only, ``phase_s``: seconds per timed phase of the training loop (``env``,
  ``forward``, ``learn``, ...), summed from the ``perf/time_*_s`` metrics.

Runs are interleaved (sb3 seed 0, rlops seed 0, rlops seed 1, sb3 seed 1, ...;
the order alternates per seed), both use ``torch.set_num_threads(--threads)``,
and a short untimed warm-up of each goes first, so machine-load drift hits both
alike; ``throughput_ratio`` is the median over seeds of the per-seed rlops/sb3
ratio. Progress goes to stderr, one line per run; the last stdout line is one
JSON object. Run it with::

    .venv/bin/python benchmarks/dqn_vs_sb3.py                 # 3 seeds, 5e4 steps
    .venv/bin/python benchmarks/dqn_vs_sb3.py --quick         # smoke run: 2e4 steps, 1 seed
    .venv/bin/python benchmarks/dqn_vs_sb3.py --seeds 0 1 2 3 4 --threads 1

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
from rlops.algos.dqn import DQNConfig
from rlops.runtime import (
    EnvConfig,
    EvalConfig,
    ExperimentConfig,
    LogConfig,
    RuntimeConfig,
    train,
)

ENV_ID = "CartPole-v1"
SOLVED_RETURN = 475.0
NUM_ENVS = 1
LR = 2.3e-3
BATCH_SIZE = 64
BUFFER_SIZE = 100_000
LEARNING_STARTS = 1_000
GAMMA = 0.99
TARGET_UPDATE_INTERVAL = 10
TRAIN_FREQ = 256
GRADIENT_STEPS = 128
EXPLORATION_FRACTION = 0.16
EXPLORATION_FINAL_EPS = 0.04
HIDDEN_SIZES = (256, 256)
MAX_GRAD_NORM = 10.0
EVAL_EVERY = 5_000
EVAL_EPISODES = 10
EVAL_ENVS = 5
EVAL_SEED_OFFSET = 1_000_003  # same offset rlops uses for its evaluation envs
WARMUP_STEPS = 2_048  # past learning_starts, so gradient steps are warmed up too
INSTALL_HINT = (
    "dqn_vs_sb3: stable-baselines3 is not installed; "
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
    def s_to_475(self) -> float | None:
        for _, t, ret in self.evals:
            if ret >= SOLVED_RETURN:
                return t
        return None

    @property
    def steps_to_475(self) -> int | None:
        for steps, _, ret in self.evals:
            if ret >= SOLVED_RETURN:
                return steps
        return None

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
            "solved": self.s_to_475 is not None,
            "s_to_475": None if self.s_to_475 is None else round(self.s_to_475, 3),
            "steps_to_475": self.steps_to_475,
            "final_return": self.final_return,
            "best_return": self.best_return,
            "evals": [[s, round(t, 3), round(r, 2)] for s, t, r in self.evals],
        }
        if self.phase_s:
            out["phase_s"] = {k: round(v, 3) for k, v in self.phase_s.items()}
        return out


def run_rlops(seed: int, total_steps: int, threads: int) -> RunStats:
    """Train rlops DQN with the RL Zoo CartPole hyperparameters, SB3's DQN variant."""
    cfg = ExperimentConfig(
        name="bench-dqn-vs-sb3",
        seed=seed,
        total_steps=total_steps,
        env=EnvConfig(id=f"gym:{ENV_ID}", num_envs=NUM_ENVS),
        algo=DQNConfig(
            lr=LR,
            batch_size=BATCH_SIZE,
            buffer_size=BUFFER_SIZE,
            learning_starts=LEARNING_STARTS,
            gamma=GAMMA,
            target_update_interval=TARGET_UPDATE_INTERVAL,
            tau=1.0,
            train_freq=TRAIN_FREQ,
            gradient_steps=GRADIENT_STEPS,
            exploration_fraction=EXPLORATION_FRACTION,
            exploration_initial_eps=1.0,
            exploration_final_eps=EXPLORATION_FINAL_EPS,
            max_grad_norm=MAX_GRAD_NORM,
            hidden_sizes=HIDDEN_SIZES,
            activation="relu",
            double_q=False,
            dueling=False,
            n_step=1,
            prioritized=False,
            huber=True,
        ),
        eval=EvalConfig(
            every_steps=EVAL_EVERY,
            episodes=EVAL_EPISODES,
            num_envs=EVAL_ENVS,
            deterministic=True,
        ),
        runtime=RuntimeConfig(torch_threads=threads, checkpoint_every=0),
        log=LogConfig(tensorboard=False, progress=False),
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
    """Train SB3 DQN with the RL Zoo CartPole hyperparameters (``dqn.yml``)."""
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)
    start = time.perf_counter()
    env = make_vec_env(ENV_ID, n_envs=NUM_ENVS, seed=seed)
    eval_env = make_vec_env(ENV_ID, n_envs=EVAL_ENVS, seed=seed + EVAL_SEED_OFFSET)
    model = DQN(
        "MlpPolicy",
        env,
        learning_rate=LR,
        batch_size=BATCH_SIZE,
        buffer_size=BUFFER_SIZE,
        learning_starts=LEARNING_STARTS,
        gamma=GAMMA,
        target_update_interval=TARGET_UPDATE_INTERVAL,
        tau=1.0,
        train_freq=TRAIN_FREQ,
        gradient_steps=GRADIENT_STEPS,
        exploration_fraction=EXPLORATION_FRACTION,
        exploration_initial_eps=1.0,
        exploration_final_eps=EXPLORATION_FINAL_EPS,
        max_grad_norm=MAX_GRAD_NORM,
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
    parser.add_argument("--total-steps", type=int, default=None, help="default 50000")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 20000 steps, seed 0 (unless given)"
    )
    parser.add_argument(
        "--only",
        choices=sorted(RUNNERS),
        default=None,
        help="run one library only (no ratio); for checking one side",
    )
    args = parser.parse_args(argv)
    total_steps: int = args.total_steps or (20_000 if args.quick else 50_000)
    seeds: list[int] = args.seeds or ([0] if args.quick else [0, 1, 2])
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
            to_475 = "-" if stats.s_to_475 is None else f"{stats.s_to_475:.1f}s"
            print(
                f"{lib:5s} seed {seed}: {stats.env_steps} steps in {stats.train_time_s:.1f}s "
                f"train ({stats.wall_s:.1f}s wall) = {stats.steps_per_s:.0f} steps/s, "
                f"to-475 {to_475}, final return {stats.final_return}",
                file=sys.stderr,
            )

    ratios = [
        r.steps_per_s / s.steps_per_s
        for r, s in zip(runs["rlops"], runs["sb3"], strict=len(libs) == 2)
    ]
    solved = {lib: [r.s_to_475 for r in rs if r.s_to_475 is not None] for lib, rs in runs.items()}
    result: dict[str, Any] = {
        "benchmark": "dqn_vs_sb3",
        "env": ENV_ID,
        "seeds": seeds,
        "threads": args.threads,
        "total_steps": total_steps,
        "rlops_steps_per_s": rounded(median([r.steps_per_s for r in runs["rlops"]]), 1),
        "sb3_steps_per_s": rounded(median([r.steps_per_s for r in runs["sb3"]]), 1),
        "throughput_ratio": rounded(median(ratios), 3),
        "throughput_ratio_per_seed": [round(x, 3) for x in ratios],
        "rlops_seeds_solved": len(solved["rlops"]),
        "sb3_seeds_solved": len(solved["sb3"]),
        "rlops_s_to_475_median": rounded(median(solved["rlops"]), 2),
        "sb3_s_to_475_median": rounded(median(solved["sb3"]), 2),
        "rlops_final_return_median": rounded(
            median([r.final_return for r in runs["rlops"] if r.final_return is not None]), 2
        ),
        "sb3_final_return_median": rounded(
            median([r.final_return for r in runs["sb3"] if r.final_return is not None]), 2
        ),
        "rlops_per_seed": [r.summary() for r in runs["rlops"]],
        "sb3_per_seed": [r.summary() for r in runs["sb3"]],
        "hyperparameters": {
            "num_envs": NUM_ENVS,
            "lr": LR,
            "batch_size": BATCH_SIZE,
            "buffer_size": BUFFER_SIZE,
            "learning_starts": LEARNING_STARTS,
            "gamma": GAMMA,
            "target_update_interval": TARGET_UPDATE_INTERVAL,
            "train_freq": TRAIN_FREQ,
            "gradient_steps": GRADIENT_STEPS,
            "exploration": f"linear 1.0 -> {EXPLORATION_FINAL_EPS} over {EXPLORATION_FRACTION}",
            "net_arch": list(HIDDEN_SIZES),
            "activation": "relu",
            "loss": "huber",
            "max_grad_norm": MAX_GRAD_NORM,
            "double_q": False,
            "dueling": False,
            "n_step": 1,
            "prioritized": False,
            "eval": {"every": EVAL_EVERY, "episodes": EVAL_EPISODES, "deterministic": True},
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
