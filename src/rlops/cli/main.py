"""``rlops`` command line: thin wrappers over the library.

Every deliberate error (bad config, unknown env, tampered artifact, NaN from an
env) prints one line to stderr and exits with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from rlops.core.errors import RlopsError

EXIT_USAGE = 2


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
"""Reports are written through a 0600 temp file; give them the usual mode."""


def _packaged_config(name: str) -> str:
    return str(resources.files("rlops") / "configs" / name)


def _cmd_train(args: argparse.Namespace) -> int:
    from rlops.runtime.config import load_config

    if args.resume is None and args.config is None:
        raise RlopsError("train: give a CONFIG file, or --resume RUN_DIR to continue a run")
    runtime = [
        f"runtime.{key}={value}"
        for key, value in (
            ("backend", args.backend),
            ("num_actors", args.num_actors),
            ("mode", args.mode),
        )
        if value is not None
    ]
    if args.resume is not None and (args.set or runtime):
        raise RlopsError(
            "train --resume: --set, --backend, --num-actors and --mode are not allowed; "
            "the run keeps its config.yaml"
        )
    args.set = [*args.set, *runtime]
    # Validate the config before importing torch: a typo fails in a fraction of a second.
    config = None if args.resume is not None else load_config(args.config, args.set)
    from rlops.runtime.loop import train

    if config is None:
        result = train(resume=args.resume)
    else:
        result = train(config, out_dir=args.out)
    _print_result(result)
    return 0


def _print_result(result: object) -> None:
    from rlops.runtime import RunResult

    assert isinstance(result, RunResult)
    final = result.evaluations[-1] if result.evaluations else None
    print(f"run directory : {result.run_dir}")
    print(f"policy        : {result.artifact_path}  ({result.version[:23]}…)")
    print(f"metrics       : {result.run_dir / 'metrics.jsonl'}")
    print(f"tensorboard   : {_tool('tensorboard')} --logdir {result.run_dir / 'tb'}")
    print(f"checkpoints   : {result.run_dir / 'checkpoints'}")
    if final is not None:
        print(
            f"final eval    : mean return {final.mean_return:.1f} ± {final.std_return:.1f} "
            f"after {result.env_steps} env steps"
        )


def _cmd_eval(args: argparse.Namespace) -> int:
    from rlops.evaluation import evaluate

    report = evaluate(
        args.artifact,
        args.env,
        args.episodes,
        seed=args.seed,
        deterministic=not args.stochastic,
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(
            f"{report.env_id}: mean return {report.mean_return:.2f} ± {report.std_return:.2f} "
            f"(min {report.min_return:.1f}, max {report.max_return:.1f}) over "
            f"{report.episodes} episodes, mean length {report.mean_length:.1f}; "
            f"policy {report.policy_version[:23]}…"
        )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rlops.artifacts import load_policy
    from rlops.evaluation.report import format_table, write_report
    from rlops.evaluation.suites import get_suite, run_suite

    suite = get_suite(args.suite)  # an unknown suite fails before the artifact is read
    policy = load_policy(args.artifact)
    out = (
        Path(args.out)
        if args.out
        else Path(args.artifact).resolve().parent / "reports" / suite.name
    )
    report = run_suite(
        policy,
        suite,
        baselines=args.baseline or None,
        deterministic=not args.stochastic,
        progress=None if args.json else lambda line: print(line, file=sys.stderr, flush=True),
    )
    paths = write_report(report, out)
    if args.json:
        print(json.dumps(report.to_dict(), default=float))
    else:
        print(format_table(report))
        print(f"report        : {paths['markdown']}")
        print(f"json          : {paths['json']}")
        plots = [str(p) for k, p in paths.items() if k not in ("json", "markdown")]
        print(f"plots         : {', '.join(plots)}")
    return 0


def _cmd_suites(args: argparse.Namespace) -> int:
    from rlops.evaluation.suites import list_suites

    suites = list_suites()
    if args.json:
        print(json.dumps(suites))
        return 0
    width = max(len(name) for name in suites)
    for name, description in suites.items():
        print(f"{name:<{width}}  {description}")
    return 0


def _cmd_envs(args: argparse.Namespace) -> int:
    from rlops.envs import list_envs

    infos = list_envs()
    if args.json:
        print(json.dumps([{"id": i.id, "description": i.description} for i in infos]))
        return 0
    width = max(len(i.id) for i in infos)
    for info in infos:
        print(f"{info.id:<{width}}  {info.description}")
    print(f"{'gym:<id>':<{width}}  any Gymnasium environment id, e.g. gym:CartPole-v1")
    return 0


def _cmd_check_env(args: argparse.Namespace) -> int:
    from rlops.envs import check_vector_env, make_vec

    env = make_vec(args.env, args.num_envs)
    try:
        check_vector_env(env, steps=args.steps, seed=args.seed)
    finally:
        env.close()
    print(f"{args.env}: ok ({args.steps} steps x {args.num_envs} envs)")
    return 0


def _float_pair(text: str | None, flag: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise RlopsError(f"serve {flag}: {text!r} is not LO,HI (two numbers)") from None
    return lo, hi


def _cmd_serve(args: argparse.Namespace) -> int:
    from rlops.serving.config import ServeConfig

    fallback: int | tuple[float, ...] | None = None
    if args.fallback_action is not None:
        text = args.fallback_action
        try:
            fallback = (
                tuple(float(v) for v in text.split(","))
                if any(c in text for c in ",.eE")
                else int(text)
            )
        except ValueError:
            raise RlopsError(
                f"serve --fallback-action: {text!r} is not an action (an integer, or "
                "comma-separated numbers for a continuous policy)"
            ) from None
    options = {
        "host": args.host,
        "port": args.port,
        "decision_log": args.decision_log,
        "mode": args.mode,
        "epsilon": args.epsilon,
        "epsilon_cap": args.epsilon_cap,
        "max_batch_size": args.max_batch_size,
        "max_batch_wait_ms": args.max_batch_wait_ms,
        "request_timeout_ms": args.request_timeout_ms,
        "fallback_action": fallback,
        "seed": args.seed,
        "canary": args.canary,
        "canary_share": args.canary_share,
        "salt": args.salt,
        "shadow": args.shadow,
        "shadow_share": args.shadow_share,
        "admin_log": args.admin_log,
        "state_file": args.state_file,
        "log_queue_size": args.log_queue_size,
    }
    guardrail = {
        "reward_range": _float_pair(args.guardrail_reward_range, "--guardrail-reward-range"),
        "alpha": args.guardrail_alpha,
        "min_samples": args.guardrail_min_samples,
        "min_effect": args.guardrail_min_effect,
    }
    guardrail = {k: v for k, v in guardrail.items() if v is not None}
    if guardrail:
        from rlops.serving.guardrail import GuardrailConfig

        options["guardrail"] = GuardrailConfig(**guardrail)
    artifact, watch = args.artifact, None
    if "@" in artifact and not Path(artifact).exists():
        artifact, watch = _serve_from_registry(args, options)
    # Defaults live in ServeConfig only: pass just what was given.
    config = ServeConfig(artifact=artifact, **{k: v for k, v in options.items() if v is not None})
    if not args.ray and (args.replicas is not None or args.ray_address is not None):
        raise RlopsError("serve --replicas / --ray-address: need --ray")
    try:
        from rlops.serving.server import serve
    except ImportError as exc:
        raise RlopsError(
            f"serve: {exc.name} is not installed; install the extra: pip install 'rlops[serve]'"
        ) from None
    if args.ray:
        if watch is not None:
            raise RlopsError(
                "serve --ray: serving NAME@ALIAS on Ray is not supported yet; give an artifact path"
            )
        from rlops.serving.ray_serve import serve_on_ray

        serve_on_ray(
            config,
            replicas=1 if args.replicas is None else args.replicas,
            ray_address=args.ray_address,
            announce=lambda line: print(line, flush=True),
            block=True,
        )
        return 0
    serve(config, announce=lambda line: print(line, flush=True), watcher=watch)
    return 0


def _serve_from_registry(args: argparse.Namespace, options: dict[str, Any]) -> tuple[str, Any]:
    """Resolve ``NAME@ALIAS`` (and the canary / shadow aliases unless given as paths);
    returns the production artifact path and the watcher factory for :func:`serve`."""
    from rlops.registry import Registry, load_settings
    from rlops.serving.registry_watch import RegistryWatcher, check_served, resolve_arms

    if not 0.05 <= args.registry_poll <= 3600:
        raise RlopsError("serve --registry-poll: seconds between 0.05 and 3600")
    registry = Registry.open(load_settings(args.registry_config).with_user(args.as_user))
    resolved = resolve_arms(
        registry, args.artifact, canary=args.canary is None, shadow=args.shadow is None
    )
    for arm in ("canary", "shadow"):
        if arm in resolved.paths:
            options[arm] = str(resolved.paths[arm])
    # No canary yet: the share waits for one (the watcher applies it when the alias is set).
    share = 0.0 if "canary" in resolved.paths else float(options.pop("canary_share", None) or 0.0)
    where = ", ".join(
        f"{arm}={resolved.name}@{n}" for arm, n in resolved.numbers.items() if n is not None
    )

    def factory(app: Any) -> RegistryWatcher:
        check_served(app, resolved)
        # Printed after the URL line (scripts read the URL from the first line).
        print(
            f"  registry {registry.settings.url}: {where}; following the aliases "
            f"every {args.registry_poll:g} s",
            flush=True,
        )
        # Admin endpoints also take registry tokens of operators (rlops registry token).
        app.state.service.token_identity = lambda token: registry.member_with_role(
            token, "operator"
        )
        return RegistryWatcher(
            registry, app, resolved, poll_s=args.registry_poll, seed=args.seed, canary_share=share
        )

    return str(resolved.paths["production"]), factory


def _tool(name: str) -> str:
    """How the user can call ``name`` from this environment's bin dir.

    The bare name when that is what PATH finds, else a path (``.venv/bin/rlops``).
    """
    path = Path(sys.executable).parent / name
    if not path.exists() or shutil.which(name) == str(path):
        return name
    return os.path.relpath(path)


def _cmd_decisions(args: argparse.Namespace) -> int:
    import sqlite3

    from rlops.serving import decision_log

    if not Path(args.log).is_file():
        raise RlopsError(f"decisions: {args.log} does not exist (give the SQLite decision log)")
    try:
        return _decisions(args, decision_log)
    except sqlite3.Error as exc:
        raise RlopsError(f"decisions: {args.log} is not a readable decision log ({exc})") from None


def _decisions(args: argparse.Namespace, decision_log: Any) -> int:
    if args.action == "export":
        if args.out is None:
            raise RlopsError("decisions export: give --out FILE.parquet")
        since = None
        if args.since is not None:
            try:
                since = float(args.since)
            except ValueError:
                raise RlopsError(f"decisions --since: {args.since!r} is not unix seconds") from None

        def report(n: int) -> None:
            print(f"\r  {n} rows", end="", file=sys.stderr, flush=True)

        n = decision_log.export_parquet(args.log, args.out, since=since, progress=report)
        print(file=sys.stderr)
        print(f"exported {n} decisions to {args.out}")
        return 0
    status = decision_log.integrity_check(args.log)
    stats = decision_log.summarize(args.log)
    print(f"{args.log}: integrity {status}")
    for key, value in stats.items():
        print(f"  {key}: {value}")
    return 0 if status == "ok" else 1


def _cmd_ope(args: argparse.Namespace) -> int:
    from rlops.evaluation.ope.report import ope_report, render_markdown

    report = ope_report(
        args.log,
        args.policy,
        baseline_value=args.baseline_value,
        mode=args.mode,
        gamma=args.gamma,
        level=args.level,
        seed=args.seed,
    )
    markdown = render_markdown(report)
    if args.out:
        out = Path(args.out)
        _write_json_atomic(out / "ope.json", report)
        _write_text_atomic(out / "ope.md", markdown)
        print(f"wrote {out / 'ope.json'} and {out / 'ope.md'}", file=sys.stderr)
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else markdown)
    return 0


def _write_text_atomic(path: Path, text: str) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cmd_gate(args: argparse.Namespace) -> int:
    from rlops.evaluation import gates

    spec, digest = gates.load_gate_file(args.gate_file)
    evidence, sources = gates.load_evidence(args.evidence or [])
    result = gates.check_gates(
        spec, evidence, gate_file=str(args.gate_file), gate_sha256=digest, sources=sources
    )
    if args.out:
        _write_json_atomic(Path(args.out), result.to_dict())
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0 if result.passed else 1


def _write_json_atomic(path: Path, data: Any) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from rlops.artifacts import load_policy
    from rlops.evaluation.report import format_table, write_report
    from rlops.evaluation.suites import get_suite, run_suite
    from rlops.runtime import load_config, train

    overrides = [f"total_steps={args.steps}"] if args.steps else []
    config = load_config(_packaged_config("pricing_ppo.yaml"), overrides)
    print(
        "rlops quickstart: dynamic pricing of a perishable good (rlops/Pricing-v0)\n"
        f"  1. train PPO for {config.total_steps:,} env steps on randomized demand "
        "(arrival rate 1.5-3 customers/period, willingness to pay 6-12)\n"
        "  2. evaluate on held-out demand settings and edge cases against the best fixed "
        "price, myopic pricing and the exact DP optimum\n"
        "  3. save the policy artifact and the reports",
        flush=True,
    )
    result = train(config, out_dir=args.out)
    policy = load_policy(result.artifact_path)
    reports = {}
    for name in ("pricing-holdout", "pricing-edge"):
        suite = get_suite(name)
        print(f"\nevaluating on {name} ({len(suite.scenarios)} scenarios) ...", flush=True)
        report = run_suite(policy, suite)
        paths = write_report(report, result.run_dir / "reports" / name)
        reports[name] = (report, paths)
        print(format_table(report))
    print()
    _print_result(result)
    for name, (_, paths) in reports.items():
        print(f"{name + ' report':<14s}: {paths['markdown']}")
    holdout = reports["pricing-holdout"][0].overall["all"]
    print(
        f"\nOn held-out demand the policy earns {100 * holdout['ratio_to_optimum']:.1f}% of the "
        f"DP-optimal revenue (best fixed price: "
        f"{100 * holdout['best_fixed_price_mean_return'] / holdout['optimum_mean_return']:.1f}%, "
        f"myopic: {100 * holdout['myopic_mean_return'] / holdout['optimum_mean_return']:.1f}%)."
    )
    rlops_cmd = _tool("rlops")
    registered = _register_quickstart(
        result.run_dir, result.version, {n: p["json"] for n, (_, p) in reports.items()}
    )
    print("\nnext steps:")
    for line in registered:
        print(f"  {line}")
    print(f"  {rlops_cmd} evaluate {result.artifact_path} --suite pricing-edge --json")
    print(f"  {rlops_cmd} suites                                   # all evaluation suites")
    print(f"  {rlops_cmd} train configs/content_feed_ppo.yaml      # content selection")
    print(f"  {rlops_cmd} train configs/cartpole_ppo.yaml --backend process --num-actors 2")
    return 0


def _register_quickstart(run_dir: Path, content_hash: str, reports: dict[str, Path]) -> list[str]:
    """Register the quickstart policy as ``pricing`` at alias ``candidate``, with its
    evaluation reports as evidence; returns the commands a person would run next.

    The identity is ``$RLOPS_USER`` (or ``registry.user``), else the login name:
    on an empty registry that person becomes its first admin and an author, so
    the demo works on a fresh machine. Anyone else without the author role gets
    the commands to ask for it instead of an error.
    """
    import getpass
    from dataclasses import replace

    from rlops.core.errors import PermissionDenied, RegistryError
    from rlops.registry import Registry, load_settings

    settings = load_settings()
    user = settings.user or getpass.getuser()
    # The demo registers its own run wherever --out put it.
    settings = replace(settings, allowed_roots=(*settings.allowed_roots, run_dir.resolve()))
    reg = Registry.open(settings.with_user(user))
    try:
        if not reg.members():
            reg.init(user)
            reg.grant(user, "author", "quickstart: first user of a fresh registry")
        evidence = [(name.replace("pricing-", ""), path) for name, path in reports.items()]
        try:
            version = reg.register("pricing", run_dir, evidence_files=evidence)
        except PermissionDenied as exc:
            print(f"\nregistry: not registered ({exc})")
            return [f"rlops registry register pricing {run_dir} --as AN_AUTHOR"]
        except RegistryError as exc:
            if "already this artifact" not in str(exc):
                raise
            # Training is deterministic: a second demo run makes the same artifact.
            version = reg.version(f"pricing@{content_hash}")
            print(f"\nregistry: {version.ref} is already this policy; not registered again")
        if reg.aliases("pricing").get("candidate") != version.number:
            reg.request_promotion(
                "pricing", version.number, "candidate", reason="quickstart: trained and evaluated"
            )
    finally:
        reg.close()
    print(
        f"\nregistered {version.ref} ({version.content_hash[:23]}…) at alias candidate in "
        f"{settings.url}, with the holdout and edge-case reports as evidence"
    )
    rlops_cmd = _tool("rlops")
    who = [] if settings.user else [f"export RLOPS_USER={user}   # who the registry knows you as"]
    return [
        *who,
        f"{rlops_cmd} registry show pricing@candidate             # lineage and evidence",
        f"{rlops_cmd} promote pricing {version.number} --to production --reason '...'"
        "   # then someone else: rlops approve ID",
        f"{rlops_cmd} audit log --policy pricing",
    ]


def build_parser() -> argparse.ArgumentParser:
    """The ``rlops`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="rlops",
        description="Train, evaluate and ship reinforcement-learning policies.",
    )
    from rlops import __version__

    parser.add_argument("--version", action="version", version=f"rlops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a policy from a YAML config")
    p.add_argument("config", nargs="?", help="YAML config file (e.g. configs/cartpole_ppo.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set algo.lr=3e-4 (repeatable)",
    )
    p.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument(
        "--backend",
        help="where actors run: inline, process or ray (same as --set runtime.backend=...)",
    )
    p.add_argument(
        "--num-actors", type=int, help="actors on the process/ray backend (runtime.num_actors)"
    )
    p.add_argument("--mode", help="sync or async (runtime.mode)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a policy artifact on an environment")
    p.add_argument("artifact", help="policy artifact directory")
    p.add_argument("--env", required=True, help="environment id (see `rlops envs`)")
    p.add_argument("--episodes", type=int, default=10, help="episodes to run (default 10)")
    p.add_argument("--seed", type=int, default=0, help="reset seed (default 0)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of argmax")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "evaluate",
        help="evaluate an artifact on a scenario suite: regret vs baselines and the optimum",
    )
    p.add_argument("artifact", help="policy artifact directory")
    p.add_argument("--suite", required=True, help="suite name (see `rlops suites`)")
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME",
        help="compare with this baseline only (repeatable; default: all of the suite's)",
    )
    p.add_argument("--out", help="report directory (default: <artifact>/../reports/<suite>)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of argmax")
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("suites", help="list evaluation suites")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_suites)

    p = sub.add_parser("envs", help="list environment ids")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_envs)

    p = sub.add_parser("check-env", help="validate an environment (spaces, dtypes, NaN/Inf)")
    p.add_argument("env", help="environment id")
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_check_env)

    p = sub.add_parser(
        "quickstart",
        help="the demo: train a pricing policy, evaluate it against baselines and the optimum",
    )
    p.add_argument("--out", help="run directory (default runs/pricing-ppo-<timestamp>)")
    p.add_argument("--steps", type=int, help="env steps (default from the packaged config)")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser(
        "serve", help="serve a policy over HTTP (POST /v1/act), logging every decision"
    )
    p.add_argument(
        "artifact",
        help="policy artifact directory, or NAME@ALIAS from the registry (followed live: "
        "production from ALIAS, canary and shadow from those aliases)",
    )
    p.add_argument("--as", dest="as_user", metavar="USER", help="registry identity (NAME@ALIAS)")
    p.add_argument("--registry-config", metavar="FILE", help="rlops.yaml with a registry: section")
    p.add_argument(
        "--registry-poll",
        type=float,
        default=2.0,
        metavar="S",
        help="NAME@ALIAS: seconds between alias checks (default 2)",
    )
    p.add_argument("--host", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="TCP port (default 8000; 0: any free port)")
    p.add_argument(
        "--decision-log", metavar="PATH", help="SQLite decision log (default decisions.sqlite)"
    )
    p.add_argument("--mode", choices=["sample", "greedy"], help="sample (default) or greedy")
    p.add_argument("--epsilon", type=float, help="uniform exploration mass (discrete)")
    p.add_argument(
        "--epsilon-cap", type=float, help="most probability off the greedy action (discrete)"
    )
    p.add_argument("--max-batch-size", type=int, help="most observations per forward")
    p.add_argument("--max-batch-wait-ms", type=float, help="wait for more requests after the first")
    p.add_argument("--request-timeout-ms", type=float, help="deadline before the fallback")
    p.add_argument(
        "--fallback-action",
        help="action when the policy fails or is late: an integer, or comma-separated floats",
    )
    p.add_argument("--seed", type=int, help="seed of action sampling")
    p.add_argument("--log-queue-size", type=int, help="decision-log queue bound (503 beyond)")
    g = p.add_argument_group("canary, shadow and guardrail")
    g.add_argument("--canary", metavar="ARTIFACT", help="canary policy artifact directory")
    g.add_argument("--canary-share", type=float, help="fraction of units on the canary (default 0)")
    g.add_argument("--salt", help="canary assignment salt (default: the canary's hash)")
    g.add_argument("--shadow", metavar="ARTIFACT", help="shadow policy (logged, never served)")
    g.add_argument("--shadow-share", type=float, help="fraction of units shadowed (default 1)")
    g.add_argument("--guardrail-reward-range", metavar="LO,HI", help="reward bounds (default 0,1)")
    g.add_argument("--guardrail-alpha", type=float, help="false-rollback bound (default 0.05)")
    g.add_argument(
        "--guardrail-min-samples", type=int, help="reward pairs before deciding (default 100)"
    )
    g.add_argument("--guardrail-min-effect", type=float, help="tolerated reward loss (default 0)")
    g = p.add_argument_group("scale-out on Ray Serve (pip install 'rlops[ray-serve]')")
    g.add_argument(
        "--ray", action="store_true", help="serve from Ray Serve replicas on this machine"
    )
    g.add_argument("--replicas", type=int, help="replica processes (default 1; needs --ray)")
    g.add_argument("--ray-address", help="Ray cluster to join (default: a local instance)")
    g = p.add_argument_group(
        "admin (bearer token from $RLOPS_ADMIN_TOKEN, else generated and printed)"
    )
    g.add_argument(
        "--admin-log", metavar="PATH", help="admin log (default <decision-log>.admin.jsonl)"
    )
    g.add_argument(
        "--state-file", metavar="PATH", help="routing state (default <decision-log>.state.json)"
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "decisions", help="check a decision log, or export it to Parquet for offline learning"
    )
    p.add_argument(
        "action", choices=["check", "export"], help="check (integrity, counts) or export"
    )
    p.add_argument("log", help="SQLite decision log written by rlops serve")
    p.add_argument("--out", metavar="FILE", help="export: the Parquet file to write")
    p.add_argument("--since", metavar="UNIX_S", help="export: only decisions from this time on")
    p.set_defaults(func=_cmd_decisions)

    p = sub.add_parser(
        "ope", help="off-policy evaluation of a policy on a decision log, with intervals"
    )
    p.add_argument("--log", required=True, help="decision log (.sqlite, .jsonl or .parquet)")
    p.add_argument("--policy", required=True, metavar="ARTIFACT", help="candidate policy")
    p.add_argument("--baseline-value", type=float, help="today's value, to compare with")
    p.add_argument(
        "--mode",
        choices=["auto", "bandit", "sequential"],
        default="auto",
        help="one-step or sequential estimators (default: from the log)",
    )
    p.add_argument("--gamma", type=float, default=1.0, help="discount (sequential)")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap / model seed")
    p.add_argument("--out", metavar="DIR", help="also write DIR/ope.json and DIR/ope.md")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.set_defaults(func=_cmd_ope)

    p = sub.add_parser(
        "gate", help="evaluate a promotion gate file on evidence (exit 0 pass, 1 fail)"
    )
    p.add_argument("action", choices=["check"], help="check the gates")
    p.add_argument("gate_file", help="YAML gate file (gates: [LEFT OP RIGHT, ...])")
    p.add_argument(
        "--evidence",
        action="append",
        metavar="[NAME=]PATH",
        help="JSON evidence (an rlops ope --json report, a suite report...); repeatable",
    )
    p.add_argument("--out", metavar="FILE", help="write the pass/fail record here (JSON)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=_cmd_gate)

    from rlops.cli import offline

    offline.add_parser(sub)

    from rlops.cli import registry

    registry.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    from rlops.core import interrupt

    parser = build_parser()
    args = parser.parse_args(argv)
    interrupt.install()
    try:
        code: int = args.func(args)
        return code
    except RlopsError as exc:
        print(f"rlops: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # an output path that is a directory, a full disk ...
        print(f"rlops: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        run_hint = ""
        if getattr(args, "out", None):
            run_hint = f"; continue with: rlops train --resume {Path(args.out)}"
        print(f"rlops: interrupted{run_hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
