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

>>> app = create_app(ServeConfig(artifact="runs/demo/artifact"))  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from gymnasium import spaces
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rlops.artifacts import Policy, load_policy, space_to_json
from rlops.core.decisions import Arm, DecisionRecord
from rlops.core.errors import ConfigError
from rlops.serving.batcher import MicroBatcher
from rlops.serving.behaviour import BatchDecision, Behaviour
from rlops.serving.config import ServeConfig
from rlops.serving.decision_log import DecisionLog
from rlops.serving.metrics import ServingMetrics
from rlops.serving.openapi import openapi_document
from rlops.serving.schemas import (
    ActRow,
    ApiError,
    InputSpec,
    parse_act,
    parse_feedback,
)

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("rlops.serving")

RETRY_AFTER_S = 1
"""``Retry-After`` of a back-pressure 503."""


class JSONResponse(Response):
    """A response whose body orjson serialises (NaN-free by construction)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(exc: ApiError) -> JSONResponse:
    headers = {}
    if exc.status == 503 and exc.code == "log_backpressure":
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if exc.status == 413:
        headers["Connection"] = "close"  # the unread rest of the body must not be parsed
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


class _Service:
    """Everything one server process holds; the handlers are its methods."""

    def __init__(self, config: ServeConfig, policy: Policy) -> None:
        self.config = config
        self.policy = policy
        self.version = policy.version
        obs_shape = tuple(int(d) for d in policy.observation_space.shape or ())
        space = policy.action_space
        n_actions = int(space.n) if isinstance(space, spaces.Discrete) else None
        self.spec = InputSpec(obs_shape=obs_shape, n_actions=n_actions)
        self.fallback = _check_fallback(config, policy)
        self.metrics = ServingMetrics()
        self.log = DecisionLog(
            config.decision_log,
            max_queue=config.log_queue_size,
            batch_size=config.log_batch_size,
        )
        behaviour = Behaviour(
            policy,
            mode=config.mode,
            epsilon=config.epsilon,
            epsilon_cap=config.epsilon_cap,
            seed=config.seed,
        )
        self.batcher = MicroBatcher(
            behaviour,
            max_batch_size=config.max_batch_size,
            max_wait_s=config.max_batch_wait_ms / 1000.0,
            timeout_s=config.request_timeout_ms / 1000.0,
            on_batch=self.metrics.batch_rows.observe,
        )
        self.log.create()  # fail before binding a socket if the file cannot be a decision log
        self.openapi = orjson.dumps(
            openapi_document(obs_shape=obs_shape, n_actions=n_actions, version=self.version)
        )

    # -- lifecycle ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.log.start()
        self.batcher.start()
        try:
            yield
        finally:
            # Requests in flight have finished (uvicorn waits for them before the
            # lifespan shutdown); answer anything still queued, then commit the log.
            await self.batcher.stop()
            await asyncio.to_thread(self.log.close)

    # -- request plumbing --------------------------------------------------------

    async def _body(self, request: Request) -> Any:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ApiError(
                415,
                "unsupported_media_type",
                f"Content-Type must be application/json, got {media or 'none'!r}",
            )
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "body_too_large", f"body of {declared} bytes; at most {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
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
        except Exception:
            log.exception("%s failed", route)
            response = _error(ApiError(500, "internal", "internal error; see the server log"))
        self.metrics.observe_request(route, arm, response.status_code, time.perf_counter() - start)
        return response

    # -- endpoints ---------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        return await self._answer("/v1/act", request, self._act)

    async def _act(self, request: Request) -> tuple[Any, str]:
        body = await self._body(request)
        rows, batched = parse_act(body, self.spec, self.config.max_request_rows)
        # The deadline covers queueing and the policy, not the client's upload.
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_ms / 1000.0
        pending = self.batcher.submit(rows)
        arm: Arm = "production"
        try:
            async with asyncio.timeout_at(deadline):
                decision, offset = await pending.future
            out = self._decisions(rows, decision, offset)
        except TimeoutError:
            out, arm = self._fallback(rows, "timeout"), "fallback"
        except Exception as exc:
            log.warning("policy failed, serving the fallback: %r", exc)
            out, arm = self._fallback(rows, "policy_error"), "fallback"
        now = time.time()
        records = [
            (
                DecisionRecord(
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
                    policy_version=self.version,
                    arm=arm,
                ),
                row.context,
            )
            for row, d in zip(rows, out)
        ]
        if not self.log.submit(records):
            raise ApiError(
                503,
                "log_backpressure",
                "the decision log is behind; the decision was not served, retry later",
            )
        self.metrics.observe_decisions(arm, len(rows))
        return ({"decisions": out} if batched else out[0]), arm

    def _decisions(
        self, rows: list[ActRow], decision: BatchDecision, offset: int
    ) -> list[dict[str, Any]]:
        out = []
        capped = 0
        for i in range(offset, offset + len(rows)):
            d: dict[str, Any] = {
                "decision_id": str(uuid.uuid4()),
                "policy_version": self.version,
                "arm": "production",
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
        return out

    def _fallback(self, rows: list[ActRow], kind: str) -> list[dict[str, Any]]:
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
                "decision_id": str(uuid.uuid4()),
                "policy_version": self.version,
                "arm": "fallback",
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

    async def feedback(self, request: Request) -> Response:
        return await self._answer("/v1/feedback", request, self._feedback)

    async def _feedback(self, request: Request) -> tuple[Any, str]:
        fb = parse_feedback(await self._body(request))
        if not await asyncio.to_thread(self.log.contains, fb.decision_id):
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
        return {"decision_id": fb.decision_id, "status": "accepted"}, "none"

    async def policies(self, request: Request) -> Response:
        async def handler(request: Request) -> tuple[Any, str]:
            manifest = self.policy.manifest
            entry = {
                "arm": "production",
                "version": self.version,
                "algo": manifest.get("algo"),
                "env_id": manifest.get("env_id"),
                "path": None if self.policy.path is None else str(self.policy.path),
                "discrete": self.policy.discrete,
                "observation_space": space_to_json(self.policy.observation_space),
                "action_space": space_to_json(self.policy.action_space),
                "mode": self.config.mode,
                "epsilon": self.config.epsilon,
                "epsilon_cap": self.config.epsilon_cap,
            }
            return {"policies": [entry]}, "none"

        return await self._answer("/v1/policies", request, handler)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        reasons = []
        if not self.batcher.running:
            reasons.append("batcher not running")
        if not self.log.running:
            reasons.append("decision-log writer not running")
        if reasons:
            return JSONResponse({"status": "not_ready", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready", "policy_version": self.version})

    async def metrics_text(self, request: Request) -> Response:
        stats = self.log.stats()
        start = time.perf_counter()
        text = self.metrics.render(
            {
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
            }
        )
        self.metrics.observe_request("/metrics", "none", 200, time.perf_counter() - start)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi_json(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")


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


def create_app(config: ServeConfig, *, policy: Policy | None = None) -> Starlette:
    """Build the serving app for ``config``.

    The policy is loaded (and verified) here, so a bad artifact fails before a
    socket is bound; the decision-log writer and the batcher start with the
    ASGI lifespan and stop, draining, with it.

    Args:
        config: the serving config.
        policy: an already loaded policy (tests); default ``load_policy(config.artifact)``.

    Returns:
        The Starlette app (run it with uvicorn; ``lifespan="on"``).

    Raises:
        ArtifactError: the artifact is missing, unsupported or tampered with.
        ConfigError: ``fallback_action`` or exploration settings do not fit the policy.

    >>> app = create_app(ServeConfig(artifact="runs/demo/artifact", port=8000))  # doctest: +SKIP
    """
    if policy is None:
        policy = load_policy(config.artifact, seed=config.seed)
    service = _Service(config, policy)
    routes = [
        Route("/v1/act", service.act, methods=["POST"]),
        Route("/v1/feedback", service.feedback, methods=["POST"]),
        Route("/v1/policies", service.policies, methods=["GET"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/readyz", service.readyz, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
        Route("/openapi.json", service.openapi_json, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=service.lifespan,
        exception_handlers={HTTPException: _not_found},
    )
    app.state.service = service
    return app
