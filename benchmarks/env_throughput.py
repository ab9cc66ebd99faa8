"""Env steps per second: rlops CartPoleVectorEnv vs Gymnasium's vectorized CartPole.

Compares, in one process and on the same pre-generated random actions:

* ``rlops``: :class:`rlops.envs.CartPoleVectorEnv` (same-step autoreset);
* ``gym``: ``gymnasium.make_vec("CartPole-v1", vectorization_mode="vector_entry_point")``,
  Gymnasium's own numpy CartPoleVectorEnv (next-step autoreset);
* ``gym_sync`` (extra field): ``SyncVectorEnv`` over single CartPole envs in
  same-step mode, which is what ``make_vec("gym:CartPole-v1")`` builds.

Repeats are interleaved (rlops, gym, rlops, gym, ...) so drift in machine load
hits all contenders alike; the median of the repeats is reported. Progress goes
to stderr; the last stdout line is one JSON object::

    python benchmarks/env_throughput.py --num-envs 1024 --steps 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from rlops.envs import CartPoleVectorEnv


def _steps_per_s(env: Any, actions: np.ndarray) -> float:
    """Step ``env`` through ``actions`` ``[T, N]``; returns sub-env steps per second."""
    env.reset(seed=0)
    step = env.step
    start = time.perf_counter()
    for a in actions:
        step(a)
    elapsed = time.perf_counter() - start
    return actions.size / elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print the JSON result as the last stdout line.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The result dict that was printed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=2000, help="vector steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--sync-steps", type=int, default=200, help="vector steps per repeat for the slow sync env"
    )
    args = parser.parse_args(argv)
    n = args.num_envs

    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(args.steps, n), dtype=np.int64)
    envs: dict[str, Any] = {
        "rlops": CartPoleVectorEnv(n),
        "gym": gym.make_vec("CartPole-v1", n, vectorization_mode="vector_entry_point"),
        "gym_sync": gym.make_vec(
            "CartPole-v1",
            n,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        ),
    }
    # Warm-up (allocations, lazy imports, CPU frequency).
    for name, env in envs.items():
        _steps_per_s(env, actions[: min(50, args.steps)])
        print(f"warmed up {name}", file=sys.stderr)

    rates: dict[str, list[float]] = {name: [] for name in envs}
    for repeat in range(args.repeats):
        for name, env in envs.items():
            steps = actions[: args.sync_steps] if name == "gym_sync" else actions
            rates[name].append(_steps_per_s(env, steps))
        print(
            f"repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{k}={v[-1] / 1e6:.2f}M steps/s" for k, v in rates.items()),
            file=sys.stderr,
        )
    for env in envs.values():
        env.close()

    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "benchmark": "env_throughput",
        "env": "CartPole-v1",
        "num_envs": n,
        "steps": args.steps,
        "repeats": args.repeats,
        "rlops_steps_per_s": round(median["rlops"]),
        "gym_steps_per_s": round(median["gym"]),
        "gym_sync_steps_per_s": round(median["gym_sync"]),
        "ratio": round(median["rlops"] / median["gym"], 3),
        "ratio_vs_sync": round(median["rlops"] / median["gym_sync"], 1),
        "numpy": np.__version__,
        "gymnasium": gym.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
