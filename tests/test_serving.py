"""Serving: a real uvicorn server on 127.0.0.1 answering from small trained artifacts.

Tiers: known-answer unit tests of the served distribution and the decision
log; in-process servers (uvicorn in a background thread, ephemeral port) for
the API contract, micro-batching under load and graceful stop; one
``rlops serve`` subprocess stopped with SIGTERM mid-load. The servers and the
HTTP client live in ``serving_helpers.py``, the trained artifacts in
``conftest.py``; fuzzing is in ``test_serving_fuzz.py``, SIGKILL in
``test_serving_crash.py``.
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import rlops
from rlops.artifacts import Policy
from rlops.core.errors import ConfigError
from rlops.serving import ServeConfig, create_app
from rlops.serving.behaviour import sample_rows, served_distribution
from rlops.serving.decision_log import (
    DecisionLog,
    count_decisions,
    integrity_check,
    iter_decisions,
)
from serving_helpers import (
    CARTPOLE_OBS,
    Server,
    config_for,
    load_clients,
    parse_prometheus,
    request,
    start_serve,
)


@pytest.fixture(scope="module")
def cartpole(
    artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("cartpole-server")
    with Server(config_for(artifacts["cartpole"], tmp, seed=0)) as server:
        yield server


# -- the served distribution: known answers ----------------------------------------


def test_served_distribution_known_answers() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.0, 0.8]])
    mask = np.array([[True, True, True], [True, False, True]])
    d, greedy, capped = served_distribution(probs, mask, "sample", 0.0, 1.0)
    np.testing.assert_allclose(d, probs)
    assert greedy.tolist() == [0, 2] and not capped.any()
    # epsilon-greedy: 1 - eps + eps/|E| on the greedy action, eps/|E| elsewhere, 0 if masked.
    d, _, _ = served_distribution(probs, mask, "greedy", 0.3, 1.0)
    np.testing.assert_allclose(d, [[0.8, 0.1, 0.1], [0.15, 0.0, 0.85]])
    # cap 0.2 on 40% off-greedy mass: shrink by 0.5 towards the greedy action.
    d, _, capped = served_distribution(probs, mask, "sample", 0.0, 0.2)
    np.testing.assert_allclose(d, [[0.8, 0.15, 0.05], [0.2, 0.0, 0.8]])
    assert capped.tolist() == [True, False]
    # Sampling never returns a zero-probability action, and matches the distribution.
    rng = np.random.default_rng(0)
    dist = np.tile([0.0, 0.25, 0.0, 0.75], (40000, 1))
    actions = sample_rows(dist, rng)
    assert set(np.unique(actions).tolist()) == {1, 3}
    assert abs((actions == 3).mean() - 0.75) < 0.01


def test_serve_config_validates() -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        ServeConfig(artifact="a", epsilon=0.3, epsilon_cap=0.1)
    with pytest.raises(ConfigError, match="port"):
        ServeConfig(artifact="a", port=70000)
    with pytest.raises(ConfigError, match="mode"):
        ServeConfig(artifact="a", mode="random")


# -- the decision log alone ----------------------------------------------------------


def test_decision_log_batches_joins_feedback_and_drains_on_close(tmp_path: Path) -> None:
    from rlops.core.decisions import DecisionRecord

    path = tmp_path / "log.sqlite"
    log = DecisionLog(path, max_queue=10_000, batch_size=64)
    log.start()
    records = [
        DecisionRecord(
            decision_id=f"d{i}",
            timestamp=float(i),
            unit_id="u",
            step=i,
            observation=[0.5, float(i)],
            action=i % 2,
            propensity=0.5,
            policy_version="sha256:x",
            arm="production",
            action_distribution=[0.5, 0.5],
        )
        for i in range(1000)
    ]
    for i in range(0, 1000, 10):
        assert log.submit([(r, {"i": r.step}) for r in records[i : i + 10]])
    assert log.submit_feedback("d7", reward=2.5, outcome={"clicks": 1}, reward_version="v1")
    assert log.contains("d999") and not log.contains("nope")
    log.close()
    assert integrity_check(path) == "ok"
    assert count_decisions(path) == 1000
    got = {r.decision_id: r for r in iter_decisions(path)}
    assert got["d7"].reward == 2.5 and got["d7"].outcome == {"clicks": 1}
    assert got["d3"] == records[3]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not log.submit(records[:1])  # closed: refused, never silently dropped


def test_decision_log_writer_survives_an_entry_sqlite_cannot_store(tmp_path: Path) -> None:
    from rlops.core.decisions import DecisionRecord

    def record(i: int, step: int) -> DecisionRecord:
        return DecisionRecord(
            decision_id=f"d{i}",
            timestamp=0.0,
            unit_id="u",
            step=step,
            observation=[0.0],
            action=0,
            propensity=1.0,
            policy_version="v",
            arm="production",
        )

    path = tmp_path / "log.sqlite"
    log = DecisionLog(path, batch_size=64)
    log.start()
    # One value SQLite cannot store (an int beyond 64 bits) in the middle of a batch.
    batch = [record(0, 1), record(1, 2**64), record(2, 3)]
    assert log.submit([(r, None) for r in batch])
    assert log.submit_feedback("d2", reward=1.0)
    assert log.flush(timeout=10)
    assert log.running  # the writer is alive and healthy
    stats = log.stats()
    assert (stats.written, stats.unwritable, stats.feedback) == (2, 1, 1)
    assert log.submit([(record(3, 4), None)])
    log.close()
    assert [r.decision_id for r in iter_decisions(path)] == ["d0", "d2", "d3"]


# -- the API contract ----------------------------------------------------------------


def test_act_single_and_batch(cartpole: Server, artifacts: dict[str, Path]) -> None:
    version = rlops.load_policy(artifacts["cartpole"]).version
    status, _, d = request(
        cartpole.port, "POST", "/v1/act", {"observation": CARTPOLE_OBS, "unit_id": "u1"}
    )
    assert status == 200, d
    assert d["arm"] == "production" and d["policy_version"] == version
    assert d["action"] in (0, 1)
    assert d["propensity"] == d["action_distribution"][d["action"]]
    assert math.isclose(sum(d["action_distribution"]), 1.0, rel_tol=1e-9)

    rows = [{"observation": CARTPOLE_OBS, "unit_id": f"u{i}", "step": i} for i in range(5)]
    status, _, body = request(cartpole.port, "POST", "/v1/act", {"requests": rows})
    assert status == 200, body
    assert len(body["decisions"]) == 5
    assert len({x["decision_id"] for x in body["decisions"]} | {d["decision_id"]}) == 6
    for x in body["decisions"]:
        assert x["propensity"] == x["action_distribution"][x["action"]]


def test_sample_mode_serves_the_policy_distribution(
    cartpole: Server, artifacts: dict[str, Path]
) -> None:
    policy = rlops.load_policy(artifacts["cartpole"])
    obs = np.array([CARTPOLE_OBS, [0.1, 0.5, -0.1, -0.8]], dtype=np.float32)
    rows = [{"observation": o.tolist(), "unit_id": "u"} for o in obs]
    _, _, body = request(cartpole.port, "POST", "/v1/act", {"requests": rows})
    served = np.array([x["action_distribution"] for x in body["decisions"]])
    np.testing.assert_allclose(served, policy.action_distribution(obs), rtol=1e-6)


def test_masks_are_never_violated(artifacts: dict[str, Path], tmp_path: Path) -> None:
    policy = rlops.load_policy(artifacts["masked"])
    rng = np.random.default_rng(0)
    for mode, epsilon in (("sample", 0.0), ("greedy", 0.2)):
        cfg = config_for(artifacts["masked"], tmp_path / mode, mode=mode, epsilon=epsilon, seed=1)
        with Server(cfg) as server:
            masks = rng.random((400, 4)) < 0.4
            masks[np.arange(400), rng.integers(0, 4, 400)] = True
            obs = masks.astype(np.float32)
            decisions = []
            for start in range(0, 400, 50):  # batch bodies ...
                rows = [
                    {"observation": o.tolist(), "unit_id": "u", "action_mask": m.tolist()}
                    for o, m in zip(obs[start : start + 50], masks[start : start + 50])
                ]
                status, _, body = request(server.port, "POST", "/v1/act", {"requests": rows})
                assert status == 200, body
                decisions += body["decisions"]
            for o, m in zip(obs[:100], masks[:100]):  # ... and single requests
                payload = {"observation": o.tolist(), "unit_id": "u", "action_mask": m.tolist()}
                status, _, d = request(server.port, "POST", "/v1/act", payload)
                assert status == 200, d
                decisions.append(d)
            all_masks = np.concatenate([masks, masks[:100]])
            all_obs = np.concatenate([obs, obs[:100]])
            dist = np.array([d["action_distribution"] for d in decisions])
            actions = np.array([d["action"] for d in decisions])
            assert all_masks[np.arange(len(actions)), actions].all()
            assert (dist[~all_masks] == 0).all()
            props = np.array([d["propensity"] for d in decisions])
            assert (props == dist[np.arange(len(actions)), actions]).all()
            pi = policy.action_distribution(all_obs, all_masks)
            if mode == "sample":
                np.testing.assert_allclose(dist, pi, rtol=1e-5, atol=1e-7)
            else:  # epsilon-greedy over the eligible actions
                k = all_masks.sum(axis=1)
                greedy = np.where(all_masks, pi, -1).argmax(axis=1)
                np.testing.assert_allclose(dist[np.arange(len(k)), greedy], 0.8 + 0.2 / k)
        logged = list(iter_decisions(cfg.decision_log))
        assert len(logged) == 500
        assert all(r.action_mask[r.action] for r in logged)


def test_continuous_actions_are_within_bounds(artifacts: dict[str, Path], tmp_path: Path) -> None:
    policy = rlops.load_policy(artifacts["pendulum"])
    low, high = policy.action_space.low, policy.action_space.high
    obs = [1.0, 0.0, 50.0]  # far outside training data: unclipped samples leave the bounds
    for mode in ("sample", "greedy"):
        with Server(config_for(artifacts["pendulum"], tmp_path / mode, mode=mode)) as server:
            rows = [{"observation": obs, "unit_id": "u"}] * 200
            status, _, body = request(server.port, "POST", "/v1/act", {"requests": rows})
            assert status == 200, body
            for d in body["decisions"]:
                a = np.array(d["action"])
                assert a.shape == low.shape and (a >= low).all() and (a <= high).all()
                assert "action_distribution" not in d
                if mode == "greedy":
                    assert d["propensity"] == 1.0 and d["logp"] == 0.0
                else:
                    assert math.isclose(d["propensity"], math.exp(d["logp"]), rel_tol=1e-9)
            status, _, err = request(
                server.port,
                "POST",
                "/v1/act",
                {"observation": obs, "unit_id": "u", "action_mask": [True]},
            )
            assert status == 422 and err["error"]["code"] == "invalid_mask"


BAD_ACT = [
    ("malformed", b'{"observation": [1, 2', 400, "malformed_json", None),
    (
        "nan_literal",
        b'{"observation": [NaN, 0, 0, 0], "unit_id": "u"}',
        400,
        "malformed_json",
        None,
    ),
    ("not_object", [1, 2, 3], 422, "invalid_type", "body"),
    ("missing_obs", {"unit_id": "u"}, 422, "missing_field", "observation"),
    ("missing_unit", {"observation": CARTPOLE_OBS}, 422, "missing_field", "unit_id"),
    ("short_obs", {"observation": [0.1], "unit_id": "u"}, 422, "invalid_shape", "observation"),
    (
        "ragged_obs",
        {"observation": [[0.1, 0.2], [0.3]], "unit_id": "u"},
        422,
        "invalid_shape",
        "observation",
    ),
    (
        "string_obs",
        {"observation": ["a", 0, 0, 0], "unit_id": "u"},
        422,
        "invalid_dtype",
        "observation",
    ),
    (
        "bool_obs",
        {"observation": [True, 0, 0, 0], "unit_id": "u"},
        422,
        "invalid_dtype",
        "observation",
    ),
    (
        "overflow_obs",
        {"observation": [1e39, 0, 0, 0], "unit_id": "u"},
        422,
        "non_finite",
        "observation",
    ),
    (
        "mask_length",
        {"observation": CARTPOLE_OBS, "unit_id": "u", "action_mask": [True]},
        422,
        "invalid_mask",
        "action_mask",
    ),
    (
        "mask_dtype",
        {"observation": CARTPOLE_OBS, "unit_id": "u", "action_mask": [1, 0]},
        422,
        "invalid_mask",
        "action_mask",
    ),
    (
        "mask_empty",
        {"observation": CARTPOLE_OBS, "unit_id": "u", "action_mask": [False, False]},
        422,
        "no_eligible_action",
        "action_mask",
    ),
    (
        "unknown_field",
        {"observation": CARTPOLE_OBS, "unit_id": "u", "obs": 1},
        422,
        "unknown_field",
        "obs",
    ),
    (
        "bad_step",
        {"observation": CARTPOLE_OBS, "unit_id": "u", "step": -1},
        422,
        "invalid_type",
        "step",
    ),
    ("empty_batch", {"requests": []}, 422, "invalid_type", "requests"),
    (
        "deep_nesting",
        b'{"unit_id": "u", "observation": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        422,
        "invalid_shape",
        "observation",
    ),
    (
        "too_deep_json",
        b'{"observation": ' + b"[" * 1100 + b"]" * 1100 + b"}",
        400,
        "malformed_json",
        None,
    ),
    (
        "too_many_rows",
        {"requests": [{"observation": CARTPOLE_OBS, "unit_id": "u"}] * 1025},
        422,
        "too_many_rows",
        "requests",
    ),
    (
        "bad_row_in_batch",
        {"requests": [{"observation": CARTPOLE_OBS, "unit_id": "u"}, {"observation": [0.0]}]},
        422,
        "invalid_shape",
        "requests[1].observation",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [case[1:] for case in BAD_ACT],
    ids=[case[0] for case in BAD_ACT],
)
def test_bad_act_requests_get_4xx_and_the_server_keeps_serving(
    cartpole: Server, body: Any, status: int, code: str, field: str | None
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, _, err = request(cartpole.port, "POST", "/v1/act", raw=raw)
    assert got == status, err
    assert err["error"]["code"] == code and err["error"]["field"] == field
    assert err["error"]["message"]
    ok, _, d = request(
        cartpole.port, "POST", "/v1/act", {"observation": CARTPOLE_OBS, "unit_id": "u"}
    )
    assert ok == 200, d


def test_body_limit_413_and_content_type_415(artifacts: dict[str, Path], tmp_path: Path) -> None:
    with Server(config_for(artifacts["cartpole"], tmp_path, max_body_bytes=4096)) as server:
        big = {"requests": [{"observation": CARTPOLE_OBS, "unit_id": "u" * 200}] * 40}
        status, _, err = request(server.port, "POST", "/v1/act", big)
        assert status == 413 and err["error"]["code"] == "body_too_large"
        for kind in ("text/plain", "application/x-www-form-urlencoded", ""):
            status, _, err = request(
                server.port, "POST", "/v1/act", {"observation": CARTPOLE_OBS}, content_type=kind
            )
            assert status == 415 and err["error"]["code"] == "unsupported_media_type"
        status, _, _ = request(
            server.port,
            "POST",
            "/v1/act",
            {"observation": CARTPOLE_OBS, "unit_id": "u"},
            content_type="application/json; charset=utf-8",
        )
        assert status == 200
        status, _, err = request(server.port, "GET", "/v1/act")
        assert status == 405 and err["error"]["code"] == "method_not_allowed"
        status, _, err = request(server.port, "GET", "/v2/act")
        assert status == 404 and err["error"]["code"] == "not_found"


def test_feedback_joins_the_logged_decision(cartpole: Server) -> None:
    _, _, d = request(
        cartpole.port,
        "POST",
        "/v1/act",
        {
            "observation": CARTPOLE_OBS,
            "unit_id": "fb",
            "episode_id": "e1",
            "step": 3,
            "context": {"page": "home"},
        },
    )
    status, _, body = request(
        cartpole.port,
        "POST",
        "/v1/feedback",
        {
            "decision_id": d["decision_id"],
            "reward": 1.5,
            "metrics": {"clicks": 2},
            "reward_version": "r1",
        },
    )
    assert status == 200 and body == {"decision_id": d["decision_id"], "status": "accepted"}
    status, _, err = request(
        cartpole.port, "POST", "/v1/feedback", {"decision_id": "nope", "reward": 1}
    )
    assert status == 404 and err["error"] == {
        "code": "unknown_decision",
        "message": "no logged decision has decision_id 'nope'",
        "field": "decision_id",
    }
    status, _, err = request(
        cartpole.port, "POST", "/v1/feedback", {"decision_id": d["decision_id"], "reward": "high"}
    )
    assert status == 422 and err["error"]["field"] == "reward"
    assert cartpole.service.log.flush(timeout=10)
    (record,) = [
        r for r in iter_decisions(cartpole.config.decision_log) if r.decision_id == d["decision_id"]
    ]
    assert (record.reward, record.outcome, record.reward_version) == (1.5, {"clicks": 2}, "r1")
    assert (record.unit_id, record.episode_id, record.step) == ("fb", "e1", 3)
    assert record.action == d["action"] and record.propensity == d["propensity"]
    assert record.action_distribution == d["action_distribution"]
    with sqlite3.connect(cartpole.config.decision_log) as conn:
        (context,) = conn.execute(
            "SELECT context FROM decisions WHERE decision_id = ?", (d["decision_id"],)
        ).fetchone()
    assert json.loads(context) == {"page": "home"}


def test_health_ready_policies_and_openapi(cartpole: Server, artifacts: dict[str, Path]) -> None:
    assert request(cartpole.port, "GET", "/healthz")[:1] == (200,)
    status, _, ready = request(cartpole.port, "GET", "/readyz")
    assert status == 200 and ready["status"] == "ready"
    _, _, policies = request(cartpole.port, "GET", "/v1/policies")
    (entry,) = policies["policies"]
    assert entry["version"] == rlops.load_policy(artifacts["cartpole"]).version
    assert entry["arm"] == "production" and entry["discrete"] is True
    status, headers, doc = request(cartpole.port, "GET", "/openapi.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/act", "/v1/feedback", "/v1/policies", "/healthz", "/readyz", "/metrics"):
        assert path in doc["paths"]
    assert set(doc["paths"]["/v1/act"]["post"]["responses"]) >= {
        "200",
        "400",
        "413",
        "415",
        "422",
        "503",
    }


class FlakyPolicy:
    """A real policy whose forward raises or stalls on demand."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self.fail = False
        self.delay = 0.0
        for name in (
            "version",
            "discrete",
            "action_space",
            "observation_space",
            "manifest",
            "path",
        ):
            setattr(self, name, getattr(policy, name))

    def action_distribution(self, obs: Any, mask: Any = None) -> np.ndarray:
        if self.fail:
            raise RuntimeError("injected policy failure")
        if self.delay:
            time.sleep(self.delay)
        return self._policy.action_distribution(obs, mask)


def test_fallback_on_policy_error_and_timeout(artifacts: dict[str, Path], tmp_path: Path) -> None:
    policy = FlakyPolicy(rlops.load_policy(artifacts["cartpole"]))
    cfg = config_for(artifacts["cartpole"], tmp_path, fallback_action=1, request_timeout_ms=100)
    body = {"observation": CARTPOLE_OBS, "unit_id": "u"}
    with Server(cfg, policy=policy) as server:
        assert request(server.port, "POST", "/v1/act", body)[2]["arm"] == "production"
        policy.fail = True
        status, _, d = request(server.port, "POST", "/v1/act", body)
        assert status == 200 and d["arm"] == "fallback"
        assert (d["action"], d["propensity"], d["action_distribution"]) == (1, 1.0, [0.0, 1.0])
        # A masked-out fallback action becomes the lowest eligible one.
        status, _, d = request(
            server.port, "POST", "/v1/act", {**body, "action_mask": [True, False]}
        )
        assert status == 200 and (d["arm"], d["action"]) == ("fallback", 0)
        policy.fail, policy.delay = False, 1.0
        start = time.monotonic()
        status, _, d = request(server.port, "POST", "/v1/act", body)
        assert status == 200 and d["arm"] == "fallback" and time.monotonic() - start < 0.8
        policy.delay = 0.0
        time.sleep(1.0)  # the stalled forward finishes; the next request is the policy's again
        assert request(server.port, "POST", "/v1/act", body)[2]["arm"] == "production"
        metrics = parse_prometheus(request(server.port, "GET", "/metrics")[2])
        trig = "rlops_serving_safety_triggers_total"
        assert metrics[(trig, frozenset({("kind", "policy_error")}))] == 2
        assert metrics[(trig, frozenset({("kind", "timeout")}))] == 1
        server.stop()
    arms = [r.arm for r in iter_decisions(cfg.decision_log)]
    assert arms == ["production", "fallback", "fallback", "fallback", "production"]


def test_no_fallback_configured_answers_503(artifacts: dict[str, Path], tmp_path: Path) -> None:
    policy = FlakyPolicy(rlops.load_policy(artifacts["cartpole"]))
    policy.fail = True
    with Server(config_for(artifacts["cartpole"], tmp_path), policy=policy) as server:
        status, _, err = request(
            server.port, "POST", "/v1/act", {"observation": CARTPOLE_OBS, "unit_id": "u"}
        )
        assert status == 503 and err["error"]["code"] == "policy_unavailable"
        server.stop()
    assert count_decisions(tmp_path / "decisions.sqlite") == 0


def test_full_decision_log_answers_503_retry_after(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = config_for(artifacts["cartpole"], tmp_path, log_queue_size=8)
    body = {"observation": CARTPOLE_OBS, "unit_id": "u"}
    codes = []
    with Server(cfg) as server:
        blocker = sqlite3.connect(cfg.decision_log, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # the writer cannot commit: its queue fills up
        try:
            for _ in range(12):
                status, headers, d = request(server.port, "POST", "/v1/act", body)
                codes.append(status)
                if status == 503:
                    assert headers["retry-after"] == "1"
                    assert d["error"]["code"] == "log_backpressure"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert codes.count(503) >= 4 and codes[:8] == [200] * 8
        assert server.service.log.flush(timeout=15)
        status, _, _ = request(server.port, "POST", "/v1/act", body)
        codes.append(status)
        assert status == 200
        server.stop()
    assert count_decisions(cfg.decision_log) == codes.count(200)


def test_concurrent_load_batches_and_graceful_stop_logs_every_200(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    # 32 client threads share the server's process (and GIL) here: on a loaded CI
    # machine a forward can wait past the 250 ms default deadline and answer 503
    # policy_timeout (seen once). Deadlines are tested elsewhere; this is about
    # batching and logging, so give requests room.
    cfg = config_for(artifacts["cartpole"], tmp_path, max_batch_size=32, request_timeout_ms=10_000)
    with Server(cfg) as server:
        ok, failures = load_clients(server.port, threads=32, per_thread=50)
        assert failures == [] and len(ok) == 1600 and len(set(ok)) == 1600
        metrics = parse_prometheus(request(server.port, "GET", "/metrics")[2])
        key = frozenset({("route", "/v1/act"), ("arm", "production"), ("status", "200")})
        assert metrics[("rlops_serving_requests_total", key)] == 1600
        assert (
            metrics[("rlops_serving_decisions_total", frozenset({("arm", "production")}))] == 1600
        )
        assert (
            metrics[("rlops_serving_latency_seconds_count", frozenset({("route", "/v1/act")}))]
            == 1600
        )
        batches = metrics[("rlops_serving_batch_rows_count", frozenset())]
        assert metrics[("rlops_serving_batch_rows_sum", frozenset())] == 1600
        assert batches < 1600  # concurrent requests shared forwards
        assert metrics[("rlops_serving_decision_log_queue_depth", frozenset())] >= 0
        server.stop()  # lifespan shutdown drains the log
    assert integrity_check(cfg.decision_log) == "ok"
    assert count_decisions(cfg.decision_log) == 1600
    assert {r.decision_id for r in iter_decisions(cfg.decision_log)} == set(ok)


def test_rlops_serve_sigterm_mid_load_drains_the_log(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "serve.sqlite"
    proc, port = start_serve(
        [
            sys.executable,
            "-m",
            "rlops",
            "serve",
            str(artifacts["cartpole"]),
            "--port",
            "0",
            "--decision-log",
            str(db),
        ]
    )
    try:
        stop = threading.Event()
        ok: list[str] = []
        loader = threading.Thread(target=load_clients, args=(port, 16, 10_000, stop, ok))
        loader.start()
        deadline = time.monotonic() + 30
        while len(ok) < 300:  # SIGTERM while 16 clients keep sending
            assert time.monotonic() < deadline and loader.is_alive(), len(ok)
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        stop.set()
        loader.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.returncode  # a drained stop is a clean exit
    assert integrity_check(db) == "ok"
    logged = {r.decision_id for r in iter_decisions(db)}
    assert set(ok) <= logged
    assert len(logged) == len(ok)


def test_cli_serve_bad_artifact_exits_2(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    cases = [
        ["serve", str(tmp_path / "missing")],
        ["serve", str(artifacts["cartpole"]), "--fallback-action", "7", "--port", "0"],
        ["serve", str(artifacts["cartpole"]), "--epsilon", "0.5", "--epsilon-cap", "0.1"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rlops", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for args in cases
    ]
    for proc, needle in zip(procs, ("not a policy artifact", "fallback_action", "epsilon")):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rlops: error:") and needle in lines[0], err
        assert out == ""


def test_create_app_rejects_config_that_does_not_fit_the_policy(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = config_for(artifacts["pendulum"], tmp_path, epsilon=0.1)
    with pytest.raises(ConfigError, match="discrete"):
        create_app(cfg)
    with pytest.raises(ConfigError, match="fallback_action"):
        create_app(replace(cfg, epsilon=0.0, fallback_action=(0.0, 1.0)))
    bad_log = tmp_path / "not-a-log.sqlite"
    with sqlite3.connect(bad_log) as conn:
        conn.execute("CREATE TABLE other (x)")
    with pytest.raises(ConfigError, match="not an rlops decision log"):
        create_app(config_for(artifacts["cartpole"], tmp_path, decision_log=str(bad_log)))
