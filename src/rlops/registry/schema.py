"""The registry's tables (SQLAlchemy Core) and its migrations.

Tables, all written only inside one transaction per registry call:

* ``policies``: one row per policy name;
* ``versions``: one row per registered artifact of a policy; ``number`` counts
  1, 2, 3 ... per policy, ``content_hash`` is the artifact's version id
  (``sha256:...``), ``store_path`` its directory relative to the store root,
  ``lineage`` the JSON lineage (config, code, seeds, env,
  data, parent, training summary);
* ``evidence``: JSON documents recorded for a version (evaluation, OPE, gate
  results ...), never updated; the latest document under a name is what
  gates read;
* ``aliases``: where each alias points now, with a ``revision`` counter that
  every move increments (compare-and-swap: a move that read an older
  revision loses with :class:`~rlops.core.errors.Conflict`);
* ``alias_history``: every move of every alias (``version`` NULL when the
  alias was unset), so "which version was production at time T" is one query;
* ``alias_rules``: per alias, the gate spec (stored, with its hash) and the
  number of approvals a promotion needs;
* ``requests`` and ``approvals``: the promotion workflow;
* ``members`` and ``tokens``: identities with their roles, and HTTP bearer
  tokens (only their sha256 is stored);
* ``audit_events`` and ``audit_head``: the hash-chained audit trail
  (:mod:`rlops.registry.audit`). On SQLite and PostgreSQL, triggers refuse
  UPDATE and DELETE on ``audit_events``.

Migrations are an ordered list of functions; ``schema_version`` records what
ran. :func:`migrate` applies the missing ones in one transaction, so a
registry is either at the old version or the new one. A database newer than
this code is refused instead of being written to.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Column,
    Connection,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)

from rlops.core.errors import RegistryError

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

policies = Table(
    "policies",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("description", Text, nullable=False, default=""),
)

versions = Table(
    "versions",
    metadata,
    Column("policy", String(128), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("content_hash", String(80), nullable=False),
    Column("store_path", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("lineage", Text, nullable=False),
    ForeignKeyConstraint(["policy"], ["policies.name"]),
    UniqueConstraint("policy", "content_hash", name="versions_unique_hash"),
)

evidence = Table(
    "evidence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("policy", String(128), nullable=False),
    Column("number", Integer, nullable=False),
    Column("name", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("document", Text, nullable=False),
    Column("recorded_at", Float, nullable=False),
    Column("recorded_by", String(128), nullable=False),
    ForeignKeyConstraint(["policy", "number"], ["versions.policy", "versions.number"]),
    Index("evidence_version", "policy", "number", "name"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("policy", String(128), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("number", Integer, nullable=True),
    Column("revision", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(["policy"], ["policies.name"]),
)

alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("policy", String(128), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("number", Integer, nullable=True),
    Column("previous", Integer, nullable=True),
    Column("at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("request_id", Integer, nullable=True),
    Index("alias_history_lookup", "policy", "alias", "at"),
)

alias_rules = Table(
    "alias_rules",
    metadata,
    Column("policy", String(128), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("approvals", Integer, nullable=False),
    Column("gate", Text, nullable=True),
    Column("gate_sha256", String(64), nullable=True),
    Column("gate_source", Text, nullable=True),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(128), nullable=False),
)

requests = Table(
    "requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("policy", String(128), nullable=False),
    Column("number", Integer, nullable=False),
    Column("alias", String(64), nullable=False),
    Column("requester", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("decided_at", Float, nullable=True),
    Column("decision_reason", Text, nullable=True),
    Column("approvals_required", Integer, nullable=False),
    Column("base_revision", Integer, nullable=False),
    Column("gate_result", Text, nullable=True),
    # At most one pending request per (policy, alias): the pending key is the
    # alias while pending and NULL afterwards (NULLs never collide).
    Column("pending_key", String(64), nullable=True),
    UniqueConstraint("policy", "pending_key", name="requests_one_pending"),
    ForeignKeyConstraint(["policy", "number"], ["versions.policy", "versions.number"]),
)

approvals = Table(
    "approvals",
    metadata,
    Column("request_id", Integer, primary_key=True),
    Column("approver", String(128), primary_key=True),
    Column("at", Float, nullable=False),
    Column("comment", Text, nullable=False),
    ForeignKeyConstraint(["request_id"], ["requests.id"]),
)

members = Table(
    "members",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("granted_at", Float, nullable=False),
    Column("granted_by", String(128), nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("label", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("before", Text, nullable=False),
    Column("after", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)


def _v1(conn: Connection) -> None:
    """The initial schema, and the append-only triggers on the audit table."""
    metadata.create_all(conn)
    conn.execute(audit_head.insert().values(id=1, seq=0, hash="0" * 64))
    dialect = conn.dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            conn.execute(
                text(
                    f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
                )
            )
    elif dialect == "postgresql":
        conn.execute(
            text(
                "CREATE FUNCTION rlops_audit_append_only() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'audit_events is append-only'; END; $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
                "FOR EACH ROW EXECUTE FUNCTION rlops_audit_append_only()"
            )
        )


MIGRATIONS: list[Callable[[Connection], None]] = [_v1]
"""Schema migrations, oldest first; ``MIGRATIONS[i]`` brings the schema to version ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    """The schema version recorded in the database (0 for an empty one)."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    found = conn.execute(select(schema_version.c.version).order_by(schema_version.c.version.desc()))
    row = found.first()
    return 0 if row is None else int(row[0])


def migrate(conn: Connection, now: float) -> int:
    """Apply the missing migrations inside the caller's transaction; returns the version.

    Raises:
        RegistryError: the database was written by a newer rlops.
    """
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise RegistryError(
            f"registry: the database has schema version {version}; this rlops knows up to "
            f"{SCHEMA_VERSION}. Upgrade rlops instead of writing to it with an older one"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[number - 1](conn)
        conn.execute(schema_version.insert().values(version=number, applied_at=now))
    return SCHEMA_VERSION
