"""The whole offline loop on a simulator, with the simulator's truth beside every estimate.

::

    python examples/offline_loop.py                  # ~30 s on 2 CPU cores
    python examples/offline_loop.py --quick          # smaller logs, ~15 s
    python examples/offline_loop.py --horizon 5      # sequential decisions, ~1.5 min
    python examples/offline_loop.py --out runs/loop --episodes 20000

Production is played by ``rlops/Pricing-v0``: a store sells 4 perishable units
over a season of ``--horizon`` periods (default 1: one price per season, a
contextual bandit), with demand drawn per season (1.5-3 customers a period,
mean willingness to pay 6-12, as in ``configs/pricing_ppo.yaml``) and shown to
the policy. Every step goes through the real command line, printed before it runs:

1. ``rlops train``: a deliberately short PPO run gives today's policy (the baseline);
2. ``rlops serve --epsilon``, twice (two "weeks", one decision log each): the
   baseline answers simulated traffic over HTTP, with uniform exploration so
   every price keeps a logged propensity. This script plays the stores
   (``POST /v1/act`` per period for all stores at once, ``POST /v1/feedback``
   with each period's revenue) and stops the server with SIGTERM, which drains
   the log; ``rlops decisions check`` verifies it;
3. ``rlops train-offline``: a candidate learnt from week 1 only (``bandit-dr``
   for one-step logs, ``cql`` for sequential ones, chosen from the log);
4. ``rlops ope``: the candidate's value estimated from week 2, a log it never
   saw (evaluating on its own training log would flatter it: the learner
   picked the policy that maximises exactly that estimate);
5. ``rlops gate check examples/gates.yaml`` (the same file for
   sequential logs): the promotion verdict.

Then it does what production cannot: it runs the baseline and the candidate in
the simulator on fresh seasons (sampling from each policy's action
distribution, the distribution that is served and that OPE evaluates) and
prints the true values beside the OPE estimates. Everything lands under
``--out``; the final table goes to stdout (and ``summary.json``), progress and
the commands to stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import rlops
from rlops.envs import make_vec, run_episodes
from rlops.evaluation import evaluate
from rlops.runtime.config import load_config

HERE = Path(__file__).resolve().parent
BASELINE_CONFIG = HERE.parent / "configs" / "pricing_ppo.yaml"
GATES = HERE / "gates.yaml"
"""Gate file per OPE mode: the recommended estimator is ``dr`` or ``seq_dr``."""
ENV_ID = "rlops/Pricing-v0"
SEED = 0
"""Seeds PPO, train-offline and OPE; the servers get ``SEED + week`` and the simulated
stores ``SEED + 1000 + week`` (see :func:`serve_week`)."""
INVENTORY = 4
"""Units per season. With 5 periods (``--horizon 5``), selling early at a low price
leaves nothing for later, so pricing is a plan; demand pressure is then 1.9-3.75
customers per unit over the season."""
BASELINE_STEPS = 4096
"""PPO env steps for the baseline: a mediocre policy, as a first production policy is."""
EPSILON = 0.2
"""Serving's uniform exploration: every one of the 10 prices has probability >= 0.02."""
STORES = 50
"""Simulated stores side by side: one batched ``/v1/act`` per period for all of them."""
TRUTH_EPISODES = 50_000
"""Fresh simulated seasons per true value (standard error 0.04 to 0.07)."""
TRUTH_SEED = 10_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rlops_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlops", *args]


def show(argv: list[str]) -> str:
    """The command as a user types it: ``rlops ...`` for ``python -m rlops ...``."""
    words = ["rlops", *argv[3:]] if argv[1:3] == ["-m", "rlops"] else argv
    return shlex.join(words)


def run(argv: list[str], stdout_file: Path) -> int:
    """Print the command, run it (stdout to ``stdout_file``, stderr through); its exit code."""
    log(f"\n$ {show(argv)}")
    start = time.monotonic()
    with stdout_file.open("w", encoding="utf-8") as fh:
        code = subprocess.run(argv, stdout=fh, check=False).returncode
    log(f"  ({time.monotonic() - start:.1f} s, exit {code}; output in {stdout_file.name})")
    return code


def run_ok(argv: list[str], stdout_file: Path) -> None:
    code = run(argv, stdout_file)
    if code != 0:
        log(stdout_file.read_text(encoding="utf-8")[-3000:])
        raise SystemExit(f"offline_loop: `{show(argv)}` failed with exit code {code}")


# --------------------------------------------------------------------------- serving


class Client:
    """A keep-alive JSON client for one server (``http.client``: one connection, reused)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: Any) -> Any:
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {payload[:500]!r}")
        return json.loads(payload)

    def close(self) -> None:
        self.conn.close()


def start_server(argv: list[str], log_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``rlops serve``, read the port from its first line, wait for ``GET /readyz``.

    Its output goes to ``log_file`` (a pipe nobody reads could fill up and block
    it). ``$RLOPS_ADMIN_TOKEN`` is set so that no generated admin token is printed
    there. The caller stops the process (:func:`stop_server`) in a ``finally``.
    """
    log(f"\n$ {show(argv)} > {log_file.name}")
    env = {**os.environ, "RLOPS_ADMIN_TOKEN": secrets.token_urlsafe(24)}
    with log_file.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        port = None
        while not (port and _ready(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"offline_loop: rlops serve did not become ready:\n{log_file.read_text()}"
                )
            found = re.search(r"http://127\.0\.0\.1:(\d+)", log_file.read_text(errors="replace"))
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
    except BaseException:
        stop_server(proc)
        raise
    log(f"  ready on http://127.0.0.1:{port}")
    return proc, port


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop_server(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM (the server drains its decision log), SIGKILL if it hangs; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def send_traffic(port: int, env_kwargs: dict[str, Any], episodes: int, seed: int) -> float:
    """Play ``episodes`` selling seasons against the server; returns their mean revenue.

    Each of the ``STORES`` simulated stores runs a fixed quota of seasons (not
    "the first N to finish", which would favour short seasons), asks for a
    price every period (one batched request for all stores), sells, and sends
    the period's revenue as feedback on that decision.
    """
    env = make_vec(ENV_ID, STORES, **env_kwargs)
    quota = np.full(STORES, episodes // STORES)
    quota[: episodes % STORES] += 1
    finished = np.zeros(STORES, dtype=np.int64)
    step = np.zeros(STORES, dtype=np.int64)
    revenue = np.zeros(STORES)
    returns: list[float] = []
    decisions, next_report, start = 0, episodes // 4, time.monotonic()
    client = Client(port)
    try:
        obs, _ = env.reset(seed=seed)
        while (live := np.flatnonzero(finished < quota)).size:
            requests = [
                {
                    "observation": obs[i].tolist(),
                    "unit_id": f"store-{i}",
                    "episode_id": f"store-{i}-season-{finished[i]}",
                    "step": int(step[i]),
                }
                for i in live
            ]
            answers = client.post("/v1/act", {"requests": requests})["decisions"]
            actions = np.zeros(STORES, dtype=np.int64)  # stores past their quota idle
            actions[live] = [a["action"] for a in answers]
            obs, reward, terminated, truncated, _ = env.step(actions)
            for i, answer in zip(live, answers):
                client.post(
                    "/v1/feedback", {"decision_id": answer["decision_id"], "reward": reward[i]}
                )
            decisions += live.size
            revenue[live] += reward[live]
            step[live] += 1
            for i in live[(terminated | truncated)[live]]:  # same-step autoreset: obs is new
                returns.append(float(revenue[i]))
                finished[i] += 1
                revenue[i], step[i] = 0.0, 0
            if len(returns) >= next_report:
                rate = decisions / (time.monotonic() - start)
                done = f"{len(returns):,}/{episodes:,} seasons"
                log(f"  {done} ({decisions:,} decisions, {rate:,.0f}/s)")
                next_report += episodes // 4
    finally:
        client.close()
        env.close()
    return float(np.mean(returns))


def serve_week(
    artifact: Path, decision_log: Path, env_kwargs: dict[str, Any], episodes: int, week: int
) -> float:
    """``rlops serve`` the baseline to a week of simulated seasons, stop it, check the log.

    The server samples with seed ``SEED + week`` and the stores with
    ``SEED + 1000 + week``: with equal seeds both would draw from the same
    generator state, and the served prices would be a function of the simulated
    demand, a leak a learner can exploit. Returns the week's mean revenue per season.
    """
    server, port = start_server(
        rlops_cmd(
            "serve", str(artifact), "--port", "0", "--decision-log", str(decision_log),
            "--epsilon", str(EPSILON), "--seed", str(SEED + week),
        ),
        decision_log.with_suffix(".serve.log"),
    )  # fmt: skip
    try:
        log(f"  week {week}: {episodes:,} simulated seasons from {STORES} stores")
        logged_value = send_traffic(port, env_kwargs, episodes, seed=SEED + 1000 + week)
    finally:
        code = stop_server(server)
    # uvicorn re-raises the SIGTERM it handled once the log is drained: -15 is a clean stop.
    log(f"  SIGTERM: the server drained its decision log and exited ({code})")
    if code not in (0, -signal.SIGTERM):
        raise SystemExit(f"offline_loop: rlops serve exited with {code}; see its log")
    run_ok(
        rlops_cmd("decisions", "check", str(decision_log)), decision_log.with_suffix(".check.txt")
    )
    return logged_value


# --------------------------------------------------------------------------- truth


def true_value(
    policy: rlops.Policy, env_kwargs: dict[str, Any], epsilon: float = 0.0
) -> tuple[float, float]:
    """Mean return and its standard error over ``TRUTH_EPISODES`` fresh simulated seasons.

    Actions are sampled from ``policy.action_distribution`` mixed with ``epsilon``
    uniform exploration, i.e. from what is served with ``rlops serve --epsilon``
    and what OPE evaluates (``epsilon=0`` is :func:`rlops.evaluation.evaluate`
    with ``deterministic=False``). The seeds are not those of the logged weeks.
    """
    if epsilon == 0.0:
        returns = np.asarray(
            evaluate(
                policy,
                ENV_ID,
                TRUTH_EPISODES,
                seed=TRUTH_SEED,
                num_envs=500,
                deterministic=False,
                **env_kwargs,
            ).returns
        )
    else:
        rng = np.random.default_rng(TRUTH_SEED + 1)

        def act(obs: np.ndarray) -> np.ndarray:
            probs = policy.action_distribution(obs)
            probs = (1.0 - epsilon) * probs + epsilon / probs.shape[1]
            u = rng.random(len(obs))[:, None]
            return np.asarray((probs.cumsum(axis=1) > u).argmax(axis=1), dtype=np.int64)

        env = make_vec(ENV_ID, 500, **env_kwargs)
        try:
            returns = run_episodes(env, act, TRUTH_EPISODES, seed=TRUTH_SEED).returns
        finally:
            env.close()
    return float(returns.mean()), float(returns.std(ddof=1) / math.sqrt(returns.size))


# --------------------------------------------------------------------------- the loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, help="output directory (default runs/offline-loop-<ts>)"
    )
    parser.add_argument(
        "--episodes",
        type=int,
        help="simulated seasons served per week (default 10000; --quick 2000)",
    )
    parser.add_argument(
        "--horizon",
        type=int,
        default=1,
        help="periods per season: 1 (default) gives one-step logs (bandit-dr, DR); "
        "more gives episodes (cql; sequential DR, FQE)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller logs, shorter CQL")
    args = parser.parse_args(argv)
    episodes = args.episodes or (2000 if args.quick else 10_000)
    if episodes < STORES or args.horizon < 1:
        parser.error(f"--episodes must be >= {STORES} and --horizon >= 1")
    out: Path = args.out or Path(f"runs/offline-loop-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out {out}: not empty; give a new directory (every run starts afresh)")
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    log(f"offline loop: {ENV_ID}, {args.horizon} period(s) a season; everything goes to {out}")

    # 1. Today's policy.
    run_ok(
        rlops_cmd(
            "train", str(BASELINE_CONFIG),
            "--set", f"env.kwargs.horizon={args.horizon}",
            "--set", f"env.kwargs.inventory={INVENTORY}",
            "--set", f"total_steps={BASELINE_STEPS}", "--set", f"seed={SEED}",
            "--out", str(out / "baseline"),
        ),
        out / "baseline.txt",
    )  # fmt: skip
    baseline_artifact = out / "baseline" / "artifact"
    # Traffic comes from the simulator the baseline was trained on (its resolved config).
    env_kwargs = dict(load_config(str(out / "baseline" / "config.yaml")).env.kwargs)

    # 2. Two weeks of production traffic, one decision log each.
    logs = {week: out / f"week{week}.sqlite" for week in (1, 2)}
    logged = {
        week: serve_week(baseline_artifact, path, env_kwargs, episodes, week)
        for week, path in logs.items()
    }

    # 3. A candidate learnt from week 1 (the learner is chosen from the log's shape).
    offline_flags = ["--gamma", "1"] if args.horizon > 1 else []  # undiscounted season revenue
    if args.horizon > 1 and args.quick:
        offline_flags += ["--steps", "3000"]
    run_ok(
        rlops_cmd(
            "train-offline", "--log", str(logs[1]), "--out", str(out / "candidate"),
            *offline_flags, "--seed", str(SEED), "--no-progress",
        ),
        out / "candidate.txt",
    )  # fmt: skip
    candidate_artifact = out / "candidate" / "artifact"
    learnt = json.loads((out / "candidate" / "summary.json").read_text())

    # 4. Off-policy evaluation on week 2, against what production measured that week.
    run_ok(
        rlops_cmd(
            "ope", "--log", str(logs[2]), "--policy", str(candidate_artifact),
            "--baseline-value", f"{logged[2]:.6g}", "--seed", str(SEED),
            "--out", str(out / "ope"),
        ),
        out / "ope.txt",
    )  # fmt: skip
    report = json.loads((out / "ope" / "ope.json").read_text())

    # 5. The promotion gate: exit 0 pass, 1 fail; both are answers.
    gate_code = run(
        rlops_cmd(
            "gate", "check", str(GATES),
            "--evidence", str(out / "ope" / "ope.json"), "--out", str(out / "gate.json"),
        ),
        out / "gate.txt",
    )  # fmt: skip
    if gate_code not in (0, 1):
        raise SystemExit(f"offline_loop: rlops gate check failed with exit code {gate_code}")
    verdict = json.loads((out / "gate.json").read_text())

    # 6. What production cannot know: the true values, from the simulator.
    log(f"\nsimulating {TRUTH_EPISODES:,} fresh seasons per policy for the true values")
    baseline = rlops.load_policy(baseline_artifact, seed=SEED)
    candidate = rlops.load_policy(candidate_artifact, seed=SEED)
    truth = {
        "baseline_served": true_value(baseline, env_kwargs, epsilon=EPSILON),
        "baseline_no_exploration": true_value(baseline, env_kwargs),
        "candidate": true_value(candidate, env_kwargs),
    }
    rec = report["recommended"]
    summary = {
        "out": str(out),
        "seed": SEED,
        "env": {"id": ENV_ID, **env_kwargs},
        "episodes_per_week": episodes,
        "epsilon": EPSILON,
        "decisions": report["decisions"],
        "logged_value": {"week1": logged[1], "week2": logged[2]},
        "algo": learnt["algo"],
        "in_sample_estimate": learnt["metrics"].get("charts/estimated_value_in_sample"),
        "truth": {k: {"value": v, "se": se} for k, (v, se) in truth.items()},
        "ope_mode": report["mode"],
        "recommended": rec,
        "ope": {
            name: {k: report[name].get(k) for k in ("value", "lower_95", "upper_95")}
            for name in report["estimators"]
        },
        "truth_in_interval": _covers(report[rec], truth["candidate"][0]),
        "ess": report["ess"],
        "gate": {"file": str(GATES), "passed": verdict["passed"]},
        "reading": report["reading"],
        "paths": {
            "training_log": str(logs[1]),
            "evaluation_log": str(logs[2]),
            "baseline": str(baseline_artifact),
            "candidate": str(candidate_artifact),
            "ope": str(out / "ope" / "ope.json"),
            "gate": str(out / "gate.json"),
        },
        "seconds": round(time.monotonic() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(table(summary, verdict))
    log(f"\ndone in {summary['seconds']:.0f} s; summary: {out / 'summary.json'}")
    return 0


def _covers(estimate: dict[str, Any], value: float) -> bool | None:
    lo, hi = estimate.get("lower_95"), estimate.get("upper_95")
    return None if lo is None or hi is None else bool(lo <= value <= hi)


def table(summary: dict[str, Any], verdict: dict[str, Any]) -> str:
    """The final comparison: simulator truth beside the OPE estimates, and the verdict."""
    truth, ope, rec = summary["truth"], summary["ope"], summary["recommended"]
    env, n = summary["env"], summary["episodes_per_week"]
    unit = "revenue per season"

    def sim(key: str) -> str:
        return f"{truth[key]['value']:8.2f}   ± {truth[key]['se']:.2f} (standard error)"

    def est(name: str) -> str:
        e = ope[name]
        if e["lower_95"] is None or e["upper_95"] is None:
            return f"{e['value']:8.2f}"
        return f"{e['value']:8.2f}   {e['lower_95']:.2f} to {e['upper_95']:.2f} (95%)"

    rows = [
        f"The offline loop on {env['id']} ({env['horizon']} period(s), {env['inventory']} units "
        f"a season; seed {summary['seed']}), {n:,} seasons a week: {summary['out']}",
        "",
        f"{unit:<52}{'value':>8}   interval",
        f"{'baseline PPO as served (epsilon ' + str(summary['epsilon']) + '), simulator':<52}"
        f"{sim('baseline_served')}",
        f"{'baseline PPO without exploration, simulator':<52}{sim('baseline_no_exploration')}",
        f"{'baseline, logged mean in week 2':<52}{summary['logged_value']['week2']:8.2f}",
        f"{'candidate ' + summary['algo'] + ', simulator (the truth)':<52}{sim('candidate')}",
    ]
    if summary["in_sample_estimate"] is not None:
        rows.append(
            f"{'candidate, train-offline in-sample estimate (week 1)':<52}"
            f"{summary['in_sample_estimate']:8.2f}   biased up: the learner maximised it"
        )
    rows += [
        f"{'candidate, OPE on week 2: ' + name + (' (recommended)' if name == rec else ''):<52}"
        f"{est(name)}"
        for name in ope
    ]
    covered = {True: "yes", False: "no", None: "no interval"}[summary["truth_in_interval"]]
    rows += [
        "",
        f"truth inside the {rec} interval: {covered}; effective sample size "
        f"{_num(summary['ess'])} of {n:,} seasons",
        f"gate {Path(summary['gate']['file']).name}: {'PASS' if verdict['passed'] else 'FAIL'}",
        *(
            f"  [{'pass' if c['passed'] else 'FAIL'}] {c['expression']}: "
            f"{_num(c['left'])} vs {_num(c['right'])}"
            + (f" ({c['reason']})" if c["reason"] else "")
            for c in verdict["checks"]
        ),
        "",
        "OPE reading: " + summary["reading"],
    ]
    return "\n".join(rows)


def _num(value: float | None) -> str:
    return "missing" if value is None else f"{value:,.4g}"


if __name__ == "__main__":
    sys.exit(main())
