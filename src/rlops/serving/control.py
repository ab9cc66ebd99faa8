"""Live control of a serving process: routing, guardrail, admin actions, persisted state.

:class:`Control` ties together the pure pieces, so the HTTP layer only parses
and authenticates:

* :class:`~rlops.serving.routing.Router` decides each request's arm (override >
  kill switch > sticky canary assignment) and which units are shadowed;
* :class:`~rlops.serving.guardrail.Guardrail` watches canary vs production and
  :meth:`Control.check_guardrail` rolls the canary back when it trips;
* every change, by a person or by the guardrail, is appended to the
  hash-chained :class:`~rlops.serving.admin.AdminLog` *before* it takes effect
  (no unlogged change ever serves traffic), then the routing state is written
  atomically to ``config.state_path``.

Restarts keep what operators and the guardrail decided: a rolled-back canary
stays rolled back, overrides and the kill switch stay in force. The state file
also records the admin log's head ``(seq, hash)``; a log that no longer ends
there (lines cut off, edited, rewritten) stops the server from starting, since
the trail of who changed routing must not be quietly broken. The saved routing
applies only while the same canary artifact is configured: a new canary starts
from the configured share with a fresh salt and a fresh guardrail.

:meth:`Control.swap` records a live policy swap (a registry alias moved) the
same way: logged first, then applied together with the app's own switch of
served policies, then persisted.

>>> control = Control(config, canary_version="sha256:ab", fallback=True)  # doctest: +SKIP
>>> control.route("user-42").arm  # doctest: +SKIP
'production'
>>> control.set_canary_share(0.05, actor="alice", reason="start v18 canary")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from rlops.core.errors import ConfigError, RlopsError
from rlops.serving.admin import AdminAction, AdminEntry, AdminLog
from rlops.serving.config import ServeConfig
from rlops.serving.guardrail import GuardedArm, Guardrail, Verdict
from rlops.serving.routing import Route, Router, ServedArm

STATE_FORMAT = 1
"""Version of the state file; bumped on incompatible changes."""

GUARDRAIL_ACTOR = "guardrail"
"""The actor name automatic rollbacks are logged under."""

PolicyArm = Literal["production", "canary", "shadow"]
"""An arm whose policy can be swapped while serving."""


class Conflict(RlopsError):
    """An admin action that cannot apply in the current setup (answered 409)."""


class Control:
    """Routing, guardrail and admin actions of one serving process (thread-safe).

    Args:
        config: the serving config (state and admin-log paths, shares, guardrail).
        canary_version: content hash of the loaded canary, None without one.
        shadow_version: content hash of the loaded shadow policy, None without one.
        fallback: whether a fallback action is configured (the kill switch and
            fallback overrides need one).

    Raises:
        ConfigError: the state file is unreadable, or the admin log does not end
            where the state file says it did (edited or truncated).
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        canary_version: str | None,
        shadow_version: str | None = None,
        fallback: bool,
    ) -> None:
        self.config = config
        self.canary_version = canary_version
        self.shadow_version = shadow_version
        self.fallback = fallback
        self.state_path = config.state_path
        self.admin_log = AdminLog(config.admin_log_path)
        self.guardrail = Guardrail(config.guardrail)
        self.rollbacks = 0
        self.restored: str | None = None
        """What was restored from the state file (for the startup line), if anything."""
        self._lock = threading.Lock()
        salt = config.salt or canary_version or shadow_version or "rlops"
        self.router = Router(
            salt=salt,
            canary_share=config.canary_share if canary_version else 0.0,
            shadow=shadow_version is not None,
            shadow_share=config.shadow_share,
        )
        self._last_rollback: str | None = None
        self._load()

    # ------------------------------------------------------------------ reads
    def route(self, unit_id: str) -> Route:
        """The arm (and shadow flag) for one request of ``unit_id``."""
        return self.router.route(unit_id)

    @property
    def canary_active(self) -> bool:
        """A canary is loaded and receives assigned traffic."""
        return self.canary_version is not None and self.router.canary_share > 0.0

    def state(self) -> dict[str, Any]:
        """JSON-able snapshot for ``GET /v1/admin/state``."""
        verdict = self.guardrail.check() if self.canary_version else None
        seq, head = self.admin_log.head
        ok, bad = self.admin_log.verify()
        return {
            "routing": self.router.state_dict(),
            "canary_version": self.canary_version,
            "shadow_version": self.shadow_version,
            "fallback_configured": self.fallback,
            "rollbacks": self.rollbacks,
            "last_rollback": self._last_rollback,
            "guardrail": None
            if verdict is None
            else {
                "rollback": verdict.rollback,
                "reason": verdict.reason,
                "stats": _finite(verdict.stats),
            },
            "admin_log": {
                "path": str(self.admin_log.path),
                "head_seq": seq,
                "head_hash": head,
                "verified": ok,
                "first_bad_seq": bad,
            },
        }

    # ---------------------------------------------------------------- actions
    # Each one validates, logs (fsynced) and only then applies, then persists.

    def set_canary_share(self, share: float, *, actor: str, reason: str) -> dict[str, Any]:
        """Move ``share`` of units to the canary (ramps are monotone: see routing)."""
        if self.canary_version is None:
            raise Conflict("no canary policy is loaded; start the server with --canary PATH")
        self._check_share(share, "share")
        with self._lock:
            previous = self.router.canary_share
            # Raising the share after a rollback starts a new comparison. A trip the
            # watcher has not acted on yet is not reset: it rolls back on its next check.
            reset = share > 0.0 and previous == 0.0 and self._last_rollback is not None
            params = {"share": float(share), "previous": previous, "guardrail_reset": reset}
            self._log(actor, "set_canary_share", params, reason)
            if reset:
                self.guardrail.reset()
                self._last_rollback = None
            self.router.set_canary_share(share)
            self._save()
        return params

    def set_shadow(
        self, enabled: bool, *, share: float | None = None, actor: str, reason: str
    ) -> dict[str, Any]:
        """Turn the shadow policy on or off (optionally changing its unit share)."""
        if enabled and self.shadow_version is None:
            raise Conflict("no shadow policy is loaded; start the server with --shadow PATH")
        if share is not None:
            self._check_share(share, "share")
        params: dict[str, Any] = {"share": share}
        with self._lock:
            self._log(actor, "enable_shadow" if enabled else "disable_shadow", params, reason)
            self.router.set_shadow(enabled, share)
            self._save()
        return params

    def rollback(
        self, *, actor: str, reason: str, evidence: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send every assigned unit back to production now (share 0)."""
        if self.canary_version is None:
            raise Conflict("no canary policy is loaded; nothing to roll back")
        with self._lock:
            params: dict[str, Any] = {"previous": self.router.canary_share}
            if evidence is not None:
                params["evidence"] = _finite(evidence)
            self._log(actor, "rollback", params, reason)
            self.router.rollback()
            self.rollbacks += 1
            self._last_rollback = reason
            self._save()
        return params

    def set_override(
        self, unit_id: str, arm: ServedArm, *, actor: str, reason: str
    ) -> dict[str, Any]:
        """Pin one unit to production, the canary or the fallback action."""
        if not isinstance(unit_id, str) or not unit_id:
            raise ConfigError(f"unit_id: must be a non-empty string, got {unit_id!r}")
        self._check_arm_available(arm)
        params = {"unit_id": unit_id, "arm": arm}
        with self._lock:
            self._log(actor, "override_unit", params, reason)
            self.router.set_override(unit_id, arm)
            self._save()
        return params

    def clear_override(self, unit_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        """Remove one unit's override (it follows the split again)."""
        if not isinstance(unit_id, str) or not unit_id:
            raise ConfigError(f"unit_id: must be a non-empty string, got {unit_id!r}")
        params = {"unit_id": unit_id}
        with self._lock:
            if unit_id not in self.router.overrides():
                raise Conflict(f"unit_id {unit_id!r} has no override")
            self._log(actor, "clear_override", params, reason)
            self.router.clear_override(unit_id)
            self._save()
        return params

    def set_kill_switch(self, on: bool, *, actor: str, reason: str) -> dict[str, Any]:
        """Serve the fallback action to every unit without an override (or release)."""
        if on:
            self._check_arm_available("fallback")
        params: dict[str, Any] = {}
        with self._lock:
            self._log(actor, "kill_switch_on" if on else "kill_switch_off", params, reason)
            self.router.set_kill_switch(on)
            self._save()
        return params

    @contextlib.contextmanager
    def swap(
        self,
        arm: PolicyArm,
        previous: str | None,
        version: str | None,
        *,
        actor: str,
        reason: str,
    ) -> Iterator[Callable[[], None]]:
        """Log that ``arm`` moves from ``previous`` to ``version``; yield the routing switch.

        The caller runs the yielded switch together with its own change of
        served policies (the app does both in one event-loop callback, so no
        request sees half of it); the state is persisted when the block ends.
        Other admin actions wait for the block (it holds the lock).

        What the switch does to routing:

        * ``production``: the canary comparison restarts (fresh guardrail); a
          rolled-back canary stays rolled back.
        * ``canary``: a new version is a new experiment: the configured share,
          a fresh salt (unless one is configured) and a fresh guardrail, and the
          rollback is lifted (swapping in a new canary is the human action a
          rollback waits for). ``None`` removes it: every unit goes to
          production and overrides pinned to the canary are cleared.
        * ``shadow``: a new shadow runs (an operator's "off" stays off when one
          shadow replaces another); ``None`` stops it.

        Args:
            arm: the arm to swap.
            previous: the version it serves now (None: none).
            version: the version it will serve (None: remove the arm).
            actor: who (goes to the admin log).
            reason: why (goes to the admin log).

        Yields:
            The routing switch, to call exactly once.

        Raises:
            ConfigError: empty actor or reason (nothing changed).
            RlopsError: the admin log refuses to append (tampered with).
        """
        with self._lock:
            params: dict[str, Any] = {"arm": arm, "from": previous, "to": version}
            if arm == "canary" and version is None:
                pinned = self.router.overrides()
                params["cleared_overrides"] = sorted(u for u, a in pinned.items() if a == "canary")
            if arm == "canary" and version is not None:
                params["share"] = self.config.canary_share
            if arm != "shadow":
                params["guardrail_reset"] = True
            self._log(actor, "swap_policy", params, reason)
            try:
                yield functools.partial(self._switch, arm, version, params)
            finally:
                self._save()

    def _switch(self, arm: PolicyArm, version: str | None, params: dict[str, Any]) -> None:
        """Apply a logged swap to routing (the lock is held by :meth:`swap`)."""
        if arm == "shadow":
            if version is None or self.shadow_version is None:
                self.router.set_shadow(version is not None)
            self.shadow_version = version
            return
        if arm == "canary":
            if version is not None:
                routing = self.router.state_dict()
                routing["salt"] = self.config.salt or version
                self.router.load_state_dict(routing)
                self._last_rollback = None
            for unit in params.get("cleared_overrides", ()):
                self.router.clear_override(unit)
            self.router.set_canary_share(params.get("share", 0.0))
            self.canary_version = version
        self.guardrail.reset()

    # -------------------------------------------------------------- guardrail
    def observe_request(
        self, arm: GuardedArm, latency_ms: float, *, error: bool, safety_triggers: int
    ) -> None:
        """Feed one assigned request's outcome to the guardrail (only while a canary serves)."""
        self.guardrail.observe_request(
            arm, latency_ms, error=error, safety_triggers=safety_triggers
        )

    def observe_reward(self, arm: GuardedArm, reward: float) -> None:
        """Feed one piece of live feedback to the guardrail."""
        self.guardrail.observe_reward(arm, reward)

    def check_guardrail(self) -> Verdict | None:
        """Roll the canary back if the guardrail trips; returns the verdict when it did."""
        if not self.canary_active:
            return None
        verdict = self.guardrail.check()
        if not verdict.rollback:
            return None
        self.rollback(actor=GUARDRAIL_ACTOR, reason=verdict.reason, evidence=verdict.stats)
        return verdict

    def close(self) -> None:
        """Persist the final state (guardrail tallies included)."""
        with self._lock:
            self._save()

    # -------------------------------------------------------------- internals
    def _log(self, actor: str, action: AdminAction, params: dict[str, Any], reason: str) -> None:
        self.admin_log.append(actor, action, params, reason)

    def _check_share(self, share: Any, key: str) -> None:
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float)
            or not (math.isfinite(share) and 0.0 <= share <= 1.0)
        ):
            raise ConfigError(f"{key}: must be a fraction in [0, 1] (not a percent), got {share!r}")

    def _check_arm_available(self, arm: Any) -> None:
        if arm not in ("production", "canary", "fallback"):
            raise ConfigError(f"arm: {arm!r} is not one of production, canary, fallback")
        if arm == "canary" and self.canary_version is None:
            raise Conflict("no canary policy is loaded; start the server with --canary PATH")
        if arm == "fallback" and not self.fallback:
            raise Conflict(
                "no fallback action is configured; start the server with --fallback-action"
            )

    def _save(self) -> None:
        """Write the state file atomically (temp file + fsync + rename)."""
        state = {
            "format": STATE_FORMAT,
            "canary_version": self.canary_version,
            "router": self.router.state_dict(),
            "guardrail": self.guardrail.state_dict() if self.canary_version else None,
            "rollbacks": self.rollbacks,
            "last_rollback": self._last_rollback,
            "admin_head": list(self.admin_log.head),
        }
        path = self.state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state, f, allow_nan=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _entries_after(self, head: tuple[int, str]) -> list[AdminEntry]:
        """Entries appended after ``head`` when the log still holds ``head`` intact.

        A crash between an admin-log append and the state-file write leaves the
        log one entry ahead: that is not tampering, and the entry is replayed.
        """
        ok, _ = self.admin_log.verify(expected_head=self.admin_log.head)
        entries = self.admin_log.entries()
        seq, digest = head
        if not ok or len(entries) <= seq:
            return []
        if seq > 0 and entries[seq - 1].hash != digest:
            return []
        return entries[seq:]

    def _replay(self, entries: list[AdminEntry], *, routing: bool) -> None:
        """Apply admin-log entries the state file missed (see :meth:`_entries_after`)."""
        for e in entries:
            p = e.params
            if not routing:
                continue
            if e.action == "set_canary_share" and self.canary_version is not None:
                self.router.set_canary_share(p["share"])
            elif e.action == "rollback":
                self.router.rollback()
                self.rollbacks += 1
                self._last_rollback = e.reason
            elif e.action in ("enable_shadow", "disable_shadow"):
                self.router.set_shadow(e.action == "enable_shadow", p.get("share"))
            elif e.action == "override_unit":
                self.router.set_override(p["unit_id"], p["arm"])
            elif e.action == "clear_override":
                self.router.clear_override(p["unit_id"])
            elif e.action in ("kill_switch_on", "kill_switch_off"):
                self.router.set_kill_switch(e.action == "kill_switch_on")
        if entries:
            self._save()

    def _load(self) -> None:
        path = self.state_path
        if not path.exists():
            ok, bad = self.admin_log.verify()
            if not ok:
                raise ConfigError(
                    f"admin_log: {self.admin_log.path} fails verification at seq {bad}; "
                    "restore it from a backup, or move it aside to start a new one"
                )
            return
        try:
            state = json.loads(path.read_text())
            head = state["admin_head"]
            expected = (int(head[0]), str(head[1]))
            fmt = state["format"]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ConfigError(
                f"state_file: {path} is not a serving state file ({exc!r}); "
                "move it aside to start with the configured routing"
            ) from None
        if fmt != STATE_FORMAT:
            raise ConfigError(
                f"state_file: {path} has format {fmt!r}; this rlops reads {STATE_FORMAT}"
            )
        ok, bad = self.admin_log.verify(expected_head=expected)
        ahead: list[AdminEntry] = []
        if not ok:
            ahead = self._entries_after(expected)
            ok = bool(ahead)
        if not ok:
            raise ConfigError(
                f"admin_log: {self.admin_log.path} does not end where {path} says it did "
                f"(first bad seq {bad}): an entry was edited, deleted or cut off. Restore "
                "the log from a backup; to start a new trail deliberately, move both files aside"
            )
        if state.get("canary_version") != self.canary_version:
            self.restored = None  # a different canary: start from the configured split
            self._replay(ahead, routing=False)
            return
        self.router.load_state_dict(state["router"])
        self.rollbacks = int(state.get("rollbacks", 0))
        self._last_rollback = state.get("last_rollback")
        if self.shadow_version is None:
            self.router.set_shadow(False)
        if state.get("guardrail") is not None and self.canary_version is not None:
            try:
                self.guardrail.load_state_dict(state["guardrail"])
            except ConfigError:
                self.guardrail.reset()  # recorded under another guardrail config
        self._replay(ahead, routing=True)
        routing = self.router.state_dict()
        needs_fallback = routing["kill_switch"] or "fallback" in routing["overrides"].values()
        if needs_fallback and not self.fallback:
            raise ConfigError(
                f"state_file: {path} has the kill switch on or units pinned to the fallback, "
                "but no fallback action is configured; start with --fallback-action, or "
                "start once with it and release them through the admin API"
            )
        share = self.router.canary_share
        self.restored = f"routing restored from {path} (canary share {share:g}" + (
            f", rolled back: {self._last_rollback})" if self._last_rollback else ")"
        )


def _finite(stats: dict[str, Any]) -> dict[str, Any]:
    """Drop non-finite numbers (JSON and the admin log refuse NaN/Inf)."""
    return {k: v for k, v in stats.items() if not (isinstance(v, float) and not math.isfinite(v))}
