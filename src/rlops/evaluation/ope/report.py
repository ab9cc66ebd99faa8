"""``rlops ope``: every estimator, its interval and diagnostics, and a reading in plain words.

:func:`ope_report` reads a decision log (serving SQLite, simulation JSONL or a
Parquet export), evaluates a candidate policy artifact on it with every
applicable estimator, and returns one JSON-able report; :func:`render_markdown`
turns it into Markdown. The report's top level is shaped for gate files:
each estimator is a key (``dr.lower_95``, ``ips.diagnostics.ess``), plus
``ess``, ``kl_to_production``, ``logged_value`` and ``baseline_value``.

One-step or sequential? ``mode="auto"`` picks one-step when every logged
episode has a single decision (or the log has no episode ids) and sequential
otherwise.

>>> report = ope_report("decisions.sqlite", "runs/candidate/artifact",
...                     baseline_value=0.58)  # doctest: +SKIP
>>> report["dr"]["lower_95"] >= report["baseline_value"]  # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rlops.core.decisions import is_sequential
from rlops.core.errors import ConfigError, DataError
from rlops.evaluation.ope.data import (
    load_decisions,
    policy_distributions,
    split_arms,
    to_bandit,
    to_episodes,
)
from rlops.evaluation.ope.estimate import Estimate

__all__ = ["kl_divergence", "ope_report", "reading", "render_markdown"]

Mode = Literal["auto", "bandit", "sequential"]
PRODUCTION_ARMS = ("production", "simulation")
"""Rows that show what today's policy does: ``logged_value`` and ``kl_to_production``
are computed on them (canary rows are still evidence for the estimators)."""

THIN_ESS = 100
THIN_ESS_SHARE = 0.05
"""Below ``max(THIN_ESS, THIN_ESS_SHARE * n)`` effective samples the reading
refuses to call a winner (a gate file makes the formal call)."""

RECOMMENDED = {"bandit": "dr", "sequential": "seq_dr"}
"""The estimator the reading leads with: doubly robust, unbiased when either the
propensities or the reward model are right, and usually the tightest."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def kl_divergence(
    target: np.ndarray, behaviour: np.ndarray, valid: np.ndarray | None = None
) -> float:
    """Mean ``KL(target || behaviour)`` over logged decisions (nats); inf without support."""
    t = target.reshape(-1, target.shape[-1])
    b = behaviour.reshape(-1, behaviour.shape[-1])
    keep = np.ones(t.shape[0], bool) if valid is None else valid.reshape(-1)
    t, b = t[keep], b[keep]
    mass = t > 0
    if np.any(mass & (b <= 0)):
        return math.inf
    ratio = np.where(mass, t / np.where(b > 0, b, 1.0), 1.0)
    return float(np.sum(np.where(mass, t * np.log(ratio), 0.0), axis=1).mean())


def ope_report(
    log: str | os.PathLike[str],
    policy: str | os.PathLike[str],
    *,
    baseline_value: float | None = None,
    mode: Mode = "auto",
    gamma: float = 1.0,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate ``policy`` (an artifact directory) on ``log`` with every estimator.

    Args:
        log: decision log path (``.sqlite``, ``.jsonl``, ``.parquet``).
        policy: candidate policy artifact (discrete actions).
        baseline_value: today's value to compare with (e.g. the production
            policy's measured value), reported and used in the reading.
        mode: ``auto``, ``bandit`` (one-step) or ``sequential``.
        gamma: discount of sequential returns.
        level: nominal coverage of the intervals.
        seed: bootstrap / model-fitting seed.

    Returns:
        The report (JSON-able); see the module docstring for its shape.

    Raises:
        DataError: the log cannot support the estimate (named, with counts).
        ArtifactError: a missing or tampered artifact.
    """
    import rlops

    if not 0.5 <= level < 1.0:
        raise ConfigError(f"level: must be in [0.5, 1), got {level}")
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma: must be in (0, 1], got {gamma}")
    if baseline_value is not None and not math.isfinite(baseline_value):
        raise ConfigError(f"baseline_value: must be a finite number, got {baseline_value}")
    log_path, policy_path = Path(log), Path(policy)
    all_records = load_decisions(log_path)
    # Fallback and override rows were not chosen by a policy (propensity 1, no
    # support elsewhere): weighting them would bias IPS-type estimates.
    records, dropped_arms = split_arms(all_records)
    if not records:
        raise DataError(
            f"arm: all {len(all_records)} record(s) are fallback/override decisions "
            f"({dropped_arms}); nothing was decided by a policy"
        )
    candidate = rlops.load_policy(policy_path)
    if not candidate.discrete:
        raise DataError("policy: off-policy evaluation here needs a discrete-action policy")
    start = int(getattr(candidate.action_space, "start", 0))
    n_actions = int(candidate.action_space.n)  # type: ignore[attr-defined]
    if mode == "auto":
        mode = "sequential" if is_sequential(records) else "bandit"
    report: dict[str, Any] = {
        "mode": mode,
        "log": {"path": str(log_path), "sha256": _sha256(log_path), "records": len(all_records)},
        "dropped_arms": dropped_arms,
        "policy": {"path": str(policy_path), "version": candidate.version},
        "level": level,
        "baseline_value": baseline_value,
    }
    estimates: list[Estimate]
    if mode == "bandit":
        from rlops.evaluation.ope.bandit import evaluate_bandit

        data = to_bandit(records, n_actions=n_actions, action_start=start)
        target = policy_distributions(candidate, data.observations, data.masks)
        estimates = evaluate_bandit(data, target, level=level, seed=seed)
        report["decisions"] = data.n
        report["dropped_no_reward"] = data.dropped_no_reward
        production = np.isin(data.arms, PRODUCTION_ARMS) if data.arms.size else None
        if production is None or not production.any():
            production = np.ones(data.n, dtype=bool)
        report["logged_value"] = float(data.rewards[production].mean())
        kl = None
        if data.behaviour is not None:
            kl = kl_divergence(target[production], data.behaviour[production])
        versions = sorted(set(data.policy_versions.tolist()))
    else:
        from rlops.evaluation.ope.sequential import evaluate_sequential

        episodes = to_episodes(records, n_actions=n_actions, action_start=start)
        target = policy_distributions(candidate, episodes.observations, episodes.masks)
        estimates = evaluate_sequential(episodes, target, gamma=gamma, level=level, seed=seed)
        discounts = gamma ** np.arange(episodes.horizon)
        returns = (episodes.rewards * episodes.valid * discounts).sum(axis=1)
        report["episodes"] = episodes.n_episodes
        report["decisions"] = int(episodes.valid.sum())
        report["dropped_no_reward"] = episodes.dropped_no_reward
        report["gamma"] = gamma
        report["dropped_incomplete"] = episodes.dropped_incomplete
        report["logged_value"] = float(returns.mean())
        kl = None
        # KL against production needs every row to come from production (the
        # episode arrays do not keep arms): a log with canary rows reports none.
        if episodes.behaviour is not None and all(r.arm in PRODUCTION_ARMS for r in records):
            kl = kl_divergence(target, episodes.behaviour, episodes.valid)
        versions = sorted({r.policy_version for r in records})
    report["logging_policies"] = versions
    report["estimators"] = [e.name for e in estimates]
    for e in estimates:
        report[e.name] = e.to_dict()
    recommended = RECOMMENDED[mode]
    if recommended not in report:
        recommended = estimates[0].name
    report["recommended"] = recommended
    # The same estimate under a fixed key, so one gate file serves both modes
    # (``recommended_estimate.lower_95 >= baseline_value``).
    report["recommended_estimate"] = report[recommended]
    ess = report[recommended]["diagnostics"].get("ess")
    if ess is None:
        ess = next((e.diagnostics["ess"] for e in estimates if "ess" in e.diagnostics), None)
    report["ess"] = ess
    report["kl_to_production"] = kl if kl is not None and math.isfinite(kl) else None
    report["reading"] = reading(report)
    return report


def _interval(entry: dict[str, Any], level: float) -> str:
    pct = round(level * 100)
    lo, hi = entry.get(f"lower_{pct}"), entry.get(f"upper_{pct}")
    if lo is None or hi is None:
        return "no interval"
    return f"{pct}% CI {lo:.4g} to {hi:.4g}"


def reading(report: dict[str, Any]) -> str:
    """One paragraph a product owner can read: what the numbers say and how far to trust them."""
    level = report["level"]
    pct = round(level * 100)
    name = report["recommended"]
    best = report[name]
    unit = "mean reward per decision" if report["mode"] == "bandit" else "mean return per episode"
    sample = (
        f"{report['decisions']:,} logged decisions"
        if report["mode"] == "bandit"
        else f"{report['episodes']:,} logged episodes ({report['decisions']:,} decisions)"
    )
    parts = [
        f"On {sample}, the {name.upper()} estimate of the candidate's {unit} is "
        f"{best['value']:.4g} ({_interval(best, level)}); the logged policy achieved "
        f"{report['logged_value']:.4g}."
    ]
    baseline = report.get("baseline_value")
    lo, hi = best.get(f"lower_{pct}"), best.get(f"upper_{pct}")
    units = report["decisions"] if report["mode"] == "bandit" else report["episodes"]
    ess = report.get("ess")
    thin = ess is not None and (ess < THIN_ESS or ess < THIN_ESS_SHARE * units)
    if thin:
        parts.append(
            f"But the effective sample size is only {ess:,.0f} of {units:,}: a handful of "
            "logged cases carry the estimate, because the candidate acts differently from "
            "the logged policy. Do not decide on this log; collect data closer to the "
            "candidate (a small canary, or more exploration in production)."
        )
    elif baseline is not None and lo is not None and hi is not None:
        if lo > baseline:
            parts.append(
                f"The whole interval is above the baseline {baseline:.4g}: the evidence says "
                "the candidate is better."
            )
        elif hi < baseline:
            parts.append(
                f"The whole interval is below the baseline {baseline:.4g}: the candidate is "
                "likely worse; do not promote it."
            )
        else:
            parts.append(
                f"The interval contains the baseline {baseline:.4g}: the log cannot tell "
                "whether the candidate is better or worse; collect more data (for example "
                "through a small canary) before deciding."
            )
    values = [report[n]["value"] for n in report["estimators"] if report[n]["value"] is not None]
    if len(values) > 1:
        spread = max(values) - min(values)
        scale = max(abs(v) for v in values) or 1.0
        if spread > 0.1 * scale:
            parts.append(
                f"The estimators disagree ({min(values):.4g} to {max(values):.4g}), which "
                "usually means the reward model or the overlap between the policies is poor; "
                "trust the intervals less."
            )
        elif not thin:
            parts.append("The estimators agree with each other.")
    own = best["warnings"]
    others = sum(len(report[n]["warnings"]) for n in report["estimators"] if n != name)
    if own:
        parts.append(f"Caution ({name}): " + " ".join(w.rstrip(".") + "." for w in own))
    if others:
        parts.append(f"The other estimators carry {others} more warning(s); see the report.")
    if report.get("dropped_no_reward"):
        parts.append(
            f"{report['dropped_no_reward']:,} logged decisions had no reward yet and were left out."
        )
    return " ".join(parts)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: inputs, a table of estimators, the reading."""
    level = report["level"]
    pct = round(level * 100)
    lines = [
        "# Off-policy evaluation",
        "",
        f"- policy: `{report['policy']['path']}` ({report['policy']['version'][:23]}…)",
        f"- log: `{report['log']['path']}` ({report['log']['records']:,} records, "
        f"sha256 {report['log']['sha256'][:12]}…), logged by {len(report['logging_policies'])} "
        "policy version(s)",
        f"- mode: {report['mode']}"
        + (f", gamma {report['gamma']}" if report["mode"] == "sequential" else ""),
        f"- logged policy's value: {report['logged_value']:.4g}"
        + (
            f"; baseline: {report['baseline_value']:.4g}"
            if report.get("baseline_value") is not None
            else ""
        ),
        "",
        f"| estimator | value | {pct}% interval | method | ESS | max weight |",
        "|---|---|---|---|---|---|",
    ]
    for name in report["estimators"]:
        e = report[name]
        lo, hi = e.get(f"lower_{pct}"), e.get(f"upper_{pct}")
        interval = "-" if lo is None or hi is None else f"{lo:.4g} to {hi:.4g}"
        d = e["diagnostics"]
        ess = "-" if d.get("ess") is None else f"{d['ess']:,.0f}"
        wmax = "-" if d.get("max_weight") is None else f"{d['max_weight']:.3g}"
        star = " (recommended)" if name == report["recommended"] else ""
        value = "-" if e["value"] is None else f"{e['value']:.4g}"
        lines.append(
            f"| {name}{star} | {value} | {interval} | {e['ci_method'] or '-'} | {ess} | {wmax} |"
        )
    kl = report.get("kl_to_production")
    lines += [
        "",
        f"KL(candidate || logged policy): {'n/a' if kl is None else f'{kl:.4g} nats'}",
        "",
        "## Reading",
        "",
        report["reading"],
        "",
    ]
    return "\n".join(lines)
