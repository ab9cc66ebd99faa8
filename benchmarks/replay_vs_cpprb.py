"""Prioritized replay: rlops (numpy) vs cpprb (C++), calls per second.

Both buffers hold 1e6 items of cpprb's classic ``env_dict`` — ``obs`` and
``next_obs`` (8 float32), ``action``, ``reward``, ``done`` (float32 scalars) —
with proportional prioritization ``alpha=0.6``, ``beta=0.4``:

* ``cpprb``: ``cpprb.PrioritizedReplayBuffer`` (C++ segment trees);
* ``rlops``: ``ReplayBuffer(RingStorage, PrioritizedSampler)``, the default
  ``weight_normalization="batch"`` (weights divided by the batch's largest);
* ``rlops_buffer_norm``: the same with ``weight_normalization="buffer"``, which
  divides by the largest weight over the whole buffer through a min tree —
  what cpprb computes, so this is the like-for-like comparison.

Both are first filled to capacity and given random priorities (untimed). Each
timed block then runs ``--iters`` training-loop cycles — ``add`` a batch of
256, ``sample`` 256, ``update_priorities`` of those 256 with fresh random
priorities — timing every call separately, so any work one call defers to the
next is charged to the cycle it happens in. Blocks are interleaved (cpprb,
rlops, rlops_buffer_norm, then the reverse order, ...) for ``--repeats``
rounds so machine-load drift hits every contender alike; each reported rate
is the median over rounds, and each ratio (rlops / cpprb, > 1 means rlops is
faster) is the median of the per-round ratios. ``cycle_ratio`` compares the
time of a whole add + sample + update cycle. Progress goes to stderr; the last
stdout line is one JSON object. Run it with::

    .venv/bin/python benchmarks/replay_vs_cpprb.py            # 7 rounds x 2000 cycles
    .venv/bin/python benchmarks/replay_vs_cpprb.py --quick    # smoke run

Needs cpprb (``pip install -e '.[bench]'``); exits 2 with a one-line message
if it cannot be imported.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rlops.replay import PrioritizedSampler, ReplayBuffer, RingStorage, TransitionSpec

PHASES = ("add", "sample", "update")


def make_cpprb(capacity: int, obs_dim: int, alpha: float) -> Any:
    """cpprb's prioritized buffer with the classic env_dict (float32 everywhere)."""
    from cpprb import PrioritizedReplayBuffer  # type: ignore[import-untyped]

    env_dict = {
        "obs": {"shape": obs_dim},
        "action": {},
        "reward": {},
        "next_obs": {"shape": obs_dim},
        "done": {},
    }
    return PrioritizedReplayBuffer(capacity, env_dict, alpha=alpha)


def make_rlops(capacity: int, obs_dim: int, alpha: float, beta: float, norm: str) -> ReplayBuffer:
    """rlops' ring storage + prioritized sampler with the same fields."""
    spec = TransitionSpec(
        {
            "obs": ((obs_dim,), np.float32),
            "action": ((), np.float32),
            "reward": ((), np.float32),
            "next_obs": ((obs_dim,), np.float32),
            "done": ((), np.float32),
        }
    )
    sampler = PrioritizedSampler(
        capacity,
        alpha=alpha,
        beta=beta,
        seed=0,
        weight_normalization=norm,  # type: ignore[arg-type]
    )
    return ReplayBuffer(RingStorage(spec, capacity), sampler)


class Contender:
    """One buffer behind a uniform add / sample / update interface."""

    def __init__(self, name: str, buffer: Any, beta: float) -> None:
        self.name = name
        self.buffer = buffer
        self.beta = beta
        if name == "cpprb":
            self.add: Callable[[dict[str, np.ndarray]], Any] = lambda b: buffer.add(**b)
            self.sample: Callable[[int], np.ndarray] = lambda n: buffer.sample(n, beta=beta)[
                "indexes"
            ]
        else:
            self.add = buffer.add
            self.sample = lambda n: buffer.sample(n).indices
        self.update: Callable[[np.ndarray, np.ndarray], Any] = buffer.update_priorities


def make_batches(rng: np.random.Generator, count: int, size: int, obs_dim: int) -> list[Any]:
    """Random batches; cpprb takes [B, 1] scalars, rlops [B]."""
    out = []
    for _ in range(count):
        obs = rng.standard_normal((size, obs_dim), dtype=np.float32)
        scalars = {k: rng.random(size, dtype=np.float32) for k in ("action", "reward", "done")}
        out.append({"obs": obs, "next_obs": obs + 1.0, **scalars})
    return out


def fill(contender: Contender, batches: list[Any], capacity: int, rng: np.random.Generator) -> None:
    """Fill to capacity and spread random priorities over every slot (untimed)."""
    chunk = 4096
    reps = chunk // batches[0]["obs"].shape[0]
    big = {k: np.concatenate([b[k] for b in batches[:1]] * reps) for k in batches[0]}
    for _ in range(capacity // chunk):
        contender.add(big)
    rest = capacity - (capacity // chunk) * chunk
    if rest:
        contender.add({k: v[:rest] for k, v in big.items()})
    for start in range(0, capacity, 65536):
        idx = np.arange(start, min(capacity, start + 65536), dtype=np.int64)
        contender.update(idx, np.abs(rng.standard_normal(idx.shape[0])) + 0.01)


def run_block(
    contender: Contender,
    batches: list[Any],
    priorities: list[np.ndarray],
    iters: int,
    batch_size: int,
) -> dict[str, float]:
    """``iters`` add / sample / update cycles; seconds spent in each phase."""
    spent = dict.fromkeys(PHASES, 0.0)
    clock = time.perf_counter
    add, sample, update = contender.add, contender.sample, contender.update
    nb, npr = len(batches), len(priorities)
    for i in range(iters):
        t0 = clock()
        add(batches[i % nb])
        t1 = clock()
        indices = sample(batch_size)
        t2 = clock()
        update(indices, priorities[i % npr])
        t3 = clock()
        spent["add"] += t1 - t0
        spent["sample"] += t2 - t1
        spent["update"] += t3 - t2
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--obs-dim", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--beta", type=float, default=0.4)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--iters", type=int, default=2000, help="cycles per timed block")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds x 200 cycles")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.iters = 2, 200
    try:
        import cpprb  # noqa: F401
    except Exception as error:  # ImportError, or a broken binary wheel
        print(f"cpprb is not importable here ({error!r}); pip install cpprb", file=sys.stderr)
        return 2

    rng = np.random.default_rng(0)
    batches = make_batches(rng, 16, args.batch_size, args.obs_dim)
    cpprb_batches = [{k: (v if v.ndim == 2 else v[:, None]) for k, v in b.items()} for b in batches]
    priorities = [np.abs(rng.standard_normal(args.batch_size)) + 0.01 for _ in range(64)]
    contenders = [
        Contender("cpprb", make_cpprb(args.capacity, args.obs_dim, args.alpha), args.beta),
        Contender(
            "rlops",
            make_rlops(args.capacity, args.obs_dim, args.alpha, args.beta, "batch"),
            args.beta,
        ),
        Contender(
            "rlops_buffer_norm",
            make_rlops(args.capacity, args.obs_dim, args.alpha, args.beta, "buffer"),
            args.beta,
        ),
    ]
    data = {c.name: (cpprb_batches if c.name == "cpprb" else batches) for c in contenders}
    for c in contenders:
        fill(c, data[c.name], args.capacity, np.random.default_rng(1))
        run_block(
            c, data[c.name], priorities, max(50, args.iters // 10), args.batch_size
        )  # warm-up

    rates: dict[str, dict[str, list[float]]] = {
        c.name: {p: [] for p in (*PHASES, "cycle")} for c in contenders
    }
    for round_ in range(args.repeats):
        order = contenders if round_ % 2 == 0 else contenders[::-1]
        for c in order:
            spent = run_block(c, data[c.name], priorities, args.iters, args.batch_size)
            for phase in PHASES:
                rates[c.name][phase].append(args.iters / spent[phase])
            rates[c.name]["cycle"].append(args.iters / sum(spent.values()))
            print(
                f"round {round_} {c.name:>17}: "
                + ", ".join(f"{p} {args.iters / spent[p]:9.0f}/s" for p in PHASES),
                file=sys.stderr,
            )

    def median_ratio(name: str, phase: str) -> float:
        ours, theirs = rates[name][phase], rates["cpprb"][phase]
        return round(statistics.median(a / b for a, b in zip(ours, theirs)), 3)

    result: dict[str, Any] = {
        "benchmark": "replay_vs_cpprb",
        "capacity": args.capacity,
        "obs_dim": args.obs_dim,
        "batch_size": args.batch_size,
        "alpha": args.alpha,
        "beta": args.beta,
        "repeats": args.repeats,
        "iters": args.iters,
        "cpprb_version": importlib.metadata.version("cpprb"),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
    }
    for c in contenders:
        result[c.name] = {
            f"{p}_calls_per_s": round(statistics.median(rates[c.name][p]), 1)
            for p in (*PHASES, "cycle")
        }
    for phase in (*PHASES, "cycle"):
        result[f"{phase}_ratio"] = median_ratio("rlops", phase)
    for phase in (*PHASES, "cycle"):
        result[f"{phase}_ratio_buffer_norm"] = median_ratio("rlops_buffer_norm", phase)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
