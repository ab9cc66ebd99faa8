"""Scale-out serving: the same app on N Ray Serve replicas behind Ray's HTTP proxy.

``rlops serve --ray --replicas N`` runs :func:`serve_on_ray`: it validates the
config in this process exactly as ``rlops serve`` does (artifact, decision log,
admin state), starts or joins Ray, and deploys one Ray Serve *ingress*
deployment with ``num_replicas=N``. Each replica is its own process that builds
:func:`~rlops.serving.app.create_app` there (``__serve_build_asgi_app__``), so
the requests and answers are the app's own (headers, body, status codes and
content types pass through Ray's proxy untouched; the proxy adds
``X-Request-ID``, this module adds ``X-Rlops-Replica``), and Ray runs the app's
ASGI lifespan inside each replica: the micro-batchers and the decision-log
writer start with the replica. A graceful replica stop (:meth:`RayServing.stop`,
SIGTERM/SIGINT while blocking, a scale-down) lets in-flight requests finish,
then runs the lifespan shutdown, which commits every queued record before the
process exits (within ``graceful_shutdown_timeout_s`` = ``DRAIN_TIMEOUT_S``).

The decision log: one SQLite WAL file, shared
---------------------------------------------
All replicas write the configured ``decision_log`` file. The alternative, one
shard per replica (``decisions.<replica>.sqlite``) merged by readers, was
rejected because:

* ``POST /v1/feedback`` for a decision may reach any replica. With one file
  every replica finds the row and joins the feedback to it; with shards every
  replica would have to search, and update, every other replica's shard.
  A decision that another replica answered a moment ago may still wait in that
  replica's queue: the replicas' logs run with ``peer_grace_s`` =
  :data:`PEER_GRACE_S`, so an unknown id is looked up again for that long
  before the answer is 404 ``unknown_decision``.
* Readers (exports, OPE, :func:`~rlops.serving.decision_log.count_decisions`,
  :func:`~rlops.serving.decision_log.iter_decisions`) stay unchanged, and
  the file stays the same contract as a single server's.
* SQLite serialises writers across processes with its file locks, and each
  replica's writer commits up to ``log_batch_size`` rows per transaction,
  waits ``busy_timeout`` for the lock and retries a failed batch, never drops
  it; so contention costs one lock hand-off per batch, not per row. Decision
  ids are uuid4 and never collide.

The price: WAL needs shared memory, so every writer must be on one host, and
SQLite over a network filesystem is unsafe. The replicas are therefore pinned
to the Ray node this process runs on (the artifact and the log are read and
written on its disk). On a multi-node cluster run ``rlops serve --ray`` on the
node that should serve, with ``--replicas`` at most its CPUs; spreading
replicas over nodes needs a server-backed sink (a database all nodes reach),
which this module does not provide.

Per-process state stays per replica: ``/metrics`` describes the replica that
answered (``X-Rlops-Replica`` says which), and each replica has its own
micro-batchers. Routing changes do not propagate between processes, so with
more than one replica a canary (its guardrail would roll back one replica
only) is refused and ``POST /v1/admin/*`` answers 409 ``admin_per_replica``
(one replica would apply the change and the shared, hash-chained admin log
would fork); change routing by redeploying with a new config. ``GET
/v1/admin/state`` still answers. The admin token is resolved once here, so all
replicas accept the same one.

>>> serving = serve_on_ray(config, replicas=2, block=False)  # doctest: +SKIP
>>> serving.url  # doctest: +SKIP
'http://127.0.0.1:8000'
>>> serving.stop()  # every replica drains its decisions into the shared log  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rlops.core.config import check
from rlops.core.errors import ConfigError, RlopsError
from rlops.serving.app import create_app
from rlops.serving.config import ServeConfig
from rlops.serving.server import DRAIN_TIMEOUT_S, bind_socket, startup_lines, tune_gc

__all__ = ["RayServing", "serve_on_ray"]

APP_NAME = "rlops"
"""Name of the Ray Serve application (and of its one deployment)."""

REPLICA_HEADER = "x-rlops-replica"
"""Response header naming the replica that answered."""

PEER_GRACE_S = 1.0
"""How long a replica looks for a decision id it does not know (another replica's
writer may not have committed it yet) before ``/v1/feedback`` answers 404."""

MAX_ONGOING_REQUESTS = 256
"""Concurrent requests Ray lets into one replica (Ray's default is 5): the
micro-batcher batches only the requests that wait together."""

START_TIMEOUT_S = 120.0
"""Longest wait for every replica to run (placed, artifact loaded, lifespan started)."""

READY_TIMEOUT_S = 30.0
"""Longest wait for ``GET /readyz`` through the proxy once the replicas run."""

_PATH_FIELDS = ("artifact", "decision_log", "canary", "shadow", "admin_log", "state_file")
"""Config paths made absolute before they travel: a replica's working directory is Ray's."""


class _ReplicaMiddleware:
    """Names the replica in every answer; refuses admin changes a lone replica cannot apply."""

    def __init__(self, app: ASGIApp, *, replica: str, admin_writes: bool) -> None:
        self.app = app
        self.replica = replica
        self.admin_writes = admin_writes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(REPLICA_HEADER, self.replica)
            await send(message)

        path, method = scope["path"], scope["method"]
        if not self.admin_writes and path.startswith("/v1/admin/") and method != "GET":
            body = orjson.dumps(
                {
                    "error": {
                        "code": "admin_per_replica",
                        "message": "routing changes would reach one replica only; "
                        "redeploy with the change in the config, or serve with --replicas 1",
                        "field": None,
                    }
                }
            )
            await send_named(
                {
                    "type": "http.response.start",
                    "status": 409,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_named({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_named)


class _Replica:
    """One Ray Serve replica: builds the serving app in its own process.

    Ray wraps it with ``serve.ingress()`` (no app: late bound), calls
    :meth:`__serve_build_asgi_app__` after the constructor, runs the app's
    lifespan, forwards each HTTP request's ASGI scope to it, and runs the
    lifespan shutdown when the replica stops.
    """

    def __init__(self, config: ServeConfig, replicas: int) -> None:
        self._config = config
        self._replicas = replicas

    def __serve_build_asgi_app__(self) -> ASGIApp:
        _, serve = _ray()
        app = create_app(self._config)
        app.state.service.log.peer_grace_s = PEER_GRACE_S
        tune_gc()  # the replica process serves only this app
        return _ReplicaMiddleware(
            app,
            replica=serve.get_replica_context().replica_tag,
            admin_writes=self._replicas == 1,
        )


class RayServing:
    """A running Ray Serve deployment of the rlops app (from ``serve_on_ray(block=False)``).

    Attributes:
        url: ``http://host:port`` of Ray's HTTP proxy.
        replicas: how many replicas serve.
        version: the production policy's version.
    """

    def __init__(
        self, url: str, replicas: int, version: str, *, owns_ray: bool, owns_serve: bool
    ) -> None:
        self.url = url
        self.replicas = replicas
        self.version = version
        self._owns_ray = owns_ray
        self._owns_serve = owns_serve
        self._stopped = False

    def stop(self) -> None:
        """Delete the deployment gracefully (each replica drains its log), then release Ray.

        Serve itself is shut down when this call started it or no other
        application is left; Ray is shut down when this call started it.
        Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        ray, serve = _ray()
        try:
            if _serve_running(serve):
                # Blocks until every replica has stopped: in-flight requests answered,
                # then the app's lifespan shutdown committed the replica's queue.
                serve.delete(APP_NAME)
                if self._owns_serve or not serve.status().applications:
                    serve.shutdown()
        finally:
            if self._owns_ray:
                ray.shutdown()


def serve_on_ray(
    config: ServeConfig,
    *,
    replicas: int,
    ray_address: str | None = None,
    announce: Callable[[str], None] | None = None,
    block: bool = True,
) -> RayServing:
    """Serve ``config`` from ``replicas`` Ray Serve replicas on this node.

    Args:
        config: the serving config; ``host``/``port`` are the Ray HTTP proxy's
            (port 0: a free port is chosen here).
        replicas: replica processes, each with one CPU reserved (>= 1).
        ray_address: a Ray cluster to join (``auto``, ``host:6379``); run on one
            of its nodes, since the replicas are pinned to this node. None: join
            the ``ray.init`` already done in this process, else start a private
            local Ray instance (shut down with the deployment).
        announce: called with the startup lines (the URL first).
        block: serve until SIGTERM/SIGINT, then stop gracefully; False: return
            at once, and the caller calls :meth:`RayServing.stop`.

    Returns:
        The running deployment (already stopped when ``block`` is True).

    Raises:
        ConfigError: a bad ``replicas``, config, artifact path, decision log,
            address or busy port; a canary with more than one replica; Ray
            Serve not installed (``pip install 'rlops[ray-serve]'``).
        ArtifactError: a missing, unsupported or tampered artifact.
        RlopsError: the replicas did not start or did not become ready.

    >>> serving = serve_on_ray(ServeConfig(artifact="runs/demo/artifact"),
    ...                        replicas=2, block=False)  # doctest: +SKIP
    >>> serving.stop()  # doctest: +SKIP
    """
    check(
        isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 1,
        "replicas",
        f"must be an integer >= 1, got {replicas!r}",
    )
    if replicas > 1 and config.canary is not None:
        raise ConfigError(
            "canary: the guardrail and routing state live in each replica, so with "
            f"--replicas {replicas} a rollback would reach one replica only; serve the "
            "canary with --replicas 1 (or without --ray)"
        )
    try:
        ray, serve = _ray()
    except ImportError as exc:
        raise ConfigError(
            f"ray: Ray Serve is not installed ({exc}); pip install 'rlops[ray-serve]'"
        ) from None
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # rlops announces what matters

    config = _absolute_paths(config)
    if config.port == 0:
        with contextlib.closing(bind_socket(config.host, 0)) as sock:
            config = replace(config, port=int(sock.getsockname()[1]))
    else:
        bind_socket(config.host, config.port).close()  # a busy port fails here, clearly

    # Validate here exactly as `rlops serve` would (artifact, log, admin state),
    # and resolve the admin token once so that every replica accepts the same one.
    app = create_app(config)
    service = app.state.service
    service.control.close()
    config = replace(config, admin_token=service.admin_token)
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{config.port}"

    owns_ray = _connect(ray, ray_address, replicas)
    serving = RayServing(url, replicas, service.version, owns_ray=owns_ray, owns_serve=False)
    try:
        serving._owns_serve = not _serve_running(serve)
        node = _pin_to_this_node(ray)
        serve.start(http_options={"host": config.host, "port": config.port})
        deployment = serve.deployment(
            serve.ingress()(_Replica),
            name=APP_NAME,
            num_replicas=replicas,
            max_ongoing_requests=MAX_ONGOING_REQUESTS,
            graceful_shutdown_timeout_s=DRAIN_TIMEOUT_S,
            max_constructor_retry_count=2,
            ray_actor_options={"num_cpus": 1, **node},
        )
        target = serve.RunTarget(deployment.bind(config, replicas), name=APP_NAME, route_prefix="/")
        serve.run_many([target], wait_for_applications_running=False)
        _wait_running(serve, replicas)
        _wait_ready(url)
    except BaseException:
        serving.stop()
        raise
    if announce is not None:
        lines = startup_lines(app, url)
        where = "a local Ray instance" if owns_ray else f"Ray at {ray_address or 'this process'}"
        lines.insert(1, f"  Ray Serve: {replicas} replica(s) on {where}, one decision log")
        for line in lines:
            announce(line)
    if block:
        try:
            _wait_for_signal()
        finally:
            serving.stop()
    return serving


def _ray() -> tuple[Any, Any]:
    """``ray`` and ``ray.serve``, imported lazily (the ``ray-serve`` extra)."""
    return importlib.import_module("ray"), importlib.import_module("ray.serve")


def _absolute_paths(config: ServeConfig) -> ServeConfig:
    changes: dict[str, Any] = {}
    for name in _PATH_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, str) and value:
            changes[name] = str(Path(value).expanduser().resolve())
    return replace(config, **changes)


def _describe(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _connect(ray: Any, address: str | None, replicas: int) -> bool:
    """Join ``address`` or the caller's Ray, else start a local instance; True if started here."""
    from rlops.runtime.ray_backend import check_reachable

    if ray.is_initialized():
        return False  # the caller's own ray.init (a notebook, a test fixture) is used as it is
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
    if address is None:
        # One CPU per replica, as many as asked for even on a smaller machine
        # (the OS shares the cores; a replica waiting for a CPU would never start).
        ray.init(num_cpus=max(os.cpu_count() or 1, replicas), include_dashboard=False, **quiet)
        return True
    check_reachable(address, key="ray_address", local_hint="leave out --ray-address")
    try:
        ray.init(address=address, **quiet)
    except Exception as exc:
        raise ConfigError(
            f"ray_address: could not join the Ray cluster at {address!r}: {_describe(exc)}; "
            "check `ray status` on the head node, or leave out --ray-address to start "
            "a local Ray instance"
        ) from None
    return True


def _serve_running(serve: Any) -> bool:
    """Whether a Serve controller already runs on this cluster (``serve.status`` starts none)."""
    status = serve.status()
    return bool(status.proxies or status.applications)


def _pin_to_this_node(ray: Any) -> dict[str, Any]:
    """``ray_actor_options`` that keep every replica on this process's node (one host for
    the SQLite WAL log and the artifact)."""
    ip = ray.util.get_node_ip_address()
    resource = f"node:{ip}"
    if resource not in ray.cluster_resources():
        raise ConfigError(
            f"ray_address: this process ({ip}) is not on a node of the Ray cluster; run "
            "`rlops serve --ray` on the node that should serve (the decision log is a "
            "SQLite file on that node's disk)"
        )
    return {"resources": {resource: 0.001}}


def _wait_running(serve: Any, replicas: int) -> None:
    """Wait until the application runs; fail with Ray's reason if it cannot."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        app = serve.status().applications.get(APP_NAME)
        status = "NOT_STARTED" if app is None else str(getattr(app.status, "value", app.status))
        if status == "RUNNING":
            return
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            deployment = app.deployments.get(APP_NAME)
            detail = (deployment.message if deployment else "") or app.message
            lines = [line for line in detail.strip().splitlines() if line.strip()]
            raise RlopsError(
                f"replicas: the Ray Serve deployment failed ({status}): "
                f"{lines[-1] if lines else 'no reason given'}; see the replica logs "
                "under /tmp/ray/session_latest/logs/serve/"
            )
        if time.monotonic() >= deadline:
            running = 0
            if app is not None and APP_NAME in app.deployments:
                running = app.deployments[APP_NAME].replica_states.get("RUNNING", 0)
            raise RlopsError(
                f"replicas: {running} of {replicas} Ray Serve replicas running after "
                f"{START_TIMEOUT_S:g}s; each needs 1 CPU on this node (see `ray status`): "
                "lower --replicas"
            )
        time.sleep(0.2)


def _wait_ready(url: str) -> None:
    """Poll ``GET /readyz`` through the proxy until it answers 200."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
        try:
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
            last = f"HTTP {response.status}"
        except OSError as exc:
            last = str(exc)
        finally:
            conn.close()
        time.sleep(0.1)
    raise RlopsError(
        f"replicas: {url}/readyz did not answer 200 within {READY_TIMEOUT_S:g}s ({last}); "
        "if Ray Serve was already running with other HTTP options, `serve shutdown` it first"
    )


def _wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT (main thread)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
