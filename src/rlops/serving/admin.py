"""Admin authentication and the append-only, hash-chained admin log.

Every change an operator makes to live routing (canary share, shadow, rollback,
overrides, the kill switch) needs a bearer token and lands in :class:`AdminLog`
with who did it and why, so "who moved 20% of traffic to v18 at 03:12, and
why?" always has an answer that nobody could quietly rewrite.

Token: there is no default token, ever. :func:`resolve_token` takes the token
given explicitly, else ``$RLOPS_ADMIN_TOKEN``, else generates one with
:func:`secrets.token_urlsafe` (the caller prints it once, at startup).
:func:`check_token` compares in constant time (:func:`hmac.compare_digest`).

Log: one JSON object per line, ``{seq, timestamp, actor, action, params, reason,
prev_hash, hash}``, where::

    hash = sha256(prev_hash + canonical_json(entry without "hash"))

``canonical_json`` is ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=False)`` and the first entry's ``prev_hash`` is
64 zeros. Editing, deleting, reordering or inserting a line breaks the chain at
that line (or the next). A hash chain cannot, on its own, notice the *last*
lines being cut off, or the whole tail being rewritten with fresh hashes: the
:class:`AdminLog` that wrote them remembers its head and checks it, and across
restarts pass a head you stored elsewhere (``verify(expected_head=...)``).

>>> import tempfile, pathlib
>>> log = AdminLog(pathlib.Path(tempfile.mkdtemp()) / "admin.jsonl")
>>> entry = log.append("alice", "set_canary_share", {"share": 0.05}, "start v18 canary")
>>> entry.seq, log.verify()
(1, (True, None))
>>> check_token("Bearer s3cret-token-0123456789", "s3cret-token-0123456789")
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from rlops.core.errors import ConfigError, RlopsError

AdminAction = Literal[
    "set_canary_share",
    "enable_shadow",
    "disable_shadow",
    "rollback",
    "override_unit",
    "clear_override",
    "kill_switch_on",
    "kill_switch_off",
    "swap_policy",
]
"""The admin actions the log accepts."""

ADMIN_ACTIONS: tuple[AdminAction, ...] = get_args(AdminAction)
DEFAULT_TOKEN_ENV = "RLOPS_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 16
"""Shorter tokens are refused: a bearer token is the only thing guarding routing."""
GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry."""

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_BEARER_RE = re.compile(r"[ \t]*bearer[ \t]+([A-Za-z0-9\-._~+/]+=*)[ \t]*", re.IGNORECASE)
_MAX_HEADER_CHARS = 4096
_FIELDS = ("seq", "timestamp", "actor", "action", "params", "reason", "prev_hash", "hash")


# --------------------------------------------------------------------- tokens


def resolve_token(explicit: str | None, env_var: str = DEFAULT_TOKEN_ENV) -> tuple[str, bool]:
    """The admin token to require, and whether it was generated.

    Order: ``explicit``, then the environment variable ``env_var`` (unset or
    empty counts as absent), then a fresh ``secrets.token_urlsafe(32)``.

    Args:
        explicit: a token given on the command line or in code, or ``None``.
        env_var: environment variable to read when ``explicit`` is ``None``.

    Returns:
        ``(token, generated)``; print a generated token once so the operator can use it.

    Raises:
        ConfigError: a given token is shorter than 16 characters or is not a
            valid bearer token (letters, digits, ``-._~+/``, trailing ``=``).

    >>> resolve_token("a-long-enough-admin-token")
    ('a-long-enough-admin-token', False)
    >>> token, generated = resolve_token(None, env_var="RLOPS_TEST_UNSET_VARIABLE")
    >>> generated, len(token) >= 43
    (True, True)
    """
    if explicit is not None:
        return _check_token_value(explicit, "admin token"), False
    from_env = os.environ.get(env_var, "")
    if from_env:
        return _check_token_value(from_env, f"${env_var}"), False
    return secrets.token_urlsafe(32), True


def _check_token_value(token: Any, where: str) -> str:
    hint = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if not isinstance(token, str):
        raise ConfigError(f"{where}: must be a string, got {type(token).__name__}")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{where}: must be at least {MIN_TOKEN_CHARS} characters, got {len(token)}; {hint}"
        )
    if not _TOKEN_RE.fullmatch(token):
        raise ConfigError(
            f"{where}: may contain only letters, digits and -._~+/ (then '=' padding), "
            f"as a bearer token must; {hint}"
        )
    return token


def check_token(header_value: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (constant-time comparison).

    Accepts exactly ``Bearer <token>`` (scheme case-insensitive, RFC 7235);
    a missing, empty, oversized or otherwise malformed header is refused.

    Args:
        header_value: the raw ``Authorization`` header, or ``None`` when absent.
        token: the expected token (from :func:`resolve_token`).

    Raises:
        ConfigError: ``token`` is empty (never compare against an empty token).

    >>> check_token("Basic dXNlcjpwYXNz", "a-long-enough-admin-token")
    False
    """
    if not isinstance(token, str) or not token:
        raise ConfigError("admin token: empty; call resolve_token() to obtain one")
    if not isinstance(header_value, str) or len(header_value) > _MAX_HEADER_CHARS:
        return False
    match = _BEARER_RE.fullmatch(header_value)
    if match is None:
        return False
    return hmac.compare_digest(match.group(1).encode("ascii"), token.encode("utf-8"))


# ------------------------------------------------------------------------ log


def canonical_json(obj: Any) -> str:
    """The one serialisation that is hashed and written (sorted keys, no spaces, ASCII)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def entry_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """``sha256(prev_hash + canonical_json(body))`` as hex; ``body`` is the entry without hash."""
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class AdminEntry:
    """One admin action as logged.

    Attributes:
        seq: 1-based position in the log.
        timestamp: unix seconds when it was logged.
        actor: who did it (a person or a system such as ``guardrail``).
        action: one of :data:`ADMIN_ACTIONS`.
        params: the action's arguments (JSON object), e.g. ``{"share": 0.05}``.
        reason: why (required, free text).
        prev_hash: ``hash`` of the previous entry (:data:`GENESIS_HASH` for the first).
        hash: ``sha256(prev_hash + canonical JSON of the other fields)``.
    """

    seq: int
    timestamp: float
    actor: str
    action: AdminAction
    params: dict[str, Any]
    reason: str
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """All fields, as written."""
        return {name: getattr(self, name) for name in _FIELDS}


class AdminLog:
    """Append-only JSONL log of admin actions, hash-chained and fsynced.

    Opening an existing log continues its chain. Opening never raises on a
    broken chain, so the log can be inspected with :meth:`verify`; but
    :meth:`append` re-verifies the file and refuses to extend a broken (or
    externally modified) log. One writer per file: a second process appending
    to the same file makes the first one's next :meth:`append` refuse.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "admin.jsonl"
    >>> _ = AdminLog(path).append("alice", "kill_switch_on", {}, "incident 42")
    >>> reopened = AdminLog(path)
    >>> reopened.append("bob", "kill_switch_off", {}, "incident 42 resolved").seq
    2
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        """Args:
        path: the JSONL file (created on first append, parent directories too).
        clock: unix-seconds clock for timestamps (injectable for tests).
        """
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        # Up to the first broken line, if any: append() refuses a broken log anyway.
        data = self._read()
        entries, _, valid_bytes = _scan(data)
        self._head_seq = entries[-1].seq if entries else 0
        self._head_hash = entries[-1].hash if entries else GENESIS_HASH
        # Digest of the bytes known to be good: append() compares the file with it
        # (one fast pass) and falls back to the full chain check only on a mismatch.
        self._known = hashlib.sha256(data[:valid_bytes])
        self._known_size = valid_bytes

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last entry this log knows (``(0, GENESIS_HASH)`` if empty).

        Store it somewhere else (the registry, a metric) to detect truncation
        or a rewritten tail after a restart: ``verify(expected_head=head)``.
        """
        with self._lock:
            return self._head_seq, self._head_hash

    def append(
        self, actor: str, action: AdminAction, params: Mapping[str, Any], reason: str
    ) -> AdminEntry:
        """Write one entry (flushed and fsynced before returning).

        Args:
            actor: who (non-empty).
            action: one of :data:`ADMIN_ACTIONS`.
            params: JSON-able arguments of the action (string keys, no NaN/Inf).
            reason: why (non-empty).

        Returns:
            The entry as written.

        Raises:
            ConfigError: empty actor or reason, unknown action, non-JSON params.
            RlopsError: the log on disk is broken or was changed by someone else.
        """
        if not isinstance(actor, str) or not actor.strip():
            raise ConfigError("actor: required (who is making this change?)")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError("reason: required (why is this change being made?)")
        if action not in ADMIN_ACTIONS:
            raise ConfigError(f"action: {action!r} is not one of {', '.join(ADMIN_ACTIONS)}")
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise ConfigError("params: must be a mapping with string keys")
        try:
            clean_params = json.loads(canonical_json(dict(params)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"params: must be JSON-able without NaN/Inf ({exc})") from None
        with self._lock:
            # Never chain onto a log that changed behind our back.
            data = self._read()
            if (
                len(data) != self._known_size
                or hashlib.sha256(data).digest() != self._known.digest()
            ):
                _, bad = self._verify((self._head_seq, self._head_hash))
                raise RlopsError(
                    f"admin log {self.path}: fails verification at seq {bad} (a line was "
                    "edited, deleted, reordered or inserted, or another process wrote to it); "
                    "refusing to append. Restore it from a backup, or move it aside and start "
                    "a new log"
                )
            body: dict[str, Any] = {
                "seq": self._head_seq + 1,
                "timestamp": float(self._clock()),
                "actor": actor,
                "action": action,
                "params": clean_params,
                "reason": reason,
                "prev_hash": self._head_hash,
            }
            entry = AdminEntry(**body, hash=entry_hash(self._head_hash, body))
            line = (canonical_json(entry.to_dict()) + "\n").encode("ascii")
            created = not self.path.exists()
            if created:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if created:
                _fsync_dir(self.path.parent)
            self._head_seq, self._head_hash = entry.seq, entry.hash
            self._known.update(line)
            self._known_size += len(line)
            return entry

    def verify(self, expected_head: tuple[int, str] | None = None) -> tuple[bool, int | None]:
        """Re-read the file and check every line and the chain.

        Args:
            expected_head: ``(seq, hash)`` the log must end with; defaults to
                :attr:`head` (what this object last wrote or read), which
                catches cut-off or added trailing lines.

        Returns:
            ``(True, None)`` if intact, else ``(False, seq)`` with the first
            sequence number whose line is wrong or missing (for a tail rewritten
            with fresh hashes, the last one: only the head's hash tells).
        """
        return self._verify(expected_head if expected_head is not None else self.head)

    def entries(self) -> list[AdminEntry]:
        """Every entry up to the first broken line."""
        return _scan(self._read())[0]

    # ------------------------------------------------------------- internals
    def _verify(self, expected_head: tuple[int, str]) -> tuple[bool, int | None]:
        entries, bad, _ = _scan(self._read())
        if bad is not None:
            return False, bad
        head_seq, head_hash = expected_head
        last_seq = entries[-1].seq if entries else 0
        last_hash = entries[-1].hash if entries else GENESIS_HASH
        if last_seq < head_seq:
            return False, last_seq + 1  # lines were cut off the end
        if last_seq > head_seq:
            return False, head_seq + 1  # lines were added after the known head
        if last_hash != head_hash:
            return False, last_seq  # the tail was rewritten with fresh hashes
        return True, None

    def _read(self) -> bytes:
        return self.path.read_bytes() if self.path.exists() else b""


def _scan(data: bytes) -> tuple[list[AdminEntry], int | None, int]:
    """Parse and check a log's bytes.

    Returns:
        ``(valid entries, first bad seq or None, length of the valid prefix in bytes)``.
    """
    lines = data.split(b"\n")
    torn = lines.pop()  # what follows the last newline: empty unless a write was cut short
    entries: list[AdminEntry] = []
    prev = GENESIS_HASH
    valid_bytes = 0
    for index, raw in enumerate(lines):
        seq = index + 1
        entry = _parse_line(raw)
        if entry is None or entry.seq != seq or entry.prev_hash != prev:
            return entries, seq, valid_bytes
        body = {k: v for k, v in entry.to_dict().items() if k != "hash"}
        if entry.hash != entry_hash(prev, body):
            return entries, seq, valid_bytes
        entries.append(entry)
        prev = entry.hash
        valid_bytes += len(raw) + 1
    if torn:
        return entries, len(lines) + 1, valid_bytes
    return entries, None, valid_bytes


def _parse_line(raw: bytes) -> AdminEntry | None:
    """The entry on one line, or None if the line is not exactly a canonical entry."""
    try:
        data = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or set(data) != set(_FIELDS):
        return None
    try:
        # Any byte-level change (spacing, key order, escapes) counts as an edit.
        if canonical_json(data).encode("ascii") != raw:
            return None
    except ValueError:
        return None
    ok = (
        type(data["seq"]) is int
        and type(data["timestamp"]) in (int, float)
        and isinstance(data["actor"], str)
        and data["actor"].strip() != ""
        and data["action"] in ADMIN_ACTIONS
        and isinstance(data["params"], dict)
        and isinstance(data["reason"], str)
        and data["reason"].strip() != ""
        and isinstance(data["prev_hash"], str)
        and isinstance(data["hash"], str)
    )
    if not ok:
        return None
    return AdminEntry(
        seq=data["seq"],
        timestamp=data["timestamp"],
        actor=data["actor"],
        action=cast(AdminAction, data["action"]),
        params=data["params"],
        reason=data["reason"],
        prev_hash=data["prev_hash"],
        hash=data["hash"],
    )


def _fsync_dir(directory: Path) -> None:
    """Make a newly created file's directory entry durable (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
