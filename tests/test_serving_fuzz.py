"""Serving under hostile input: property-based fuzzing of a real server finds no 5xx.

Hypothesis builds request bodies from what the API accepts (the shapes the
served OpenAPI document states) and from what it must refuse: wrong
observation shapes and dtypes, NaN/Infinity literals, numbers beyond float32
and int64, masks with no eligible action, unknown decision ids, unknown
fields, deep nesting, truncated or random bytes, wrong content types,
methods and paths. Every example is one request over a fresh TCP connection
to uvicorn on 127.0.0.1 (no test client in between).

For every request:

* the status is below 500;
* a 4xx carries ``{"error": {"code", "message", "field"}}`` with a snake_case code;
* a request valid by construction is answered 200 with a well-formed decision
  (finite propensity equal to the served probability of the action, masks
  respected, continuous actions within bounds).

After each run the server keeps serving: a valid request gets 200, ``/readyz``
is ready, the decision-log writer is alive and holds every decision answered
200, and ``/metrics`` counts no 5xx.

Runs are derandomized (the same examples every run) and bounded (~200
examples per test, a few seconds each).
"""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import rlops
from rlops.serving.decision_log import iter_decisions
from rlops.serving.schemas import MAX_ID_CHARS, InputSpec
from serving_helpers import CARTPOLE_OBS, Server, config_for, parse_prometheus
from serving_helpers import request as http_request

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No shrinking: the server is stateful (a request can stop the log writer for
    # good), so the request to report is the first failing one, not a shrunk replay.
    phases=(Phase.explicit, Phase.generate),
)
"""Deterministic and bounded: the same ~200 examples on every run."""

ERROR_CODE = re.compile(r"[a-z][a-z0-9_]*\Z")

# -- a server per policy kind ----------------------------------------------------------


@dataclass
class Target:
    """A served policy, what it accepts, and the decisions it answered 200 during a run."""

    server: Server
    spec: InputSpec
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    answered: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.port)

    def valid_act(self) -> dict[str, Any]:
        size = math.prod(self.spec.obs_shape)
        return {"observation": [0.0] * size, "unit_id": "fuzz-check"}


def _target(artifact: Path, tmp: Path) -> Server:
    # A generous deadline: a slow CI forward must not turn into 503 policy_unavailable.
    return Server(config_for(artifact, tmp, seed=0, request_timeout_ms=30_000))


@pytest.fixture(scope="module", params=["cartpole", "masked", "pendulum"])
def target(
    request: pytest.FixtureRequest,
    artifacts: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    artifact = artifacts[request.param]
    policy = rlops.load_policy(artifact)
    space = policy.action_space
    spec = InputSpec(
        obs_shape=tuple(int(d) for d in policy.observation_space.shape or ()),
        n_actions=int(space.n) if isinstance(space, spaces.Discrete) else None,
    )
    low = high = None
    if isinstance(space, spaces.Box):
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    with _target(artifact, tmp_path_factory.mktemp(f"fuzz-{request.param}")) as server:
        yield Target(server, spec, low, high)


@pytest.fixture(scope="module")
def cartpole(
    artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz-cartpole")
    with _target(artifacts["cartpole"], tmp) as server:
        yield Target(server, InputSpec(obs_shape=(4,), n_actions=2))


# -- sending and checking ----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One generated request.

    Attributes:
        valid: the request is valid by construction, so it must be answered 200.
        rows: the act rows of a valid ``/v1/act`` body (to check the answer against).
    """

    method: str
    path: str
    content_type: str | None
    body: bytes | None
    valid: bool = False
    rows: tuple[dict[str, Any], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()


def send(port: int, case: Case) -> tuple[int, str, bytes]:
    """The request over a fresh connection; returns (status, content type, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = dict(case.headers)
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
        conn.request(case.method, case.path, case.body, headers)
        response = conn.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        conn.close()


def check_error(status: int, kind: str, payload: bytes) -> dict[str, Any]:
    """A 4xx must be a JSON error with a machine-readable code."""
    assert 400 <= status < 500, (status, payload[:300])
    assert kind.startswith("application/json"), (status, kind, payload[:300])
    body = json.loads(payload)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and {"code", "message"} <= set(error), error
    assert isinstance(error["code"], str) and ERROR_CODE.match(error["code"]), error
    assert isinstance(error["message"], str) and error["message"], error
    assert error.get("field") is None or isinstance(error["field"], str), error
    return error


def check_decision(target: Target, d: dict[str, Any], row: dict[str, Any]) -> None:
    """A 200 decision is a proper draw from a proper distribution."""
    assert {"decision_id", "policy_version", "arm", "action", "propensity"} <= set(d), d
    assert isinstance(d["decision_id"], str) and d["decision_id"]
    p = d["propensity"]
    assert isinstance(p, int | float) and math.isfinite(p) and p > 0, d
    n = target.spec.n_actions
    if n is not None:
        dist = d["action_distribution"]
        assert len(dist) == n and all(isinstance(x, float | int) for x in dist), d
        assert all(math.isfinite(x) and x >= 0 for x in dist), d
        assert math.isclose(sum(dist), 1.0, rel_tol=1e-6), d
        action = d["action"]
        assert isinstance(action, int) and 0 <= action < n, d
        assert dist[action] == p, d
        mask = row.get("action_mask")
        if mask is not None:
            assert mask[action], (mask, d)
            assert all(x == 0 for x, m in zip(dist, mask) if not m), (mask, d)
    else:
        assert target.low is not None and target.high is not None
        action = np.asarray(d["action"], dtype=np.float64)
        assert action.shape == target.low.shape and np.isfinite(action).all(), d
        assert (action >= target.low).all() and (action <= target.high).all(), d
        assert math.isfinite(d["logp"]), d


def check_answer(target: Target, case: Case, status: int, kind: str, payload: bytes) -> None:
    assert status < 500, (case, status, payload[:500])
    if status >= 400:
        check_error(status, kind, payload)
    if case.valid:
        assert status == 200, (case, status, payload[:500])
    if status == 200 and case.method == "POST" and case.path == "/v1/act":
        body = json.loads(payload)
        decisions = body.get("decisions", [body])
        target.answered.extend(d["decision_id"] for d in decisions)
        if case.rows:
            assert len(decisions) == len(case.rows), (case, body)
            for d, row in zip(decisions, case.rows):
                check_decision(target, d, row)


def assert_logged(target: Target) -> None:
    """The writer commits what was answered 200 and stays alive.

    A value the writer cannot store must be refused at the boundary; served,
    it would stop the writer and every later decision would go unlogged.
    """
    log = target.server.service.log
    deadline = time.monotonic() + 10
    while (stats := log.stats()).depth and stats.running and time.monotonic() < deadline:
        time.sleep(0.002)
    assert stats.running and not stats.depth, stats


def assert_still_serving(target: Target) -> None:
    """After a fuzz run: serving, ready, the log writer alive and holding every 200."""
    status, _, d = http_request(target.port, "POST", "/v1/act", target.valid_act())
    assert status == 200, d
    target.answered.append(d["decision_id"])
    status, _, ready = http_request(target.port, "GET", "/readyz")
    assert status == 200, ready
    log = target.server.service.log
    assert log.flush(timeout=30), log.stats()
    assert log.stats().running, log.stats()
    logged = {r.decision_id for r in iter_decisions(target.server.config.decision_log)}
    assert set(target.answered) <= logged, len(set(target.answered) - logged)
    metrics = parse_prometheus(http_request(target.port, "GET", "/metrics")[2])
    fives = {
        labels: n
        for (name, labels), n in metrics.items()
        if name == "rlops_serving_requests_total" and dict(labels)["status"].startswith("5")
    }
    assert not fives, fives


# -- strategies ----------------------------------------------------------------------------

# Integers at the edges of int32/int53/int64/uint64: all finite in float32, so valid
# observation entries. orjson parses beyond uint64 (or below int64) as a float.
EDGE_INTS = st.sampled_from(
    [2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30]
)
FINITE32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
NUMBERS = FINITE32 | st.integers(-(10**6), 10**6) | EDGE_INTS
# json.dumps writes these as the NaN / Infinity / -Infinity literals JSON does not have.
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
BEYOND_FLOAT32 = st.sampled_from([3.5e38, -3.5e38, 1e39, 1.7976931348623157e308])
TEXT = st.text(max_size=12)
IDS = st.text(min_size=1, max_size=MAX_ID_CHARS)
BAD_IDS = st.one_of(
    st.just(""),
    st.text(min_size=MAX_ID_CHARS + 1, max_size=MAX_ID_CHARS + 20),
    st.integers(),
    st.booleans(),
    st.lists(TEXT, max_size=2),
)
FINITE_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**300), 10**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3),
    max_leaves=10,
)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3),
    max_leaves=10,
)
NOT_NONE = ANY_JSON.filter(lambda v: v is not None)

_DEEP = re.compile(r'"@@deep:(list|dict):(\d+)@@"')


def deep(kind: str, depth: int) -> str:
    """A placeholder :func:`encode` replaces by ``depth`` nested lists or objects.

    Built as text: json.dumps recurses and would hit Python's recursion limit.
    """
    return f"@@deep:{kind}:{depth}@@"


def encode(value: Any) -> bytes:
    def nest(m: re.Match[str]) -> str:
        depth = int(m.group(2))
        if m.group(1) == "list":
            return "[" * depth + "0.5" + "]" * depth
        return '{"k":' * depth + "1" + "}" * depth

    return _DEEP.sub(nest, json.dumps(value)).encode()


DEEP_OBJECT = st.sampled_from([65, 254, 255, 300, 1000, 1030]).map(lambda d: deep("dict", d))
SHALLOW_OBJECT = st.integers(1, 8).map(lambda d: deep("dict", d))
DEEP_LIST = st.sampled_from([2, 3, 100, 1000, 1023, 1030]).map(lambda d: deep("list", d))

ABSENT = object()
"""A field left out of the request."""


def _nest(values: list[Any], shape: tuple[int, ...]) -> Any:
    if len(shape) <= 1:
        return values
    step = len(values) // shape[0]
    return [_nest(values[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def observations(draw: st.DrawFn, spec: InputSpec, *, valid: bool) -> Any:
    size = math.prod(spec.obs_shape)
    if valid:
        values = draw(st.lists(NUMBERS, min_size=size, max_size=size))
        return draw(st.sampled_from([values, _nest(values, spec.obs_shape)]))
    values = draw(st.lists(NUMBERS, min_size=size, max_size=size))
    i = draw(st.integers(0, size - 1))
    bad_entry = NON_FINITE | BEYOND_FLOAT32 | TEXT | st.booleans() | st.none() | st.lists(NUMBERS)
    return draw(
        st.one_of(
            st.lists(NUMBERS, max_size=12).filter(lambda v: len(v) != size),
            st.just([*values[:i], draw(bad_entry), *values[i + 1 :]]),
            st.just([values[:i], values[i:]]),  # ragged (or a wrong shape)
            DEEP_LIST,
            NOT_NONE.filter(lambda v: not isinstance(v, list)),
        )
    )


def masks(spec: InputSpec, *, valid: bool) -> st.SearchStrategy[Any]:
    n = spec.n_actions
    if n is None:
        return st.lists(st.booleans(), max_size=3) if not valid else st.just(ABSENT)
    if valid:
        return st.just(ABSENT) | st.lists(st.booleans(), min_size=n, max_size=n).filter(any)
    return st.one_of(
        st.just([False] * n),  # no eligible action
        st.lists(st.booleans(), max_size=n + 3).filter(lambda m: len(m) != n),
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        NOT_NONE.filter(lambda v: not isinstance(v, list)),
    )


def _fields(spec: InputSpec) -> dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]:
    """field -> (valid values, invalid values); ABSENT leaves the field out."""
    return {
        "observation": (
            observations(spec, valid=True),
            st.just(ABSENT) | observations(spec, valid=False),
        ),
        "unit_id": (IDS, st.just(ABSENT) | st.none() | BAD_IDS),
        "episode_id": (st.just(ABSENT) | st.none() | IDS, BAD_IDS),
        "step": (
            st.just(ABSENT) | st.integers(0, 2**63 - 1) | st.just(2**63 - 1),
            st.integers(max_value=-1)
            | st.integers(2**63, 2**64 - 1)  # beyond SQLite's INTEGER: cannot be logged
            | st.sampled_from([2**63, 2**64 - 1])
            | st.floats()
            | st.booleans()
            | TEXT,
        ),
        "action_mask": (masks(spec, valid=True), masks(spec, valid=False)),
        "context": (
            st.just(ABSENT) | st.none() | st.dictionaries(TEXT, FINITE_JSON) | SHALLOW_OBJECT,
            NOT_NONE.filter(lambda v: not isinstance(v, dict)) | DEEP_OBJECT,
        ),
    }


@st.composite
def objects(
    draw: st.DrawFn, fields: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]
) -> tuple[dict[str, Any], bool]:
    """A request object with a few fields made invalid (or none); returns (object, valid)."""
    # Mostly one wrong field at a time, so each refusal is reached on its own.
    n_bad = draw(st.sampled_from([0, 0, 0, 1, 1, 1, 1, 1, 2, 2]))
    names = st.sampled_from([*fields, "<unknown>"])
    bad = draw(st.lists(names, min_size=n_bad, max_size=n_bad, unique=True))
    obj: dict[str, Any] = {}
    for name, (good, wrong) in fields.items():
        value = draw(wrong if name in bad else good)
        if value is not ABSENT:
            obj[name] = value
    if "<unknown>" in bad:
        key = draw(TEXT.filter(lambda k: k not in fields))
        obj[key] = draw(ANY_JSON)
    return obj, not bad


VALID_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.rlops+json",
    ]
)
WRONG_TYPES = st.one_of(
    st.sampled_from(
        [None, "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)
METHODS = st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "POST"])


@st.composite
def encodings(draw: st.DrawFn, value: Any) -> tuple[bytes, bool]:
    """The body's bytes; True when they are exactly the JSON of ``value``."""
    raw = encode(value)
    how = draw(st.sampled_from(["json"] * 6 + ["truncate", "insert", "random", "utf16"]))
    if how == "json":
        return raw, True
    if how == "truncate":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))], False
    if how == "insert":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:], False
    if how == "utf16":
        return raw.decode().encode("utf-16"), False
    return draw(st.binary(max_size=200)), False


@st.composite
def envelope(
    draw: st.DrawFn, path: str, value: Any, valid: bool, rows: tuple[dict[str, Any], ...] = ()
) -> Case:
    """Wrap a body in bytes, a content type, a method and a path (mostly the right ones)."""
    body, exact = draw(encodings(value))
    right = draw(st.integers(0, 9)) < 9  # mostly a well-formed request around the body
    content_type = draw(VALID_TYPES if right else WRONG_TYPES)
    method, where = "POST", path
    if draw(st.integers(0, 9)) == 0:
        method = draw(METHODS)
        where = draw(st.sampled_from([path, path + "/", path + "?x=1", path.upper(), "/v1/nope"]))
    ok = valid and exact and right and (method, where) == ("POST", path)
    return Case(method, where, content_type, body, valid=ok, rows=rows if ok else ())


@st.composite
def act_cases(draw: st.DrawFn, spec: InputSpec) -> Case:
    fields = _fields(spec)
    kind = draw(st.sampled_from(["row", "row", "batch", "junk"]))
    if kind == "row":
        obj, valid = draw(objects(fields))
        return draw(envelope("/v1/act", obj, valid, (obj,)))
    if kind == "batch":
        rows = draw(st.lists(objects(fields), min_size=1, max_size=4))
        valid = all(ok for _, ok in rows)
        body: dict[str, Any] = {"requests": [obj for obj, _ in rows]}
        extra = draw(st.sampled_from(["none", "none", "none", "empty", "key", "not_list", "many"]))
        if extra == "empty":
            body["requests"] = []
        elif extra == "key":
            body["unit_id"] = "u"
        elif extra == "not_list":
            body["requests"] = draw(NOT_NONE.filter(lambda v: not isinstance(v, list)))
        elif extra == "many":  # one more row than a body may hold
            body["requests"] = [{"observation": [0.0] * math.prod(spec.obs_shape), "unit_id": "u"}]
            body["requests"] *= 1025
        valid = valid and extra == "none"
        return draw(envelope("/v1/act", body, valid, tuple(obj for obj, _ in rows)))
    return draw(envelope("/v1/act", draw(ANY_JSON), False))


@st.composite
def feedback_cases(draw: st.DrawFn, known_ids: list[str]) -> Case:
    fields = {
        "decision_id": (st.sampled_from(known_ids), st.just(ABSENT) | IDS | BAD_IDS),
        "reward": (
            st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**64 - 1),
            st.just(ABSENT) | NON_FINITE | st.booleans() | TEXT | st.none() | st.lists(NUMBERS),
        ),
        "metrics": (
            st.just(ABSENT) | st.none() | st.dictionaries(TEXT, FINITE_JSON) | SHALLOW_OBJECT,
            NOT_NONE.filter(lambda v: not isinstance(v, dict)) | DEEP_OBJECT,
        ),
        "reward_version": (st.just(ABSENT) | st.none() | IDS, BAD_IDS),
    }
    if draw(st.integers(0, 9)) == 0:
        return draw(envelope("/v1/feedback", draw(ANY_JSON), False))
    obj, valid = draw(objects(fields))
    return draw(envelope("/v1/feedback", obj, valid))


# -- the fuzz runs -------------------------------------------------------------------------


def test_fuzzed_act_requests_never_5xx_and_the_server_keeps_serving(target: Target) -> None:
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(case=act_cases(target.spec))
    def one(case: Case) -> None:
        status, kind, payload = send(target.port, case)
        statuses[status] += 1
        check_answer(target, case, status, kind, payload)
        if status == 200:
            assert_logged(target)

    one()
    # The mixture reaches the policy and each kind of refusal, not just one of them.
    assert {200, 400, 415, 422} <= set(statuses), statuses
    assert_still_serving(target)


def test_fuzzed_feedback_never_5xx_and_the_server_keeps_serving(cartpole: Target) -> None:
    for i in range(3):
        body = {"observation": CARTPOLE_OBS, "unit_id": f"fb{i}"}
        status, _, d = http_request(cartpole.port, "POST", "/v1/act", body)
        assert status == 200, d
        cartpole.answered.append(d["decision_id"])
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(case=feedback_cases(cartpole.answered[-3:]))
    def one(case: Case) -> None:
        status, kind, payload = send(cartpole.port, case)
        statuses[status] += 1
        check_answer(cartpole, case, status, kind, payload)
        if status == 200:
            assert json.loads(payload)["status"] == "accepted"
            assert_logged(cartpole)

    one()
    assert {200, 400, 404, 415, 422} <= set(statuses), statuses
    assert_still_serving(cartpole)


@st.composite
def route_cases(draw: st.DrawFn, paths: list[str]) -> Case:
    """Any documented path (templates filled with junk), any method, junk bodies and headers."""
    path = re.sub(
        r"\{[^}]*\}",
        lambda _: draw(st.text("abcdefghijklmnopqrstuvwxyz_-.%0", min_size=1, max_size=12)),
        draw(st.sampled_from(paths)),
    )
    return Case(
        draw(METHODS),
        path,
        draw(VALID_TYPES | WRONG_TYPES),
        draw(st.none() | ANY_JSON.map(encode) | st.binary(max_size=100)),
        headers=draw(
            st.sampled_from([(), (("Authorization", "Bearer wrong"),), (("Authorization", ""),)])
        ),
    )


def test_fuzzed_documented_routes_never_5xx(cartpole: Target) -> None:
    """Every path of the served OpenAPI document, whatever is sent to it."""
    status, _, doc = http_request(cartpole.port, "GET", "/openapi.json")
    assert status == 200 and doc["paths"]
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(case=route_cases(sorted(doc["paths"])))
    def one(case: Case) -> None:
        status, kind, payload = send(cartpole.port, case)
        statuses[status] += 1
        check_answer(cartpole, case, status, kind, payload)

    one()
    assert {200, 405} <= set(statuses), statuses
    assert_still_serving(cartpole)


# -- malformed HTTP framing ------------------------------------------------------------------

_ACT = json.dumps({"observation": CARTPOLE_OBS, "unit_id": "u"}).encode()
_HEAD = b"POST /v1/act HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
FRAMING = {
    "garbage": b"GARBAGE\r\n\r\n",
    "bad_method": b"F\x01O /v1/act HTTP/1.1\r\nHost: t\r\n\r\n",
    "nul_in_header": b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "negative_length": _HEAD + b"Content-Length: -1\r\n\r\n",
    "text_length": _HEAD + b"Content-Length: abc\r\n\r\n",
    "length_and_chunked": _HEAD
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad_chunk": _HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunked": _HEAD
    + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(_ACT), _ACT),
    "http_1_0": b"POST /v1/act HTTP/1.0\r\nContent-Type: application/json\r\n"
    + b"Content-Length: %d\r\n\r\n%s" % (len(_ACT), _ACT),
    "dot_segments": b"GET /%ff%00/../v1/act HTTP/1.1\r\nHost: t\r\n\r\n",
}


def _raw_exchange(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data`` and read until the server closes or goes quiet for 2 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and not half_close:
                    head, _, rest = out.partition(b"\r\n\r\n")
                    m = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
                    if m and len(rest) >= int(m.group(1)):
                        break
        except TimeoutError:
            pass
    return out


@pytest.mark.parametrize("data", FRAMING.values(), ids=FRAMING.keys())
def test_malformed_http_gets_4xx_and_the_server_keeps_serving(
    cartpole: Target, data: bytes
) -> None:
    answer = _raw_exchange(cartpole.port, data)
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert m, answer[:200]
    assert int(m.group(1)) < 500, answer[:300]
    # uvicorn refuses unparseable HTTP itself (400, text/plain) before the app sees it;
    # everything the app answers is JSON.
    status, _, d = http_request(cartpole.port, "POST", "/v1/act", cartpole.valid_act())
    assert status == 200, d


@pytest.mark.parametrize(
    "path",
    [
        "/v1/act",
        "/v1/feedback",
    ],
)
def test_client_disconnect_mid_body_is_not_counted_as_5xx(
    artifacts: dict[str, Path], tmp_path: Path, path: str
) -> None:
    """A client that hangs up mid-body is no server error: no 5xx in the metrics."""
    with _target(artifacts["cartpole"], tmp_path) as server:
        head = _HEAD.replace(b"/v1/act", path.encode())
        truncated = head + b"Content-Length: 100\r\n\r\n" + _ACT[:10]
        assert _raw_exchange(server.port, truncated, half_close=True) == b""
        # The server sees the disconnect within milliseconds; give it a second.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            metrics = parse_prometheus(http_request(server.port, "GET", "/metrics")[2])
            fives = [
                dict(labels)
                for name, labels in metrics
                if name == "rlops_serving_requests_total" and dict(labels)["status"][0] == "5"
            ]
            assert not fives, fives
            time.sleep(0.05)
        status, _, d = http_request(
            server.port, "POST", "/v1/act", {"observation": CARTPOLE_OBS, "unit_id": "u"}
        )
        assert status == 200, d


# -- what the fuzz found: values the decision log cannot store ----------------------------


def test_values_the_log_cannot_store_are_refused_up_front(cartpole: Target) -> None:
    """Served, a step beyond SQLite's INTEGER or an object nested deeper than orjson
    writes stopped the log writer thread for good: every later 200 went unlogged."""
    status, _, d = http_request(cartpole.port, "POST", "/v1/act", cartpole.valid_act())
    assert status == 200, d
    row = {"observation": CARTPOLE_OBS, "unit_id": "u"}
    cases = [
        ("/v1/act", {**row, "step": 2**63}, "step"),
        ("/v1/act", {**row, "step": 2**64 - 1}, "step"),
        ("/v1/act", {**row, "context": deep("dict", 300)}, "context"),
        (
            "/v1/act",
            {"requests": [row, {**row, "context": deep("dict", 255)}]},
            "requests[1].context",
        ),
        (
            "/v1/feedback",
            {"decision_id": d["decision_id"], "reward": 1, "metrics": deep("dict", 300)},
            "metrics",
        ),
    ]
    for path, body, where in cases:
        case = Case("POST", path, "application/json", encode(body))
        status, kind, payload = send(cartpole.port, case)
        error = check_error(status, kind, payload)
        assert (status, error["code"], error["field"]) == (422, "invalid_type", where), payload
    # The limits themselves are served and logged.
    for path, body in [
        ("/v1/act", {**row, "step": 2**63 - 1, "context": deep("dict", 64)}),
        (
            "/v1/feedback",
            {"decision_id": d["decision_id"], "reward": 1, "metrics": deep("dict", 64)},
        ),
    ]:
        status, _, payload = send(
            cartpole.port, Case("POST", path, "application/json", encode(body))
        )
        assert status == 200, payload
        assert_logged(cartpole)
    assert_still_serving(cartpole)
