"""``rlops serve`` vs a plain FastAPI + torch server: latency, throughput, decisions logged.

One run trains a small CartPole PPO policy (2048 env steps; its quality does
not matter) and serves that one artifact twice, one server at a time:

* ``rlops``: ``rlops serve ARTIFACT --port 0 --decision-log PATH`` as a
  subprocess, defaults otherwise (``mode=sample``, micro-batching up to 64
  rows, numpy forward, every decision written to the SQLite decision log);
* ``baseline``: ``benchmarks/_serving_baseline.py``, FastAPI + uvicorn with a
  pydantic request model and one torch forward per request, no batching, no
  logging (see its docstring).

Both run as one uvicorn worker (uvloop + httptools), 1 torch / BLAS thread
(``OMP_NUM_THREADS=1`` ...), on 127.0.0.1. Load comes from a separate process:
``wrk`` (Debian package ``wrk``) with a Lua script that POSTs
``{"observation": [...], "unit_id": ...}`` to ``/v1/act``, cycling through 64
pre-generated observations, with a fresh ``unit_id`` per request; without
``wrk`` (or with ``--load python``) a raw-socket keep-alive HTTP/1.1 asyncio
client in its own process does the same. Per server, after an untimed warm-up
(8 connections):

* ``sequential``: 1 connection, one request at a time, ``--duration`` seconds:
  p50 / p99 latency (ms, client side) and requests/s;
* ``concurrent``: 32 connections, ``--duration`` seconds: requests/s, p50 / p99.

Headline keys: ``p50_ratio`` = rlops / baseline sequential p50 (target <= 1.0);
``throughput_ratio`` = rlops / baseline 32-connection requests/s (target >= 3,
with the decision log on); ``errors`` = rlops responses that were not 2xx plus
socket errors and timeouts (2 s) over all its phases, warm-up included (target
0; ``baseline_errors`` likewise); ``logged_equals_served``: ``served`` (the
server's own count of 200 answers to ``/v1/act``, read from ``GET /metrics``
once the load has stopped, so requests still in flight when the client's
clock ran out count too) equals ``logged`` (rows in the decision log, counted
after SIGTERM drained it), a real equality check. ``targets_met`` says which
targets held. The machines are shared and noisy: ratios are indicative.

    .venv/bin/python benchmarks/serving.py                   # 10 s phases, ~1 min
    .venv/bin/python benchmarks/serving.py --quick           # 3 s phases, ~25 s
    .venv/bin/python benchmarks/serving.py --load python --artifact runs/x/artifact

Needs fastapi (``pip install -e '.[bench]'``) and, preferably, ``wrk``
(``apt-get install -y wrk``). Progress goes to stderr; the last stdout line is
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import rounded

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
CONNECTIONS = 32
WARMUP_CONNECTIONS = 8
N_OBSERVATIONS = 64
CLIENT_TIMEOUT_S = 2.0
URL_RE = re.compile(r"http://(127\.0\.0\.1|localhost|\[::1\]):(\d+)")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

WRK_LUA = """\
-- POST /v1/act cycling through fixed observations, a fresh unit_id per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local observations = {
__OBSERVATIONS__
}
local prefix, counter = "u", 0

function init(args)
  prefix = args[1] or prefix
end

function request()
  counter = counter + 1
  local obs = observations[counter % #observations + 1]
  return wrk.format(nil, nil, nil,
    '{"observation":' .. obs .. ',"unit_id":"' .. prefix .. counter .. '"}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"responses":%d,"duration_s":%.6f,"non_2xx":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50_ms":%.4f,"p99_ms":%.4f}\\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


@dataclass(frozen=True, kw_only=True)
class Load:
    """What one load phase saw from the client side (any load generator)."""

    connections: int
    responses: int
    """Complete HTTP responses received (any status)."""
    duration_s: float
    non_2xx: int
    socket_errors: int
    """connect + read + write errors and timeouts."""
    p50_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.responses / self.duration_s

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    def summary(self) -> dict[str, Any]:
        return {
            "requests_per_s": round(self.requests_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "responses": self.responses,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 3),
        }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- servers ------------------------------------------------------------------------


class ServerProcess:
    """A server subprocess: the port it announces on stdout, readiness, SIGTERM stop."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, start_timeout_s: float) -> None:
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr"
        self._stderr = self.stderr_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **ONE_THREAD},
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self._await_port(start_timeout_s)
        self._await_ready(start_timeout_s)

    def _pump(self) -> None:
        # Keep reading so a chatty server never blocks on a full pipe.
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _await_port(self, timeout_s: float) -> int:
        # Other lines (an admin token, warnings) may come first: find the URL.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name}: no URL announced in {timeout_s:.0f} s") from None
            if line is None:
                self.proc.wait()
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before announcing its URL:\n"
                    + self.stderr_tail()
                )
            match = URL_RE.search(line)
            if match:
                return int(match.group(2))

    def _await_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if http_get(self.port, "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} never became ready:\n{self.stderr_tail()}")
            time.sleep(0.05)

    def stderr_tail(self, chars: int = 2000) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (rlops drains its decision log) and wait; the exit code, None if killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._stderr.close()
                return None
        self._stderr.close()
        return self.proc.returncode


def http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def http_post(port: int, path: str, body: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


_SAMPLE_RE = re.compile(r"^rlops_serving_requests_total\{(.*)\}\s+(\S+)$", re.M)
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def act_answers(port: int) -> dict[str, dict[str, int]]:
    """``/v1/act`` answers so far from rlops' ``/metrics``: ``{status: {arm: count}}``."""
    status, text = http_get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    out: dict[str, dict[str, int]] = {}
    for labels, value in _SAMPLE_RE.findall(text):
        tags = dict(_LABEL_RE.findall(labels))
        if tags.get("route") == "/v1/act":
            by_arm = out.setdefault(tags.get("status", "?"), {})
            arm = tags.get("arm", "?")
            by_arm[arm] = by_arm.get(arm, 0) + int(float(value))
    return out


def settled_act_answers(port: int, timeout_s: float = 10.0) -> dict[str, dict[str, int]]:
    """:func:`act_answers` once two reads 0.5 s apart agree (in-flight requests finished)."""
    deadline = time.monotonic() + timeout_s
    last = act_answers(port)
    while True:
        time.sleep(0.5)
        now = act_answers(port)
        if now == last or time.monotonic() > deadline:
            return now
        last = now


# -- load ---------------------------------------------------------------------------


def observation_bodies(obs_dim: int, seed: int) -> list[str]:
    """``N_OBSERVATIONS`` JSON arrays of CartPole-scale observations."""
    rng = random.Random(seed)
    return [
        json.dumps([round(rng.uniform(-0.2, 0.2), 5) for _ in range(obs_dim)])
        for _ in range(N_OBSERVATIONS)
    ]


def run_load(
    kind: str, port: int, connections: int, duration_s: int, tag: str, workdir: Path
) -> Load:
    """One load phase from a separate process: ``wrk`` or the asyncio client below."""
    bodies = workdir / "observations.json"
    if kind == "wrk":
        cmd = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration_s}s",
            f"--timeout={CLIENT_TIMEOUT_S:g}s",
            "-s",
            str(workdir / "act.lua"),
            f"http://127.0.0.1:{port}/v1/act",
            "--",
            tag,
        ]
    else:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--load-client",
            str(port),
            str(connections),
            str(duration_s),
            tag,
            str(bodies),
        ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out = json.loads(lines[-1][len("WRK_JSON ") :])
    return Load(
        connections=connections,
        responses=out["responses"],
        duration_s=out["duration_s"],
        non_2xx=out["non_2xx"],
        socket_errors=out["connect"] + out["read"] + out["write"] + out["timeout"],
        p50_ms=out["p50_ms"],
        p99_ms=out["p99_ms"],
    )


def load_client_main(
    port: int, connections: int, duration_s: float, tag: str, bodies: Path
) -> None:
    """The ``--load python`` generator: keep-alive HTTP/1.1 over raw asyncio streams.

    Prints the same ``WRK_JSON {...}`` line as the wrk script. (An httpx
    client tops out near 400 requests/s here, far below the servers.)
    """
    observations = [b.encode() for b in json.loads(bodies.read_text(encoding="utf-8"))]
    latencies: list[float] = []
    counts = {"non_2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    sent = 0

    async def connection(stop_at: float) -> None:
        nonlocal sent
        loop = asyncio.get_running_loop()
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while loop.time() < stop_at:
            if streams is None:
                try:
                    streams = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    counts["connect"] += 1
                    await asyncio.sleep(0.01)
                    continue
            reader, writer = streams
            sent += 1
            obs = observations[sent % len(observations)]
            body = b'{"observation":%s,"unit_id":"%s%d"}' % (obs, tag.encode(), sent)
            started = time.perf_counter()
            try:
                writer.write(
                    b"POST /v1/act HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                async with asyncio.timeout(CLIENT_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                    if length is None:
                        raise ConnectionError("no Content-Length")
                    await reader.readexactly(int(length.group(1)))
            except TimeoutError:
                counts["timeout"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                counts["read"] += 1
            else:
                latencies.append(time.perf_counter() - started)
                counts["non_2xx"] += not head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2"))
                continue
            writer.close()  # a broken or late connection: start a fresh one
            streams = None

    async def run() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(connection(started + duration_s) for _ in range(connections)))
        return loop.time() - started

    try:
        import uvloop

        elapsed = uvloop.run(run())
    except ImportError:
        elapsed = asyncio.run(run())
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else 0

    out = {"responses": len(latencies), "duration_s": elapsed, "p50_ms": pct(0.5)}
    out |= {"p99_ms": pct(0.99), **counts}
    print("WRK_JSON " + json.dumps(out), flush=True)


# -- one server under load ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Plan:
    """How each server is measured."""

    load: str
    """Load generator: ``"wrk"`` or ``"python"``."""
    workdir: Path
    """Holds ``act.lua`` and ``observations.json``."""
    duration_s: int
    """Length of each timed phase."""
    warmup_s: int
    """Length of the untimed warm-up."""
    smoke_body: str
    """One ``/v1/act`` body checked by hand before the load."""


def measure(name: str, server: ServerProcess, plan: Plan) -> dict[str, Any]:
    """Smoke-test one request, warm up, then the sequential and 32-connection phases."""
    status, answer = http_post(server.port, "/v1/act", plan.smoke_body)
    if status != 200 or "action" not in answer:
        raise RuntimeError(f"{name}: POST /v1/act answered {status}: {answer}")
    load, workdir = plan.load, plan.workdir
    warmup = run_load(load, server.port, WARMUP_CONNECTIONS, plan.warmup_s, "w", workdir)
    seq = run_load(load, server.port, 1, plan.duration_s, "s", workdir)
    log(f"{name:8s} 1 conn    {seq.requests_per_s:8.1f} req/s  p50 {seq.p50_ms:.3f} ms")
    conc = run_load(load, server.port, CONNECTIONS, plan.duration_s, "c", workdir)
    rate, p50 = conc.requests_per_s, conc.p50_ms
    log(f"{name:8s} {CONNECTIONS} conns  {rate:8.1f} req/s  p50 {p50:.3f} ms")
    phases = (warmup, seq, conc)
    return {
        "sequential": seq.summary(),
        "concurrent": conc.summary(),
        "non_2xx": sum(p.non_2xx for p in phases),
        "socket_errors": sum(p.socket_errors for p in phases),
        "client_2xx": sum(p.responses - p.non_2xx for p in phases) + 1,  # + the smoke test
    }


def train_artifact(out: Path, seed: int) -> Path:
    """A CartPole PPO policy from a 2048-step run (only its shape matters here)."""
    import torch

    import rlops
    from rlops.algos.ppo import PPOConfig
    from rlops.runtime import EnvConfig, EvalConfig, ExperimentConfig, LogConfig

    torch.set_num_threads(1)
    config = ExperimentConfig(
        seed=seed,
        total_steps=2048,
        env=EnvConfig(id="rlops/CartPole-v1", num_envs=4),
        algo=PPOConfig(n_steps=64, minibatch_size=64, n_epochs=1),
        eval=EvalConfig(episodes=1, num_envs=1),
        log=LogConfig(progress=False, tensorboard=False),
    )
    return Path(rlops.train(config, out_dir=out).artifact_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per timed phase")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of untimed warm-up")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--artifact", type=Path, help="serve this artifact instead of training one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="3 s phases, 1 s warm-up")
    parser.add_argument("--load-client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_client:
        port, connections, duration, tag, bodies = args.load_client
        load_client_main(int(port), int(connections), float(duration), tag, Path(bodies))
        return
    if args.quick:
        args.duration, args.warmup = 3, 1
    started = time.perf_counter()
    notes: list[str] = []
    load = args.load
    if load == "auto":
        load = "wrk" if shutil.which("wrk") else "python"
        if load == "python":
            notes.append("wrk not found (apt-get install -y wrk): the asyncio client made the load")
    elif load == "wrk" and not shutil.which("wrk"):
        parser.error("--load wrk: wrk is not on PATH; apt-get install -y wrk")
    has_fastapi = importlib.util.find_spec("fastapi") is not None
    if not has_fastapi:
        notes.append("baseline skipped: fastapi is not installed (pip install -e '.[bench]')")

    import torch

    from rlops.serving.decision_log import count_decisions

    with tempfile.TemporaryDirectory(prefix="rlops-serving-bench-") as tmp:
        workdir = Path(tmp)
        artifact = args.artifact or train_artifact(workdir / "run", args.seed)
        manifest = json.loads((artifact / "policy.json").read_text(encoding="utf-8"))
        bodies = observation_bodies(int(manifest["network"]["obs_dim"]), args.seed)
        (workdir / "observations.json").write_text(json.dumps(bodies), encoding="utf-8")
        lua = ",\n".join(f"  '{b}'" for b in bodies)
        (workdir / "act.lua").write_text(WRK_LUA.replace("__OBSERVATIONS__", lua), "utf-8")
        log(f"artifact {artifact}; load generator {load}; {args.duration} s phases")
        smoke = json.dumps({"observation": json.loads(bodies[0]), "unit_id": "smoke"})
        plan = Plan(
            load=load,
            workdir=workdir,
            duration_s=args.duration,
            warmup_s=args.warmup,
            smoke_body=smoke,
        )

        baseline: dict[str, Any] | None = None
        if has_fastapi:
            cmd = [sys.executable, str(BENCH / "_serving_baseline.py"), str(artifact)]
            server = ServerProcess("baseline", cmd, workdir, args.start_timeout)
            try:
                baseline = measure("baseline", server, plan)
            finally:
                baseline_exit = server.stop()
            baseline["exit_code"] = baseline_exit
            baseline["stderr_tail"] = server.stderr_tail(500) or None

        db = workdir / "decisions.sqlite"
        cmd = [sys.executable, "-m", "rlops", "serve", str(artifact), "--port", "0"]
        cmd += ["--decision-log", str(db), "--seed", str(args.seed)]
        server = ServerProcess("rlops", cmd, workdir, args.start_timeout)
        try:
            ours = measure("rlops", server, plan)
            answers = settled_act_answers(server.port)
        finally:
            ours_exit = server.stop()
        served = sum(answers.get("200", {}).values())
        logged = count_decisions(db)
        ours |= {
            "exit_code": ours_exit,
            "served": served,
            "served_by_arm": answers.get("200", {}),
            "server_non_200": {s: sum(a.values()) for s, a in answers.items() if s != "200"},
            "logged": logged,
            "stderr_tail": server.stderr_tail(500) or None,
        }
        log(f"rlops    served {served} (200s), logged {logged}, exit {ours_exit}")

    def ratio(key: str, field: str) -> float | None:
        if baseline is None or not baseline[key][field]:
            return None
        return float(ours[key][field] / baseline[key][field])

    p50_ratio = ratio("sequential", "p50_ms")
    throughput_ratio = ratio("concurrent", "requests_per_s")
    # The server counts every non-200 (also those the client stopped waiting for);
    # the client also sees socket errors and timeouts.
    errors = ours["socket_errors"] + max(ours["non_2xx"], sum(ours["server_non_200"].values()))
    logged_equals_served = bool(logged == served)
    targets = {
        "throughput_ratio>=3": throughput_ratio is not None and throughput_ratio >= 3.0,
        "p50_ratio<=1": p50_ratio is not None and p50_ratio <= 1.0,
        "errors==0": errors == 0,
        "logged_equals_served": logged_equals_served,
        # uvicorn re-raises the SIGTERM it handled once the drain is done.
        "clean_exit": ours_exit in (0, -signal.SIGTERM),
    }
    print(
        json.dumps(
            {
                "benchmark": "serving",
                "p50_ratio": rounded(p50_ratio, 3),
                "p99_ratio": rounded(ratio("sequential", "p99_ms"), 3),
                "throughput_ratio": rounded(throughput_ratio, 3),
                "sequential_throughput_ratio": rounded(ratio("sequential", "requests_per_s"), 3),
                "errors": errors,
                "baseline_errors": (
                    None if baseline is None else baseline["non_2xx"] + baseline["socket_errors"]
                ),
                "served": served,
                "logged": logged,
                "logged_equals_served": logged_equals_served,
                "targets_met": targets,
                "rlops": ours,
                "baseline": baseline,
                "connections": CONNECTIONS,
                "duration_s": args.duration,
                "load_generator": load,
                "note": "; ".join(notes) or None,
                "wall_s": round(time.perf_counter() - started, 1),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
