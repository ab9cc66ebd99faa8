"""The HTTP app: ``POST /v1/act`` -> action + propensity + decision_id, every decision logged.

A Starlette app (plain ASGI routes, orjson bodies; FastAPI's pydantic layer
would add per-request cost and a second schema language for what
:mod:`rlops.serving.schemas` validates in a few lines). Request flow:

1. read the body (415 wrong Content-Type, 413 too large, 400 not JSON);
2. validate into typed rows (422 naming the field);
3. :class:`~rlops.serving.batcher.MicroBatcher` decides, one numpy forward per
   micro-batch on one worker thread; if the policy raises or misses the
   request deadline, the configured fallback action answers (``arm="fallback"``,
   a ``serving/safety`` trigger);
4. the decision records are queued for the decision-log writer thread; a full
   queue answers 503 with ``Retry-After`` and the decisions are not served,
   so every 200 answer has its log row;
5. the JSON answer.

Policies swap live, without a restart: ``await service.swap_policy(arm, policy,
actor=..., reason=...)`` on the service's event loop (``app.state.service``;
from another thread, ``asyncio.run_coroutine_threadsafe(..., service.loop)``)
puts an already loaded policy on the ``production``, ``canary`` or ``shadow``
arm, or removes the canary or shadow (``policy=None``). The swap is written to
the admin log first, then the arm and its routing switch in one event-loop
step: requests already queued finish on the policy they started with, later
ones get the new one, none fails. A new canary is a new experiment (fresh
guardrail, the configured share, a lifted rollback); a new production restarts
the canary comparison. A policy whose observation or action space differs from
the served one is refused (``ConfigError``) and nothing changes.

>>> app = create_app(ServeConfig(artifact="runs/demo/artifact"))  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
>>> await app.state.service.swap_policy(  # doctest: +SKIP
...     "production", load_policy("runs/v19/artifact"), actor="registry", reason="promote v19")
{'arm': 'production', 'changed': True, 'from': 'sha256:ab…', 'to': 'sha256:cd…'}
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from gymnasium import spaces
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rlops.artifacts import Policy, load_policy, space_to_json
from rlops.core.decisions import Arm, DecisionRecord
from rlops.core.errors import ConfigError, RlopsError
from rlops.serving.admin import check_token, resolve_token
from rlops.serving.batcher import MicroBatcher, Pending
from rlops.serving.behaviour import BatchDecision, Behaviour
from rlops.serving.config import Mode, ServeConfig
from rlops.serving.control import Conflict, Control, PolicyArm
from rlops.serving.decision_log import DecisionLog
from rlops.serving.guardrail import GuardedArm
from rlops.serving.metrics import ServingMetrics
from rlops.serving.openapi import openapi_document
from rlops.serving.routing import RouteReason, ServedArm
from rlops.serving.schemas import (
    ActRow,
    ApiError,
    InputSpec,
    parse_act,
    parse_feedback,
)

__all__ = ["ServeConfig", "ServingApp", "create_app"]

log = logging.getLogger("rlops.serving")

RETRY_AFTER_S = 1
"""``Retry-After`` of a back-pressure 503."""

FALLBACK_VERSION = "fallback"
"""``policy_version`` of decisions made by the configured fallback action."""

_ADMIN_ACTIONS: dict[str, dict[str, bool]] = {
    "canary": {"share": True},
    "shadow": {"enabled": True, "share": False},
    "rollback": {},
    "override": {"unit_id": True, "arm": True},
    "clear-override": {"unit_id": True},
    "kill-switch": {"on": True},
}
"""``POST /v1/admin/<action>`` -> its fields (True: required) besides ``actor`` and ``reason``."""


class JSONResponse(Response):
    """A response whose body orjson serialises (NaN-free by construction)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_JSON_HEADERS = [(b"content-type", b"application/json")]


class _Disconnected(Exception):
    """The client disconnected before its body arrived."""


def _error_headers(exc: ApiError) -> list[tuple[bytes, bytes]]:
    headers = []
    if exc.status == 503 and exc.code == "log_backpressure":
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    if exc.status == 413:
        headers.append((b"connection", b"close"))  # the unread rest must not be parsed
    return headers


def _error(exc: ApiError) -> JSONResponse:
    headers = {k.decode(): v.decode() for k, v in _error_headers(exc)}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


@dataclass
class _Arm:
    """One loaded policy and its micro-batcher (production, canary or shadow)."""

    name: str
    policy: Policy
    version: str
    batcher: MicroBatcher


_SEED_OFFSETS = {"production": 0, "canary": 1, "shadow": 2}

REWARDED_MEMORY = 1_000_000
"""Decision ids whose feedback reached the guardrail, remembered to ignore repeats."""

SHADOW_BACKLOG_BATCHES = 8
"""The shadow policy is skipped (and counted) while this many full batches wait for it."""


class _Service:
    """Everything one server process holds; the handlers are its methods."""

    def __init__(
        self,
        config: ServeConfig,
        policy: Policy,
        *,
        canary: Policy | None = None,
        shadow: Policy | None = None,
        admin_token: str,
    ) -> None:
        self.config = config
        self.policy = policy
        self.version = policy.version
        obs_shape = tuple(int(d) for d in policy.observation_space.shape or ())
        space = policy.action_space
        n_actions = int(space.n) if isinstance(space, spaces.Discrete) else None
        self.spec = InputSpec(obs_shape=obs_shape, n_actions=n_actions)
        self.fallback = _check_fallback(config, policy)
        self.admin_token = admin_token
        self.admin_token_generated = False
        self.token_identity: Callable[[str], str | None] | None = None
        """Maps a bearer token to an operator's name (set when serving from the registry)."""
        self.metrics = ServingMetrics()
        self.log = DecisionLog(
            config.decision_log,
            max_queue=config.log_queue_size,
            batch_size=config.log_batch_size,
        )
        self.arms: dict[str, _Arm] = {"production": self._arm("production", policy, config.mode)}
        if canary is not None:
            _check_compatible("canary", canary, policy)
            self.arms["canary"] = self._arm("canary", canary, config.mode)
        self.shadow: _Arm | None = None
        if shadow is not None:
            _check_compatible("shadow", shadow, policy)
            self.shadow = self._arm("shadow", shadow, self._mode("shadow", shadow))
        self.log.create()  # fail before binding a socket if the file cannot be a decision log
        self.control = Control(
            config,
            canary_version=None if canary is None else canary.version,
            shadow_version=None if shadow is None else shadow.version,
            fallback=self.fallback is not None,
        )
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._rewarded: collections.OrderedDict[str, None] = collections.OrderedDict()
        # Decision ids: 80 random bits per process + a counter. Unique across
        # processes and restarts like a uuid4, without a getrandom() syscall
        # per decision (40-60 us each on some sandboxed kernels).
        self._id_prefix = uuid.uuid4().hex[:20]
        self._id_counter = itertools.count()
        self._guardrail_task: asyncio.Task[None] | None = None
        self.openapi = self._openapi()
        self.loop: asyncio.AbstractEventLoop | None = None
        """The event loop the service runs on, from the app's startup to its shutdown."""
        self.swaps = 0
        """Policies swapped live (:meth:`swap_policy`)."""
        self._swap_lock = asyncio.Lock()
        # Decisions numbered below this were made before the canary comparison last
        # restarted (a swap): they must not reach the new comparison.
        self._comparison_start = 0

    def _openapi(self) -> bytes:
        spec = self.spec
        document = openapi_document(
            obs_shape=spec.obs_shape, n_actions=spec.n_actions, version=self.version
        )
        return orjson.dumps(document)

    def _mode(self, name: str, policy: Policy) -> Mode:
        # A continuous shadow logs its mean action (there is no finite distribution).
        return "greedy" if name == "shadow" and not policy.discrete else self.config.mode

    def _arm(self, name: str, policy: Policy, mode: Mode) -> _Arm:
        config = self.config
        behaviour = Behaviour(
            policy,
            mode=mode,
            epsilon=config.epsilon,
            epsilon_cap=config.epsilon_cap,
            seed=None if config.seed is None else config.seed + _SEED_OFFSETS[name],
        )
        batcher = MicroBatcher(
            behaviour,
            max_batch_size=config.max_batch_size,
            max_wait_s=config.max_batch_wait_ms / 1000.0,
            timeout_s=config.request_timeout_ms / 1000.0,
            on_batch=self.metrics.batch_rows.observe if name == "production" else None,
            # The artifact's numpy forward does no I/O and takes no locks: it may run
            # on the loop while it stays fast. Anything else keeps to the worker thread.
            inline=config.inference == "auto" and isinstance(policy, Policy),
        )
        return _Arm(name, policy, policy.version, batcher)

    @property
    def _batchers(self) -> list[MicroBatcher]:
        arms = [*self.arms.values(), *([self.shadow] if self.shadow else [])]
        return [arm.batcher for arm in arms]

    # -- lifecycle ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.loop = asyncio.get_running_loop()
        self.log.start()
        for batcher in self._batchers:
            batcher.start()
        if "canary" in self.arms:
            self._watch_canary()
        try:
            yield
        finally:
            async with self._swap_lock:  # a swap under way completes; later ones are refused
                self.loop = None
            # Requests in flight have finished (uvicorn waits for them before the
            # lifespan shutdown); answer anything still queued, join the shadow
            # distributions, then commit the log.
            if self._guardrail_task is not None:
                self._guardrail_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._guardrail_task
            for batcher in self._batchers:
                await batcher.stop()
            if self._shadow_tasks:
                await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
            await asyncio.to_thread(self.log.close)
            await asyncio.to_thread(self.control.close)

    def _watch_canary(self) -> None:
        """Start the guardrail watcher (once: it idles while no canary serves)."""
        if self._guardrail_task is None:
            self._guardrail_task = asyncio.get_running_loop().create_task(
                self._watch_guardrail(), name="rlops-guardrail"
            )

    async def _watch_guardrail(self) -> None:
        while True:
            await asyncio.sleep(self.config.guardrail_interval_s)
            await self._check_guardrail()

    async def _check_guardrail(self) -> None:
        """Roll the canary back now if the guardrail has tripped."""
        try:
            verdict = await asyncio.to_thread(self.control.check_guardrail)
        except Exception:  # never let the watcher die: log and keep watching
            log.exception("guardrail check failed")
            return
        if verdict is not None:
            self.metrics.safety_trigger("canary_rollback")
            log.warning("canary rolled back by the guardrail: %s", verdict.reason)

    # -- live policy swaps ---------------------------------------------------------

    async def swap_policy(
        self, arm: PolicyArm, policy: Policy | None, *, actor: str, reason: str
    ) -> dict[str, Any]:
        """Serve ``policy`` on ``arm`` from now on, without a restart.

        Call it on the service's event loop (:attr:`loop`). The swap is logged to
        the admin log (on a worker thread: it fsyncs), then routing and the arm
        switch in one event-loop step; requests already queued on the old
        policy finish on it, later ones get the new one, and no request fails
        because of the swap. Swaps run one at a time. Routing effects (see
        :meth:`Control.swap`): a new canary is a new experiment (fresh
        guardrail, the configured ``canary_share``, a lifted rollback);
        removing it sends every unit to production; a new production restarts
        the comparison, after rolling back a canary whose trip is pending.
        When it raises, nothing has changed.

        Args:
            arm: ``"production"``, ``"canary"`` or ``"shadow"``.
            policy: an already loaded policy with the served observation and
                action spaces, or None to remove the canary or the shadow.
            actor: who swaps (the admin log's actor, e.g. ``"registry"``).
            reason: why (e.g. ``"alias canary: v18 -> v19"``).

        Returns:
            ``{"arm": arm, "changed": bool, "from": old version or None,
            "to": new version or None}``; ``changed`` is False, and nothing is
            logged, when ``policy`` is the version already served.

        Raises:
            ConfigError: an unknown arm, None for production, a policy whose
                spaces differ from the served ones, or an empty actor or reason.
            RlopsError: the service is not running, or the admin log refuses
                to append (tampered with).

        >>> await service.swap_policy(  # doctest: +SKIP
        ...     "canary", load_policy("runs/v19/artifact"), actor="registry", reason="v19")
        {'arm': 'canary', 'changed': True, 'from': None, 'to': 'sha256:9f…'}
        """
        if arm not in ("production", "canary", "shadow"):
            raise ConfigError(f"arm: {arm!r} is not one of production, canary, shadow")
        if policy is None and arm == "production":
            raise ConfigError(
                "policy: the production arm cannot be removed; swap in another policy"
            )
        if policy is not None:
            if not policy.version:
                raise ConfigError(
                    f"swap_policy({arm}): the policy has no version (content hash); "
                    "load it from an artifact with load_policy"
                )
            _check_compatible(f"swap_policy({arm})", policy, self.policy)
        # Shielded: a cancelled caller must not leave a logged swap half applied.
        return await asyncio.shield(self._swap(arm, policy, actor=actor, reason=reason))

    async def _swap(
        self, arm: PolicyArm, policy: Policy | None, *, actor: str, reason: str
    ) -> dict[str, Any]:
        async with self._swap_lock:
            loop = self.loop
            if loop is None:
                raise RlopsError(
                    "swap_policy: the service is not running; swap between the app's "
                    "startup and shutdown"
                )
            current = self._served(arm)
            old = None if current is None else current.version
            new = None if policy is None else policy.version
            result = {"arm": arm, "changed": old != new, "from": old, "to": new}
            if old == new:
                return result
            fresh = None if policy is None else self._arm(arm, policy, self._mode(arm, policy))
            if fresh is not None:
                fresh.batcher.start()
            if arm == "production" and self.control.canary_active:
                await self._check_guardrail()  # a pending trip is acted on, not erased

            def record() -> None:  # on a worker thread, holding the control lock
                with self.control.swap(arm, old, new, actor=actor, reason=reason) as switch:
                    install = self._install(arm, fresh, switch)
                    asyncio.run_coroutine_threadsafe(install, loop).result()

            try:
                await asyncio.to_thread(record)
            finally:
                # Stop whichever batcher serves no longer: the old one after a swap
                # (it answers what was queued on it first), the new one after a failure.
                retired = current if self._served(arm) is not current else fresh
                if retired is not None:
                    await retired.batcher.stop()
            self.swaps += 1
            log.info("%s policy swapped: %s -> %s by %s (%s)", arm, old, new, actor, reason)
            return result

    def _served(self, arm: PolicyArm) -> _Arm | None:
        return self.shadow if arm == "shadow" else self.arms.get(arm)

    async def _install(
        self, arm: PolicyArm, fresh: _Arm | None, switch: Callable[[], None]
    ) -> None:
        """Switch routing and the served arm in one event-loop step (no await inside)."""
        switch()
        if arm == "shadow":
            self.shadow = fresh
            return
        if fresh is None:
            del self.arms[arm]
        else:
            self.arms[arm] = fresh
        if arm == "production":
            assert fresh is not None
            self.policy, self.version = fresh.policy, fresh.version
            self.openapi = self._openapi()
        elif fresh is not None:
            self._watch_canary()
        self._comparison_start = next(self._id_counter)

    def _in_comparison(self, decision_id: str) -> bool:
        """The decision was made since the canary comparison last restarted."""
        if self._comparison_start == 0:
            return True
        prefix, _, number = decision_id.rpartition("-")
        try:
            return prefix == self._id_prefix and int(number, 16) >= self._comparison_start
        except ValueError:
            return False

    # -- request plumbing --------------------------------------------------------

    async def _body(self, request: Request) -> Any:
        return await self._read_json(request.scope, request.receive)

    async def _read_json(self, scope: Scope, receive: Receive) -> Any:
        """The request's JSON body (415 wrong type, 413 too large, 400 not JSON)."""
        media = declared = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                media = value
            elif name == b"content-length":
                declared = value
        kind = media.split(b";")[0].strip().lower()
        if kind != b"application/json" and not kind.endswith(b"+json"):
            shown = kind.decode("latin-1") or "none"
            raise ApiError(
                415,
                "unsupported_media_type",
                f"Content-Type must be application/json, got {shown!r}",
            )
        limit = self.config.max_body_bytes
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(
                413, "body_too_large", f"body of {declared.decode()} bytes; at most {limit}"
            )
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            body += message.get("body", b"")
            if len(body) > limit:
                raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
            if not message.get("more_body", False):
                break
        try:
            return orjson.loads(bytes(body))
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from None

    async def _answer(
        self, route: str, request: Request, handler: Callable[[Request], Awaitable[tuple[Any, str]]]
    ) -> Response:
        start = time.perf_counter()
        arm = "none"
        try:
            payload, arm = await handler(request)
            response: Response = JSONResponse(payload)
        except ApiError as exc:
            response = _error(exc)
        except _Disconnected:  # the client left mid-body: nobody to answer, nothing to count
            return Response(status_code=400)
        except Exception:
            log.exception("%s failed", route)
            response = _error(ApiError(500, "internal", "internal error; see the server log"))
        self.metrics.observe_request(route, arm, response.status_code, time.perf_counter() - start)
        return response

    # -- /v1/act -----------------------------------------------------------------

    async def act(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/act`` as a raw ASGI handler: the hot path skips Starlette's
        request, routing and response objects (a third of the per-request cost)."""
        start = time.perf_counter()
        arm = "none"
        headers = _JSON_HEADERS
        try:
            payload, arm = await self._act(await self._read_json(scope, receive), start)
            status, data = 200, orjson.dumps(payload)
        except ApiError as exc:
            status, data = exc.status, orjson.dumps(exc.body())
            headers = [*_JSON_HEADERS, *_error_headers(exc)]
        except _Disconnected:
            return  # the client left before sending its body: nothing was decided
        except Exception:
            log.exception("/v1/act failed")
            error = ApiError(500, "internal", "internal error; see the server log")
            status, data = 500, orjson.dumps(error.body())
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})
        self.metrics.observe_request("/v1/act", arm, status, time.perf_counter() - start)

    async def _act(self, body: Any, start: float) -> tuple[Any, str]:
        rows, batched = parse_act(body, self.spec, self.config.max_request_rows)
        # The deadline covers queueing and the policy, not the client's upload.
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_ms / 1000.0
        try:
            routes = [self.control.route(row.unit_id) for row in rows]
        except ConfigError as exc:
            raise ApiError(422, "invalid_value", str(exc), "unit_id") from None
        # One group per (arm, reason): an override to production is labelled and
        # guarded differently from an assigned production unit.
        groups: dict[tuple[ServedArm, RouteReason], list[int]] = {}
        for i, r in enumerate(routes):
            groups.setdefault((r.arm, r.reason), []).append(i)
        out: list[dict[str, Any]] = [{} for _ in rows]
        comparison = self._comparison_start

        async def decide(key: tuple[ServedArm, RouteReason], index: list[int]) -> None:
            arm, reason = key
            guarded = (
                _guarded(arm)
                if reason == "assignment" and self.control.canary_version is not None
                else None
            )
            try:
                decided, triggers = await self._decide(
                    arm, reason, [rows[i] for i in index], deadline
                )
            except ApiError:
                # No fallback configured: still the arm's error (a request that
                # straddles a swap belongs to neither comparison).
                if guarded is not None and self._comparison_start == comparison:
                    latency_ms = (time.perf_counter() - start) * 1000.0
                    self.control.observe_request(guarded, latency_ms, error=True, safety_triggers=0)
                raise
            for i, d in zip(index, decided):
                out[i] = d
            if guarded is not None and self._comparison_start == comparison:
                self.control.observe_request(
                    guarded,
                    (time.perf_counter() - start) * 1000.0,
                    error=decided[0]["arm"] == "fallback",
                    safety_triggers=triggers,
                )

        if len(groups) == 1:
            await decide(*next(iter(groups.items())))
        else:
            await asyncio.gather(*(decide(key, index) for key, index in groups.items()))

        now = time.time()
        shadowed = self.shadow is not None and any(r.shadow for r in routes)
        records = []
        for row, r, d in zip(rows, routes, out):
            split: dict[str, Any] | None = None
            if self.control.canary_version is not None or r.reason != "assignment" or shadowed:
                split = {"canary_share": r.canary_share, "route": r.reason}
                if r.shadow and self.shadow is not None:
                    split["shadow_version"] = self.shadow.version
            record = DecisionRecord(
                decision_id=d["decision_id"],
                timestamp=now,
                unit_id=row.unit_id,
                episode_id=row.episode_id,
                step=row.step,
                observation=row.obs.ravel().tolist(),
                action_mask=None if row.mask is None else row.mask.tolist(),
                action=d["action"],
                action_distribution=d.get("action_distribution"),
                logp=d.get("logp"),
                propensity=d["propensity"],
                policy_version=d["policy_version"],
                arm=d["arm"],
                split=split,
            )
            records.append((record, row.context))
        if not self.log.submit(records):
            raise ApiError(
                503,
                "log_backpressure",
                "the decision log is behind; the decision was not served, retry later",
            )
        for d in out:
            self.metrics.observe_decisions(d["arm"], 1)
        if shadowed:
            self._run_shadow(
                [(d["decision_id"], row) for row, r, d in zip(rows, routes, out) if r.shadow]
            )
        return ({"decisions": out} if batched else out[0]), out[0]["arm"]

    async def _decide(
        self, arm: ServedArm, reason: RouteReason, rows: list[ActRow], deadline: float
    ) -> tuple[list[dict[str, Any]], int]:
        """Decisions for rows routed to one arm, and the safety triggers they caused."""
        if arm == "fallback":  # the kill switch or an override to the fallback
            return self._fallback(rows, None, "override" if reason == "override" else "fallback"), 0
        policy_arm = self.arms.get(arm)
        if policy_arm is None:  # the canary was removed after this request was routed
            arm, policy_arm = "production", self.arms["production"]
        label: Arm = "override" if reason == "override" else arm
        pending = policy_arm.batcher.submit(rows, deadline)
        try:
            # The batcher answers by the deadline (PolicyTimeout is a TimeoutError).
            decision, offset = await pending.future
        except TimeoutError:
            return self._fallback(rows, "timeout", "fallback"), len(rows)
        except Exception as exc:
            log.warning("%s policy failed, serving the fallback: %r", arm, exc)
            return self._fallback(rows, "policy_error", "fallback"), len(rows)
        return self._decisions(rows, decision, offset, policy_arm.version, label)

    def _decisions(
        self, rows: list[ActRow], decision: BatchDecision, offset: int, version: str, label: Arm
    ) -> tuple[list[dict[str, Any]], int]:
        out = []
        capped = 0
        for i in range(offset, offset + len(rows)):
            d: dict[str, Any] = {
                "decision_id": self._next_id(),
                "policy_version": version,
                "arm": label,
            }
            if decision.dist is not None:
                d["action"] = int(decision.actions[i])
                d["action_distribution"] = decision.dist[i].tolist()
                d["propensity"] = float(decision.propensity[i])
            else:
                assert decision.logp is not None
                d["action"] = np.asarray(decision.actions[i], dtype=np.float64).tolist()
                d["logp"] = float(decision.logp[i])
                d["propensity"] = float(decision.propensity[i])
            capped += bool(decision.capped[i])
            out.append(d)
        if capped:
            self.metrics.safety_trigger("exploration_capped", capped)
        return out, capped

    def _fallback(self, rows: list[ActRow], kind: str | None, label: Arm) -> list[dict[str, Any]]:
        """The fallback action for ``rows``: after a failure (``kind``) or by operator choice."""
        if kind is not None:
            self.metrics.safety_trigger(kind, len(rows))
        if self.fallback is None:
            raise ApiError(
                503,
                "policy_unavailable",
                f"the policy failed ({kind}) and no fallback_action is configured",
            )
        out = []
        for row in rows:
            d: dict[str, Any] = {
                "decision_id": self._next_id(),
                "policy_version": FALLBACK_VERSION,
                "arm": label,
                "propensity": 1.0,
            }
            if isinstance(self.fallback, int):
                start = int(getattr(self.policy.action_space, "start", 0))
                index = self.fallback - start
                if row.mask is not None and not row.mask[index]:
                    index = int(np.argmax(row.mask))  # lowest eligible action
                dist = [0.0] * (self.spec.n_actions or 0)
                dist[index] = 1.0
                d["action"] = index + start
                d["action_distribution"] = dist
            else:
                d["action"] = list(self.fallback)
                d["logp"] = 0.0  # a deterministic action: a point mass
            out.append(d)
        return out

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._id_counter):012x}"

    # -- shadow ------------------------------------------------------------------

    def _run_shadow(self, rows: list[tuple[str, ActRow]]) -> None:
        """Evaluate the shadow policy on ``rows`` in the background (never awaited by a request)."""
        assert self.shadow is not None
        batcher = self.shadow.batcher
        if not batcher.running or batcher.backlog > SHADOW_BACKLOG_BATCHES * batcher.max_batch_size:
            self.metrics.shadow("skipped", len(rows))
            return
        pending = batcher.submit([row for _, row in rows])
        task = asyncio.get_running_loop().create_task(self._join_shadow(rows, pending))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _join_shadow(self, rows: list[tuple[str, ActRow]], pending: Pending) -> None:
        try:
            decision, offset = await pending.future
        except Exception as exc:
            self.metrics.shadow("error", len(rows))
            log.debug("shadow policy failed: %r", exc)
            return
        joins = []
        for k, (decision_id, _) in enumerate(rows):
            i = offset + k
            if decision.dist is not None:
                joins.append((decision_id, decision.dist[i].tolist()))
            else:
                joins.append((decision_id, np.asarray(decision.actions[i], np.float64).tolist()))
        if self.log.submit_shadow(joins):
            self.metrics.shadow("logged", len(rows))
        else:
            self.metrics.shadow("dropped", len(rows))

    # -- feedback, info ----------------------------------------------------------

    async def feedback(self, request: Request) -> Response:
        return await self._answer("/v1/feedback", request, self._feedback)

    async def _feedback(self, request: Request) -> tuple[Any, str]:
        fb = parse_feedback(await self._body(request))
        arm = await asyncio.to_thread(self.log.arm_of, fb.decision_id)
        if arm is None:
            raise ApiError(
                404,
                "unknown_decision",
                f"no logged decision has decision_id {fb.decision_id!r}",
                "decision_id",
            )
        accepted = self.log.submit_feedback(
            fb.decision_id, reward=fb.reward, outcome=fb.metrics, reward_version=fb.reward_version
        )
        if not accepted:
            raise ApiError(
                503, "log_backpressure", "the decision log is behind; retry the feedback later"
            )
        guarded = _guarded(arm) if self.control.canary_version is not None else None
        # A retried or repeated feedback must not count twice in the comparison, nor
        # feedback on a decision made before the comparison restarted (a swap).
        if (
            guarded is not None
            and fb.decision_id not in self._rewarded
            and self._in_comparison(fb.decision_id)
        ):
            self._rewarded[fb.decision_id] = None
            if len(self._rewarded) > REWARDED_MEMORY:
                self._rewarded.popitem(last=False)
            self.control.observe_reward(guarded, fb.reward)
        return {"decision_id": fb.decision_id, "status": "accepted"}, "none"

    async def policies(self, request: Request) -> Response:
        async def handler(request: Request) -> tuple[Any, str]:
            entries = []
            routing = self.control.router.state_dict()
            for arm in [*self.arms.values(), *([self.shadow] if self.shadow else [])]:
                manifest = arm.policy.manifest
                entry = {
                    "arm": arm.name,
                    "version": arm.version,
                    "algo": manifest.get("algo"),
                    "env_id": manifest.get("env_id"),
                    "path": None if arm.policy.path is None else str(arm.policy.path),
                    "discrete": arm.policy.discrete,
                    "observation_space": space_to_json(arm.policy.observation_space),
                    "action_space": space_to_json(arm.policy.action_space),
                    "mode": self.config.mode,
                    "epsilon": self.config.epsilon,
                    "epsilon_cap": self.config.epsilon_cap,
                }
                if arm.name == "canary":
                    entry["share"] = routing["canary_share"]
                if arm.name == "shadow":
                    entry["enabled"] = routing["shadow"]
                    entry["share"] = routing["shadow_share"]
                entries.append(entry)
            return {
                "policies": entries,
                "kill_switch": routing["kill_switch"],
                "fallback_action": _fallback_json(self.fallback),
            }, "none"

        return await self._answer("/v1/policies", request, handler)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        reasons = []
        for arm in self.arms.values():
            if not arm.batcher.running:
                reasons.append(f"{arm.name} batcher not running")
        if not self.log.running:
            reasons.append("decision-log writer not running")
        if reasons:
            return JSONResponse({"status": "not_ready", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready", "policy_version": self.version})

    async def metrics_text(self, request: Request) -> Response:
        stats = self.log.stats()
        start = time.perf_counter()
        routing = self.control.router.state_dict()
        extra: dict[str, tuple[str, str, float]] = {
            "rlops_serving_decision_log_queue_depth": (
                "gauge",
                "Decision-log entries waiting for the writer.",
                stats.depth,
            ),
            "rlops_serving_decision_log_lag_seconds": (
                "gauge",
                "Age of the oldest entry waiting for the writer.",
                stats.lag_s,
            ),
            "rlops_serving_decision_log_written_total": (
                "counter",
                "Decision rows committed.",
                stats.written,
            ),
            "rlops_serving_decision_log_feedback_total": (
                "counter",
                "Feedback joins committed.",
                stats.feedback,
            ),
            "rlops_serving_decision_log_rejected_total": (
                "counter",
                "Entries refused because the queue was full (answered 503).",
                stats.rejected,
            ),
            "rlops_serving_decision_log_errors_total": (
                "counter",
                "Failed (and retried) decision-log writes.",
                stats.errors,
            ),
            "rlops_serving_decision_log_unwritable_total": (
                "counter",
                "Entries SQLite refused for their content (see the server log).",
                stats.unwritable,
            ),
            "rlops_serving_shadow_dropped_total": (
                "counter",
                "Shadow distributions not joined because the log queue was full.",
                stats.shadow_dropped,
            ),
            "rlops_serving_canary_share": (
                "gauge",
                "Fraction of units assigned to the canary.",
                routing["canary_share"] if "canary" in self.arms else 0.0,
            ),
            "rlops_serving_canary_rollbacks_total": (
                "counter",
                "Canary rollbacks (automatic and by hand).",
                self.control.rollbacks,
            ),
            "rlops_serving_kill_switch": (
                "gauge",
                "1 while every non-overridden unit gets the fallback action.",
                float(routing["kill_switch"]),
            ),
            "rlops_serving_overrides": (
                "gauge",
                "Units pinned to an arm by an operator.",
                len(routing["overrides"]),
            ),
            "rlops_serving_shadow_enabled": (
                "gauge",
                "1 while the shadow policy runs.",
                float(self.shadow is not None and routing["shadow"]),
            ),
            "rlops_serving_policy_swaps_total": (
                "counter",
                "Policies swapped live (production, canary or shadow).",
                self.swaps,
            ),
        }
        if "canary" in self.arms:
            verdict = self.control.guardrail.check()
            extra["rlops_serving_guardrail_tripped"] = (
                "gauge",
                "1 once the guardrail decided to roll the canary back.",
                float(verdict.rollback),
            )
            for key, value in sorted(verdict.stats.items()):
                if math.isfinite(value):
                    name = "rlops_serving_" + key.replace("/", "_")
                    extra[name] = ("gauge", f"Guardrail statistic {key}.", value)
        text = self.metrics.render(extra) + self._policy_info()
        self.metrics.observe_request("/metrics", "none", 200, time.perf_counter() - start)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def _policy_info(self) -> str:
        """``rlops_serving_policy_info{arm, version} 1`` per served arm (the versions live now)."""
        name = "rlops_serving_policy_info"
        lines = [
            f"# HELP {name} The policy version each arm serves (always 1).",
            f"# TYPE {name} gauge",
        ]
        for arm in [*self.arms.values(), *([self.shadow] if self.shadow else [])]:
            version = arm.version.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            lines.append(f'{name}{{arm="{arm.name}",version="{version}"}} 1')
        return "\n".join(lines) + "\n"

    async def openapi_json(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")

    # -- admin -------------------------------------------------------------------

    async def _authorize(self, request: Request) -> str | None:
        """Check the bearer token; returns the registry member it names, if any.

        The serve-wide admin token is always accepted (the actor is the one the
        body declares). With :attr:`token_identity` set (``rlops serve
        NAME@ALIAS``), a registry token of a member with the operator role is
        accepted too, and that member is the actor, whatever the body says.
        """
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(
                401, "unauthorized", "admin endpoints need 'Authorization: Bearer <token>'"
            )
        if check_token(header, self.admin_token):
            return None
        scheme, _, token = header.strip().partition(" ")
        if self.token_identity is not None and scheme.lower() == "bearer" and token.strip():
            try:
                member = await asyncio.to_thread(self.token_identity, token.strip())
            except RlopsError as exc:
                raise ApiError(
                    503, "registry_unavailable", f"cannot check the token: {exc}"
                ) from None
            if member is not None:
                return member
            raise ApiError(
                403, "forbidden", "the token is neither the admin token nor an operator's token"
            )
        raise ApiError(403, "forbidden", "the admin token is wrong")

    async def admin(self, request: Request) -> Response:
        action = request.path_params["action"]
        known = action in _ADMIN_ACTIONS or action == "state"
        # Unknown names share one label: clients must not grow the metric set.
        route = f"/v1/admin/{action}" if known else "/v1/admin/unknown"
        return await self._answer(route, request, self._admin)

    async def _admin(self, request: Request) -> tuple[Any, str]:
        member = await self._authorize(request)
        action = request.path_params["action"]
        if request.method == "GET":
            if action != "state":
                raise ApiError(404, "not_found", f"GET /v1/admin/{action}: use GET /v1/admin/state")
            return await asyncio.to_thread(self.control.state), "none"
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_type", "body must be a JSON object", "body")
        spec = _ADMIN_ACTIONS.get(action)
        if spec is None:
            raise ApiError(
                404,
                "not_found",
                f"unknown admin action {action!r}; use one of {', '.join(sorted(_ADMIN_ACTIONS))}",
            )
        allowed = {"actor", "reason", *spec}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(
                422, "unknown_field", f"unknown field(s) {unknown}; allowed: {sorted(allowed)}"
            )
        for key in ("actor", "reason"):
            value = body.get(key)
            if not isinstance(value, str) or not value.strip() or len(value) > 1000:
                raise ApiError(
                    422,
                    "missing_field" if value is None else "invalid_value",
                    f"{key}: required, a non-empty string of at most 1000 characters "
                    "(who makes this change, and why: it goes to the admin log)",
                    key,
                )
        for key, required in spec.items():
            if required and key not in body:
                raise ApiError(422, "missing_field", f"{key}: required", key)
        actor, reason = body["actor"], body["reason"]
        if member is not None:
            actor = member  # a registry identity: not self-declared
        c = self.control
        calls: dict[str, Callable[[], dict[str, Any]]] = {
            "canary": lambda: c.set_canary_share(body["share"], actor=actor, reason=reason),
            "shadow": lambda: c.set_shadow(
                _flag(body, "enabled"), share=body.get("share"), actor=actor, reason=reason
            ),
            "rollback": lambda: c.rollback(actor=actor, reason=reason),
            "override": lambda: c.set_override(
                body["unit_id"], body["arm"], actor=actor, reason=reason
            ),
            "clear-override": lambda: c.clear_override(body["unit_id"], actor=actor, reason=reason),
            "kill-switch": lambda: c.set_kill_switch(_flag(body, "on"), actor=actor, reason=reason),
        }
        try:
            params = await asyncio.to_thread(calls[action])
        except ApiError:
            raise
        except Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except ConfigError as exc:
            raise ApiError(422, "invalid_value", str(exc)) from None
        except RlopsError as exc:  # the admin log refuses to append (tampered with)
            log.error("admin action %s refused: %s", action, exc)
            raise ApiError(503, "admin_log_unavailable", str(exc)) from None
        log.warning("admin %s by %s (%s): %s", action, actor, reason, params)
        return {"action": action, "applied": params, "routing": c.router.state_dict()}, "none"


def _guarded(arm: str) -> GuardedArm | None:
    """The guardrail's name for an arm it compares (production, canary), else None."""
    if arm == "production":
        return "production"
    if arm == "canary":
        return "canary"
    return None


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body[key]
    if not isinstance(value, bool):
        raise ApiError(422, "invalid_type", f"{key}: must be true or false, got {value!r}", key)
    return value


def _fallback_json(fallback: int | tuple[float, ...] | None) -> Any:
    return list(fallback) if isinstance(fallback, tuple) else fallback


def _check_compatible(name: str, other: Policy, production: Policy) -> None:
    """A canary or shadow policy must take the same observations and actions as production."""
    for what in ("observation_space", "action_space"):
        mine, theirs = getattr(production, what), getattr(other, what)
        if space_to_json(mine) != space_to_json(theirs):
            raise ConfigError(
                f"{name}: its {what.replace('_', ' ')} {theirs} differs from the production "
                f"policy's {mine}; serve policies trained for the same problem"
            )


def _check_fallback(config: ServeConfig, policy: Policy) -> int | tuple[float, ...] | None:
    """Validate ``fallback_action`` against the action space; return it normalised."""
    fallback = config.fallback_action
    space = policy.action_space
    if isinstance(space, spaces.Discrete):
        if config.fallback_action is None:
            return None
        start, n = int(space.start), int(space.n)
        if not isinstance(fallback, int) or not start <= fallback < start + n:
            raise ConfigError(
                f"fallback_action: {fallback!r} is not an action of Discrete({n}, start={start})"
            )
        return fallback
    if config.epsilon > 0 or config.epsilon_cap < 1:
        raise ConfigError("epsilon / epsilon_cap: apply to discrete policies only")
    if fallback is None:
        return None
    assert isinstance(space, spaces.Box)
    values = (float(fallback),) if isinstance(fallback, int) else tuple(fallback)
    size = math.prod(space.shape)
    if len(values) != size:
        raise ConfigError(f"fallback_action: expected {size} values for {space}, got {values}")
    clipped = np.clip(np.asarray(values), space.low.ravel(), space.high.ravel())
    return tuple(float(v) for v in clipped)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    return _error(ApiError(status, code, f"{detail}: {request.method} {request.url.path}"))


def create_app(
    config: ServeConfig,
    *,
    policy: Policy | None = None,
    canary: Policy | None = None,
    shadow: Policy | None = None,
) -> ServingApp:
    """Build the serving app for ``config``.

    The policies are loaded (and verified) here, so a bad artifact fails before
    a socket is bound; the decision-log writer, the batchers and the guardrail
    watcher start with the ASGI lifespan and stop, draining, with it.

    Args:
        config: the serving config.
        policy: an already loaded production policy (tests); default
            ``load_policy(config.artifact)``.
        canary: an already loaded canary; default ``load_policy(config.canary)`` if set.
        shadow: an already loaded shadow policy; default ``load_policy(config.shadow)`` if set.

    Returns:
        The ASGI app (run it with uvicorn; ``lifespan="on"``).
        ``app.state.service.admin_token_generated`` tells whether the admin token
        was generated (print it once: ``app.state.service.admin_token``).

    Raises:
        ArtifactError: an artifact is missing, unsupported or tampered with.
        ConfigError: ``fallback_action`` or exploration settings do not fit the
            policy, a canary/shadow does not fit production, a bad admin token,
            or a state file / admin log that fails verification.

    >>> app = create_app(ServeConfig(artifact="runs/demo/artifact", port=8000))  # doctest: +SKIP
    """
    if policy is None:
        policy = load_policy(config.artifact, seed=config.seed)
    if canary is None and config.canary is not None:
        canary = load_policy(config.canary, seed=config.seed)
    if shadow is None and config.shadow is not None:
        shadow = load_policy(config.shadow, seed=config.seed)
    token, generated = resolve_token(config.admin_token)
    service = _Service(config, policy, canary=canary, shadow=shadow, admin_token=token)
    service.admin_token_generated = generated
    routes = [
        # A raw ASGI endpoint (not a function: Starlette passes scope/receive/send).
        Route("/v1/act", functools.partial(service.act), methods=["POST"]),
        Route("/v1/feedback", service.feedback, methods=["POST"]),
        Route("/v1/policies", service.policies, methods=["GET"]),
        Route("/v1/admin/{action}", service.admin, methods=["GET", "POST"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/readyz", service.readyz, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
        Route("/openapi.json", service.openapi_json, methods=["GET"]),
    ]
    starlette = Starlette(
        routes=routes,
        lifespan=service.lifespan,
        exception_handlers={HTTPException: _not_found},
    )
    starlette.state.service = service
    return ServingApp(starlette, service)


class ServingApp:
    """The ASGI app: ``POST /v1/act`` straight to its handler, the rest through Starlette.

    Attributes:
        state: Starlette's app state; ``state.service`` holds the running service.
        starlette: the Starlette app (routing, lifespan, the other endpoints).
    """

    def __init__(self, starlette: Starlette, service: _Service) -> None:
        self.starlette = starlette
        self.state = starlette.state
        self._act = service.act

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/act" and scope["method"] == "POST":
            await self._act(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)
