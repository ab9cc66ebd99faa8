"""Ray RLlib PPO on CartPole-v1: the reference side of ``benchmarks/scaling.py``.

Not part of rlops and not a test. RLlib pins its own gymnasium, so this script
runs in a separate virtualenv (``benchmarks/requirements-rllib.txt``)::

    python3.11 -m venv .venv-rllib
    .venv-rllib/bin/pip install -r benchmarks/requirements-rllib.txt
    .venv-rllib/bin/python benchmarks/_rllib_ppo.py --num-env-runners 2 \\
        --num-envs-per-runner 8 --train-batch-size 2048 --minibatch-size 256 \\
        --epochs 10 --total-steps 40000 --seed 0

It trains PPO on RLlib's new API stack (torch, one local learner on CPU,
``num_env_runners`` remote EnvRunner actors with ``num_envs_per_runner``
vectorised envs each) until ``total_steps`` env steps have been sampled. The
hyperparameters follow ``configs/cartpole_ppo.yaml`` (gamma 0.98, lambda 0.8,
clip 0.2, lr 1e-3, separate [64, 64] tanh policy and value MLPs) and rlops'
PPO defaults (no KL penalty, value coefficient 0.5, global grad-norm clip 0.5,
no entropy bonus, no value clipping); the learning rate and the clip range are
constant here, not annealed.

Progress goes to stderr; the LAST line on stdout is one JSON object with
``rllib_steps_per_s`` = env steps sampled / summed wall time of the
``algo.train()`` calls (Ray start-up and the algorithm build are excluded and
reported as ``startup_s``, ``ray_init_s`` and ``build_s``).

Exit status 2 (with a message on stderr) when ray[rllib] cannot be imported,
e.g. when this is run with rlops' own ``.venv`` instead of ``.venv-rllib``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings
from typing import Any

REQUIREMENTS = "benchmarks/requirements-rllib.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-env-runners", type=int, required=True)
    p.add_argument("--num-envs-per-runner", type=int, default=8)
    p.add_argument("--train-batch-size", type=int, default=2048)
    p.add_argument("--minibatch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--total-steps", type=int, default=40_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gamma", type=float, default=0.98)
    p.add_argument("--gae-lambda", type=float, default=0.8)
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch.set_num_threads for the local learner in this process (rlops' "
        "runtime.torch_threads default is 1; env runners get 1 from Ray's OMP_NUM_THREADS)",
    )
    p.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="logical CPUs given to ray.init (default: num_env_runners + 1; logical only, "
        "it does not limit the physical cores the processes use)",
    )
    args = p.parse_args(argv)
    if args.num_env_runners < 0:
        p.error("--num-env-runners must be >= 0 (0 samples in the driver process)")
    for name in ("num_envs_per_runner", "train_batch_size", "minibatch_size", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.total_steps < 1:
        p.error("--total-steps must be >= 1")
    return args


def quiet_environment() -> None:
    """Silence Ray/RLlib chatter before ray is imported (the env is inherited by workers)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats prompt/upload
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def import_ray() -> tuple[Any, Any, Any]:
    """``(ray, PPOConfig, DefaultModelConfig)``, or exit 2 with a clear message."""
    try:
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    except ImportError as exc:  # ray missing, or ray without the [rllib] extra
        print(
            f"error: ray[rllib] is not importable with {sys.executable} ({exc}).\n"
            f"Run this script with the RLlib virtualenv:\n"
            f"  python3.11 -m venv .venv-rllib && "
            f".venv-rllib/bin/pip install -r {REQUIREMENTS}\n"
            f"  .venv-rllib/bin/python {os.path.relpath(__file__)} ...",
            file=sys.stderr,
        )
        sys.exit(2)
    return ray, PPOConfig, DefaultModelConfig


def build_config(args: argparse.Namespace, PPOConfig: Any, DefaultModelConfig: Any) -> Any:
    return (
        PPOConfig()
        .api_stack(
            enable_rl_module_and_learner=True,
            enable_env_runner_and_connector_v2=True,
        )
        .framework("torch")
        .environment(args.env)
        .env_runners(
            num_env_runners=args.num_env_runners,
            num_envs_per_env_runner=args.num_envs_per_runner,
            num_cpus_per_env_runner=1,
            rollout_fragment_length="auto",
        )
        .learners(num_learners=0, num_gpus_per_learner=0)
        .training(
            train_batch_size_per_learner=args.train_batch_size,
            minibatch_size=args.minibatch_size,
            num_epochs=args.epochs,
            lr=args.lr,
            gamma=args.gamma,
            lambda_=args.gae_lambda,
            clip_param=args.clip,
            use_kl_loss=False,
            vf_loss_coeff=0.5,
            entropy_coeff=0.0,
            grad_clip=0.5,
            grad_clip_by="global_norm",
            vf_clip_param=math.inf,
        )
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=[64, 64],
                fcnet_activation="tanh",
                vf_share_layers=False,
            )
        )
        .evaluation(evaluation_interval=None)
        # A benchmark should fail, not silently restart actors (this also avoids
        # core_worker's "constructor arguments in the object store and
        # max_restarts > 0" error line on stderr).
        .fault_tolerance(restart_failed_env_runners=False)
        .reporting(metrics_num_episodes_for_smoothing=100)
        .debugging(seed=args.seed, log_level="ERROR")
    )


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_environment()
    ray, PPOConfig, DefaultModelConfig = import_ray()
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_RETURN_MEAN,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
        NUM_EPISODES_LIFETIME,
    )

    for name in ("ray", "ray.rllib", "ray.tune", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(args.torch_threads)

    num_cpus = args.num_cpus if args.num_cpus is not None else args.num_env_runners + 1
    t0 = time.perf_counter()
    ray.init(
        num_cpus=num_cpus,
        num_gpus=0,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,  # worker stdout/stderr (warnings) stay in Ray's session logs
        configure_logging=True,
    )
    t1 = time.perf_counter()
    algo = build_config(args, PPOConfig, DefaultModelConfig).build_algo()
    t2 = time.perf_counter()
    print(
        f"[rllib] ray {ray.__version__}: ray.init {t1 - t0:.1f}s, build {t2 - t1:.1f}s "
        f"({args.num_env_runners} env runners x {args.num_envs_per_runner} envs, "
        f"num_cpus={num_cpus})",
        file=sys.stderr,
        flush=True,
    )

    # RLlib's result["timers"] are EMAs (coefficient 0.01), useless as totals: time the
    # learner update (GAE + epochs of minibatch SGD) ourselves; sampling is the rest.
    update_time = [0.0]
    update = algo.learner_group.update

    def timed_update(*a: Any, **kw: Any) -> Any:
        ts = time.perf_counter()
        try:
            return update(*a, **kw)
        finally:
            update_time[0] += time.perf_counter() - ts

    algo.learner_group.update = timed_update

    train_time = 0.0
    iterations = 0
    env_steps = 0
    last_return: float | None = None  # NaN in iterations where no episode ended
    result: dict[str, Any] = {}
    try:
        while env_steps < args.total_steps:
            ts = time.perf_counter()
            result = algo.train()
            dt = time.perf_counter() - ts
            train_time += dt
            iterations += 1
            env_steps = int(_get(result, ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME) or 0)
            ret = _num(_get(result, ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN))
            if ret is not None:
                last_return = ret
            print(
                f"[rllib] iter {iterations:3d}  env_steps {env_steps:7d}  "
                f"return_mean {ret if ret is not None else float('nan'):7.1f}  "
                f"iter_s {dt:5.2f}  steps/s {env_steps / train_time:8.0f}",
                file=sys.stderr,
                flush=True,
            )
            if env_steps == 0 and iterations >= 3:
                raise RuntimeError(
                    f"no env steps reported under result[{ENV_RUNNER_RESULTS!r}]"
                    f"[{NUM_ENV_STEPS_SAMPLED_LIFETIME!r}] after {iterations} iterations"
                )
    finally:
        ts = time.perf_counter()
        algo.stop()
        ray.shutdown()
        shutdown_s = time.perf_counter() - ts

    out = {
        "rllib_steps_per_s": round(env_steps / train_time, 1) if train_time > 0 else None,
        "env_steps": env_steps,
        "train_time_s": round(train_time, 3),
        "iterations": iterations,
        "final_episode_return_mean": last_return,
        "learner_update_time_s": round(update_time[0], 3),
        "sample_and_other_time_s": round(train_time - update_time[0], 3),
        "episodes": int(_num(_get(result, ENV_RUNNER_RESULTS, NUM_EPISODES_LIFETIME)) or 0),
        "startup_s": round(t2 - t0, 3),
        "ray_init_s": round(t1 - t0, 3),
        "build_s": round(t2 - t1, 3),
        "shutdown_s": round(shutdown_s, 3),
        "ray": ray.__version__,
        "env": args.env,
        "num_env_runners": args.num_env_runners,
        "num_envs_per_runner": args.num_envs_per_runner,
        "train_batch_size": args.train_batch_size,
        "minibatch_size": args.minibatch_size,
        "epochs": args.epochs,
        "total_steps": args.total_steps,
        "seed": args.seed,
        "num_cpus": num_cpus,
        "torch_threads": args.torch_threads,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
