"""Serving killed with SIGKILL mid-load: bounded, reported loss and an intact decision log.

A server subprocess with a small decision-log queue answers 8 keep-alive
clients while the test scrapes ``/metrics``, then dies by SIGKILL (no
lifespan shutdown, no drain). What may be lost is only what was still in the
in-memory queue: every decision answered 200 is in the log except at most
``log_queue_size`` of them, the queue depth on ``/metrics`` never exceeded that
bound, and the only logged decisions that were never answered are the (at
most one per client) requests in flight at the kill. The SQLite file passes
``PRAGMA integrity_check``, every row parses, and the log reopens for writing.

Two cases: the writer running freely (the kill lands wherever it lands,
often inside a transaction), and the writer stalled behind another
connection's lock, so the queue is full, reported as full on ``/metrics``,
and lost whole at the kill.
"""

from __future__ import annotations

import http.client
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from rlops.core.decisions import DecisionRecord
from rlops.serving.decision_log import DecisionLog, count_decisions, integrity_check, iter_decisions
from serving_helpers import load_clients, parse_prometheus, request, start_serve

QUEUE = 256
"""``log_queue_size`` of the killed server: the most decisions a SIGKILL may lose."""
CLIENTS = 8
"""Keep-alive clients, each with at most one request in flight."""
DEPTH = "rlops_serving_decision_log_queue_depth"

# ``rlops serve`` has no flag for the queue bound, so the subprocess calls the
# function it runs (rlops.serving.server.serve) with a small one.
LAUNCH = """
import sys
from rlops.serving.config import ServeConfig
from rlops.serving.server import serve

artifact, log, queue = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = ServeConfig(
    artifact=artifact,
    port=0,
    decision_log=log,
    log_queue_size=queue,
    log_batch_size=32,
    request_timeout_ms=30_000,
)
serve(config, announce=lambda line: print(line, flush=True))
"""


class Scraper(threading.Thread):
    """Reads the queue depth from ``/metrics`` every 20 ms until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.depths: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, _, text = request(self.port, "GET", "/metrics")
            except (OSError, http.client.HTTPException):
                status = 0
            if status == 200:
                self.depths.append(parse_prometheus(text)[(DEPTH, frozenset())])
            time.sleep(0.02)


def _wait(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("writer", ["running", "stalled"])
def test_sigkill_mid_load_loses_at_most_the_queue_and_never_corrupts_the_log(
    artifacts: dict[str, Path], tmp_path: Path, writer: str
) -> None:
    db = tmp_path / "decisions.sqlite"
    proc, port = start_serve(
        [sys.executable, "-c", LAUNCH, str(artifacts["cartpole"]), str(db), str(QUEUE)]
    )
    stop = threading.Event()
    ok: list[str] = []
    loader = threading.Thread(target=load_clients, args=(port, CLIENTS, 10**6, stop, ok))
    scraper = Scraper(port)
    blocker: sqlite3.Connection | None = None
    try:
        loader.start()
        scraper.start()
        _wait(lambda: len(ok) >= 300 and scraper.depths, "no load before the kill")
        if writer == "stalled":
            # Another writer holds the lock: the server's writer cannot commit, its
            # queue fills to the bound and /v1/act answers 503 instead of queueing more.
            blocker = sqlite3.connect(db, isolation_level=None, timeout=30)
            blocker.execute("BEGIN EXCLUSIVE")
            _wait(lambda: scraper.depths[-1] == QUEUE, "the queue never filled up")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop.set()
        scraper.stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        loader.join(60)
        scraper.join(30)
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()
    assert proc.returncode == -signal.SIGKILL

    # Reported: the queue depth on /metrics never exceeded the bound.
    assert scraper.depths and max(scraper.depths) <= QUEUE, max(scraper.depths)
    # Never corrupted: a sound file whose every row parses, still in WAL mode.
    assert integrity_check(db) == "ok"
    logged = [r.decision_id for r in iter_decisions(db)]
    assert len(logged) == len(set(logged)) == count_decisions(db)
    answered = set(ok)
    assert len(answered) == len(ok)
    # Lost: only what was queued; logged but unanswered: only requests in flight.
    lost = answered - set(logged)
    assert len(lost) <= QUEUE, len(lost)
    assert len(set(logged) - answered) <= CLIENTS
    if writer == "stalled":
        # The whole reported queue was lost, less at most the requests in flight.
        assert len(lost) >= QUEUE - CLIENTS, len(lost)

    # Reopens for writing: the WAL recovers and the next writer commits.
    log = DecisionLog(db, max_queue=QUEUE)
    log.start()
    record = DecisionRecord(
        decision_id=str(uuid.uuid4()),
        timestamp=time.time(),
        unit_id="after-the-crash",
        step=0,
        observation=[0.0] * 4,
        action=0,
        propensity=1.0,
        policy_version="sha256:x",
        arm="production",
    )
    assert log.submit([(record, None)])
    log.close()
    assert integrity_check(db) == "ok"
    assert count_decisions(db) == len(logged) + 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
