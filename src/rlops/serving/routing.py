"""Sticky canary assignment and per-request arm selection.

A unit (user, service, product: whatever a decision is *for*) is assigned to
the canary by a stable hash of ``salt + unit_id``, never by a coin flip per
request. Two reasons:

* **Whole episodes on one policy.** A sequential policy's value is a property
  of the trajectory it produces. A unit that alternates between production and
  canary from one step to the next is served by neither policy, so its rewards
  measure a mixture that will never be deployed, and the canary comparison is
  biased. Hashing keeps every step of a unit's episode on one arm, across
  restarts, processes and replicas (no shared state needed).
* **Monotone ramps.** The unit's hash is a number ``u`` in ``[0, 1)`` and it is
  on the canary iff ``u < share``. Raising the share from 5% to 10% therefore
  only moves units *from* production *to* the canary; no unit that already
  saw the canary is moved back, so ramping never mixes policies within a unit.

:class:`Router` adds the operator controls on top, in this precedence order:
a per-unit override, then the global kill switch (everything to the
fallback/baseline policy), then the canary assignment.

>>> assign_arm("user-42", 0.0, salt="exp-1")
'production'
>>> assign_arm("user-42", 1.0, salt="exp-1")
'canary'
>>> router = Router(salt="exp-1", canary_share=0.1)
>>> router.set_override("user-42", "fallback")
>>> router.route("user-42")
Route(arm='fallback', reason='override', shadow=False, canary_share=0.1)
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, cast, get_args

from rlops.core.errors import ConfigError

CanaryArm = Literal["production", "canary"]
"""The two arms of the canary split."""

ServedArm = Literal["production", "canary", "fallback"]
"""The policy that serves a request: production, canary, or the fallback/baseline policy."""

RouteReason = Literal["override", "kill_switch", "assignment"]
"""Why a request went to its arm (the precedence rule that decided)."""

SERVED_ARMS: tuple[ServedArm, ...] = get_args(ServedArm)
STATE_FORMAT = 1
"""Version of :meth:`Router.state_dict`; bumped on incompatible changes."""

_SHADOW_SALT_SUFFIX = "/shadow"
_TWO_64 = float(2**64)


def assignment_value(unit_id: str, salt: str) -> float:
    """The unit's stable position ``u`` in ``[0, 1)``.

    ``u = int.from_bytes(sha256((salt + unit_id).encode("utf-8"))[:8], "big") / 2**64``.

    Args:
        unit_id: the assignment key (user, service, ...).
        salt: per-experiment salt; a new salt reshuffles all units.

    Returns:
        A float in ``[0, 1)``, uniform over units, identical in every process.

    >>> round(assignment_value("user-42", "exp-1"), 6)
    0.845455
    """
    if not isinstance(unit_id, str) or not unit_id:
        raise ConfigError(f"unit_id: must be a non-empty string, got {unit_id!r}")
    digest = hashlib.sha256((salt + unit_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_64


def _check_share(share: float, key: str) -> float:
    if isinstance(share, bool) or not isinstance(share, int | float):
        raise ConfigError(f"{key}: expected a number in [0, 1], got {share!r}")
    value = float(share)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{key}: must be in [0, 1] (a fraction, not a percent), got {share!r}")
    return value


def assign_arm(unit_id: str, canary_share: float, salt: str) -> CanaryArm:
    """Sticky canary assignment: ``"canary"`` iff ``assignment_value(unit_id, salt) < share``.

    Stable across restarts and processes, and monotone in ``canary_share``: a
    unit on the canary at 5% is on the canary at 10% (see the module docstring
    for why both matter).

    Args:
        unit_id: the assignment key.
        canary_share: fraction of units on the canary, in ``[0, 1]``.
        salt: per-experiment salt.

    Returns:
        ``"canary"`` or ``"production"``.

    Raises:
        ConfigError: ``canary_share`` outside ``[0, 1]`` or ``unit_id`` empty.

    >>> [assign_arm("user-42", s, salt="exp-1") for s in (0.5, 0.84, 0.85)]
    ['production', 'production', 'canary']
    """
    share = _check_share(canary_share, "canary_share")
    return "canary" if assignment_value(unit_id, salt) < share else "production"


class Route(NamedTuple):
    """Where one request goes and why.

    Attributes:
        arm: the policy that serves the request.
        reason: the rule that decided: ``override`` (per-unit), ``kill_switch``,
            or ``assignment`` (the sticky canary hash).
        shadow: also run the shadow policy on this request (logged, never served).
        canary_share: the canary share at routing time (for the decision record's split).
    """

    arm: ServedArm
    reason: RouteReason
    shadow: bool
    canary_share: float


class Router:
    """Thread-safe routing state: canary share, shadow, kill switch, per-unit overrides.

    Precedence in :meth:`route`: override(unit) > kill switch > canary assignment.
    An operator who pins a unit (to debug it, or to keep a known customer on
    production) keeps it pinned even while the kill switch is on; the kill switch
    sends every *other* unit to the fallback policy and turns shadow off, since
    in an emergency no extra model should run.

    Shadow sampling hashes the unit with a separate salt, so a unit is shadowed
    for its whole episode (paired logs for off-policy comparison) and the shadow
    sample is independent of the canary split.

    All reads and writes hold one lock, so :meth:`route` always sees a
    consistent snapshot (never a half-applied update). :meth:`state_dict` is
    JSON-able; a restarted server that loads it routes every unit exactly as before.

    >>> r = Router(salt="exp-1")
    >>> r.set_canary_share(1.0)
    0.0
    >>> r.route("user-42").arm
    'canary'
    >>> r.set_kill_switch(True)
    >>> r.route("user-42")
    Route(arm='fallback', reason='kill_switch', shadow=False, canary_share=1.0)
    """

    def __init__(
        self,
        *,
        salt: str,
        canary_share: float = 0.0,
        shadow: bool = False,
        shadow_share: float = 1.0,
    ) -> None:
        """Create a router.

        Args:
            salt: per-experiment assignment salt (non-empty); keep it fixed for
                the life of a canary, or units move between arms.
            canary_share: initial fraction of units on the canary, in ``[0, 1]``.
            shadow: whether the shadow policy runs.
            shadow_share: fraction of units shadowed when shadow is on, in ``[0, 1]``.

        Raises:
            ConfigError: empty salt or a share outside ``[0, 1]``.
        """
        self._lock = threading.Lock()
        self._salt = _check_salt(salt)
        self._canary_share = _check_share(canary_share, "canary_share")
        self._shadow = bool(shadow)
        self._shadow_share = _check_share(shadow_share, "shadow_share")
        self._kill_switch = False
        self._overrides: dict[str, ServedArm] = {}

    # ------------------------------------------------------------------ reads
    def route(self, unit_id: str) -> Route:
        """Pick the arm for one request of ``unit_id``.

        Raises:
            ConfigError: ``unit_id`` is not a non-empty string.
        """
        with self._lock:
            salt, share = self._salt, self._canary_share
            shadow_on, shadow_share = self._shadow, self._shadow_share
            kill, override = self._kill_switch, self._overrides.get(unit_id)
        # Hashing happens outside the lock: it is pure and the slowest part.
        shadow = (
            shadow_on
            and not kill
            and assignment_value(unit_id, salt + _SHADOW_SALT_SUFFIX) < shadow_share
        )
        if override is not None:
            return Route(override, "override", shadow, share)
        if kill:
            return Route("fallback", "kill_switch", False, share)
        if share <= 0.0:  # no unit is below 0: skip the hash
            if not unit_id or not isinstance(unit_id, str):
                _check_unit(unit_id)
            return Route("production", "assignment", shadow, share)
        arm: ServedArm = "canary" if assignment_value(unit_id, salt) < share else "production"
        return Route(arm, "assignment", shadow, share)

    @property
    def canary_share(self) -> float:
        """The current canary share."""
        with self._lock:
            return self._canary_share

    @property
    def kill_switch(self) -> bool:
        """Whether all (non-overridden) traffic goes to the fallback policy."""
        with self._lock:
            return self._kill_switch

    def overrides(self) -> dict[str, ServedArm]:
        """A copy of the per-unit overrides (unit id -> arm)."""
        with self._lock:
            return dict(self._overrides)

    # ----------------------------------------------------------------- writes
    def set_canary_share(self, share: float) -> float:
        """Set the canary share; returns the previous one.

        Raises:
            ConfigError: ``share`` outside ``[0, 1]``.
        """
        value = _check_share(share, "canary_share")
        with self._lock:
            previous, self._canary_share = self._canary_share, value
        return previous

    def rollback(self) -> float:
        """Send every assigned unit back to production (share 0); returns the previous share.

        Per-unit overrides to the canary stay in place: they were set on purpose
        and are cleared with :meth:`clear_override`.
        """
        return self.set_canary_share(0.0)

    def set_shadow(self, enabled: bool, share: float | None = None) -> None:
        """Turn the shadow policy on or off, optionally changing its unit share.

        Raises:
            ConfigError: ``share`` outside ``[0, 1]``.
        """
        value = None if share is None else _check_share(share, "shadow_share")
        with self._lock:
            self._shadow = bool(enabled)
            if value is not None:
                self._shadow_share = value

    def set_kill_switch(self, on: bool) -> None:
        """Force all non-overridden traffic to the fallback policy (``on=True``) or release it."""
        with self._lock:
            self._kill_switch = bool(on)

    def set_override(self, unit_id: str, arm: ServedArm) -> None:
        """Pin ``unit_id`` to ``arm`` regardless of the kill switch and the split.

        Raises:
            ConfigError: empty ``unit_id`` or an unknown arm.
        """
        _check_unit(unit_id)
        with self._lock:
            self._overrides[unit_id] = _check_arm(arm, f"overrides[{unit_id!r}]")

    def clear_override(self, unit_id: str) -> bool:
        """Remove the override of ``unit_id``; returns whether there was one."""
        with self._lock:
            return self._overrides.pop(unit_id, None) is not None

    # ------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """JSON-able routing state (salt included: a new salt would reshuffle units)."""
        with self._lock:
            return {
                "format": STATE_FORMAT,
                "salt": self._salt,
                "canary_share": self._canary_share,
                "shadow": self._shadow,
                "shadow_share": self._shadow_share,
                "kill_switch": self._kill_switch,
                "overrides": dict(sorted(self._overrides.items())),
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output atomically (all fields or none).

        Raises:
            ConfigError: unknown, missing or invalid fields, naming them.
        """
        expected = {
            "format",
            "salt",
            "canary_share",
            "shadow",
            "shadow_share",
            "kill_switch",
            "overrides",
        }
        keys = set(state)
        if keys != expected:
            raise ConfigError(
                f"router state: unknown key(s) {sorted(keys - expected)}, "
                f"missing key(s) {sorted(expected - keys)}"
            )
        if state["format"] != STATE_FORMAT:
            raise ConfigError(
                f"router state: format {state['format']!r} is not supported "
                f"(this rlops reads format {STATE_FORMAT})"
            )
        salt = _check_salt(state["salt"])
        share = _check_share(state["canary_share"], "router state: canary_share")
        shadow_share = _check_share(state["shadow_share"], "router state: shadow_share")
        for key in ("shadow", "kill_switch"):
            if not isinstance(state[key], bool):
                raise ConfigError(f"router state: {key} must be true or false, got {state[key]!r}")
        raw = state["overrides"]
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"router state: overrides must be a mapping, got {type(raw).__name__}"
            )
        overrides: dict[str, ServedArm] = {}
        for unit, arm in raw.items():
            _check_unit(unit)
            overrides[unit] = _check_arm(arm, f"router state: overrides[{unit!r}]")
        with self._lock:
            self._salt = salt
            self._canary_share = share
            self._shadow = state["shadow"]
            self._shadow_share = shadow_share
            self._kill_switch = state["kill_switch"]
            self._overrides = overrides


def _check_salt(salt: Any) -> str:
    if not isinstance(salt, str) or not salt:
        raise ConfigError(
            f"salt: must be a non-empty string (e.g. the canary's name), got {salt!r}"
        )
    return salt


def _check_unit(unit_id: Any) -> None:
    if not isinstance(unit_id, str) or not unit_id:
        raise ConfigError(f"unit_id: must be a non-empty string, got {unit_id!r}")


def _check_arm(arm: Any, key: str) -> ServedArm:
    if arm not in SERVED_ARMS:
        raise ConfigError(f"{key}: arm {arm!r} is not one of {', '.join(SERVED_ARMS)}")
    return cast(ServedArm, arm)
