"""The policy registry: versions with lineage, aliases with history, governed promotion.

Every mutating call takes the acting identity, checks its role, and runs as
one database transaction that also appends its audit event
(:mod:`rlops.registry.audit`): the change and its record commit together or
not at all.

Roles (``admin`` may do everything; nobody approves their own request):

========== ==============================================================
viewer     read (every identity known to the registry may read)
author     register versions, record evidence, request promotions
approver   approve or reject promotion requests of other people
operator   roll an alias back to its previous version, immediately
admin      grant and revoke roles, set alias rules, create HTTP tokens
========== ==============================================================

Promotion: ``request_promotion`` evaluates the alias's gate on the evidence
recorded for the version (a failing gate refuses the request, recorded with
the failing checks); each ``approve`` by an approver other than the
requester is recorded; when the rule's number of approvals is reached the
gate is evaluated again and the alias moves, compare-and-swap on the alias
revision the request was made against (an alias that moved meanwhile makes
the request ``stale``: approvers approved a change from another state).

>>> reg = Registry.open(RegistrySettings(user="alice"))  # doctest: +SKIP
>>> v = reg.register("pricing", "runs/pricing/artifact")  # doctest: +SKIP
>>> req = reg.request_promotion("pricing", v.number, "production", reason="Q4")  # doctest: +SKIP
>>> reg.as_user("bob").approve(req.id, "OPE looks right")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from rlops.artifacts import load_policy
from rlops.core.errors import ArtifactError, ConfigError, Conflict, PermissionDenied, RegistryError
from rlops.evaluation import gates
from rlops.registry import audit, schema
from rlops.registry.schema import (
    alias_history,
    alias_rules,
    aliases,
    approvals,
    audit_head,
    evidence,
    members,
    policies,
    requests,
    tokens,
    versions,
)
from rlops.registry.settings import RegistrySettings
from rlops.registry.store import resolve_source, store_artifact, verified_path

log = logging.getLogger(__name__)

Role = Literal["viewer", "author", "approver", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "author", "approver", "operator", "admin")
STANDARD_ALIASES = ("candidate", "shadow", "canary", "production")
DEFAULT_APPROVALS = {"candidate": 0}
"""Approvals a promotion needs when no rule is set for the alias: none for
``candidate`` (a label for "ready for review", it serves no traffic), one from
someone other than the requester for every other alias."""
ANY_POLICY = "*"
"""``alias_rules.policy`` of a rule that applies to every policy."""
BUSY_TIMEOUT_S = 10.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{6,64}$")

RequestStatus = Literal["pending", "applied", "rejected", "refused", "stale"]


@dataclass(frozen=True)
class Version:
    """A registered version of a policy.

    Attributes:
        policy, number: ``policy@number``, numbers count from 1 per policy.
        content_hash: the artifact's version id (``sha256:...``).
        path: the verified copy in the content-addressed store.
        lineage: what produced it (see :func:`collect_lineage`).
    """

    policy: str
    number: int
    content_hash: str
    path: Path
    source: str
    created_at: float
    created_by: str
    lineage: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.policy}@{self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "number": self.number,
            "ref": self.ref,
            "content_hash": self.content_hash,
            "path": str(self.path),
            "source": self.source,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "lineage": self.lineage,
        }


@dataclass(frozen=True)
class Request:
    """A promotion request and where it stands."""

    id: int
    policy: str
    number: int
    alias: str
    requester: str
    reason: str
    status: RequestStatus
    created_at: float
    decided_at: float | None
    decision_reason: str | None
    approvals_required: int
    approvers: tuple[str, ...]
    gate: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "policy": self.policy,
            "version": self.number,
            "alias": self.alias,
            "requester": self.requester,
            "reason": self.reason,
            "status": self.status,
            "created_at": self.created_at,
            "decided_at": self.decided_at,
            "decision_reason": self.decision_reason,
            "approvals_required": self.approvals_required,
            "approvers": list(self.approvers),
            "gate": self.gate,
        }


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias (also what ``rollback`` returns)."""

    policy: str
    alias: str
    number: int | None
    previous: int | None
    at: float
    actor: str
    action: str
    reason: str
    request_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "alias": self.alias,
            "version": self.number,
            "previous": self.previous,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "reason": self.reason,
            "request_id": self.request_id,
        }


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def create_registry_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and ``BEGIN IMMEDIATE``.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start of every
    transaction, so two registry calls never both read a state and then race
    to write it: the second waits (up to :data:`BUSY_TIMEOUT_S`) and then
    sees the first one's result.

    Raises:
        ConfigError: a malformed URL or a database driver that is not installed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"registry.url: {url!r} is not a database URL: {exc}") from None
    kwargs: dict[str, Any] = {}
    sqlite = parsed.get_backend_name() == "sqlite"
    memory = sqlite and parsed.database in (None, "", ":memory:")
    if sqlite:
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
        if memory:
            kwargs["poolclass"] = StaticPool  # one shared in-memory database
        elif parsed.database:
            parent = Path(parsed.database).expanduser().parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(
                    f"registry: cannot create the directory of {parsed.database}: {exc.strerror}"
                ) from None
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"registry.url: no database driver for {_safe_url(url)} ({exc}); "
            "install it (PostgreSQL: pip install 'rlops[postgres]')"
        ) from None
    if sqlite:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Reads take no write lock (the serving watcher polls); writes take it first.
            read = conn.get_execution_options().get("rlops_read", False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


def check_name(name: str, what: str = "policy") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistryError(
            f"{what}: {name!r} is not a valid name (letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 128 characters)"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
        raise RegistryError(
            f"alias: {alias!r} is not a valid alias (lower-case letters, digits, '_' and '-', "
            f"starting with a letter; e.g. {', '.join(STANDARD_ALIASES)})"
        )
    return alias


def follows_alias(selector: str) -> bool:
    """True when ``NAME@selector`` names an alias (which can move), not a pinned
    version (a number, ``sha256:...`` or ``latest``)."""
    return selector != "latest" and bool(_ALIAS_RE.match(selector))


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"NAME@X"`` -> ``("NAME", "X")``; ``"NAME"`` -> ``("NAME", None)``."""
    name, sep, selector = ref.partition("@")
    check_name(name)
    if sep and not selector:
        raise RegistryError(f"reference {ref!r}: nothing after '@' (a number, sha256:... or alias)")
    return name, (selector if sep else None)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False, default=str)


class Registry:
    """The policy registry over one database and one artifact store.

    Open it with :meth:`open`; use :meth:`as_user` for another identity on
    the same connection pool. Thread-safe (each call is its own transaction).
    """

    def __init__(
        self,
        settings: RegistrySettings,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.store = Path(settings.store).expanduser().resolve()
        self._migrated = False

    @classmethod
    def open(
        cls, settings: RegistrySettings, *, clock: Callable[[], float] = time.time
    ) -> Registry:
        """Connect, create or migrate the schema, and return the registry.

        Raises:
            ConfigError: a bad URL or a missing driver.
            RegistryError: the database is unreachable, locked, or newer than this rlops.
        """
        engine = create_registry_engine(settings.url)
        reg = cls(settings, engine, clock=clock)
        with reg._tx() as conn:
            schema.migrate(conn, clock())
        reg._migrated = True
        return reg

    def as_user(self, user: str) -> Registry:
        """The same registry acting as ``user``."""
        other = Registry(self.settings.with_user(user), self.engine, clock=self.clock)
        other._migrated = self._migrated
        return other

    def close(self) -> None:
        self.engine.dispose()

    # -- plumbing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[Connection]:
        """One transaction; database trouble becomes one clear RegistryError.

        Writes are serialised: SQLite by ``BEGIN IMMEDIATE``, other databases by
        locking the audit head row first (``FOR UPDATE``), so every mutation
        sees the committed result of the one before it (no read-then-write
        races between approvals, rejections, registrations or ``init``).
        A unique-key violation is a :class:`Conflict`.
        """
        try:
            with self.engine.connect() as conn:
                if not write:
                    conn.execution_options(rlops_read=True)
                with conn.begin():
                    if write and conn.dialect.name != "sqlite" and self._migrated:
                        conn.execute(
                            select(audit_head.c.id).where(audit_head.c.id == 1).with_for_update()
                        )
                    yield conn
        except IntegrityError as exc:
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise Conflict(
                f"registry: a concurrent change got there first ({detail}); "
                "nothing was written, retry"
            ) from None
        except DBAPIError as exc:
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            where = _safe_url(self.settings.url)
            if "locked" in detail or "busy" in detail:
                raise RegistryError(
                    f"registry: the database {where} stayed locked for {BUSY_TIMEOUT_S:g} s "
                    f"({detail}); another process holds it; nothing was written, retry"
                ) from None
            raise RegistryError(
                f"registry: database error on {where}: {detail}; nothing was written"
            ) from None

    def _actor(self) -> str:
        user = self.settings.user
        if not user:
            raise PermissionDenied(
                "identity: no user; set $RLOPS_USER (or registry.user in rlops.yaml, "
                "or --as on the command line)"
            )
        return user

    def _require(self, conn: Connection, role: Role, action: str) -> str:
        actor = self._actor()
        held = {r for (r,) in conn.execute(select(members.c.role).where(members.c.name == actor))}
        if role in held or "admin" in held:
            return actor
        if not held:
            raise PermissionDenied(
                f"{action}: {actor!r} is not a member of this registry; an admin adds people "
                f"with: rlops registry grant {actor} {role}"
            )
        raise PermissionDenied(
            f"{action}: {actor!r} has role(s) {', '.join(sorted(held))}; this needs {role!r}"
        )

    def _audit(self, conn: Connection, actor: str, action: str, target: str, **kw: Any) -> int:
        return audit.append(conn, self.clock(), actor=actor, action=action, target=target, **kw).seq

    # -- members and tokens ----------------------------------------------------------

    def init(self, admin: str) -> None:
        """Make ``admin`` the first admin of an empty registry (refused once anyone is a member)."""
        check_name(admin, "user")
        with self._tx() as conn:
            (n,) = conn.execute(select(func.count()).select_from(members)).one()
            if n:
                raise PermissionDenied(
                    "init: this registry already has members; an admin grants roles "
                    "with rlops registry grant"
                )
            now = self.clock()
            conn.execute(
                members.insert().values(name=admin, role="admin", granted_at=now, granted_by=admin)
            )
            self._audit(
                conn,
                admin,
                "registry.init",
                f"member:{admin}",
                after={"roles": ["admin"]},
                reason="first admin",
            )

    def grant(self, user: str, role: Role, reason: str = "") -> None:
        """Give ``user`` a role (admin only)."""
        check_name(user, "user")
        if role not in ROLES:
            raise RegistryError(f"role: {role!r} is not one of {', '.join(ROLES)}")
        with self._tx() as conn:
            actor = self._require(conn, "admin", "grant")
            before = self._roles(conn, user)
            if role in before:
                return
            conn.execute(
                members.insert().values(
                    name=user, role=role, granted_at=self.clock(), granted_by=actor
                )
            )
            self._audit(
                conn,
                actor,
                "member.grant",
                f"member:{user}",
                before={"roles": before},
                after={"roles": sorted({*before, role})},
                reason=reason,
            )

    def revoke(self, user: str, role: Role, reason: str = "") -> None:
        """Take a role from ``user`` (admin only; the last admin cannot be removed)."""
        with self._tx() as conn:
            actor = self._require(conn, "admin", "revoke")
            before = self._roles(conn, user)
            if role not in before:
                raise RegistryError(f"revoke: {user!r} does not have role {role!r}")
            if role == "admin":
                (admins,) = conn.execute(
                    select(func.count()).select_from(members).where(members.c.role == "admin")
                ).one()
                if admins <= 1:
                    raise RegistryError("revoke: the last admin cannot be removed")
            conn.execute(
                members.delete().where(and_(members.c.name == user, members.c.role == role))
            )
            self._audit(
                conn,
                actor,
                "member.revoke",
                f"member:{user}",
                before={"roles": before},
                after={"roles": [r for r in before if r != role]},
                reason=reason,
            )

    def _roles(self, conn: Connection, user: str) -> list[str]:
        rows = conn.execute(select(members.c.role).where(members.c.name == user))
        return sorted(r for (r,) in rows)

    def members(self) -> dict[str, list[str]]:
        """Every member and their roles."""
        with self._tx(write=False) as conn:
            out: dict[str, list[str]] = {}
            for name, role in conn.execute(select(members.c.name, members.c.role)):
                out.setdefault(name, []).append(role)
        return {k: sorted(v) for k, v in sorted(out.items())}

    def create_token(self, user: str, label: str = "") -> str:
        """A new bearer token acting as ``user`` (admin only); only its sha256 is stored."""
        token = secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._tx() as conn:
            actor = self._require(conn, "admin", "token")
            if not self._roles(conn, user):
                raise RegistryError(f"token: {user!r} is not a member; grant a role first")
            conn.execute(
                tokens.insert().values(
                    sha256=digest, name=user, label=label, created_at=self.clock()
                )
            )
            self._audit(
                conn,
                actor,
                "token.create",
                f"member:{user}",
                after={"token_sha256": digest[:16], "label": label},
            )
        return token

    def member_with_role(self, token: str, role: Role) -> str | None:
        """The member a bearer token acts as, if they hold ``role`` (or admin); else None."""
        name = self.identity_for_token(token)
        if name is None:
            return None
        with self._tx(write=False) as conn:
            held = self._roles(conn, name)
        return name if role in held or "admin" in held else None

    def identity_for_token(self, token: str) -> str | None:
        """The member a bearer token acts as, or None for an unknown or revoked token."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._tx(write=False) as conn:
            row = conn.execute(
                select(tokens.c.name).where(
                    and_(tokens.c.sha256 == digest, tokens.c.revoked_at.is_(None))
                )
            ).first()
        return None if row is None else str(row[0])

    # -- versions ----------------------------------------------------------------------

    def register(
        self,
        name: str,
        source: str | Path,
        *,
        lineage: Mapping[str, Any] | None = None,
        parent: str | None = None,
        evidence_files: Sequence[tuple[str, Path]] = (),
        description: str = "",
    ) -> Version:
        """Copy the artifact at ``source`` into the store and record it as the next version.

        ``lineage`` defaults to what the run directory around the artifact
        recorded (:func:`collect_lineage`). ``evidence_files`` are
        ``(name, path)`` JSON documents recorded with it (evaluation reports).

        Raises:
            RegistryError: a refused or missing source, a tampered artifact, the
                same artifact already registered (names the existing version),
                an unknown parent.
        """
        check_name(name)
        path = resolve_source(str(source), self.settings.allowed_roots)
        try:
            policy = load_policy(path)
        except ArtifactError as exc:
            raise RegistryError(f"register: {exc}") from None
        documents = [(n, *_read_json(p)) for n, p in evidence_files]
        for ename, _, _ in documents:
            _check_evidence_name(ename)
        info = dict(lineage) if lineage is not None else collect_lineage(path)
        _checked_json(info, "lineage")
        created: list[Path] = []  # store copies this call made: removed if it fails
        try:
            number = self._register(
                name, path, policy.version, info, parent, documents, description, created
            )
        except BaseException:
            for stored in created:
                shutil.rmtree(stored, ignore_errors=True)
            raise
        return self.version(f"{name}@{number}")

    def _register(
        self,
        name: str,
        path: Path,
        content_hash: str,
        info: dict[str, Any],
        parent: str | None,
        documents: list[tuple[str, Any, str]],
        description: str,
        created: list[Path],
    ) -> int:
        with self._tx() as conn:
            actor = self._require(conn, "author", "register")
            if parent is not None:
                pv = self._resolve(conn, parent)
                info["parent"] = {
                    "ref": f"{pv.policy}@{pv.number}",
                    "content_hash": pv.content_hash,
                }
            dup = conn.execute(
                select(versions.c.number).where(
                    and_(versions.c.policy == name, versions.c.content_hash == content_hash)
                )
            ).first()
            if dup is not None:
                raise RegistryError(
                    f"register: {name}@{dup[0]} is already this artifact ({content_hash[:19]}…)"
                )
            now = self.clock()
            if conn.execute(select(policies.c.name).where(policies.c.name == name)).first() is None:
                conn.execute(
                    policies.insert().values(
                        name=name, created_at=now, created_by=actor, description=description
                    )
                )
            (last,) = conn.execute(
                select(func.max(versions.c.number)).where(versions.c.policy == name)
            ).one()
            number = int(last or 0) + 1
            stored, made = store_artifact(path, content_hash, self.store)
            if made:
                created.append(stored)
            conn.execute(
                versions.insert().values(
                    policy=name,
                    number=number,
                    content_hash=content_hash,
                    store_path=stored.relative_to(self.store).as_posix(),
                    source=str(path),
                    created_at=now,
                    created_by=actor,
                    lineage=_json(info),
                )
            )
            ids = [
                self._insert_evidence(conn, actor, name, number, ename, "report", doc, digest)
                for ename, doc, digest in documents
            ]
            self._audit(
                conn,
                actor,
                "version.register",
                f"{name}@{number}",
                after={"content_hash": content_hash, "source": str(path)},
                evidence=ids,
            )
        return number

    def version(self, ref: str) -> Version:
        """The version ``NAME@N``, ``NAME@sha256:<prefix>`` or ``NAME@ALIAS`` names.

        Raises:
            RegistryError: unknown policy, version or alias, or an ambiguous hash prefix.
        """
        with self._tx(write=False) as conn:
            return self._resolve(conn, ref)

    def artifact_path(self, ref: str) -> Path:
        """The stored artifact of ``ref``, its hash verified (a tampered copy is refused)."""
        v = self.version(ref)
        return verified_path(v.path, v.content_hash)

    def _resolve(self, conn: Connection, ref: str) -> Version:
        name, selector = parse_ref(ref)
        if conn.execute(select(policies.c.name).where(policies.c.name == name)).first() is None:
            known = [n for (n,) in conn.execute(select(policies.c.name).order_by(policies.c.name))]
            hint = f"; registered: {', '.join(known[:10])}" if known else "; the registry is empty"
            raise RegistryError(f"policy {name!r} is not registered{hint}")
        query = select(versions).where(versions.c.policy == name)
        if selector is None or selector == "latest":
            row = conn.execute(query.order_by(versions.c.number.desc())).mappings().first()
        elif re.fullmatch(r"[0-9]{1,9}", selector):
            row = conn.execute(query.where(versions.c.number == int(selector))).mappings().first()
            if row is None:
                raise RegistryError(f"{ref}: {name} has no version {selector}")
        elif selector.startswith("sha256:"):
            if not _HASH_RE.match(selector):
                raise RegistryError(f"{ref}: a hash selector is sha256: and 6-64 hex digits")
            rows = conn.execute(
                query.where(versions.c.content_hash.startswith(selector))
            ).mappings()
            found = list(rows)
            if len(found) != 1:
                raise RegistryError(
                    f"{ref}: {'more than one' if found else 'no'} version of {name} has that hash"
                )
            row = found[0]
        else:
            check_alias(selector)
            current = conn.execute(
                select(aliases.c.number).where(
                    and_(aliases.c.policy == name, aliases.c.alias == selector)
                )
            ).first()
            if current is None or current[0] is None:
                raise RegistryError(f"{ref}: {name} has no version at alias {selector!r}")
            row = conn.execute(query.where(versions.c.number == current[0])).mappings().first()
        if row is None:
            raise RegistryError(f"{ref}: {name} has no versions")
        return _version(row, self.store)

    def versions(self, name: str) -> list[Version]:
        """Every version of ``name``, oldest first."""
        with self._tx(write=False) as conn:
            self._resolve(conn, name)  # unknown policy: one clear error
            rows = conn.execute(
                select(versions).where(versions.c.policy == name).order_by(versions.c.number)
            ).mappings()
            return [_version(r, self.store) for r in rows]

    def policies(self) -> list[dict[str, Any]]:
        """Every policy with its version count and aliases."""
        with self._tx(write=False) as conn:
            out = []
            for row in conn.execute(select(policies).order_by(policies.c.name)).mappings():
                (n,) = conn.execute(
                    select(func.count())
                    .select_from(versions)
                    .where(versions.c.policy == row["name"])
                ).one()
                out.append(
                    {
                        "name": row["name"],
                        "versions": int(n),
                        "aliases": self._aliases(conn, row["name"]),
                        "created_by": row["created_by"],
                    }
                )
            return out

    # -- evidence ----------------------------------------------------------------------------

    def record_evidence(self, ref: str, name: str, document: Any, *, kind: str = "report") -> int:
        """Record a JSON document for a version under ``name``; returns its evidence id.

        Gates read the latest document under each name, mounted at that name
        (``ope.recommended_estimate.lower_95`` for a document named ``ope``).
        """
        return self.record_evidence_many(ref, [(name, document)], kind=kind)[0]

    def record_evidence_many(
        self, ref: str, documents: Sequence[tuple[str, Any]], *, kind: str = "report"
    ) -> list[int]:
        """Record several named documents for a version in one transaction (all or none)."""
        checked = []
        for name, document in documents:
            _check_evidence_name(name)
            text = _checked_json(document, f"evidence {name}")
            checked.append((name, document, hashlib.sha256(text.encode()).hexdigest()))
        with self._tx() as conn:
            actor = self._require(conn, "author", "record evidence")
            v = self._resolve(conn, ref)
            ids = []
            for name, document, digest in checked:
                eid = self._insert_evidence(
                    conn, actor, v.policy, v.number, name, kind, document, digest
                )
                self._audit(
                    conn,
                    actor,
                    "evidence.record",
                    f"{v.policy}@{v.number}",
                    after={"name": name, "kind": kind, "sha256": digest},
                    evidence=[eid],
                )
                ids.append(eid)
        return ids

    def _insert_evidence(
        self,
        conn: Connection,
        actor: str,
        policy: str,
        number: int,
        name: str,
        kind: str,
        document: Any,
        digest: str,
    ) -> int:
        result = conn.execute(
            evidence.insert().values(
                policy=policy,
                number=number,
                name=name,
                kind=kind,
                sha256=digest,
                document=_json(document),
                recorded_at=self.clock(),
                recorded_by=actor,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def evidence(self, ref: str) -> dict[str, dict[str, Any]]:
        """The latest document under each evidence name for ``ref``, with its id and hash."""
        with self._tx(write=False) as conn:
            v = self._resolve(conn, ref)
            return self._evidence(conn, v.policy, v.number)

    def _evidence(self, conn: Connection, policy: str, number: int) -> dict[str, dict[str, Any]]:
        rows = conn.execute(
            select(evidence)
            .where(and_(evidence.c.policy == policy, evidence.c.number == number))
            .order_by(evidence.c.id)
        ).mappings()
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            latest[r["name"]] = {
                "id": int(r["id"]),
                "kind": r["kind"],
                "sha256": r["sha256"],
                "document": json.loads(r["document"]),
                "recorded_at": r["recorded_at"],
                "recorded_by": r["recorded_by"],
            }
        return latest

    # -- aliases and rules -------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        """Where each alias of ``name`` points now (unset aliases left out)."""
        with self._tx(write=False) as conn:
            self._resolve(conn, name)
            return self._aliases(conn, name)

    def _aliases(self, conn: Connection, name: str) -> dict[str, int]:
        rows = conn.execute(
            select(aliases.c.alias, aliases.c.number).where(aliases.c.policy == name)
        )
        return {a: int(n) for a, n in rows if n is not None}

    def at(self, name: str, alias: str, when: float) -> int | None:
        """The version ``alias`` pointed to at time ``when`` (None: unset then)."""
        check_alias(alias)
        with self._tx(write=False) as conn:
            self._resolve(conn, name)
            row = conn.execute(
                select(alias_history.c.number)
                .where(
                    and_(
                        alias_history.c.policy == name,
                        alias_history.c.alias == alias,
                        alias_history.c.at <= when,
                    )
                )
                .order_by(alias_history.c.at.desc(), alias_history.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None or row[0] is None else int(row[0])

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every move of ``name``'s aliases (or of one alias), oldest first."""
        with self._tx(write=False) as conn:
            self._resolve(conn, name)
            query = select(alias_history).where(alias_history.c.policy == name)
            if alias is not None:
                query = query.where(alias_history.c.alias == check_alias(alias))
            rows = conn.execute(query.order_by(alias_history.c.id)).mappings()
            return [_move(r) for r in rows]

    def set_rule(
        self,
        alias: str,
        *,
        approvals_required: int,
        gate_file: Path | None,
        policy: str = ANY_POLICY,
        reason: str = "",
    ) -> dict[str, Any]:
        """Set what a promotion to ``alias`` needs (admin only).

        The gate file's text is stored (with its hash), so editing the file
        afterwards changes nothing until an admin sets the rule again.
        """
        check_alias(alias)
        if policy != ANY_POLICY:
            check_name(policy)
        if not isinstance(approvals_required, int) or not 0 <= approvals_required <= 10:
            raise RegistryError("approvals: must be an integer from 0 to 10")
        gate_text = gate_sha = None
        if gate_file is not None:
            gates.load_gate_file(gate_file)  # validates, names the file on error
            raw = Path(gate_file).read_bytes()
            gate_text, gate_sha = raw.decode("utf-8"), hashlib.sha256(raw).hexdigest()
        with self._tx() as conn:
            actor = self._require(conn, "admin", "set rule")
            before = self._rule(conn, policy, alias)
            key = and_(alias_rules.c.policy == policy, alias_rules.c.alias == alias)
            conn.execute(alias_rules.delete().where(key))
            conn.execute(
                alias_rules.insert().values(
                    policy=policy,
                    alias=alias,
                    approvals=approvals_required,
                    gate=gate_text,
                    gate_sha256=gate_sha,
                    gate_source=None if gate_file is None else str(gate_file),
                    updated_at=self.clock(),
                    updated_by=actor,
                )
            )
            after = self._rule(conn, policy, alias)
            self._audit(
                conn,
                actor,
                "rule.set",
                f"{policy}@{alias}",
                before=_rule_summary(before),
                after=_rule_summary(after),
                reason=reason,
            )
        return _rule_summary(after)

    def rule(self, name: str, alias: str) -> dict[str, Any]:
        """The rule a promotion of ``name`` to ``alias`` follows (the default if none is set)."""
        with self._tx(write=False) as conn:
            return _rule_summary(self._effective_rule(conn, name, alias))

    def _rule(self, conn: Connection, policy: str, alias: str) -> dict[str, Any] | None:
        row = (
            conn.execute(
                select(alias_rules).where(
                    and_(alias_rules.c.policy == policy, alias_rules.c.alias == alias)
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else dict(row)

    def _effective_rule(self, conn: Connection, name: str, alias: str) -> dict[str, Any]:
        rule = self._rule(conn, name, alias) or self._rule(conn, ANY_POLICY, alias)
        if rule is None:
            return {
                "policy": ANY_POLICY,
                "alias": alias,
                "approvals": DEFAULT_APPROVALS.get(alias, 1),
                "gate": None,
                "gate_sha256": None,
                "gate_source": None,
                "default": True,
            }
        return rule

    def _check_gate(
        self, conn: Connection, rule: Mapping[str, Any], v: Version
    ) -> gates.GateResult | None:
        if not rule.get("gate"):
            return None
        spec = yaml.safe_load(rule["gate"])
        found = self._evidence(conn, v.policy, v.number)
        namespace = {name: e["document"] for name, e in found.items()}
        sources = {
            name: {"evidence_id": str(e["id"]), "sha256": e["sha256"]} for name, e in found.items()
        }
        return gates.check_gates(
            spec,
            namespace,
            gate_file=rule.get("gate_source"),
            gate_sha256=rule.get("gate_sha256"),
            sources=sources,
        )

    # -- promotion workflow ----------------------------------------------------------------

    def request_promotion(
        self, name: str, number: int | str, alias: str, *, reason: str
    ) -> Request:
        """Ask to move ``alias`` to ``name@number``.

        The gate is evaluated now: a failing gate records the request as
        ``refused`` (with every check) and it goes no further. With a rule of
        0 approvals it applies at once.

        Raises:
            PermissionDenied: the identity is not an author.
            Conflict: a request for this alias is already pending.
            RegistryError: unknown version, the alias already there, no reason.
        """
        check_alias(alias)
        if not reason.strip():
            raise RegistryError("promote: --reason is required (it goes into the audit trail)")
        try:
            with self._tx() as conn:
                actor = self._require(conn, "author", "promote")
                v = self._resolve(conn, f"{name}@{number}")
                current, revision = self._alias_row(conn, name, alias)
                if current == v.number:
                    raise RegistryError(f"promote: {name}@{alias} is already version {v.number}")
                rule = self._effective_rule(conn, name, alias)
                gate = self._check_gate(conn, rule, v)
                refused = gate is not None and not gate.passed
                now = self.clock()
                result = conn.execute(
                    requests.insert().values(
                        policy=name,
                        number=v.number,
                        alias=alias,
                        requester=actor,
                        reason=reason,
                        status="refused" if refused else "pending",
                        created_at=now,
                        decided_at=now if refused else None,
                        decision_reason=_gate_failure(gate) if refused else None,
                        approvals_required=int(rule["approvals"]),
                        base_revision=revision,
                        gate_result=None if gate is None else _json(gate.to_dict()),
                        pending_key=None if refused else alias,
                    )
                )
                rid = int(result.inserted_primary_key[0])  # type: ignore[index]
                target = f"{name}@{alias}"
                self._audit(
                    conn,
                    actor,
                    "promotion.request",
                    target,
                    before={"version": current},
                    after={
                        "version": v.number,
                        "request": rid,
                        "status": "refused" if refused else "pending",
                        "gate": None if gate is None else gate.passed,
                    },
                    reason=reason,
                )
                if not refused and int(rule["approvals"]) == 0:
                    self._apply(conn, rid, actor)
        except Conflict:
            pending = self._pending_for(name, alias)
            if pending is None:
                raise
            raise Conflict(
                f"promote: request #{pending} for {name}@{alias} is already pending; "
                f"approve or reject it first (rlops approve {pending} / rlops reject {pending})"
            ) from None
        return self.request(rid)

    def _pending_for(self, name: str, alias: str) -> int | None:
        with self._tx(write=False) as conn:
            row = conn.execute(
                select(requests.c.id).where(
                    and_(requests.c.policy == name, requests.c.pending_key == alias)
                )
            ).first()
        return None if row is None else int(row[0])

    def _alias_row(self, conn: Connection, name: str, alias: str) -> tuple[int | None, int]:
        row = conn.execute(
            select(aliases.c.number, aliases.c.revision).where(
                and_(aliases.c.policy == name, aliases.c.alias == alias)
            )
        ).first()
        return (None, 0) if row is None else (row[0], int(row[1]))

    def approve(self, request_id: int, comment: str = "") -> Request:
        """Approve a pending request; the last required approval applies it.

        Raises:
            PermissionDenied: not an approver, or the requester approving their own request.
            Conflict: the alias moved since the request (the request is now ``stale``).
            RegistryError: unknown or already decided request, a repeated approval.
        """
        stale: str | None = None
        with self._tx() as conn:
            actor = self._require(conn, "approver", "approve")
            req = self._request(conn, request_id, lock=True)
            self._check_pending(req)
            if actor == req.requester:
                raise PermissionDenied(
                    f"approve: {actor!r} requested #{request_id}; separation of duties needs "
                    "an approval from someone else"
                )
            if actor in req.approvers:
                raise RegistryError(f"approve: {actor!r} already approved #{request_id}")
            conn.execute(
                approvals.insert().values(
                    request_id=request_id, approver=actor, at=self.clock(), comment=comment
                )
            )
            count = len(self._valid_approvers(conn, request_id, req.requester))
            required = self._required(conn, req)
            self._audit(
                conn,
                actor,
                "promotion.approve",
                f"{req.policy}@{req.alias}",
                after={
                    "request": request_id,
                    "approvals": count,
                    "required": required,
                },
                reason=comment,
            )
            if count >= required:
                stale = self._apply(conn, request_id, actor)
        if stale:
            raise Conflict(stale)
        return self.request(request_id)

    def _valid_approvers(self, conn: Connection, request_id: int, requester: str) -> list[str]:
        """Approvers of a request who still hold the approver (or admin) role."""
        rows = conn.execute(
            select(approvals.c.approver).where(approvals.c.request_id == request_id)
        )
        names = [a for (a,) in rows if a != requester]
        return [a for a in names if {"approver", "admin"} & set(self._roles(conn, a))]

    def _required(self, conn: Connection, req: Request) -> int:
        """Approvals a request needs: its rule then or now, whichever asks more (a rule
        tightened while the request waits applies to it; a loosened one does not)."""
        now = int(self._effective_rule(conn, req.policy, req.alias)["approvals"])
        return max(req.approvals_required, now)

    def _apply(self, conn: Connection, request_id: int, actor: str) -> str | None:
        """Move the alias for an approved request; returns a conflict message instead of raising
        (the request's new status must commit either way)."""
        req = self._request(conn, request_id)
        v = self._resolve(conn, f"{req.policy}@{req.number}")
        now = self.clock()
        rule = self._effective_rule(conn, req.policy, req.alias)
        gate = self._check_gate(conn, rule, v)
        base = conn.execute(
            select(requests.c.base_revision).where(requests.c.id == request_id)
        ).one()[0]
        current, revision = self._alias_row(conn, req.policy, req.alias)
        done = {"decided_at": now, "pending_key": None}
        if gate is not None and not gate.passed:
            conn.execute(
                requests.update()
                .where(requests.c.id == request_id)
                .values(
                    status="refused",
                    decision_reason=_gate_failure(gate),
                    gate_result=_json(gate.to_dict()),
                    **done,
                )
            )
            self._audit(
                conn,
                actor,
                "promotion.refused",
                f"{req.policy}@{req.alias}",
                after={"request": request_id},
                reason=_gate_failure(gate),
            )
            return None
        if revision != base:
            message = (
                f"promote: {req.policy}@{req.alias} moved since request #{request_id} was made "
                f"(now version {current}); the request is stale, request again"
            )
            conn.execute(
                requests.update()
                .where(requests.c.id == request_id)
                .values(status="stale", decision_reason=message, **done)
            )
            self._audit(
                conn,
                actor,
                "promotion.stale",
                f"{req.policy}@{req.alias}",
                after={"request": request_id},
                reason=message,
            )
            return message
        self._move(
            conn,
            req.policy,
            req.alias,
            v.number,
            actor,
            "promote",
            req.reason,
            request_id=request_id,
            expected_revision=revision,
        )
        conn.execute(
            requests.update()
            .where(requests.c.id == request_id)
            .values(
                status="applied",
                decision_reason="approved",
                gate_result=None if gate is None else _json(gate.to_dict()),
                **done,
            )
        )
        return None

    def _move(
        self,
        conn: Connection,
        name: str,
        alias: str,
        number: int | None,
        actor: str,
        action: str,
        reason: str,
        *,
        request_id: int | None,
        expected_revision: int,
    ) -> AliasMove:
        """Compare-and-swap the alias row, append its history and the audit event."""
        now = self.clock()
        current, revision = self._alias_row(conn, name, alias)
        if revision != expected_revision:
            raise Conflict(f"{name}@{alias} moved meanwhile (revision {revision}); retry")
        if revision == 0:
            try:
                with conn.begin_nested():
                    conn.execute(
                        aliases.insert().values(
                            policy=name, alias=alias, number=number, revision=1, updated_at=now
                        )
                    )
            except IntegrityError:
                raise Conflict(f"{name}@{alias} was created meanwhile; retry") from None
        else:
            result = conn.execute(
                aliases.update()
                .where(
                    and_(
                        aliases.c.policy == name,
                        aliases.c.alias == alias,
                        aliases.c.revision == revision,
                    )
                )
                .values(number=number, revision=revision + 1, updated_at=now)
            )
            if result.rowcount != 1:
                raise Conflict(f"{name}@{alias} moved meanwhile; retry")
        conn.execute(
            alias_history.insert().values(
                policy=name,
                alias=alias,
                number=number,
                previous=current,
                at=now,
                actor=actor,
                action=action,
                reason=reason,
                request_id=request_id,
            )
        )
        self._audit(
            conn,
            actor,
            f"alias.{action}",
            f"{name}@{alias}",
            before={"version": current},
            after={"version": number},
            reason=reason,
            evidence=[] if request_id is None else [f"request:{request_id}"],
        )
        return AliasMove(name, alias, number, current, now, actor, action, reason, request_id)

    def reject(self, request_id: int, reason: str) -> Request:
        """Reject a pending request (approvers; the requester may withdraw their own)."""
        if not reason.strip():
            raise RegistryError("reject: --reason is required")
        with self._tx() as conn:
            req = self._request(conn, request_id, lock=True)
            # The requester may withdraw (still as an author); anyone else must approve.
            own = self._actor() == req.requester
            actor = self._require(conn, "author" if own else "approver", "reject")
            self._check_pending(req)
            conn.execute(
                requests.update()
                .where(requests.c.id == request_id)
                .values(
                    status="rejected",
                    decided_at=self.clock(),
                    decision_reason=reason,
                    pending_key=None,
                )
            )
            self._audit(
                conn,
                actor,
                "promotion.reject",
                f"{req.policy}@{req.alias}",
                after={"request": request_id, "status": "rejected"},
                reason=reason,
            )
        return self.request(request_id)

    def rollback(
        self,
        name: str,
        alias: str,
        *,
        reason: str,
        unset: bool = False,
        expected: int | None = None,
    ) -> AliasMove:
        """Move ``alias`` back to the version it held before the current one (operators).

        Immediate, no approvals; audited with ``reason``. Rollbacks walk back:
        a version rolled back from is never the target of a later rollback
        (v1, v2, v3 promoted; rolling back twice gives v2, then v1). With no
        earlier version (or ``unset=True``, e.g. a canary the guardrail
        stopped) the alias is unset.

        Args:
            expected: roll back only if the alias still points to this version
                (the serving guardrail's rollback of the canary it served).

        Raises:
            RegistryError: the alias is not set, or no reason was given.
            Conflict: ``expected`` is given and the alias points elsewhere.
        """
        check_alias(alias)
        if not reason.strip():
            raise RegistryError("rollback: --reason is required (it goes into the audit trail)")
        with self._tx() as conn:
            actor = self._require(conn, "operator", "rollback")
            self._resolve(conn, name)
            current, revision = self._alias_row(conn, name, alias)
            if current is None:
                raise RegistryError(f"rollback: {name}@{alias} is not set")
            if expected is not None and current != expected:
                raise Conflict(
                    f"rollback: {name}@{alias} is version {current}, not {expected}; "
                    "not rolled back"
                )
            target = None if unset else self._rollback_target(conn, name, alias)
            return self._move(
                conn,
                name,
                alias,
                target,
                actor,
                "rollback",
                reason,
                request_id=None,
                expected_revision=revision,
            )

    def _rollback_target(self, conn: Connection, name: str, alias: str) -> int | None:
        """The version below the current one on the alias's stack of promotions.

        Every move but a rollback pushes its version (an unset empties the
        stack); a rollback pops the version it rolled back from.
        """
        stack: list[int] = []
        rows = conn.execute(
            select(alias_history.c.number, alias_history.c.action)
            .where(and_(alias_history.c.policy == name, alias_history.c.alias == alias))
            .order_by(alias_history.c.id)
        )
        for number, action in rows:
            if number is None:
                stack.clear()
            elif action == "rollback":
                while stack and stack[-1] != number:
                    stack.pop()
                if not stack:
                    stack.append(number)
            else:
                stack.append(number)
        return stack[-2] if len(stack) >= 2 else None

    def request(self, request_id: int) -> Request:
        """One promotion request.

        Raises:
            RegistryError: no such request.
        """
        with self._tx(write=False) as conn:
            return self._request(conn, request_id)

    def requests(self, *, status: str | None = None, policy: str | None = None) -> list[Request]:
        """Promotion requests, newest first."""
        with self._tx(write=False) as conn:
            query = select(requests.c.id).order_by(requests.c.id.desc())
            if status is not None:
                query = query.where(requests.c.status == status)
            if policy is not None:
                query = query.where(requests.c.policy == policy)
            return [self._request(conn, int(i)) for (i,) in conn.execute(query)]

    def _request(self, conn: Connection, request_id: int, *, lock: bool = False) -> Request:
        if not 0 < request_id < 2**62:
            raise RegistryError(f"request #{request_id} does not exist")
        query = select(requests).where(requests.c.id == request_id)
        row = conn.execute(query.with_for_update() if lock else query).mappings().first()
        if row is None:
            raise RegistryError(f"request #{request_id} does not exist")
        who = conn.execute(
            select(approvals.c.approver)
            .where(approvals.c.request_id == request_id)
            .order_by(approvals.c.at)
        )
        return Request(
            id=int(row["id"]),
            policy=row["policy"],
            number=int(row["number"]),
            alias=row["alias"],
            requester=row["requester"],
            reason=row["reason"],
            status=row["status"],
            created_at=row["created_at"],
            decided_at=row["decided_at"],
            decision_reason=row["decision_reason"],
            approvals_required=int(row["approvals_required"]),
            approvers=tuple(a for (a,) in who),
            gate=None if row["gate_result"] is None else json.loads(row["gate_result"]),
        )

    @staticmethod
    def _check_pending(req: Request) -> None:
        if req.status != "pending":
            raise RegistryError(
                f"request #{req.id} is {req.status}"
                + (f" ({req.decision_reason})" if req.decision_reason else "")
                + "; only a pending request can be decided"
            )

    # -- audit --------------------------------------------------------------------------

    def audit_log(
        self, *, since: float | None = None, policy: str | None = None
    ) -> list[audit.AuditEvent]:
        """Audit events in order, optionally from ``since`` or for one policy."""
        with self._tx(write=False) as conn:
            return list(audit.events(conn, since=since, target_prefix=policy))

    def verify_audit(self, expected_head: str | None = None) -> audit.Verification:
        """Re-hash the audit chain (see :func:`rlops.registry.audit.verify`)."""
        with self._tx(write=False) as conn:
            return audit.verify(conn, expected_head)


def _version(row: Mapping[Any, Any], store: Path) -> Version:
    return Version(
        policy=row["policy"],
        number=int(row["number"]),
        content_hash=row["content_hash"],
        path=store / row["store_path"],  # relative to the store root: the store can move
        source=row["source"],
        created_at=float(row["created_at"]),
        created_by=row["created_by"],
        lineage=json.loads(row["lineage"]),
    )


def _move(row: Mapping[Any, Any]) -> AliasMove:
    return AliasMove(
        row["policy"],
        row["alias"],
        row["number"],
        row["previous"],
        float(row["at"]),
        row["actor"],
        row["action"],
        row["reason"],
        row["request_id"],
    )


def _rule_summary(rule: Mapping[str, Any] | None) -> dict[str, Any]:
    if rule is None:
        return {}
    return {
        "policy": rule["policy"],
        "alias": rule["alias"],
        "approvals": rule["approvals"],
        "gate_sha256": rule.get("gate_sha256"),
        "gate_source": rule.get("gate_source"),
        "default": bool(rule.get("default", False)),
    }


def _gate_failure(gate: gates.GateResult | None) -> str:
    if gate is None:
        return ""
    failed = [c for c in gate.checks if not c.passed]
    return "gate failed: " + "; ".join(f"{c.expression} ({c.reason})" for c in failed)


def _read_json(path: Path) -> tuple[Any, str]:
    """A JSON evidence file and the sha256 of its bytes; NaN/Infinity refused."""
    try:
        raw = Path(path).read_bytes()
        document = json.loads(raw, parse_constant=_no_constant)
    except (OSError, ValueError) as exc:
        raise RegistryError(f"evidence: {path} is not a readable JSON file: {exc}") from None
    return document, hashlib.sha256(raw).hexdigest()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; write the value or null")


def _checked_json(value: Any, what: str) -> str:
    """``value`` as canonical JSON, or a RegistryError naming ``what`` (NaN, Infinity ...)."""
    try:
        return _json(value)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what}: cannot be stored as JSON ({exc})") from None


def _check_evidence_name(name: str) -> None:
    check_name(name, "evidence name")
    if "." in name:
        raise RegistryError(f"evidence name: {name!r} may not contain '.' (gates use dots)")


def collect_lineage(artifact: Path) -> dict[str, Any]:
    """What produced the artifact: the run's ``lineage.json`` and ``summary.json`` when the
    artifact sits in a run directory, and the manifest's training record.

    ``complete`` is False when there was no ``lineage.json`` (an artifact from
    elsewhere): the version is still registered, but cannot be reproduced.
    """
    manifest = json.loads((artifact / "policy.json").read_text(encoding="utf-8"))
    run_dir = artifact.parent
    run: dict[str, Any] | None = None
    lineage_file = run_dir / "lineage.json"
    if lineage_file.is_file():
        from rlops.runtime.lineage import read_lineage

        try:
            run = dict(read_lineage(run_dir))
        except ConfigError as exc:
            raise RegistryError(f"register: {exc}") from None
    summary = None
    if (run_dir / "summary.json").is_file():
        with contextlib.suppress(OSError, ValueError):
            summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return {
        "complete": run is not None,
        "run": run,
        "run_dir": str(run_dir) if run is not None else None,
        "training_summary": summary,
        "manifest": {k: manifest.get(k) for k in ("algo", "env_id", "training", "created_at")},
    }
