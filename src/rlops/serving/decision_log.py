"""The decision log: every served decision, and its feedback, in SQLite.

One table, ``decisions``, one row per :class:`~rlops.core.decisions.DecisionRecord`
(JSON-valued fields stored as JSON text) plus ``context`` (the request's free
context object) and ``feedback_at``. The database runs in WAL mode so readers
(feedback look-ups, exports, OPE jobs) never block the writer. The only index
is the ``decision_id`` primary key (feedback joins on it). A secondary index
on ``unit_id`` cost about 16 us per decision here (random keys dirty a new
index page per row and commit), two thirds of the whole insert, and no
reader needs it: readers scan in ``rowid`` order. For per-unit analysis,
export to Parquet or index a copy of the file.

Exactly one background thread writes. Producers (the event loop) only append
to a bounded in-memory queue under a lock, never touching SQLite; the writer
drains the queue in batches, one transaction per batch. A full queue makes
:meth:`DecisionLog.submit` return False, and the server answers 503 with
``Retry-After`` instead of dropping the record. :meth:`DecisionLog.close`
drains the queue before it returns, so a graceful shutdown loses nothing.

Several processes may share one file (the replicas of
:mod:`rlops.serving.ray_serve`, all on one host): each has its own writer
thread, SQLite's file locks serialise their transactions (``BEGIN IMMEDIATE``
waits ``busy_timeout``, and a failed batch is retried, never dropped), and
:meth:`DecisionLog.create` is one transaction, so replicas starting together
agree on the schema. Not for network filesystems: WAL needs shared memory on
one host.

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
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from rlops.core.decisions import DecisionRecord
from rlops.core.errors import ConfigError

log = logging.getLogger("rlops.serving.decision_log")

SCHEMA_VERSION = 1

PEER_POLL_S = 0.02
"""How often :meth:`DecisionLog.arm_of` re-reads the file during ``peer_grace_s``."""

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
_SHADOW = "UPDATE decisions SET shadow_distribution = ? WHERE decision_id = ?"


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
class _Shadow:
    decision_id: str
    distribution: list[float]
    queued_at: float


_Entry = _Decision | _Feedback | _Shadow


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
        shadow: shadow distributions joined to their decisions.
        shadow_dropped: shadow distributions not logged because the queue was full.
        unwritable: entries SQLite refused for their content (logged at ERROR; the
            request validation is meant to make this 0).
        running: the writer thread is alive and its last write succeeded.
    """

    depth: int
    lag_s: float
    written: int
    feedback: int
    rejected: int
    errors: int
    shadow: int
    shadow_dropped: int
    unwritable: int
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
        linger_s: how long the writer waits for more entries before committing a
            batch smaller than ``batch_size`` (a closing log does not wait).
        peer_grace_s: how long :meth:`arm_of` keeps looking for an unknown id,
            for a file other processes also write (Ray Serve replicas): a
            decision another replica just answered may still sit in that
            replica's queue. 0 (one process): answer at once.

    Raises:
        ConfigError: (from :meth:`start`) the file cannot be created or is not
            a decision log.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_queue: int = 100_000,
        batch_size: int = 2048,
        peer_grace_s: float = 0.0,
        linger_s: float = 0.005,
    ) -> None:
        self.path = Path(path)
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.peer_grace_s = peer_grace_s
        self._queue: collections.deque[_Entry] = collections.deque()
        self._cond = threading.Condition()
        self._pending_ids: dict[str, str] = {}  # queued decision id -> arm
        self._closing = False
        self._thread: threading.Thread | None = None
        self._healthy = True
        self._written = 0
        self._feedback = 0
        self._rejected = 0
        self._errors = 0
        self._shadow = 0
        self._shadow_dropped = 0
        self._unwritable = 0

    def create(self) -> None:
        """Create the file and table (WAL mode) if missing; idempotent.

        Raises:
            ConfigError: the file cannot be created or opened as SQLite.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path)
            try:
                # Several processes (Ray Serve replicas) may create one file at once:
                # check and schema are one IMMEDIATE transaction, so no process sees
                # the table before its user_version (executescript would commit early).
                conn.execute("BEGIN IMMEDIATE")
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                (tables,) = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                if tables and version != SCHEMA_VERSION:
                    raise ConfigError(
                        f"decision_log: {self.path} is not an rlops decision log (schema "
                        f"version {version}, expected {SCHEMA_VERSION}); choose another file"
                    )
                for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    conn.execute(statement)
                conn.execute("COMMIT")
                # Not allowed inside a transaction; it needs the file alone for a moment
                # and can fail busy at once (no busy_timeout wait) while a peer holds it.
                deadline = time.monotonic() + 10.0
                while True:
                    try:
                        conn.execute("PRAGMA journal_mode = WAL")
                        break
                    except sqlite3.OperationalError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.01)
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
                self._pending_ids[record.decision_id] = record.arm
            self._wake(len(decisions))
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
            self._wake(1)
        return True

    def submit_shadow(self, joins: Sequence[tuple[str, list[float]]]) -> bool:
        """Queue shadow distributions for already queued decisions, ``(decision_id, dist)``.

        The shadow policy never blocks serving, so a full queue drops these
        joins (counted in :attr:`LogStats.shadow_dropped`) rather than answering 503.
        """
        now = time.monotonic()
        with self._cond:
            if self._closing or len(self._queue) + len(joins) > self.max_queue:
                self._shadow_dropped += len(joins)
                return False
            for decision_id, dist in joins:
                self._queue.append(_Shadow(decision_id, dist, now))
            self._wake(len(joins))
        return True

    def _wake(self, added: int) -> None:
        """Wake the writer (lock held) only when it sleeps on an empty queue or a
        batch is full: waking it on every entry would cost a thread switch each."""
        size = len(self._queue)
        if size == added or size >= self.batch_size:
            self._cond.notify()

    def contains(self, decision_id: str) -> bool:
        """Whether ``decision_id`` is queued or committed (blocking: call off the event loop)."""
        return self.arm_of(decision_id) is not None

    def arm_of(self, decision_id: str) -> str | None:
        """The arm that made a queued or committed decision, None if unknown (blocking)."""
        with self._cond:
            arm = self._pending_ids.get(decision_id)
        if arm is not None:
            return arm
        deadline = time.monotonic() + self.peer_grace_s
        while True:
            conn = _connect(self.path, readonly=True)
            try:
                row = conn.execute(
                    "SELECT arm FROM decisions WHERE decision_id = ?", (decision_id,)
                ).fetchone()
            finally:
                conn.close()
            if row is not None:
                return str(row[0])
            # Committed between the two looks: the writer drops an id from the
            # pending set only after its transaction commits.
            with self._cond:
                arm = self._pending_ids.get(decision_id)
            if arm is not None or time.monotonic() >= deadline:
                return arm
            time.sleep(PEER_POLL_S)  # another process's writer may commit it shortly

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
                shadow=self._shadow,
                shadow_dropped=self._shadow_dropped,
                unwritable=self._unwritable,
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
                    # Linger briefly so that at low rates several decisions share one
                    # commit (one WAL append instead of one per request).
                    deadline = time.monotonic() + self.linger_s
                    while len(self._queue) < self.batch_size and not self._closing:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
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
                            self._pending_ids.pop(entry.record.decision_id, None)
                    self._cond.notify_all()
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[_Entry]) -> None:
        """Commit ``batch`` in one transaction.

        A transient failure (``OperationalError``: locked, busy, I/O, disk full)
        is retried with backoff until it succeeds: nothing is dropped while the
        disk is in trouble (the queue fills and the server answers 503). Any
        other failure means some entry cannot be stored at all; the batch is
        then written entry by entry and each such entry is logged at ERROR and
        counted in :attr:`LogStats.unwritable`, so one bad value can neither
        stop the writer nor hide.
        """
        delay = 0.05
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                counts = self._apply(conn, batch)
                conn.execute("COMMIT")
            except sqlite3.OperationalError:
                self._rollback(conn)
                with self._cond:
                    self._errors += 1
                    self._healthy = False
                time.sleep(delay)
                delay = min(2 * delay, 2.0)
                continue
            except Exception:
                self._rollback(conn)
                counts = self._write_each(conn, batch)
            with self._cond:
                self._written += counts[0]
                self._feedback += counts[1]
                self._shadow += counts[2]
                self._healthy = True
            return

    def _write_each(self, conn: sqlite3.Connection, batch: list[_Entry]) -> list[int]:
        """Write entries one transaction each, skipping (and reporting) unwritable ones."""
        total = [0, 0, 0]
        for entry in batch:
            delay = 0.05
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    counts = self._apply(conn, [entry])
                    conn.execute("COMMIT")
                except sqlite3.OperationalError:
                    self._rollback(conn)
                    time.sleep(delay)
                    delay = min(2 * delay, 2.0)
                    continue
                except Exception:
                    self._rollback(conn)
                    key = (
                        entry.record.decision_id
                        if isinstance(entry, _Decision)
                        else entry.decision_id
                    )
                    log.exception("decision log: cannot store the entry for decision %s", key)
                    with self._cond:
                        self._unwritable += 1
                    break
                total = [a + b for a, b in zip(total, counts)]
                break
        return total

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    @staticmethod
    def _apply(conn: sqlite3.Connection, batch: list[_Entry]) -> list[int]:
        """Execute ``batch`` in the open transaction; returns (decisions, feedback, shadow)."""
        decisions = feedback = shadow = 0
        rows: list[tuple[Any, ...]] = []  # consecutive decisions: one executemany
        for entry in batch:
            if isinstance(entry, _Decision):
                rows.append(_row(entry))
                continue
            if rows:
                conn.executemany(_INSERT, rows)
                decisions += len(rows)
                rows = []
            if isinstance(entry, _Shadow):
                conn.execute(_SHADOW, (_json(entry.distribution), entry.decision_id))
                shadow += 1
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
        if rows:
            conn.executemany(_INSERT, rows)
            decisions += len(rows)
        return [decisions, feedback, shadow]


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


def summarize(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Row counts by arm and policy, feedback coverage and the time span of a log."""
    conn = _connect(path, readonly=True)
    try:
        (n, with_reward, first, last) = conn.execute(
            "SELECT COUNT(*), COUNT(reward), MIN(timestamp), MAX(timestamp) FROM decisions"
        ).fetchone()
        arms = conn.execute("SELECT arm, COUNT(*) FROM decisions GROUP BY arm").fetchall()
        versions = conn.execute(
            "SELECT policy_version, COUNT(*) FROM decisions GROUP BY policy_version"
        ).fetchall()
        (shadowed,) = conn.execute("SELECT COUNT(shadow_distribution) FROM decisions").fetchone()
    finally:
        conn.close()
    return {
        "decisions": int(n),
        "with_feedback": int(with_reward),
        "with_shadow": int(shadowed),
        "by_arm": dict(sorted((str(a), int(c)) for a, c in arms)),
        "by_policy_version": dict(sorted((str(v), int(c)) for v, c in versions)),
        "first_timestamp": first,
        "last_timestamp": last,
    }


def integrity_check(path: str | os.PathLike[str]) -> str:
    """Run ``PRAGMA integrity_check``; returns ``"ok"`` for a sound database file."""
    conn = _connect(path, readonly=True)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


EXPORT_BATCH_ROWS = 10_000
"""Rows read from SQLite and written as one Parquet row group at a time."""


def export_parquet(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    since: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Export the decision log to one Parquet file for offline learning and OPE.

    Typed columns: ``observation``, ``action_mask``, ``action_distribution``,
    ``shadow_distribution`` are lists; ``action`` is ``int64`` for discrete
    policies and ``list<double>`` for continuous ones; ``split``, ``outcome`` and
    ``context`` stay JSON text (free-form objects); ``feedback_at`` is null until
    feedback was joined. Streams ``EXPORT_BATCH_ROWS`` rows at a time (bounded
    memory) into a temporary file that is renamed into place only when complete,
    so ``out`` is never half-written. The log may be serving while it is read
    (WAL readers see a consistent snapshot).

    Args:
        path: the SQLite decision log.
        out: the Parquet file to write (replaced atomically).
        since: only decisions with ``timestamp >= since`` (unix seconds).
        progress: called with the number of rows written so far after each batch.

    Returns:
        The number of rows exported.

    Raises:
        ConfigError: ``path`` is not a decision log, or pyarrow is missing.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "export: pyarrow is not installed; install the extra: pip install 'rlops[serve]'"
        ) from None
    source = Path(path)
    if not source.exists():
        raise ConfigError(f"log: {source} does not exist")
    try:
        conn = _connect(source, readonly=True)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        raise ConfigError(f"log: {source} is not a SQLite decision log ({exc})") from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise ConfigError(f"log: {source} has schema version {version}, expected {SCHEMA_VERSION}")
    columns = (*_COLUMNS, "context", "feedback_at")
    where, params = ("WHERE timestamp >= ?", (since,)) if since is not None else ("", ())
    floats = pa.list_(pa.float64())
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    written = 0
    writer = None
    try:
        cursor = conn.execute(
            f"SELECT {', '.join(columns)} FROM decisions {where} ORDER BY rowid", params
        )
        schema = None
        while rows := cursor.fetchmany(EXPORT_BATCH_ROWS):
            data = {name: [row[i] for row in rows] for i, name in enumerate(columns)}
            for name in (
                "observation",
                "action_mask",
                "action_distribution",
                "shadow_distribution",
                "action",
            ):
                data[name] = [None if v is None else orjson.loads(v) for v in data[name]]
            if schema is None:
                continuous = isinstance(data["action"][0], list)
                schema = pa.schema(
                    [
                        ("decision_id", pa.string()),
                        ("timestamp", pa.float64()),
                        ("unit_id", pa.string()),
                        ("episode_id", pa.string()),
                        ("step", pa.int64()),
                        ("observation", floats),
                        ("action_mask", pa.list_(pa.bool_())),
                        ("action", floats if continuous else pa.int64()),
                        ("action_distribution", floats),
                        ("logp", pa.float64()),
                        ("propensity", pa.float64()),
                        ("policy_version", pa.string()),
                        ("arm", pa.string()),
                        ("split", pa.string()),
                        ("shadow_distribution", floats),
                        ("reward", pa.float64()),
                        ("outcome", pa.string()),
                        ("reward_version", pa.string()),
                        ("context", pa.string()),
                        ("feedback_at", pa.float64()),
                    ]
                )
                writer = pq.ParquetWriter(tmp, schema)
            assert writer is not None
            writer.write_table(pa.table(data, schema=schema))
            written += len(rows)
            if progress is not None:
                progress(written)
        if writer is None:  # an empty log: still a valid (empty) file
            empty = pa.schema([(name, pa.string()) for name in columns])
            writer = pq.ParquetWriter(tmp, empty)
        writer.close()
        writer = None
        os.replace(tmp, target)
    except BaseException:
        if writer is not None:
            writer.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        conn.close()
    return written
