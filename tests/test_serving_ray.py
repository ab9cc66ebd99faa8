"""Serving on Ray Serve: two replicas on a local Ray instance, one shared decision log.

A real local Ray instance (started once for the module), a real Ray Serve HTTP
proxy on a free 127.0.0.1 port, real replica processes loading a small trained
CartPole artifact. Checks that answers pass through the proxy unchanged, that
both replicas serve, that feedback joins whichever replica answers it, and
that a graceful stop drains every replica's queue into the one log: every 200
has its row, and no replica left its writer open (no ``-wal`` file remains).
Afterwards no Ray worker process outlives the module.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("ray.serve")

import ray
from ray import serve

from rlops.core.decisions import DecisionRecord
from rlops.core.errors import ConfigError, RlopsError
from rlops.serving import ServeConfig, ray_serve
from rlops.serving.decision_log import (
    DecisionLog,
    count_decisions,
    integrity_check,
    iter_decisions,
)
from rlops.serving.ray_serve import REPLICA_HEADER, serve_on_ray

CARTPOLE_OBS = [0.01, -0.02, 0.03, 0.04]
N_REQUESTS = 48


def _ray_descendants(prefix: bytes = b"ray::") -> list[int]:
    """Live (non-zombie) Ray worker processes descended from this test process."""
    parents: dict[int, int] = {}
    names: dict[int, bytes] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                names[int(entry)] = fh.read()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    mine = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    return sorted(p for p in mine if p in parents and names.get(p, b"").startswith(prefix))


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The ``pids`` still alive (not zombies) after waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except OSError:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


_SEEN: list[int] = []
"""Ray worker pids seen while serving: none may outlive the module (even if reparented)."""


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module; afterwards no Ray worker may outlive it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    _SEEN.extend(_ray_descendants())
    ray.shutdown()
    assert _wait_gone(_SEEN) == [], "Ray workers outlived the module"


def _post(port: int, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        kind = headers.get("content-type", "")
        parsed = json.loads(payload) if kind.startswith("application/json") else payload
        return response.status, headers, parsed
    finally:
        conn.close()


@pytest.mark.usefixtures("local_ray")
def test_two_replicas_share_one_log_and_drain_on_stop(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    log_path = tmp_path / "decisions.sqlite"
    config = ServeConfig(
        artifact=str(artifacts["cartpole"]),
        port=0,
        decision_log=str(log_path),
        admin_token="a-long-enough-admin-token",
        seed=0,
    )
    lines: list[str] = []
    serving = serve_on_ray(config, replicas=2, announce=lines.append, block=False)
    try:
        assert lines[0].startswith(f"rlops serve: {serving.url}")
        port = int(serving.url.rsplit(":", 1)[1])
        status = serve.status().applications["rlops"].deployments["rlops"]
        assert status.replica_states.get("RUNNING") == 2, status

        # Answers pass through the proxy unchanged; concurrent clients reach both replicas.
        def act(i: int) -> tuple[int, dict[str, str], Any]:
            return _post(port, "/v1/act", {"unit_id": f"u{i}", "observation": CARTPOLE_OBS})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(act, range(N_REQUESTS)))
        ok = [(h, body) for code, h, body in answers if code == 200]
        assert len(ok) == N_REQUESTS, [a[0] for a in answers]
        assert all(h["content-type"].startswith("application/json") for h, _ in ok)
        assert all(body["action"] in (0, 1) and body["propensity"] > 0 for _, body in ok)
        assert len({h[REPLICA_HEADER] for h, _ in ok}) == 2, "one replica answered everything"

        # Errors keep their status and body: a 422 naming the field.
        code, _, body = _post(port, "/v1/act", {"unit_id": "u", "observation": [1.0]})
        assert code == 422 and body["error"]["field"] == "observation", body

        # Feedback for any decision, through whichever replica the proxy picks.
        ids = [body["decision_id"] for _, body in ok]
        for decision_id in ids[:8]:
            code, _, body = _post(port, "/v1/feedback", {"decision_id": decision_id, "reward": 1})
            assert code == 200, body
        # Admin changes would reach one replica only: refused while several serve.
        code, _, body = _post(port, "/v1/admin/kill-switch", {"on": True})
        assert code == 409 and body["error"]["code"] == "admin_per_replica", body

        replicas = _ray_descendants(b"ray::ServeReplica")
        assert len(replicas) == 2, replicas
        _SEEN.extend(replicas)
    finally:
        serving.stop()
    assert _wait_gone(replicas) == [], "replica processes outlived stop()"

    # Every replica ran its lifespan shutdown: the writers closed (the last one
    # removes the WAL file) after committing every queued decision.
    assert not Path(f"{log_path}-wal").exists(), "a replica did not close its decision log"
    assert count_decisions(log_path) == N_REQUESTS
    assert integrity_check(log_path) == "ok"
    records = {r.decision_id: r for r in iter_decisions(log_path)}
    assert set(records) == set(ids)
    assert [records[i].reward for i in ids[:8]] == [1.0] * 8

    _assert_serve_gone()


def _assert_serve_gone() -> None:
    """Serve was started by serve_on_ray, so stopping shut it down: no actor is left."""
    status = serve.status()
    assert not status.applications and not status.proxies, status
    deadline = time.monotonic() + 10.0
    while True:
        alive = [a for a in ray._private.state.actors().values() if a["State"] != "DEAD"]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert alive == [], alive


@pytest.mark.usefixtures("local_ray")
def test_replicas_that_cannot_be_placed_fail_and_leave_nothing(
    artifacts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The module's Ray has 2 CPUs and each replica needs one: the third never starts.
    monkeypatch.setattr(ray_serve, "START_TIMEOUT_S", 3.0)
    config = ServeConfig(
        artifact=str(artifacts["cartpole"]),
        port=0,
        decision_log=str(tmp_path / "decisions.sqlite"),
        admin_token="a-long-enough-admin-token",
    )
    with pytest.raises(RlopsError, match=r"replicas: 2 of 3 Ray Serve replicas running"):
        serve_on_ray(config, replicas=3, block=False)
    _assert_serve_gone()


@pytest.mark.parametrize("replicas", [0, -1, 1.5, True])
def test_replicas_must_be_a_positive_integer(replicas: Any, tmp_path: Path) -> None:
    config = ServeConfig(artifact=str(tmp_path / "artifact"), decision_log=str(tmp_path / "d"))
    with pytest.raises(ConfigError, match=r"^replicas: must be an integer >= 1"):
        serve_on_ray(config, replicas=replicas, block=False)


def test_canary_needs_one_replica(tmp_path: Path) -> None:
    config = ServeConfig(
        artifact=str(tmp_path / "artifact"),
        canary=str(tmp_path / "canary"),
        decision_log=str(tmp_path / "d"),
    )
    with pytest.raises(ConfigError, match=r"^canary: .*--replicas 1"):
        serve_on_ray(config, replicas=2, block=False)


# -- the shared decision log, without Ray: several writer processes, one file ----------

_WRITER = """
import sys, time, uuid
from pathlib import Path
from rlops.core.decisions import DecisionRecord
from rlops.serving.decision_log import DecisionLog

path, go, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
log = DecisionLog(path, batch_size=16)
log.start()  # every process creates the same new file at the same moment
for i in range(n):
    record = DecisionRecord(
        decision_id=str(uuid.uuid4()), timestamp=time.time(), unit_id="u", step=i,
        observation=[0.0], action=0, propensity=1.0, policy_version="v", arm="production",
    )
    assert log.submit([(record, None)])
log.close()
assert log.stats().written == n
"""


def _record(decision_id: str) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id,
        timestamp=time.time(),
        unit_id="u",
        step=0,
        observation=[0.0],
        action=0,
        propensity=1.0,
        policy_version="v",
        arm="production",
    )


def test_writer_processes_create_and_share_one_log(tmp_path: Path) -> None:
    path, go = tmp_path / "decisions.sqlite", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(go), "400"])
        for _ in range(4)
    ]
    time.sleep(0.5)  # let the interpreters start and wait on the same signal
    go.touch()
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    assert not Path(f"{path}-wal").exists()
    assert count_decisions(path) == 1600
    assert integrity_check(path) == "ok"


def test_peer_grace_waits_for_another_writers_commit(tmp_path: Path) -> None:
    path = tmp_path / "decisions.sqlite"
    other, mine = DecisionLog(path), DecisionLog(path, peer_grace_s=5.0)
    impatient = DecisionLog(path)
    mine.start()
    assert other.submit([(_record("d1"), None)])  # queued there: its writer is not running
    assert not impatient.contains("d1")  # no grace: unknown at once
    threading.Timer(0.3, other.start).start()
    start = time.monotonic()
    assert mine.contains("d1") and mine.arm_of("d1") == "production"
    assert 0.2 < time.monotonic() - start < 5.0
    other.close()
    mine.close()
