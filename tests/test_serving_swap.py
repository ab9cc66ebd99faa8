"""Live policy swaps (``_Service.swap_policy``) on a real server.

uvicorn runs on 127.0.0.1 in a thread; the swaps run on its event loop
(``asyncio.run_coroutine_threadsafe``), as a registry watcher task would.
The decision log, admin log and state file are real files that the tests
read back and restart from.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from rlops.artifacts import Policy, load_policy
from rlops.core.errors import ConfigError, RlopsError
from rlops.serving import create_app, iter_decisions
from rlops.serving.admin import AdminLog
from rlops.serving.guardrail import GuardrailConfig
from rlops.serving.routing import assign_arm
from serving_helpers import (
    ADMIN_TOKEN,
    CARTPOLE_OBS,
    Server,
    SlowPolicy,
    act,
    admin,
    canary_config,
    config_for,
    parse_prometheus,
    request,
)

TOKEN = ADMIN_TOKEN

# ---------------------------------------------------------------- helpers


def swap(
    server: Server, arm: str, policy: Any, *, actor: str = "registry", reason: str = "alias moved"
) -> dict[str, Any]:
    """``service.swap_policy(...)`` on the server's event loop, from this thread."""
    service = server.service
    call = service.swap_policy(arm, policy, actor=actor, reason=reason)
    result: dict[str, Any] = asyncio.run_coroutine_threadsafe(call, service.loop).result(30)
    return result


def relabelled(policy: Policy, version: str) -> Policy:
    """The same network under another version (a distinct artifact, as far as serving knows)."""
    twin = copy.copy(policy)
    twin.version = version
    return twin


def batchers_running(server: Server) -> int:
    """Batching tasks alive on the server's loop (a retired batcher must have stopped)."""

    async def count() -> int:
        return sum(t.get_name() == "rlops-batcher" for t in asyncio.all_tasks())

    loop = server.service.loop
    return asyncio.run_coroutine_threadsafe(count(), loop).result(10)


def served(port: int) -> dict[str, str]:
    """Arm -> version, from ``/v1/policies``."""
    status, _, body = request(port, "GET", "/v1/policies")
    assert status == 200
    return {p["arm"]: p["version"] for p in body["policies"]}


def info_metric(port: int) -> dict[str, str]:
    """Arm -> version, from ``rlops_serving_policy_info`` in ``/metrics``."""
    _, _, text = request(port, "GET", "/metrics")
    out = {}
    for (name, labels), value in parse_prometheus(text).items():
        if name == "rlops_serving_policy_info":
            assert value == 1
            out[dict(labels)["arm"]] = dict(labels)["version"]
    return out


def metric(port: int, name: str) -> float:
    _, _, text = request(port, "GET", "/metrics")
    return parse_prometheus(text)[(name, frozenset())]


def swap_entries(cfg: Any) -> list[Any]:
    return [e for e in AdminLog(cfg.admin_log_path).entries() if e.action == "swap_policy"]


@dataclass
class Answer:
    sent: float
    received: float
    status: int
    decisions: list[dict[str, Any]]


def hammer(port: int, threads: int, stop: threading.Event, rows: int = 1) -> list[Answer]:
    """Keep-alive clients sending ``/v1/act`` until ``stop``; every answer, timed."""
    answers: list[Answer] = []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = 0
        while not stop.is_set():
            units = [f"u{k}-{(i + j) % 50}" for j in range(rows)]
            body: Any = (
                {"requests": [{"observation": CARTPOLE_OBS, "unit_id": u} for u in units]}
                if rows > 1
                else {"observation": CARTPOLE_OBS, "unit_id": units[0]}
            )
            sent = time.monotonic()
            try:
                status, _, payload = request(port, "POST", "/v1/act", body, conn=conn)
            except (OSError, http.client.HTTPException) as exc:  # counted, never hidden
                status, payload = 0, {"error": repr(exc)}
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            decisions = payload["decisions"] if rows > 1 and status == 200 else [payload]
            answers.append(Answer(sent, time.monotonic(), status, decisions))
            i += 1
        conn.close()

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    stop.wait()
    for w in workers:
        w.join()
    return answers


def live_between(
    timeline: list[tuple[float, float, str | None]], sent: float, received: float
) -> set[str | None]:
    """Versions an arm served at some moment of ``[sent, received]``.

    ``timeline`` is ``(swap started, swap returned, version after)``, starting
    with ``(-inf, -inf, initial)``; a version is live from its swap's start
    (it may already serve) until the next swap returns (the old one may still
    answer what was queued on it).
    """
    out = set()
    for k, (start, _, version) in enumerate(timeline):
        until = timeline[k + 1][1] if k + 1 < len(timeline) else float("inf")
        if start <= received and sent <= until:
            out.add(version)
    return out


def swap_under_load(
    server: Server, arm: str, versions: list[Policy | None], rows: int
) -> tuple[list[Answer], list[tuple[float, float, str | None]]]:
    """Swap ``arm`` through ``versions`` while 6 clients send requests; answers and timeline."""
    current = server.service.shadow if arm == "shadow" else server.service.arms.get(arm)
    timeline = [(-float("inf"), -float("inf"), None if current is None else current.version)]
    stop = threading.Event()
    answers: list[Answer] = []
    load = threading.Thread(target=lambda: answers.extend(hammer(server.port, 6, stop, rows)))
    load.start()
    try:
        time.sleep(0.2)
        for policy in versions:
            start = time.monotonic()
            swap(server, arm, policy, reason=f"swap to {getattr(policy, 'version', None)}")
            timeline.append((start, time.monotonic(), getattr(policy, "version", None)))
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        stop.set()
        load.join()
    return answers, timeline


# ------------------------------------------------------------------ tests


def test_production_swaps_under_load_answer_every_request_from_a_live_version(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = config_for(
        artifacts["cartpole"], tmp_path, admin_token=TOKEN, seed=0, request_timeout_ms=10_000
    )
    a, b = load_policy(artifacts["cartpole"]), load_policy(artifacts["cartpole_b"])
    # Distinct versions for every swap, so "live at that time" is a sharp check.
    versions: list[Policy | None] = [
        relabelled(b if k % 2 == 0 else a, f"{(b if k % 2 == 0 else a).version}#{k}")
        for k in range(16)
    ]
    with Server(cfg) as server:
        answers, timeline = swap_under_load(server, "production", versions, rows=1)
        assert served(server.port) == {"production": f"{a.version}#15"}
        assert info_metric(server.port) == {"production": f"{a.version}#15"}
        assert metric(server.port, "rlops_serving_policy_swaps_total") == 16
        assert batchers_running(server) == 1
        status, _, ready = request(server.port, "GET", "/readyz")
        assert status == 200 and ready["policy_version"] == f"{a.version}#15"
    assert len(answers) > 200, "too little load to test anything"
    assert {x.status for x in answers} == {200}, [x.decisions for x in answers if x.status != 200][
        :3
    ]
    seen = set()
    for x in answers:
        (d,) = x.decisions
        assert d["arm"] == "production"
        assert d["policy_version"] in live_between(timeline, x.sent, x.received), d
        seen.add(d["policy_version"])
    assert len(seen) >= 8, "the swaps did not happen under load"

    records = {r.decision_id: r for r in iter_decisions(cfg.decision_log)}
    assert len(records) == len(answers)  # every 200 has its row, and nothing else does
    for x in answers:
        d = x.decisions[0]
        assert records[d["decision_id"]].policy_version == d["policy_version"]

    entries = swap_entries(cfg)
    assert [e.params["to"] for e in entries] == [p.version for p in versions if p]
    assert [e.params["from"] for e in entries] == [
        a.version,
        *[p.version for p in versions[:-1] if p],
    ]
    assert {(e.actor, e.params["arm"]) for e in entries} == {("registry", "production")}


def test_canary_swaps_under_load_with_mixed_batches(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    # Batched requests whose rows go to both arms decide each arm in its own task:
    # a canary removed between routing and deciding must still answer (production).
    # Client threads share the server's process here; on a loaded CI machine a forward
    # can miss the 250 ms default deadline (503 policy_unavailable, seen once in CI).
    # Deadlines are tested elsewhere: give these requests room.
    cfg = canary_config(artifacts, tmp_path, canary_share=0.5, request_timeout_ms=10_000)
    a, b = load_policy(artifacts["cartpole"]), load_policy(artifacts["cartpole_b"])
    versions: list[Policy | None] = []
    for k in range(12):
        versions.append(None if k % 3 == 2 else relabelled(b, f"{b.version}#{k}"))
    with Server(cfg) as server:
        answers, timeline = swap_under_load(server, "canary", versions, rows=4)
        assert served(server.port) == {"production": a.version}
    assert {x.status for x in answers} == {200}, [x.decisions for x in answers if x.status != 200][
        :3
    ]
    arms = set()
    for x in answers:
        for d in x.decisions:
            arms.add(d["arm"])
            if d["arm"] == "production":
                assert d["policy_version"] == a.version
            else:
                assert d["arm"] == "canary"
                assert d["policy_version"] in live_between(timeline, x.sent, x.received), d
    assert arms == {"production", "canary"}
    rows = sum(len(x.decisions) for x in answers)
    assert sum(1 for _ in iter_decisions(cfg.decision_log)) == rows


def test_a_request_in_flight_finishes_on_the_policy_it_started_with(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = config_for(artifacts["cartpole"], tmp_path, admin_token=TOKEN, request_timeout_ms=5000)
    a, b = load_policy(artifacts["cartpole"]), load_policy(artifacts["cartpole_b"])
    with Server(cfg, policy=SlowPolicy(a, delay=0.4)) as server:
        answer: list[dict[str, Any]] = []
        slow = threading.Thread(target=lambda: answer.append(act(server.port, "u")))
        slow.start()
        time.sleep(0.1)  # the forward on the old policy is running
        started = time.monotonic()
        assert swap(server, "production", b) == {
            "arm": "production",
            "changed": True,
            "from": a.version,
            "to": b.version,
        }
        # The swap returns once the old policy has answered what it had.
        assert time.monotonic() - started > 0.2
        slow.join()
        assert answer[0]["policy_version"] == a.version
        assert act(server.port, "u")["policy_version"] == b.version


def test_add_ramp_and_remove_a_canary(artifacts: dict[str, Path], tmp_path: Path) -> None:
    cfg = config_for(artifacts["cartpole"], tmp_path, admin_token=TOKEN, seed=0)
    a, b = load_policy(artifacts["cartpole"]), load_policy(artifacts["cartpole_b"])
    units = [f"user-{i}" for i in range(40)]
    with Server(cfg) as server:
        port = server.port
        result = swap(server, "canary", b, actor="alice", reason="canary alias -> b")
        assert result == {"arm": "canary", "changed": True, "from": None, "to": b.version}
        assert served(port) == {"production": a.version, "canary": b.version}
        assert info_metric(port) == {"production": a.version, "canary": b.version}
        # The configured share (0 here): no unit is moved until someone ramps.
        assert {act(port, u)["arm"] for u in units} == {"production"}
        status, _ = admin(port, "canary", {"share": 1.0, "actor": "alice", "reason": "ramp"})
        assert status == 200
        assert {act(port, u)["policy_version"] for u in units} == {b.version}
        status, _ = admin(
            port, "override", {"unit_id": "vip", "arm": "canary", "actor": "bo", "reason": "t"}
        )
        assert status == 200
        assert server.service._guardrail_task is not None  # the watcher started with it

        result = swap(server, "canary", None, actor="alice", reason="canary alias removed")
        assert result == {"arm": "canary", "changed": True, "from": b.version, "to": None}
        assert served(port) == {"production": a.version}
        assert info_metric(port) == {"production": a.version}
        assert metric(port, "rlops_serving_canary_share") == 0.0
        # Every unit, the one pinned to the canary included, is back on production.
        answers = [act(port, u) for u in [*units, "vip"]]
        assert {(d["arm"], d["policy_version"]) for d in answers} == {("production", a.version)}
        _, state = admin(port, "state")
        assert state["canary_version"] is None and state["routing"]["overrides"] == {}
        # Removing what is not there is a no-op.
        assert swap(server, "canary", None)["changed"] is False
        status, body = admin(port, "canary", {"share": 0.5, "actor": "x", "reason": "y"})
        assert status == 409, body
    add, remove = swap_entries(cfg)
    assert (add.actor, add.reason, add.params) == (
        "alice",
        "canary alias -> b",
        {"arm": "canary", "from": None, "to": b.version, "share": 0.0, "guardrail_reset": True},
    )
    assert remove.params["cleared_overrides"] == ["vip"] and remove.params["to"] is None


def test_a_new_canary_is_a_new_experiment(artifacts: dict[str, Path], tmp_path: Path) -> None:
    cfg = canary_config(artifacts, tmp_path, canary_share=0.5, guardrail_interval_s=3600.0)
    b = load_policy(artifacts["cartpole_b"])
    c = relabelled(b, "sha256:canary-c")
    units = [f"user-{i}" for i in range(60)]
    with Server(cfg) as server:
        port = server.port
        control = server.service.control
        old = [act(port, u) for u in units]
        canary_ids = [d["decision_id"] for d in old if d["arm"] == "canary"]
        _, state = admin(port, "state")
        assert state["guardrail"]["stats"]["guardrail/requests_canary"] > 0
        status, _ = admin(port, "rollback", {"actor": "ops", "reason": "looks off"})
        assert status == 200
        # The same version again, or a new production, does not lift the rollback.
        assert swap(server, "canary", b)["changed"] is False
        assert swap(server, "production", relabelled(b, "sha256:prod-2"))["changed"] is True
        assert control.router.canary_share == 0.0
        assert {act(port, u)["arm"] for u in units} == {"production"}

        assert swap(server, "canary", c)["to"] == "sha256:canary-c"
        # Fresh experiment: the configured share, a fresh salt, fresh statistics.
        _, state = admin(port, "state")
        assert state["routing"]["canary_share"] == 0.5
        assert state["routing"]["salt"] == "sha256:canary-c"
        assert state["last_rollback"] is None and state["rollbacks"] == 1
        assert state["guardrail"]["stats"]["guardrail/requests_canary"] == 0
        arms = {u: act(port, u)["arm"] for u in units}
        assert arms == {u: assign_arm(u, 0.5, salt="sha256:canary-c") for u in units}
        # Feedback on the old canary's decisions belongs to the old experiment.
        for decision_id in canary_ids:
            status, _, _ = request(
                port, "POST", "/v1/feedback", {"decision_id": decision_id, "reward": 1.0}
            )
            assert status == 200
        _, state = admin(port, "state")
        assert state["guardrail"]["stats"]["guardrail/rewards_canary"] == 0
        assert state["guardrail"]["stats"]["guardrail/requests_canary"] > 0
    actions = [(e.actor, e.action) for e in AdminLog(cfg.admin_log_path).entries()]
    assert actions == [
        ("ops", "rollback"),
        ("registry", "swap_policy"),
        ("registry", "swap_policy"),
    ]


def test_a_pending_trip_rolls_back_before_production_swaps(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    guardrail = GuardrailConfig(min_samples=30, latency_factor=1000.0)
    cfg = canary_config(
        artifacts, tmp_path, canary_share=0.5, guardrail=guardrail, guardrail_interval_s=3600.0
    )
    with Server(cfg) as server:
        control = server.service.control
        for _ in range(300):
            control.observe_reward("production", 1.0)
            control.observe_reward("canary", 0.0)
        swap(server, "production", relabelled(load_policy(artifacts["cartpole"]), "sha256:p2"))
        assert control.router.canary_share == 0.0
    actions = [(e.actor, e.action) for e in AdminLog(cfg.admin_log_path).entries()]
    assert actions == [("guardrail", "rollback"), ("registry", "swap_policy")]


def test_add_and_remove_a_shadow(artifacts: dict[str, Path], tmp_path: Path) -> None:
    cfg = config_for(artifacts["cartpole"], tmp_path, admin_token=TOKEN, seed=0)
    a, b = load_policy(artifacts["cartpole"]), load_policy(artifacts["cartpole_b"])
    with Server(cfg) as server:
        port = server.port
        assert act(port, "u0")["policy_version"] == a.version
        assert swap(server, "shadow", b)["changed"] is True
        assert served(port) == {"production": a.version, "shadow": b.version}
        assert info_metric(port) == {"production": a.version, "shadow": b.version}
        assert metric(port, "rlops_serving_shadow_enabled") == 1
        shadowed = [act(port, f"u{i}") for i in range(1, 11)]
        assert {d["policy_version"] for d in shadowed} == {a.version}  # never served
        assert swap(server, "shadow", None)["changed"] is True
        assert served(port) == {"production": a.version}
        assert metric(port, "rlops_serving_shadow_enabled") == 0
        assert batchers_running(server) == 1
        act(port, "u11")
    records = list(iter_decisions(cfg.decision_log))
    assert len(records) == 12
    for r in records[1:11]:
        assert r.split is not None and r.split["shadow_version"] == b.version
        assert r.shadow_distribution is not None
    assert records[0].shadow_distribution is None and records[11].shadow_distribution is None
    assert [e.params["to"] for e in swap_entries(cfg)] == [b.version, None]


def test_a_policy_that_does_not_fit_is_refused_and_nothing_changes(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = config_for(artifacts["cartpole"], tmp_path, admin_token=TOKEN)
    a, b = load_policy(artifacts["cartpole"]), load_policy(artifacts["cartpole_b"])
    with Server(cfg) as server:
        port = server.port
        production = server.service.arms["production"]
        with pytest.raises(ConfigError, match=r"swap_policy\(production\): its observation space"):
            swap(server, "production", load_policy(artifacts["pendulum"]))
        with pytest.raises(ConfigError, match=r"swap_policy\(canary\): its observation space"):
            swap(server, "canary", load_policy(artifacts["masked"]))
        with pytest.raises(ConfigError, match="production arm cannot be removed"):
            swap(server, "production", None)
        with pytest.raises(ConfigError, match="not one of production, canary, shadow"):
            swap(server, "fallback", b)
        with pytest.raises(ConfigError, match="the policy has no version"):
            swap(server, "canary", relabelled(b, ""))
        with pytest.raises(ConfigError, match="actor: required"):
            swap(server, "production", b, actor=" ")
        with pytest.raises(ConfigError, match="reason: required"):
            swap(server, "shadow", b, reason="")
        assert server.service.arms == {"production": production}
        assert server.service.shadow is None
        assert batchers_running(server) == 1  # the refused ones' batchers stopped
        assert served(port) == {"production": a.version}
        assert act(port, "u")["policy_version"] == a.version
        assert metric(port, "rlops_serving_policy_swaps_total") == 0
        # The same version as served: nothing to do, nothing logged.
        assert swap(server, "production", load_policy(artifacts["cartpole"])) == {
            "arm": "production",
            "changed": False,
            "from": a.version,
            "to": a.version,
        }
        assert server.service.arms["production"] is production
    assert AdminLog(cfg.admin_log_path).entries() == []


def test_a_swap_needs_a_running_service(artifacts: dict[str, Path], tmp_path: Path) -> None:
    app = create_app(config_for(artifacts["cartpole"], tmp_path, admin_token=TOKEN))
    b = load_policy(artifacts["cartpole_b"])
    call = app.state.service.swap_policy("production", b, actor="registry", reason="x")
    with pytest.raises(RlopsError, match="not running"):
        asyncio.run(call)


def test_restart_after_swaps_starts_on_the_same_files(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = canary_config(artifacts, tmp_path, canary_share=0.3, fallback_action=0)
    a, b = load_policy(artifacts["cartpole"]), load_policy(artifacts["cartpole_b"])
    c = relabelled(b, "sha256:canary-c")
    with Server(cfg) as server:
        status, _ = admin(server.port, "kill-switch", {"on": False, "actor": "o", "reason": "r"})
        assert status == 200
        swap(server, "production", relabelled(a, "sha256:prod-2"))
        swap(server, "canary", c)
        swap(server, "shadow", b)
        act(server.port, "u1")
    # Restart as configured (the original canary): starts, with the configured split.
    with Server(cfg) as server:
        assert served(server.port) == {"production": a.version, "canary": b.version}
        assert server.service.control.router.canary_share == 0.3
        act(server.port, "u2")
        swap(server, "canary", None)
    # Restart again after a removal, and once more after a swap back to the same canary.
    with Server(cfg) as server:
        swap(server, "canary", c)
    with Server(cfg) as server:
        act(server.port, "u3")
    log = AdminLog(cfg.admin_log_path)
    assert log.verify() == (True, None)
    assert [e.action for e in log.entries()].count("swap_policy") == 5
    assert sum(1 for _ in iter_decisions(cfg.decision_log)) == 3
