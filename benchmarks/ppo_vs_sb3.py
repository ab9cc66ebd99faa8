"""PPO on CartPole-v1: rlops vs Stable-Baselines3, throughput and time to solve.

Both libraries train PPO on Gymnasium's ``CartPole-v1`` with the RL Zoo
hyperparameters for SB3 (MlpPolicy (64, 64) tanh, 8 envs, n_steps 32,
batch/minibatch 256, 20 epochs, gamma 0.98, GAE lambda 0.8, ent_coef 0,
learning rate linear from 1e-3, clip range linear from 0.2, 1e5 env steps, CPU):

* ``sb3``: ``PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8))`` (DummyVecEnv);
* ``rlops``: :func:`rlops.runtime.train` on ``gym:CartPole-v1`` (Gymnasium
  ``SyncVectorEnv``, same-step autoreset) with the same hyperparameters.

Both evaluate 10 deterministic episodes on separate CartPole-v1 envs (5 in
parallel) at the first update boundary at or past every 10k env steps, and once
more at the end. Measured, per seed:

* ``steps_per_s``: total training env steps / training wall time, where the
  training clock is paused during evaluations (rlops: ``Evaluation.train_time_s``;
  SB3: a callback that stops the clock around ``evaluate_policy``);
* ``s_to_475``: training time at the first evaluation whose mean return is >= 475
  ("solved"); null if no evaluation reached it.

Runs are interleaved (sb3 seed 0, rlops seed 0, rlops seed 1, sb3 seed 1, ...;
the order alternates per seed), both use ``torch.set_num_threads(--threads)``,
and a short untimed warm-up of each goes first, so machine-load drift hits both
alike; ``throughput_ratio`` is the median over seeds of the per-seed rlops/sb3
ratio. Progress goes to stderr, one line per run; the last stdout line is one
JSON object. Run it with ``make bench`` or::

    .venv/bin/python benchmarks/ppo_vs_sb3.py                 # 3 seeds, 1e5 steps
    .venv/bin/python benchmarks/ppo_vs_sb3.py --quick         # smoke run: 20k steps, 1 seed
    .venv/bin/python benchmarks/ppo_vs_sb3.py --seeds 0 1 2 3 4 --threads 1

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
from typing import Any

import gymnasium as gym
import torch

from _harness import median, rounded, sb3_eval_clock
from rlops.algos.ppo import PPOConfig
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
NUM_ENVS = 8
N_STEPS = 32
BATCH_SIZE = 256
N_EPOCHS = 20
LR = 1e-3
CLIP = 0.2
GAMMA = 0.98
GAE_LAMBDA = 0.8
EVAL_EVERY = 10_000
EVAL_EPISODES = 10
EVAL_ENVS = 5
EVAL_SEED_OFFSET = 1_000_003  # same offset rlops uses for its evaluation envs
WARMUP_STEPS = 2_048
INSTALL_HINT = (
    "ppo_vs_sb3: stable-baselines3 is not installed; "
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
    """

    lib: str
    seed: int
    env_steps: int
    train_time_s: float
    wall_s: float
    evals: list[tuple[int, float, float]] = field(default_factory=list)

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

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "env_steps": self.env_steps,
            "train_time_s": round(self.train_time_s, 3),
            "wall_s": round(self.wall_s, 3),
            "steps_per_s": round(self.steps_per_s, 1),
            "s_to_475": None if self.s_to_475 is None else round(self.s_to_475, 3),
            "steps_to_475": self.steps_to_475,
            "final_return": self.final_return,
            "evals": [[s, round(t, 3), round(r, 2)] for s, t, r in self.evals],
        }


def run_rlops(seed: int, total_steps: int, threads: int) -> RunStats:
    """Train rlops PPO with the RL Zoo CartPole hyperparameters."""
    cfg = ExperimentConfig(
        name="bench-ppo-vs-sb3",
        seed=seed,
        total_steps=total_steps,
        env=EnvConfig(id=f"gym:{ENV_ID}", num_envs=NUM_ENVS),
        algo=PPOConfig(
            n_steps=N_STEPS,
            minibatch_size=BATCH_SIZE,
            n_epochs=N_EPOCHS,
            lr=LR,
            lr_schedule="linear",
            gamma=GAMMA,
            gae_lambda=GAE_LAMBDA,
            clip_coef=CLIP,
            clip_schedule="linear",
            ent_coef=0.0,
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
    evals = [(e.env_steps, e.train_time_s, e.mean_return) for e in result.evaluations]
    # The final evaluation runs at the last step, so its train_time_s is the total.
    return RunStats("rlops", seed, result.env_steps, evals[-1][1], wall, evals)


def run_sb3(seed: int, total_steps: int, threads: int) -> RunStats:
    """Train SB3 PPO with the RL Zoo CartPole hyperparameters (``ppo.yml``)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)
    start = time.perf_counter()
    env = make_vec_env(ENV_ID, n_envs=NUM_ENVS, seed=seed)
    eval_env = make_vec_env(ENV_ID, n_envs=EVAL_ENVS, seed=seed + EVAL_SEED_OFFSET)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=N_STEPS,
        batch_size=BATCH_SIZE,
        n_epochs=N_EPOCHS,
        gamma=GAMMA,
        gae_lambda=GAE_LAMBDA,
        ent_coef=0.0,
        learning_rate=lambda progress: progress * LR,
        clip_range=lambda progress: progress * CLIP,
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
    parser.add_argument("--total-steps", type=int, default=None, help="default 100000")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 20000 steps, seed 0 (unless given)"
    )
    args = parser.parse_args(argv)
    total_steps: int = args.total_steps or (20_000 if args.quick else 100_000)
    seeds: list[int] = args.seeds or ([0] if args.quick else [0, 1, 2])

    try:
        import stable_baselines3
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(2)

    # Untimed warm-up: lazy imports, first torch ops, CPU frequency.
    for lib, runner in RUNNERS.items():
        runner(seeds[0], WARMUP_STEPS, args.threads)
        print(f"warmed up {lib}", file=sys.stderr)

    runs: dict[str, list[RunStats]] = {"rlops": [], "sb3": []}
    for i, seed in enumerate(seeds):
        order = ["sb3", "rlops"] if i % 2 == 0 else ["rlops", "sb3"]
        for lib in order:
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
        r.steps_per_s / s.steps_per_s for r, s in zip(runs["rlops"], runs["sb3"], strict=True)
    ]
    solved = {lib: [r.s_to_475 for r in rs if r.s_to_475 is not None] for lib, rs in runs.items()}
    result: dict[str, Any] = {
        "benchmark": "ppo_vs_sb3",
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
        "rlops_per_seed": [r.summary() for r in runs["rlops"]],
        "sb3_per_seed": [r.summary() for r in runs["sb3"]],
        "hyperparameters": {
            "num_envs": NUM_ENVS,
            "n_steps": N_STEPS,
            "batch_size": BATCH_SIZE,
            "n_epochs": N_EPOCHS,
            "lr": f"linear {LR}",
            "clip": f"linear {CLIP}",
            "gamma": GAMMA,
            "gae_lambda": GAE_LAMBDA,
            "ent_coef": 0.0,
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
