"""The audit trail: an append-only, hash-chained log of every registry mutation.

Each event stores who (``actor``), what (``action`` on ``target``), the state
``before`` and ``after``, the ``reason``, the ``evidence`` ids it relied on,
and when. Its hash is ``sha256(prev_hash + "\\n" + canonical JSON of the event
with its seq)``, so every event commits to the whole history before it:

* an **edited** event no longer matches its hash;
* a **deleted** event leaves a gap in ``seq`` and a broken ``prev_hash`` link;
* **reordered** events break the links between them;
* **truncation** (deleting the newest events) is caught by ``audit_head``,
  the last (seq, hash) written in the same transaction as each event.

Someone with write access to the whole database could still rewrite the chain
and the head together; keep the head printed by ``rlops audit verify``
somewhere else (a ticket, a commit) and pass it back with ``--head`` to rule
that out too. On SQLite and PostgreSQL, triggers refuse UPDATE and DELETE on
the events table, so no rlops code path (or careless SQL) can edit it.

>>> append(conn, now, actor="alice", action="promote", target="pricing@production",
...        before={"version": 3}, after={"version": 4}, reason="Q4 launch")  # doctest: +SKIP
>>> verify(conn).ok  # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, select

from rlops.registry.schema import audit_events, audit_head

GENESIS = "0" * 64
"""``prev_hash`` of the first event."""


@dataclass(frozen=True)
class AuditEvent:
    """One audit event as stored (JSON fields decoded)."""

    seq: int
    at: float
    actor: str
    action: str
    target: str
    before: Any
    after: Any
    reason: str
    evidence: list[Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found.

    Attributes:
        ok: the chain is intact (and matches ``expected_head`` when one was given).
        events: number of events checked.
        head_seq, head_hash: the last intact event (what to keep elsewhere).
        first_bad: seq of the first event that failed (None when ok).
        problem: why it failed, in words.
    """

    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_bad: int | None
    problem: str


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The chain hash of one event (``fields``: every stored field but the two hashes)."""
    return hashlib.sha256((prev_hash + "\n" + _dumps(dict(fields))).encode()).hexdigest()


def _hashed_fields(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "seq": int(row["seq"]),
        "at": float(row["at"]),
        "actor": row["actor"],
        "action": row["action"],
        "target": row["target"],
        "before": row["before"],
        "after": row["after"],
        "reason": row["reason"],
        "evidence": row["evidence"],
    }


def append(
    conn: Connection,
    now: float,
    *,
    actor: str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    reason: str = "",
    evidence: Sequence[Any] = (),
) -> AuditEvent:
    """Append one event inside the caller's transaction (it commits with the change).

    The head row is read ``FOR UPDATE`` (PostgreSQL; SQLite transactions are
    already serialised by ``BEGIN IMMEDIATE``), so concurrent writers extend
    the chain one after the other.
    """
    head = conn.execute(select(audit_head).where(audit_head.c.id == 1).with_for_update()).one()
    row = {
        "seq": int(head.seq) + 1,
        "at": float(now),
        "actor": actor,
        "action": action,
        "target": target,
        "before": _dumps(before),
        "after": _dumps(after),
        "reason": reason,
        "evidence": _dumps(list(evidence)),
    }
    digest = event_hash(head.hash, row)
    conn.execute(audit_events.insert().values(**row, prev_hash=head.hash, hash=digest))
    conn.execute(
        audit_head.update().where(audit_head.c.id == 1).values(seq=row["seq"], hash=digest)
    )
    return _decode({**row, "prev_hash": head.hash, "hash": digest})


def _decode(row: Mapping[Any, Any]) -> AuditEvent:
    def load(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return text  # a tampered field is shown as stored; verify() names it

    evidence = load(row["evidence"])
    return AuditEvent(
        seq=int(row["seq"]),
        at=float(row["at"]),
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        before=load(row["before"]),
        after=load(row["after"]),
        reason=row["reason"],
        evidence=evidence if isinstance(evidence, list) else [evidence],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def events(
    conn: Connection, *, since: float | None = None, target_prefix: str | None = None
) -> Iterator[AuditEvent]:
    """Stored events in ``seq`` order, optionally from time ``since`` or for one target."""
    query = select(audit_events).order_by(audit_events.c.seq)
    if since is not None:
        query = query.where(audit_events.c.at >= since)
    if target_prefix is not None:
        query = query.where(
            (audit_events.c.target == target_prefix)
            | audit_events.c.target.startswith(target_prefix + "@", autoescape=True)
        )
    for row in conn.execute(query).mappings():
        yield _decode(row)


def verify(conn: Connection, expected_head: str | None = None) -> Verification:
    """Re-hash the whole chain; name the first event that does not fit.

    Args:
        expected_head: a head hash kept outside the database (optional); the
            chain must contain it (as its last event, or an earlier one if
            events were appended since).
    """
    prev, expected_seq, n = GENESIS, 1, 0
    seen_expected = expected_head is None
    head_seq, head_hash = 0, GENESIS
    for row in conn.execute(select(audit_events).order_by(audit_events.c.seq)).mappings():
        seq = int(row["seq"])
        if seq != expected_seq:
            what = "deleted" if seq > expected_seq else "duplicated"
            return Verification(
                False,
                n,
                head_seq,
                head_hash,
                expected_seq,
                f"event {expected_seq}: missing (an event was {what} or the events reordered)",
            )
        if row["prev_hash"] != prev:
            return Verification(
                False,
                n,
                head_seq,
                head_hash,
                seq,
                f"event {seq}: its link to event {seq - 1} is broken (deleted or reordered)",
            )
        if event_hash(prev, _hashed_fields(row)) != row["hash"]:
            return Verification(
                False,
                n,
                head_seq,
                head_hash,
                seq,
                f"event {seq}: content does not match its hash (edited)",
            )
        prev, expected_seq, n = row["hash"], expected_seq + 1, n + 1
        head_seq, head_hash = seq, prev
        seen_expected = seen_expected or prev == expected_head
    stored = conn.execute(select(audit_head).where(audit_head.c.id == 1)).one_or_none()
    if stored is None or int(stored.seq) != head_seq or stored.hash != head_hash:
        recorded = "missing" if stored is None else f"event {stored.seq}"
        return Verification(
            False,
            n,
            head_seq,
            head_hash,
            head_seq + 1,
            f"the recorded head ({recorded}) is not the last event ({head_seq}): "
            "the newest events were deleted, or the head was edited",
        )
    if not seen_expected:
        return Verification(
            False,
            n,
            head_seq,
            head_hash,
            None,
            f"the head you kept ({expected_head}) is not in the chain: it was rewritten",
        )
    return Verification(True, n, head_seq, head_hash, None, "")
