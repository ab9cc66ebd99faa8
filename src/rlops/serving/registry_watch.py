"""``rlops serve NAME@ALIAS``: serve what the registry's aliases name, and follow them.

:func:`resolve_arms` turns ``pricing@production`` into verified artifact paths
for production and, when those aliases are set, ``canary`` and ``shadow``.
:class:`RegistryWatcher` then polls the registry from a background thread
(database calls block; the event loop never waits on them) and, when an alias
moves, loads and verifies the new artifact and hands it to the running
service (:meth:`~rlops.serving.app._Service.swap_policy`), which logs the
switch in the admin log; an unset canary or shadow alias removes that arm. A
canary that appears on a server started without one gets ``canary_share``
(``rlops serve NAME@production --canary-share F``): a new canary version is a
new experiment, and the share is what was asked for at start.
Production is never left empty: an unset production alias is logged and
the current version keeps serving.

The other direction: a rollback inside serving (the guardrail's automatic
one, or an operator's ``POST /v1/admin/rollback``) is recorded in the
registry as a rollback of the canary alias (unset, with the serving reason)
by the serve identity, so the registry's history says what traffic saw. That
identity needs the ``operator`` role; without it the rollback still happens
in serving and the failure to record it is logged at ERROR.

A registry that is unreachable for a while only delays changes: serving
goes on with what it has, and each failure is logged once until it recovers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlops.artifacts import load_policy
from rlops.core.errors import RegistryError, RlopsError

if TYPE_CHECKING:
    from rlops.registry import Registry
    from rlops.serving.app import ServingApp

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 2.0
"""How often the watcher reads the aliases (a registry read is one small query)."""

SWAP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ResolvedArms:
    """What ``NAME@ALIAS`` resolved to at start.

    Attributes:
        name: the policy name.
        aliases: the alias followed for each arm (``production`` -> the alias given).
        paths: verified artifact paths of the arms whose alias is set.
        numbers: the version number behind each arm (None: alias unset).
    """

    name: str
    aliases: dict[str, str]
    paths: dict[str, Path]
    numbers: dict[str, int | None]
    hashes: dict[str, str]


def resolve_arms(
    registry: Registry, ref: str, *, canary: bool = True, shadow: bool = True
) -> ResolvedArms:
    """Resolve ``NAME@ALIAS`` (production) and the ``canary`` / ``shadow`` aliases.

    Raises:
        RegistryError: unknown policy or alias, or a stored artifact that fails its hash.
    """
    from rlops.registry import parse_ref

    name, selector = parse_ref(ref)
    alias = selector or "production"
    arms = {"production": alias}  # a number, sha256: or latest pins production (not followed)
    if canary:
        arms["canary"] = "canary"
    if shadow:
        arms["shadow"] = "shadow"
    current = registry.aliases(name)
    paths: dict[str, Path] = {}
    numbers: dict[str, int | None] = {}
    hashes: dict[str, str] = {}
    for arm, a in arms.items():
        if arm != "production" and a not in current:
            numbers[arm] = None
            continue
        version = registry.version(f"{name}@{a if arm == 'production' else current[a]}")
        numbers[arm] = version.number
        paths[arm] = registry.artifact_path(version.ref)
        hashes[arm] = version.content_hash
    return ResolvedArms(name, arms, paths, numbers, hashes)


def check_served(app: ServingApp, resolved: ResolvedArms) -> None:
    """Refuse to serve if what was loaded is not the version the registry named (the
    store copy changed between the hash check and the load).

    Raises:
        RegistryError: a served version differs from the registry's.
    """
    service = app.state.service
    served = {"production": service.version}
    if "canary" in service.arms:
        served["canary"] = service.arms["canary"].version
    if service.shadow is not None:
        served["shadow"] = service.shadow.version
    for arm, expected in resolved.hashes.items():
        if served.get(arm) != expected:
            raise RegistryError(
                f"serve: {arm} loaded {served.get(arm)}, but the registry names {expected}; "
                "the store changed under us, refused"
            )


class RegistryWatcher:
    """Follows a policy's aliases and swaps the running service's arms to match.

    >>> watcher = RegistryWatcher(registry, app, resolved)  # doctest: +SKIP
    >>> watcher.start()  # polls every poll_s until stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        registry: Registry,
        app: ServingApp,
        resolved: ResolvedArms,
        *,
        poll_s: float = DEFAULT_POLL_S,
        seed: int | None = None,
        canary_share: float = 0.0,
    ) -> None:
        self.registry = registry
        self.service = app.state.service
        self.name = resolved.name
        self.aliases = dict(resolved.aliases)
        self.seen: dict[str, int | None] = dict(resolved.numbers)
        self.poll_s = poll_s
        self.seed = seed
        self.canary_share = canary_share
        self.switches = 0
        self._rollbacks_seen = int(self.service.control.rollbacks)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @property
    def follows(self) -> bool:
        """False when production is pinned to a version number or hash."""
        from rlops.registry.core import follows_alias

        return follows_alias(self.aliases["production"])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rlops-registry-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=SWAP_TIMEOUT_S)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.service.loop is None:
                continue  # not started yet, or shutting down
            try:
                self.poll_once()
                if self._failing:
                    log.warning("registry watch: the registry answers again")
                self._failing = False
            except RlopsError as exc:
                if not self._failing:
                    log.error("registry watch: %s; serving continues unchanged, retrying", exc)
                self._failing = True
            except Exception:
                log.exception("registry watch failed; serving continues unchanged, retrying")
                self._failing = True

    def poll_once(self) -> list[dict[str, Any]]:
        """One pass (blocking; call it from a thread, not the event loop): record a
        serving rollback, then make each arm match its alias. Returns the swaps."""
        self._record_serving_rollback()
        current = self.registry.aliases(self.name)
        changes = []
        for arm, alias in self.aliases.items():
            if arm == "production" and not self.follows:
                continue
            number = current.get(alias)
            if number == self.seen.get(arm):
                continue
            change = self._switch(arm, alias, number)
            if change is not None:
                changes.append(change)
        return changes

    def _switch(self, arm: str, alias: str, number: int | None) -> dict[str, Any] | None:
        ref = f"{self.name}@{alias}"
        if number is None:
            if arm == "production":
                log.error(
                    "registry watch: %s is unset; production keeps serving version %s",
                    ref,
                    self.seen.get(arm),
                )
                self.seen[arm] = None
                return None
            policy = None
            reason = f"registry: {ref} unset"
        else:
            version = self.registry.version(f"{self.name}@{number}")
            path = self.registry.artifact_path(version.ref)  # verifies the hash
            policy = load_policy(path, seed=self.seed)
            if policy.version != version.content_hash:  # changed between check and load
                raise RegistryError(
                    f"{ref}: loaded {policy.version}, not {version.content_hash}; not swapped"
                )
            reason = f"registry: {ref} moved to version {number} (was {self.seen.get(arm)})"
        loop = self.service.loop
        if loop is None:
            return None
        future = asyncio.run_coroutine_threadsafe(
            self.service.swap_policy(arm, policy, actor="registry", reason=reason), loop
        )
        result: dict[str, Any] = future.result(timeout=SWAP_TIMEOUT_S)
        self.seen[arm] = number
        self.switches += 1
        control = self.service.control
        started_without = control.router.canary_share == 0.0  # no canary when serve started
        if arm == "canary" and number is not None and self.canary_share > 0.0 and started_without:
            control.set_canary_share(self.canary_share, actor="registry", reason=reason)
        log.warning(
            "registry watch: %s: %s -> %s (%s)", arm, result.get("from"), result.get("to"), reason
        )
        return {**result, "alias": alias, "version": number}

    def _record_serving_rollback(self) -> None:
        rollbacks = int(self.service.control.rollbacks)
        if rollbacks == self._rollbacks_seen:
            return
        self._rollbacks_seen = rollbacks
        alias = self.aliases.get("canary")
        served = self.seen.get("canary")
        if alias is None or served is None:
            return
        why = self.service.control.state().get("last_rollback") or "serving rollback"
        try:
            # Only the version serving rolled back: a newer canary promoted meanwhile stays.
            self.registry.rollback(
                self.name,
                alias,
                reason=f"serving rolled the canary back: {why}",
                unset=True,
                expected=served,
            )
        except RlopsError as exc:
            log.error(
                "serving rolled back %s@%s but could not record it in the registry: %s",
                self.name,
                alias,
                exc,
            )
