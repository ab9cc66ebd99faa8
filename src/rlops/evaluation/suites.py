"""Evaluation suites: held-out scenarios and edge cases, regret against baselines and the optimum.

A :class:`Suite` is a named set of :class:`Scenario` s (an env id with fixed
parameters and a fixed seed: none of them used in training) plus the
baselines a team runs today and, where one exists, an exact optimum (the
pricing DP oracle). :func:`run_suite` runs the policy and every baseline on
every scenario with the same seeds and reports, per scenario and overall:

* mean return with a 95% confidence interval (Student t over episodes);
* regret against each baseline (``baseline - policy``, negative when the
  policy is better) with a 95% Welch interval, and against the optimum
  (``optimum - policy``) where it is known;
* safety: constraint violations attempted (an action outside the env's
  ``action_masks()``; a masked policy has none) and the env's own counters
  (``info`` keys the suite names, e.g. ``slo_violations``);
* episode length and the action distribution.

>>> suite = get_suite("pricing-holdout")  # doctest: +SKIP
>>> report = run_suite(load_policy("runs/q/artifact"), suite)  # doctest: +SKIP
>>> report.overall["policy"]["mean_return"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from rlops.artifacts import Policy
from rlops.core.errors import ConfigError, EnvError
from rlops.envs import VectorEnv, action_masks, assert_finite_obs, make_vec

__all__ = [
    "ArmResult",
    "Scenario",
    "ScenarioResult",
    "Suite",
    "SuiteReport",
    "get_suite",
    "list_suites",
    "register_suite",
    "run_suite",
    "t_quantile_975",
]

Act = Callable[..., np.ndarray]
"""``act(obs [N, ...])`` or, for envs with action masks, ``act(obs, mask [N, A])``."""

Baseline = Callable[["Scenario", VectorEnv], Act]
"""Builds a baseline's ``act`` for one scenario (it may read the scenario's parameters)."""


@dataclass(frozen=True)
class Scenario:
    """One fixed evaluation setting.

    Attributes:
        name: short id, unique in its suite.
        env_id: registered env id.
        env_kwargs: fixed constructor kwargs (no randomization).
        seed: reset seed; the same for the policy and every baseline.
        episodes: episodes to run.
        kind: ``holdout`` (typical, never trained on) or ``edge`` (stress case).
        description: what it tests, for the report.
    """

    name: str
    env_id: str
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    episodes: int = 20
    kind: Literal["holdout", "edge"] = "holdout"
    description: str = ""


@dataclass(frozen=True)
class Suite:
    """A named set of scenarios with baselines and an optional optimum.

    Attributes:
        name: the suite id (``rlops evaluate ... --suite NAME``).
        description: one line for the report.
        scenarios: the settings.
        baselines: name -> :data:`Baseline` factory.
        optimum: exact expected return of the optimal policy per scenario, if known.
        info_keys: per-step ``info`` counters reported as safety violations.
        num_envs: parallel sub-envs per scenario run.
    """

    name: str
    description: str
    scenarios: tuple[Scenario, ...]
    baselines: Mapping[str, Baseline] = field(default_factory=dict)
    optimum: Callable[[Scenario], float] | None = None
    info_keys: tuple[str, ...] = ()
    num_envs: int = 4


@dataclass
class ArmResult:
    """What one policy (the candidate or a baseline) did on one scenario."""

    mean_return: float
    ci95: tuple[float, float]
    std_return: float
    episodes: int
    mean_length: float
    violations_attempted: float
    """Actions outside the env's mask, per episode."""
    safety: dict[str, float]
    """Per-episode sums of the suite's ``info_keys``."""
    action_distribution: list[float] | dict[str, list[float]]
    """Discrete: frequency of each action; continuous: per-dimension mean and std."""
    returns: list[float]


@dataclass
class ScenarioResult:
    """Policy and baselines on one scenario, with regrets."""

    scenario: Scenario
    policy: ArmResult
    baselines: dict[str, ArmResult]
    optimum: float | None
    regret: dict[str, dict[str, float]]
    """``baseline name`` or ``"optimum"`` -> ``{"value", "ci_low", "ci_high"}``."""


@dataclass
class SuiteReport:
    """Everything :func:`run_suite` measured."""

    suite: str
    description: str
    policy_version: str
    scenarios: list[ScenarioResult]
    overall: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        out = asdict(self)
        for s in out["scenarios"]:
            s["scenario"]["env_kwargs"] = dict(s["scenario"]["env_kwargs"])
        return out


# -- statistics ------------------------------------------------------------------------
_T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def t_quantile_975(df: float) -> float:
    """The 97.5% quantile of Student's t (two-sided 95% intervals).

    Exact table for ``df <= 30``; above, the Cornish-Fisher expansion around
    the normal quantile (error below 1e-4).

    >>> round(t_quantile_975(10), 3), round(t_quantile_975(1000), 3)
    (2.228, 1.962)
    """
    if df < 1:
        return math.inf
    if df <= 30 and float(df).is_integer():
        return _T975[int(df) - 1]
    z = 1.959963984540054
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def _mean_ci(x: np.ndarray) -> tuple[float, tuple[float, float], float]:
    mean = float(x.mean())
    if x.size < 2:
        return mean, (-math.inf, math.inf), 0.0
    std = float(x.std(ddof=1))
    half = t_quantile_975(x.size - 1) * std / math.sqrt(x.size)
    return mean, (mean - half, mean + half), std


def _diff_ci(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """``mean(a) - mean(b)`` with a Welch 95% interval."""
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return {"value": diff, "ci_low": -math.inf, "ci_high": math.inf}
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return {"value": diff, "ci_low": diff, "ci_high": diff}
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = t_quantile_975(df) * se
    return {"value": diff, "ci_low": diff - half, "ci_high": diff + half}


# -- rollouts --------------------------------------------------------------------------
def _rollout(env: VectorEnv, act: Act, scenario: Scenario, info_keys: Sequence[str]) -> ArmResult:
    """Run ``scenario.episodes`` episodes spread evenly over the sub-envs (fixed quotas)."""
    n = env.num_envs
    quota = np.full(n, scenario.episodes // n, dtype=np.int64)
    quota[: scenario.episodes % n] += 1
    done = np.zeros(n, dtype=np.int64)
    running = np.zeros(n)
    length = np.zeros(n, dtype=np.int64)
    attempted = np.zeros(n)
    safety = {key: np.zeros(n) for key in info_keys}
    returns: list[float] = []
    lengths: list[int] = []
    violations: list[float] = []
    safety_done: dict[str, list[float]] = {key: [] for key in info_keys}
    discrete = isinstance(env.single_action_space, spaces.Discrete)
    counts = np.zeros(int(env.single_action_space.n) if discrete else 0)  # type: ignore[attr-defined]
    continuous: list[np.ndarray] = []
    obs, _ = env.reset(seed=scenario.seed)
    masked = action_masks(env) is not None
    for step in range(1, 10_000_000):
        if (done >= quota).all():
            break
        mask = action_masks(env) if masked else None
        actions = act(obs, mask) if masked else act(obs)
        active = done < quota
        if mask is not None:
            chosen = np.asarray(actions, dtype=np.int64)
            attempted += ~mask[np.arange(n), chosen] & active
        if discrete:
            np.add.at(counts, np.asarray(actions, dtype=np.int64)[active], 1)
        else:
            continuous.append(np.asarray(actions, dtype=np.float64)[active])
        obs, rewards, terminated, truncated, info = env.step(actions)
        assert_finite_obs(np.asarray(obs), step)
        running += np.asarray(rewards, dtype=np.float64)
        length += 1
        for key in info_keys:
            if key in info:
                safety[key] += np.asarray(info[key], dtype=np.float64).reshape(n)
        ended = np.flatnonzero(np.logical_or(terminated, truncated))
        for i in ended:
            if done[i] < quota[i]:
                returns.append(float(running[i]))
                lengths.append(int(length[i]))
                violations.append(float(attempted[i]))
                for key in info_keys:
                    safety_done[key].append(float(safety[key][i]))
                done[i] += 1
            running[i] = 0.0
            length[i] = 0
            attempted[i] = 0.0
            for key in info_keys:
                safety[key][i] = 0.0
    else:  # pragma: no cover - a guard against envs that never end
        raise EnvError(f"scenario {scenario.name!r}: episodes did not end within 1e7 steps")
    x = np.asarray(returns)
    mean, ci, std = _mean_ci(x)
    distribution: list[float] | dict[str, list[float]]
    if discrete:
        distribution = (counts / max(counts.sum(), 1)).round(4).tolist()
    else:
        stacked = np.concatenate(continuous) if continuous else np.zeros((0, 1))
        distribution = {
            "mean": stacked.mean(axis=0).round(4).tolist(),
            "std": stacked.std(axis=0).round(4).tolist(),
        }
    return ArmResult(
        mean_return=mean,
        ci95=ci,
        std_return=std,
        episodes=len(returns),
        mean_length=float(np.mean(lengths)),
        violations_attempted=float(np.mean(violations)),
        safety={key: float(np.mean(v)) for key, v in safety_done.items()},
        action_distribution=distribution,
        returns=[round(r, 6) for r in returns],
    )


def _policy_act(policy: Policy, deterministic: bool) -> Act:
    def act(obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return policy.act(obs, deterministic=deterministic, mask=mask)[0]

    return act


def run_suite(
    policy: Policy,
    suite: Suite,
    baselines: Sequence[str] | None = None,
    deterministic: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SuiteReport:
    """Evaluate ``policy`` and the baselines on every scenario of ``suite``.

    Args:
        policy: the candidate.
        suite: what to run.
        baselines: which of the suite's baselines (default: all).
        deterministic: act with the policy's most likely action.
        progress: called with a line per finished run.

    Returns:
        The :class:`SuiteReport`.

    Raises:
        ConfigError: an unknown baseline name.
        EnvError: the policy does not fit a scenario's env.
    """
    names = list(suite.baselines) if baselines is None else list(baselines)
    unknown = [b for b in names if b not in suite.baselines]
    if unknown:
        raise ConfigError(
            f"--baseline: {unknown[0]!r} is not a baseline of suite {suite.name!r}; "
            f"choose from {', '.join(suite.baselines) or '(none)'}"
        )
    results = []
    for scenario in suite.scenarios:
        env = make_vec(
            scenario.env_id, min(suite.num_envs, scenario.episodes), **scenario.env_kwargs
        )
        try:
            if env.single_observation_space.shape != policy.observation_space.shape:
                raise EnvError(
                    f"scenario {scenario.name!r}: env {scenario.env_id!r} observations have "
                    f"shape {env.single_observation_space.shape}, the policy expects "
                    f"{policy.observation_space.shape}"
                )
            mine = _rollout(env, _policy_act(policy, deterministic), scenario, suite.info_keys)
            theirs = {}
            for name in names:
                act = suite.baselines[name](scenario, env)
                theirs[name] = _rollout(env, act, scenario, suite.info_keys)
        finally:
            env.close()
        optimum = suite.optimum(scenario) if suite.optimum is not None else None
        x = np.asarray(mine.returns)
        regret = {name: _diff_ci(np.asarray(arm.returns), x) for name, arm in theirs.items()}
        if optimum is not None:
            _, (low, high), _ = _mean_ci(x)
            regret["optimum"] = {
                "value": optimum - mine.mean_return,
                "ci_low": optimum - high,
                "ci_high": optimum - low,
            }
        results.append(ScenarioResult(scenario, mine, theirs, optimum, regret))
        if progress is not None:
            line = f"{scenario.name:<24s} policy {mine.mean_return:10.3f}"
            for name, arm in theirs.items():
                line += f"  {name} {arm.mean_return:10.3f}"
            if optimum is not None:
                line += f"  optimum {optimum:10.3f}"
            progress(line)
    return SuiteReport(
        suite=suite.name,
        description=suite.description,
        policy_version=policy.version,
        scenarios=results,
        overall=_overall(results, names),
    )


def _overall(results: Sequence[ScenarioResult], names: Sequence[str]) -> dict[str, Any]:
    """Means over scenarios, per kind (holdout, edge) and in total."""
    out: dict[str, Any] = {}
    for kind in ("holdout", "edge", "all"):
        rows = [r for r in results if kind == "all" or r.scenario.kind == kind]
        if not rows:
            continue
        entry: dict[str, Any] = {
            "scenarios": len(rows),
            "policy_mean_return": float(np.mean([r.policy.mean_return for r in rows])),
            "violations_attempted": float(np.mean([r.policy.violations_attempted for r in rows])),
        }
        for name in names:
            entry[f"{name}_mean_return"] = float(
                np.mean([r.baselines[name].mean_return for r in rows])
            )
            entry[f"regret_vs_{name}"] = float(np.mean([r.regret[name]["value"] for r in rows]))
        optima = [r.optimum for r in rows if r.optimum is not None]
        if len(optima) == len(rows):
            total_opt = float(np.sum(optima))
            entry["optimum_mean_return"] = float(np.mean(optima))
            entry["regret_vs_optimum"] = float(
                np.mean([r.regret["optimum"]["value"] for r in rows])
            )
            if total_opt:
                entry["ratio_to_optimum"] = float(
                    np.sum([r.policy.mean_return for r in rows]) / total_opt
                )
        out[kind] = entry
    return out


# -- the suite registry ----------------------------------------------------------------
_SUITES: dict[str, tuple[Callable[[], Suite], str]] = {}


def register_suite(name: str, factory: Callable[[], Suite], description: str) -> None:
    """Make ``factory`` available as ``--suite name`` (built lazily on first use)."""
    _SUITES[name] = (factory, description)


def list_suites() -> dict[str, str]:
    """``name -> description`` of the registered suites."""
    _load_builtin()
    return {name: description for name, (_, description) in sorted(_SUITES.items())}


def get_suite(name: str) -> Suite:
    """The suite registered as ``name``.

    Raises:
        ConfigError: unknown name (the known ones are listed).
    """
    _load_builtin()
    if name not in _SUITES:
        raise ConfigError(
            f"--suite: unknown suite {name!r}; choose one of {', '.join(sorted(_SUITES))}"
        )
    return _SUITES[name][0]()


def _load_builtin() -> None:
    from rlops.evaluation import builtin_suites  # noqa: F401  (registers on import)
