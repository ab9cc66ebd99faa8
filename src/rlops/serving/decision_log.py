"""The decision log: every served decision, and its feedback, in SQLite.

One table, ``decisions``, one row per :class:`~rlops.core.decisions.DecisionRecord`
(JSON-valued fields stored as JSON text) plus ``context`` (the request's free
context object) and ``feedback_at``. The database runs in WAL mode so readers
(feedback look-ups, exports, OPE jobs) never block the writer.

Exactly one background thread writes. Producers (the event loop) only append
to a bounded in-memory queue under a lock, never touching SQLite; the writer
drains the queue in batches, one transaction per batch. A full queue makes
:meth:`DecisionLog.submit` return False, and the server answers 503 with
``Retry-After`` instead of dropping the record. :meth:`DecisionLog.close`
drains the queue before it returns, so a graceful shutdown loses nothing.

>>> log = DecisionLog("decisions.sqlite")  # doctest: +SKIP
>>> log.start()  # doctest: +SKIP
>>> log.submit([(record, {"page": "home"})])  # doctest: +SKIP
True
>>> log.submit_feedback(record.decision_id, reward=1.0)  # doctest: +SKIP
True
>>> log.close()  # doctest: +SKIP
>>> count_decisions("decisions.sqlite"), integrity_check("decisions.sqlite")  # doctest: +SKIP
(1, 'ok')
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from rlops.core.decisions import DecisionRecord
from rlops.core.errors import ConfigError

SCHEMA_VERSION = 1

_JSON_FIELDS = (
    "observation",
    "action_mask",
    "action",
    "action_distribution",
    "split",
    "shadow_distribution",
    "outcome",
)
_COLUMNS = (
    "decision_id",
    "timestamp",
    "unit_id",
    "episode_id",
    "step",
    "observation",
    "action_mask",
    "action",
    "action_distribution",
    "logp",
    "propensity",
    "policy_version",
    "arm",
    "split",
    "shadow_distribution",
    "reward",
    "outcome",
    "reward_version",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    timestamp REAL NOT NULL,
    unit_id TEXT NOT NULL,
    episode_id TEXT,
    step INTEGER NOT NULL,
    observation TEXT NOT NULL,
    action_mask TEXT,
    action TEXT NOT NULL,
    action_distribution TEXT,
    logp REAL,
    propensity REAL NOT NULL,
    policy_version TEXT NOT NULL,
    arm TEXT NOT NULL,
    split TEXT,
    shadow_distribution TEXT,
    reward REAL,
    outcome TEXT,
    reward_version TEXT,
    context TEXT,
    feedback_at REAL
);
CREATE INDEX IF NOT EXISTS decisions_unit ON decisions (unit_id, timestamp);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_INSERT = (
    f"INSERT INTO decisions ({', '.join(_COLUMNS)}, context) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)}, ?)"
)
_FEEDBACK = (
    "UPDATE decisions SET reward = ?, outcome = ?, reward_version = ?, feedback_at = ? "
    "WHERE decision_id = ?"
)


@dataclass(frozen=True)
class _Decision:
    record: DecisionRecord
    context: Mapping[str, Any] | None
    queued_at: float


@dataclass(frozen=True)
class _Feedback:
    decision_id: str
    reward: float
    outcome: Mapping[str, Any] | None
    reward_version: str | None
    queued_at: float


@dataclass(frozen=True)
class LogStats:
    """A snapshot of the writer, for ``/metrics`` and ``/readyz``.

    Attributes:
        depth: entries waiting in the queue.
        lag_s: age of the oldest waiting entry (0 when empty).
        written: decision rows committed since start.
        feedback: feedback updates committed since start.
        rejected: entries refused because the queue was full.
        errors: failed write attempts (each retried).
        running: the writer thread is alive and its last write succeeded.
    """

    depth: int
    lag_s: float
    written: int
    feedback: int
    rejected: int
    errors: int
    running: bool


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _connect(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    else:
        conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


class DecisionLog:
    """SQLite decision sink with one writer thread and a bounded queue.

    Args:
        path: the SQLite file (parent directories are created).
        max_queue: entries that may wait; :meth:`submit` refuses beyond it.
        batch_size: most entries committed in one transaction.

    Raises:
        ConfigError: (from :meth:`start`) the file cannot be created or is not
            a decision log.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_queue: int = 100_000, batch_size: int = 2048
    ) -> None:
        self.path = Path(path)
        self.max_queue = max_queue
        self.batch_size = batch_size
        self._queue: collections.deque[_Decision | _Feedback] = collections.deque()
        self._cond = threading.Condition()
        self._pending_ids: set[str] = set()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._healthy = True
        self._written = 0
        self._feedback = 0
        self._rejected = 0
        self._errors = 0

    def create(self) -> None:
        """Create the file and table (WAL mode) if missing; idempotent.

        Raises:
            ConfigError: the file cannot be created or opened as SQLite.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path)
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                (tables,) = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                if tables and version != SCHEMA_VERSION:
                    raise ConfigError(
                        f"decision_log: {self.path} is not an rlops decision log (schema "
                        f"version {version}, expected {SCHEMA_VERSION}); choose another file"
                    )
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"decision_log: cannot open {self.path} as SQLite: {exc}") from None

    def start(self) -> None:
        """Create the table if needed and start the writer thread."""
        self.create()
        self._thread = threading.Thread(target=self._run, name="rlops-decision-log", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """The writer thread is alive, accepting entries, and its last write succeeded."""
        alive = self._thread is not None and self._thread.is_alive()
        return alive and self._healthy and not self._closing

    def submit(self, decisions: Sequence[tuple[DecisionRecord, Mapping[str, Any] | None]]) -> bool:
        """Queue decision records (with their request context), all or none.

        Returns:
            False, queueing nothing, if they do not all fit (back-pressure) or
            the log is closing.
        """
        now = time.monotonic()
        with self._cond:
            if self._closing or len(self._queue) + len(decisions) > self.max_queue:
                self._rejected += len(decisions)
                return False
            for record, context in decisions:
                self._queue.append(_Decision(record, context, now))
                self._pending_ids.add(record.decision_id)
            self._cond.notify()
        return True

    def submit_feedback(
        self,
        decision_id: str,
        *,
        reward: float,
        outcome: Mapping[str, Any] | None = None,
        reward_version: str | None = None,
    ) -> bool:
        """Queue the feedback join for a logged decision; False when the queue is full."""
        with self._cond:
            if self._closing or len(self._queue) >= self.max_queue:
                self._rejected += 1
                return False
            entry = _Feedback(decision_id, reward, outcome, reward_version, time.monotonic())
            self._queue.append(entry)
            self._cond.notify()
        return True

    def contains(self, decision_id: str) -> bool:
        """Whether ``decision_id`` is queued or committed (blocking: call off the event loop)."""
        with self._cond:
            if decision_id in self._pending_ids:
                return True
        conn = _connect(self.path, readonly=True)
        try:
            row = conn.execute(
                "SELECT 1 FROM decisions WHERE decision_id = ?", (decision_id,)
            ).fetchone()
        finally:
            conn.close()
        if row is not None:
            return True
        # Committed between the two looks: the writer drops an id from the
        # pending set only after its transaction commits.
        with self._cond:
            return decision_id in self._pending_ids

    def stats(self) -> LogStats:
        """Queue depth, lag and counters (cheap; safe from any thread)."""
        with self._cond:
            depth = len(self._queue)
            lag = time.monotonic() - self._queue[0].queued_at if depth else 0.0
            return LogStats(
                depth=depth,
                lag_s=lag,
                written=self._written,
                feedback=self._feedback,
                rejected=self._rejected,
                errors=self._errors,
                running=self.running,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._pending_ids:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Refuse new entries, commit every queued one, and stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        conn = _connect(self.path)
        try:
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across app crashes
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue:
                        return
                    take = min(self.batch_size, len(self._queue))
                    batch = [self._queue[i] for i in range(take)]
                self._write(conn, batch)
                with self._cond:
                    for _ in range(take):
                        self._queue.popleft()
                    for entry in batch:
                        if isinstance(entry, _Decision):
                            self._pending_ids.discard(entry.record.decision_id)
                    self._cond.notify_all()
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[_Decision | _Feedback]) -> None:
        """Commit ``batch`` in one transaction, retrying until it succeeds (never drop)."""
        delay = 0.05
        while True:
            try:
                decisions = feedback = 0
                conn.execute("BEGIN IMMEDIATE")
                for entry in batch:
                    if isinstance(entry, _Decision):
                        conn.execute(_INSERT, _row(entry))
                        decisions += 1
                    else:
                        conn.execute(
                            _FEEDBACK,
                            (
                                entry.reward,
                                _json(entry.outcome),
                                entry.reward_version,
                                time.time(),
                                entry.decision_id,
                            ),
                        )
                        feedback += 1
                conn.execute("COMMIT")
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                with self._cond:
                    self._errors += 1
                    self._healthy = False
                time.sleep(delay)
                delay = min(2 * delay, 2.0)
                continue
            with self._cond:
                self._written += decisions
                self._feedback += feedback
                self._healthy = True
            return


def _row(entry: _Decision) -> tuple[Any, ...]:
    r = entry.record
    values = tuple(
        _json(getattr(r, name)) if name in _JSON_FIELDS else getattr(r, name) for name in _COLUMNS
    )
    return (*values, _json(entry.context))


def iter_decisions(path: str | os.PathLike[str]) -> Iterator[DecisionRecord]:
    """Yield the logged :class:`DecisionRecord` objects (feedback joined), oldest first."""
    conn = _connect(path, readonly=True)
    try:
        cursor = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM decisions ORDER BY rowid")
        for row in cursor:
            data = {
                name: (orjson.loads(v) if name in _JSON_FIELDS and v is not None else v)
                for name, v in zip(_COLUMNS, row)
            }
            yield DecisionRecord(**data)
    finally:
        conn.close()


def count_decisions(path: str | os.PathLike[str]) -> int:
    """Number of decision rows in the log."""
    conn = _connect(path, readonly=True)
    try:
        (n,) = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()
    finally:
        conn.close()
    return int(n)


def integrity_check(path: str | os.PathLike[str]) -> str:
    """Run ``PRAGMA integrity_check``; returns ``"ok"`` for a sound database file."""
    conn = _connect(path, readonly=True)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)
