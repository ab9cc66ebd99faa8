"""``rlops train-offline``: a candidate policy from a decision log.

::

    rlops train-offline --log decisions.sqlite --out runs/candidate
    rlops train-offline --log recording.jsonl --algo cql --steps 20000 --alpha 2

Reads the log (SQLite serving log, JSONL recording or Parquet export), picks
``bandit-dr`` for one-step logs and ``cql`` for sequential ones unless
``--algo`` says otherwise, trains, and writes a normal policy artifact to
``<out>/artifact`` (``rlops serve <out>/artifact`` serves it) with
``metrics.jsonl``, ``summary.json`` and ``lineage.json`` (code, settings, seed,
the log's sha256: :mod:`rlops.runtime.lineage`) beside it. Bad input raises an
:class:`~rlops.core.errors.RlopsError` (the CLI prints it and exits 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rlops.core.errors import RlopsError

ALGOS = ("bandit-ips", "bandit-dr", "cql")
ARTIFACT_DIR = "artifact"

# flag -> (config field, algorithms it applies to)
_OVERRIDES: dict[str, tuple[str, tuple[str, ...]]] = {
    "steps": ("steps", ALGOS),
    "batch_size": ("batch_size", ALGOS),
    "lr": ("lr", ALGOS),
    "hidden_sizes": ("hidden_sizes", ALGOS),
    "entropy_coef": ("entropy_coef", ("bandit-ips", "bandit-dr")),
    "max_weight": ("max_weight", ("bandit-ips", "bandit-dr")),
    "gamma": ("gamma", ("cql",)),
    "alpha": ("alpha", ("cql",)),
    "epsilon": ("epsilon", ("cql",)),
}


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated widths") from None


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``train-offline`` on the ``rlops`` sub-command parser."""
    p = sub.add_parser(
        "train-offline",
        help="train a candidate policy from a decision log (contextual bandit or CQL)",
        description=(
            "Train a policy from logged decisions: a contextual-bandit learner (IPS or doubly "
            "robust objective) for one-step logs, discrete conservative Q-learning (CQL) for "
            "sequential ones. Writes a policy artifact to OUT/artifact."
        ),
    )
    p.add_argument(
        "--log",
        required=True,
        metavar="PATH",
        help="decision log: .sqlite (rlops serve), .jsonl (recording) or .parquet (export)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="run directory (default runs/offline-<algo>-<timestamp>)"
    )
    p.add_argument(
        "--algo",
        choices=ALGOS,
        help="learner (default: bandit-dr when no episode has more than one step, else cql)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--steps", type=int, help="gradient steps")
    p.add_argument("--batch-size", type=int, help="decisions/transitions per gradient step")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--hidden-sizes", type=_widths, metavar="W,W", help="hidden widths, e.g. 64,64")
    g = p.add_argument_group("bandit-ips / bandit-dr")
    g.add_argument("--entropy-coef", type=float, help="entropy bonus weight")
    g.add_argument("--max-weight", type=float, help="clip importance weights 1/p at this value")
    g = p.add_argument_group("cql")
    g.add_argument("--gamma", type=float, help="discount factor")
    g.add_argument("--alpha", type=float, help="weight of the conservative penalty")
    g.add_argument(
        "--epsilon", type=float, help="the artifact's epsilon-greedy exploration (propensities)"
    )
    g = p.add_argument_group("log")
    g.add_argument(
        "--n-actions", type=int, help="number of actions (default: from logged distributions/masks)"
    )
    g.add_argument(
        "--action-start",
        type=int,
        default=0,
        help="first action id, Discrete(n, start) (default 0)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_train_offline)


def _config(algo: str, args: argparse.Namespace) -> Any:
    """The learner's config from its defaults and the flags given (validated here, before torch)."""
    from rlops.algos.offline import BanditConfig, CQLConfig

    given: dict[str, Any] = {}
    for flag, (field, applies) in _OVERRIDES.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if algo not in applies:
            raise RlopsError(
                f"train-offline --{flag.replace('_', '-')}: applies to {', '.join(applies)}, "
                f"not {algo}"
            )
        given[field] = value
    if algo == "cql":
        return CQLConfig(**given)
    return BanditConfig(objective="ips" if algo == "bandit-ips" else "dr", **given)


def _write_run_lineage(
    out: Path, algo: str, config: Any, args: argparse.Namespace, log: dict[str, Any]
) -> None:
    """``OUT/lineage.json``: code, learner config, seed and the decision log's hashes.

    ``config`` there is this run's settings as YAML (train-offline has no
    config.yaml): ``algo``, ``seed``, the log reading flags and every
    hyperparameter, defaults included. The log's entry in ``data`` carries
    ``records_sha256`` beside the file hash: a SQLite log in WAL mode can
    change bytes without changing records.
    """
    import yaml

    from rlops.core.config import to_mapping
    from rlops.runtime.lineage import collect_lineage, write_lineage

    settings = {
        "algo": algo,
        "seed": args.seed,
        "n_actions": args.n_actions,
        "action_start": args.action_start,
        "hyperparameters": to_mapping(config),
    }
    lineage = collect_lineage(
        yaml.safe_dump(settings, sort_keys=False),
        seed=args.seed,
        env_id=None,
        env_kwargs={},
        backend="inline",
        algo=algo,
        kind="offline",
        data=[args.log],
    )
    lineage["data"][0]["records"] = int(log["records"])
    lineage["data"][0]["records_sha256"] = str(log["records_sha256"])
    write_lineage(out, lineage)


def cmd_train_offline(args: argparse.Namespace) -> int:
    """Handle ``rlops train-offline``; returns the exit code.

    Raises:
        RlopsError: unreadable or unusable log (``DataError``), bad flags
            (``ConfigError``).
    """
    from rlops.algos.offline.data import check_discrete, default_algo
    from rlops.core.errors import DataError
    from rlops.evaluation.ope.data import load_decisions, split_arms, to_bandit, to_episodes

    everything = load_decisions(args.log)
    if not everything:
        raise DataError(f"log: {args.log} holds no decision records")
    # Fallback and override decisions were not chosen by a policy: not evidence to learn from.
    records, dropped_arms = split_arms(everything)
    if dropped_arms:
        print(f"train-offline: left out {dropped_arms} (not decided by a policy)", file=sys.stderr)
    if not records:
        raise DataError(f"arm: all {len(everything)} record(s) are fallback/override decisions")
    check_discrete(records)
    shape = default_algo(records)
    algo = args.algo or shape
    config = _config(algo, args)
    if algo == "cql" and shape != "cql":
        raise DataError(
            "algo: cql learns from episodes (records sharing an episode_id with steps 0, 1, "
            "...); no episode in this log has more than one step: use bandit-dr or bandit-ips"
        )
    out = Path(args.out or f"runs/offline-{algo}-{time.strftime('%Y%m%d-%H%M%S')}")
    data: Any
    if algo == "cql":
        data = to_episodes(records, n_actions=args.n_actions, action_start=args.action_start)
        used = int(data.valid.sum())
    else:
        data = to_bandit(records, n_actions=args.n_actions, action_start=args.action_start)
        used = data.n

    from rlops.algos.offline import log_lineage, save_offline_policy, train_bandit, train_cql
    from rlops.observability import ConsoleSink, JsonlSink, MultiLogger
    from rlops.observability.logger import MetricSink

    lineage = log_lineage(args.log, records, used=used, dropped_no_reward=data.dropped_no_reward)
    out.mkdir(parents=True, exist_ok=True)
    _write_run_lineage(out, algo, config, args, lineage["log"])
    (out / "metrics.jsonl").unlink(missing_ok=True)  # a new run, not a continuation
    sinks: list[MetricSink] = [JsonlSink(out / "metrics.jsonl")]
    if not args.no_progress:
        sinks.append(
            ConsoleSink(config.total_steps, description=f"train-offline {algo}", file=sys.stderr)
        )
    with MultiLogger(sinks) as logger:
        if algo == "cql":
            result = train_cql(data, config, seed=args.seed, logger=logger)
        else:
            result = train_bandit(data, config, seed=args.seed, logger=logger)
    artifact = out / ARTIFACT_DIR
    version = save_offline_policy(artifact, result, action_start=args.action_start, lineage=lineage)
    summary = {
        "run_dir": str(out),
        "artifact": str(artifact),
        "version": version,
        "algo": algo,
        "seed": args.seed,
        "log": lineage["log"],
        "metrics": result.metrics,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"run directory : {out}")
    print(f"policy        : {artifact}  ({version[:23]}…)")
    print(f"algo          : {algo} on {used} logged decisions of {len(records)} records")
    for key, value in sorted(result.metrics.items()):
        print(f"{key:<30}: {value:.4g}")
    return 0
