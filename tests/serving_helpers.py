"""Helpers for the serving tests: a real server on 127.0.0.1 and a raw HTTP client.

* :class:`Server`: uvicorn serving ``create_app(config)`` in a background
  thread on an ephemeral port (the in-process tier);
* :func:`start_serve`: a server subprocess (``rlops serve`` or any command that
  announces ``http://127.0.0.1:PORT`` on its first stdout line), ready to use;
* :func:`request`: one request over ``http.client``, JSON parsed;
* :func:`load_clients`: keep-alive clients sending ``/v1/act`` from threads.

Imported by the test modules after they skip when starlette/uvicorn are missing.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlops.artifacts import Policy
from rlops.serving import ServeConfig, create_app
from rlops.serving.server import bind_socket, build_server

CARTPOLE_OBS = [0.01, -0.02, 0.03, 0.04]


class Server:
    """uvicorn serving ``create_app(config)`` on an ephemeral 127.0.0.1 port."""

    def __init__(self, config: ServeConfig, policy: Any = None, **app_kwargs: Any) -> None:
        self.config = config
        self.app = create_app(config, policy=policy, **app_kwargs)
        self.service = self.app.state.service
        self.sock = bind_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = build_server(self.app)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.server.started and request(self.port, "GET", "/readyz")[0] == 200:
                return self
            time.sleep(0.02)
        raise AssertionError("server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.sock.close()

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop()


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request; returns ``(status, headers, parsed JSON or text)``."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": content_type} if method == "POST" else {}
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        c.request(method, path, data, headers)
        response = c.getresponse()
        payload = response.read()
        kind = response.getheader("content-type", "")
        parsed = json.loads(payload) if kind.startswith("application/json") else payload.decode()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
    finally:
        if own:
            c.close()


def admin_request(
    port: int, action: str, body: dict[str, Any] | None = None, *, token: str | None
) -> tuple[int, Any]:
    """``POST /v1/admin/<action>`` (``GET`` for ``state``) with a bearer token."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        method = "GET" if action == "state" else "POST"
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, f"/v1/admin/{action}", data, headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def config_for(artifact: Path, tmp: Path, **kw: Any) -> ServeConfig:
    kw.setdefault("decision_log", str(tmp / "decisions.sqlite"))
    return ServeConfig(artifact=str(artifact), **kw)


ADMIN_TOKEN = "test-admin-token-0123456789"
"""The admin token of :func:`canary_config` servers."""


def admin(
    port: int, action: str, body: dict[str, Any] | None = None, *, token: str | None = ADMIN_TOKEN
) -> tuple[int, Any]:
    """:func:`admin_request` with :data:`ADMIN_TOKEN` by default."""
    return admin_request(port, action, body, token=token)


def act(port: int, unit: str, obs: list[float] | None = None) -> dict[str, Any]:
    """One ``/v1/act`` decision for ``unit``; asserts a 200."""
    status, _, body = request(
        port, "POST", "/v1/act", {"observation": obs or CARTPOLE_OBS, "unit_id": unit}
    )
    assert status == 200, body
    return dict(body)


def canary_config(artifacts: dict[str, Path], tmp: Path, **kw: Any) -> ServeConfig:
    """CartPole production with the ``cartpole_b`` canary and :data:`ADMIN_TOKEN`."""
    kw.setdefault("canary", str(artifacts["cartpole_b"]))
    kw.setdefault("admin_token", ADMIN_TOKEN)
    kw.setdefault("seed", 0)
    return config_for(artifacts["cartpole"], tmp, **kw)


class SlowPolicy:
    """A real policy whose every forward sleeps ``delay`` seconds first."""

    def __init__(self, policy: Policy, delay: float) -> None:
        self._policy = policy
        self.delay = delay
        for name in ("version", "discrete", "action_space", "observation_space", "manifest"):
            setattr(self, name, getattr(policy, name))
        self.path = policy.path

    def action_distribution(self, obs: Any, mask: Any = None) -> np.ndarray:
        time.sleep(self.delay)
        return self._policy.action_distribution(obs, mask)


def wait_ready(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if request(port, "GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.05)


def start_serve(argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    """Start a server subprocess, read its port from the announce line, wait until ready.

    The caller owns the process (kill it in a ``finally``).
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if m is None:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"no URL announced: {line!r}\n{err[-3000:]}")
        port = int(m.group(1))
        wait_ready(port)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse the text exposition strictly enough to catch format errors."""
    sample = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
    types: dict[str, str] = {}
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = sample.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels = m.group(1), m.group(3) or ""
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"sample before its # TYPE: {line!r}"
        pairs = label.findall(labels)
        assert "".join(f'{k}="{v}"{sep}' for k, v, sep in pairs) == labels, line
        value = m.group(4)
        out[(name, frozenset((k, v) for k, v, _ in pairs))] = (
            math.inf if value == "+Inf" else float(value)
        )
    return out


def load_clients(
    port: int,
    threads: int,
    per_thread: int,
    stop: threading.Event | None = None,
    ok: list[str] | None = None,
) -> tuple[list[str], list[str]]:
    """``threads`` keep-alive clients, ``per_thread`` requests each.

    Returns ``(ids of 200 answers, failures)``; a failure names a transport
    error or a non-200 answer with its error code, so an assertion shows why.
    Each client has at most one request in flight. The ids of 200 answers are
    appended to ``ok`` as they arrive (list.append is atomic).
    """
    ok = [] if ok is None else ok
    failures: list[str] = []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(per_thread):
            if stop is not None and stop.is_set():
                break
            body = {"observation": CARTPOLE_OBS, "unit_id": f"c{k}", "step": i}
            try:
                status, _, d = request(port, "POST", "/v1/act", body, conn=conn)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                if stop is not None:
                    time.sleep(0.01)
                continue
            if status == 200:
                ok.append(d["decision_id"])
            else:
                code = d.get("error", {}).get("code") if isinstance(d, dict) else d
                failures.append(f"{status} {code}")
        conn.close()

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return ok, failures
