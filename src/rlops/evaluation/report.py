"""Write a :class:`~rlops.evaluation.suites.SuiteReport` as JSON, Markdown and PNG plots.

``write_report(report, out_dir)`` writes, atomically each:

* ``report.json``: everything measured (:meth:`SuiteReport.to_dict`);
* ``report.md``: per-scenario table (mean return with 95% CI, each baseline,
  the optimum, regret, violations) and the overall summary;
* ``returns.png``: mean return with 95% CI per scenario, policy vs baselines
  (vs the optimum as a marker where known);
* ``actions.png``: the policy's action distribution per scenario (discrete).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rlops.evaluation.suites import SuiteReport

__all__ = ["format_table", "write_report"]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:,.{digits}f}"


def format_table(report: SuiteReport) -> str:
    """A compact plain-text table of the report (what the CLI prints)."""
    names = list(report.scenarios[0].baselines) if report.scenarios else []
    widths = [max(12, len(n) + 2) for n in names]
    has_opt = any(r.optimum is not None for r in report.scenarios)
    first = max([26, *(len(r.scenario.name) + 2 for r in report.scenarios)])
    head = f"{'scenario':<{first}s}{'policy':>12s}"
    head += "".join(f"{n:>{w}s}" for n, w in zip(names, widths, strict=True))
    if has_opt:
        head += f"{'optimum':>12s}{'% of opt':>10s}"
    head += f"{'violations':>12s}"
    lines = [head, "-" * len(head)]
    for r in report.scenarios:
        line = f"{r.scenario.name:<{first}s}{_fmt(r.policy.mean_return):>12s}"
        line += "".join(
            f"{_fmt(r.baselines[n].mean_return):>{w}s}" for n, w in zip(names, widths, strict=True)
        )
        if has_opt:
            pct = 100 * r.policy.mean_return / r.optimum if r.optimum else None
            line += f"{_fmt(r.optimum):>12s}{_fmt(pct, 1):>10s}"
        line += f"{_fmt(r.policy.violations_attempted, 2):>12s}"
        lines.append(line)
    for kind, entry in report.overall.items():
        summary = f"{kind + ' (mean)':<{first}s}{_fmt(entry['policy_mean_return']):>12s}"
        summary += "".join(
            f"{_fmt(entry[f'{n}_mean_return']):>{w}s}" for n, w in zip(names, widths, strict=True)
        )
        if has_opt and "optimum_mean_return" in entry:
            pct = 100 * entry.get("ratio_to_optimum", float("nan"))
            summary += f"{_fmt(entry['optimum_mean_return']):>12s}{_fmt(pct, 1):>10s}"
        lines.append(summary)
    keys = list(report.scenarios[0].policy.safety) if report.scenarios else []
    if keys:
        lines += ["", "per episode (policy | " + " | ".join(names) + "):"]
        for r in report.scenarios:
            for key in keys:
                values = [r.policy.safety[key], *(r.baselines[n].safety[key] for n in names)]
                lines.append(
                    f"  {r.scenario.name:<{first - 2}s}{key:<24s}"
                    + " | ".join(_fmt(v) for v in values)
                )
    return "\n".join(lines)


def _markdown(report: SuiteReport) -> str:
    names = list(report.scenarios[0].baselines) if report.scenarios else []
    out = [
        f"# Evaluation: suite `{report.suite}`",
        "",
        report.description,
        "",
        f"Policy version: `{report.policy_version}`",
        "",
        "Mean return per scenario with a 95% confidence interval (Student t over "
        "episodes); regret = baseline (or optimum) minus policy, negative when the "
        "policy is better, with a 95% Welch interval. Violations: actions the "
        "policy attempted outside the env's action mask, per episode.",
        "",
    ]
    cols = ["scenario", "kind", "policy (95% CI)", *names, "optimum"]
    cols += [f"regret vs {n}" for n in [*names, "optimum"]]
    cols += ["violations", "episode length"]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "---|" * len(cols))
    for r in report.scenarios:
        p = r.policy
        row = [
            f"`{r.scenario.name}`",
            r.scenario.kind,
            f"{_fmt(p.mean_return)} ({_fmt(p.ci95[0])} .. {_fmt(p.ci95[1])})",
            *[_fmt(r.baselines[n].mean_return) for n in names],
            _fmt(r.optimum),
        ]
        for n in [*names, "optimum"]:
            g = r.regret.get(n)
            row.append(
                "-"
                if g is None
                else f"{_fmt(g['value'])} ({_fmt(g['ci_low'])} .. {_fmt(g['ci_high'])})"
            )
        extra = "".join(f"; {k} {_fmt(v)}" for k, v in p.safety.items())
        row += [_fmt(p.violations_attempted) + extra, _fmt(p.mean_length, 1)]
        out.append("| " + " | ".join(row) + " |")
    out += ["", "## Overall", ""]
    for kind, entry in report.overall.items():
        items = ", ".join(
            f"{k} = {_fmt(v, 3) if isinstance(v, float) else v}" for k, v in entry.items()
        )
        out.append(f"- **{kind}**: {items}")
    out += ["", "## Scenarios", ""]
    for r in report.scenarios:
        s = r.scenario
        kwargs = ", ".join(f"{k}={v}" for k, v in s.env_kwargs.items())
        out.append(
            f"- `{s.name}` ({s.kind}): {s.description or '-'} `{s.env_id}` ({kwargs}), "
            f"seed {s.seed}, {s.episodes} episodes"
        )
    out += ["", "![returns](returns.png)", "", "![actions](actions.png)", ""]
    return "\n".join(out)


def _plots(report: SuiteReport, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rows = report.scenarios
    names = list(rows[0].baselines) if rows else []
    arms = ["policy", *names]
    x = np.arange(len(rows))
    width = 0.8 / max(len(arms), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows) + 2), 4.5))
    for k, arm in enumerate(arms):
        results = [r.policy if arm == "policy" else r.baselines[arm] for r in rows]
        means = np.array([a.mean_return for a in results])
        low = np.array([a.ci95[0] for a in results])
        high = np.array([a.ci95[1] for a in results])
        err = np.vstack(
            [
                means - np.where(np.isfinite(low), low, means),
                np.where(np.isfinite(high), high, means) - means,
            ]
        )
        ax.bar(x + (k - (len(arms) - 1) / 2) * width, means, width, yerr=err, capsize=2, label=arm)
    known = [(i, r.optimum) for i, r in enumerate(rows) if r.optimum is not None]
    if known:
        xs, ys = [i for i, _ in known], [float(o) for _, o in known if o is not None]
        ax.scatter(xs, ys, marker="_", s=600, color="black", label="optimum")
    ax.set_xticks(x, [r.scenario.name for r in rows], rotation=30, ha="right")
    ax.set_ylabel("mean episode return (95% CI)")
    ax.set_title(f"suite {report.suite}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = out_dir / "returns.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    dists = [r.policy.action_distribution for r in rows]
    if dists and all(isinstance(d, list) for d in dists):
        matrix = np.array(dists, dtype=np.float64)
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * matrix.shape[1] + 3), 0.45 * len(rows) + 1.5))
        image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0)
        ax.set_yticks(np.arange(len(rows)), [r.scenario.name for r in rows])
        ax.set_xlabel("action")
        ax.set_title("policy action frequencies")
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        path = out_dir / "actions.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write_report(report: SuiteReport, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the PNG plots into ``out_dir``.

    Returns:
        ``{"json", "markdown", "plots"...}`` -> paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = report.to_dict()
    json_path, md_path = out / "report.json", out / "report.md"
    _atomic_write(json_path, (json.dumps(data, indent=2, default=float) + "\n").encode())
    _atomic_write(md_path, _markdown(report).encode())
    paths: dict[str, Path] = {"json": json_path, "markdown": md_path}
    for path in _plots(report, out):
        paths[path.stem] = path
    return paths
