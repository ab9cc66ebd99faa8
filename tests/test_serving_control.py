"""Canary, shadow, guardrail rollback, overrides, kill switch and admin auth on a real server.

Every test runs uvicorn on 127.0.0.1 with real policies and a real SQLite
decision log; the admin log and state file are real files that the tests
restart from, tamper with, and verify.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from rlops.artifacts import load_policy
from rlops.core.errors import ConfigError
from rlops.serving import create_app, iter_decisions
from rlops.serving.admin import AdminLog
from rlops.serving.guardrail import GuardrailConfig
from rlops.serving.routing import assign_arm
from rlops.serving.server import startup_lines
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


def test_canary_assignment_is_sticky_logged_and_survives_restart(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = canary_config(artifacts, tmp_path, canary_share=0.3)
    production = load_policy(artifacts["cartpole"]).version
    canary = load_policy(artifacts["cartpole_b"]).version
    units = [f"user-{i}" for i in range(150)]
    with Server(cfg) as server:
        seen: dict[str, set[str]] = {u: set() for u in units}
        for _ in range(2):
            for u in units:
                d = act(server.port, u)
                seen[u].add(d["arm"])
                assert d["policy_version"] == (canary if d["arm"] == "canary" else production)
        # A mixed batch answers each row from its own unit's arm.
        status, _, body = request(
            server.port,
            "POST",
            "/v1/act",
            {"requests": [{"observation": CARTPOLE_OBS, "unit_id": u} for u in units[:20]]},
        )
        assert status == 200
        assert [d["arm"] for d in body["decisions"]] == [next(iter(seen[u])) for u in units[:20]]
    assert all(len(arms) == 1 for arms in seen.values())  # whole episodes on one arm
    expected = {u: assign_arm(u, 0.3, salt=canary) for u in units}
    assert {u: next(iter(a)) for u, a in seen.items()} == expected
    assert 0.15 < sum(a == "canary" for a in expected.values()) / len(units) < 0.45
    records = list(iter_decisions(cfg.decision_log))
    assert len(records) == 2 * len(units) + 20
    assert all(r.split == {"canary_share": 0.3, "route": "assignment"} for r in records)
    assert {r.arm for r in records} == {"production", "canary"}

    with Server(cfg) as server:  # restart: the same units land on the same arms
        assert all(act(server.port, u)["arm"] == expected[u] for u in units[:40])


def test_admin_endpoints_need_the_token_a_reason_and_log_every_change(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = canary_config(artifacts, tmp_path)
    with Server(cfg) as server:
        port = server.port
        ok_body = {"share": 0.5, "actor": "alice", "reason": "start canary"}
        status, body = admin(port, "canary", ok_body, token=None)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body = admin(port, "canary", ok_body, token="wrong-token-0123456789")
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body = admin(port, "canary", {"share": 0.5, "actor": "alice"})
        assert (status, body["error"]["field"]) == (422, "reason")
        status, body = admin(port, "canary", {**ok_body, "share": 5})
        assert status == 422 and "not a percent" in body["error"]["message"]
        status, body = admin(port, "canary", {**ok_body, "shares": 0.5})
        assert (status, body["error"]["code"]) == (422, "unknown_field")
        status, body = admin(port, "promote", ok_body)
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = admin(port, "shadow", {"enabled": True, "actor": "a", "reason": "r"})
        assert status == 409 and "no shadow policy" in body["error"]["message"]
        status, body = admin(port, "kill-switch", {"on": True, "actor": "a", "reason": "r"})
        assert status == 409 and "fallback" in body["error"]["message"]
        assert AdminLog(cfg.admin_log_path).entries() == []  # refusals change nothing

        status, body = admin(port, "canary", ok_body)
        assert status == 200, body
        assert body["routing"]["canary_share"] == 0.5
        status, state = admin(port, "state")
        assert status == 200
        assert state["routing"]["canary_share"] == 0.5
        assert state["admin_log"]["verified"] and state["admin_log"]["head_seq"] == 1
        _, _, text = request(port, "GET", "/metrics")
        assert parse_prometheus(text)[("rlops_serving_canary_share", frozenset())] == 0.5
        status, body = admin(port, "rollback", {"actor": "bob", "reason": "looks off"})
        assert status == 200 and body["routing"]["canary_share"] == 0.0
    entries = AdminLog(cfg.admin_log_path).entries()
    assert [(e.actor, e.action, e.reason) for e in entries] == [
        ("alice", "set_canary_share", "start canary"),
        ("bob", "rollback", "looks off"),
    ]
    assert entries[0].params["share"] == 0.5 and entries[1].params["previous"] == 0.5


def test_kill_switch_and_overrides(artifacts: dict[str, Path], tmp_path: Path) -> None:
    cfg = canary_config(artifacts, tmp_path, fallback_action=0)
    production = load_policy(artifacts["cartpole"]).version
    canary = load_policy(artifacts["cartpole_b"]).version
    with Server(cfg) as server:
        port = server.port
        who = {"actor": "carol", "reason": "incident 7"}
        assert admin(port, "kill-switch", {"on": True, **who})[0] == 200
        assert admin(port, "override", {"unit_id": "vip", "arm": "production", **who})[0] == 200
        assert admin(port, "override", {"unit_id": "beta", "arm": "canary", **who})[0] == 200
        for i in range(10):
            d = act(port, f"user-{i}")
            assert (d["arm"], d["action"], d["policy_version"]) == ("fallback", 0, "fallback")
            assert d["propensity"] == 1.0
        d = act(port, "vip")  # pinned units keep their arm through the kill switch
        assert (d["arm"], d["policy_version"]) == ("override", production)
        assert act(port, "beta")["policy_version"] == canary
        status, body = admin(port, "override", {"unit_id": "x", "arm": "shadow", **who})
        assert status == 422 and "arm" in body["error"]["message"]
        status, body = admin(port, "clear-override", {"unit_id": "nobody", **who})
        assert status == 409
        assert admin(port, "kill-switch", {"on": False, **who})[0] == 200
        assert admin(port, "clear-override", {"unit_id": "vip", **who})[0] == 200
        assert act(port, "user-1")["arm"] == "production"  # canary share is 0
        assert act(port, "vip")["arm"] == "production"
    arms = [r.arm for r in iter_decisions(cfg.decision_log)]
    assert arms.count("fallback") == 10 and arms.count("override") == 2
    actions = [e.action for e in AdminLog(cfg.admin_log_path).entries()]
    assert actions == [
        "kill_switch_on",
        "override_unit",
        "override_unit",
        "kill_switch_off",
        "clear_override",
    ]
    with Server(cfg) as server:  # the remaining override survived the restart
        assert act(server.port, "beta")["arm"] == "override"


def _drive(port: int, n: int, reward: dict[str, float], rng: np.random.Generator) -> int:
    """n requests from fresh units, each answered with feedback; returns the canary count."""
    canary = 0
    for i in range(n):
        d = act(port, f"u-{rng.integers(1 << 30)}-{i}")
        canary += d["arm"] == "canary"
        r = float(rng.random() < reward[d["arm"]])
        status, _, _ = request(
            port, "POST", "/v1/feedback", {"decision_id": d["decision_id"], "reward": r}
        )
        assert status == 200
    return canary


def test_guardrail_rolls_back_a_worse_canary_and_it_stays_rolled_back(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    guardrail = GuardrailConfig(min_samples=30, latency_factor=1000.0)
    cfg = canary_config(
        artifacts, tmp_path, canary_share=0.5, guardrail=guardrail, guardrail_interval_s=0.05
    )
    rng = np.random.default_rng(0)
    with Server(cfg) as server:
        port = server.port
        for _ in range(40):
            _drive(port, 25, {"production": 0.9, "canary": 0.1}, rng)
            if server.service.control.router.canary_share == 0.0:
                break
            time.sleep(0.06)
        assert server.service.control.router.canary_share == 0.0, "no rollback"
        assert _drive(port, 50, {"production": 1.0, "canary": 1.0}, rng) == 0
        _, state = admin(port, "state")
        assert state["rollbacks"] == 1 and state["last_rollback"].startswith("reward:")
        _, _, text = request(port, "GET", "/metrics")
        metrics = parse_prometheus(text)
        assert metrics[("rlops_serving_canary_rollbacks_total", frozenset())] == 1
        assert metrics[("rlops_serving_guardrail_tripped", frozenset())] == 1
    (entry,) = AdminLog(cfg.admin_log_path).entries()
    assert (entry.actor, entry.action) == ("guardrail", "rollback")
    assert entry.reason.startswith("reward: canary - production upper bound")
    assert entry.params["previous"] == 0.5 and "guardrail/reward_pairs" in entry.params["evidence"]

    server = Server(cfg)  # restart with --canary-share 0.5: the rollback wins
    assert server.service.control.router.canary_share == 0.0
    assert "rolled back: reward" in "\n".join(startup_lines(server.app, "http://x"))
    with server:
        status, _ = admin(
            server.port, "canary", {"share": 0.1, "actor": "dana", "reason": "fixed, retry"}
        )
        assert status == 200
        _, state = admin(server.port, "state")
        assert not state["guardrail"]["rollback"]  # a new comparison started


def test_guardrail_keeps_an_equally_good_canary(artifacts: dict[str, Path], tmp_path: Path) -> None:
    guardrail = GuardrailConfig(min_samples=30, latency_factor=1000.0)
    cfg = canary_config(
        artifacts, tmp_path, canary_share=0.5, guardrail=guardrail, guardrail_interval_s=0.05
    )
    with Server(cfg) as server:
        canary = _drive(
            server.port, 500, {"production": 0.5, "canary": 0.5}, np.random.default_rng(1)
        )
        time.sleep(0.2)
        assert server.service.control.router.canary_share == 0.5
        assert 150 < canary < 350
    assert AdminLog(cfg.admin_log_path).entries() == []


def test_shadow_is_logged_but_never_slows_the_answer(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = config_for(artifacts["cartpole"], tmp_path, admin_token=TOKEN, seed=0)
    shadow_policy = load_policy(artifacts["cartpole_b"])
    server = Server(cfg, shadow=SlowPolicy(shadow_policy, delay=0.1))
    rng = np.random.default_rng(0)
    observations = [rng.normal(size=4).round(3).tolist() for _ in range(30)]
    latencies = []
    with server:
        for i, obs in enumerate(observations):
            t0 = time.perf_counter()
            d = act(server.port, f"user-{i}", obs)
            latencies.append(time.perf_counter() - t0)
            assert d["arm"] == "production"
        _, _, body = request(server.port, "GET", "/v1/policies")
        assert [p["arm"] for p in body["policies"]] == ["production", "shadow"]
    # 30 answers while every shadow forward sleeps 0.1 s: the shadow is off the path.
    assert float(np.median(latencies)) < 0.05, latencies
    records = list(iter_decisions(cfg.decision_log))
    assert len(records) == 30
    for r in records:
        assert r.split is not None and r.split["shadow_version"] == shadow_policy.version
        assert r.shadow_distribution is not None, "shadow not joined before shutdown"
        expected = shadow_policy.action_distribution(np.asarray([r.observation], np.float32))
        np.testing.assert_allclose(r.shadow_distribution, expected[0], atol=1e-6)


def test_a_tampered_or_truncated_admin_log_stops_the_restart(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = canary_config(artifacts, tmp_path)
    with Server(cfg) as server:
        for share in (0.1, 0.2):
            body = {"share": share, "actor": "erin", "reason": f"ramp to {share}"}
            assert admin(server.port, "canary", body)[0] == 200
    path = cfg.admin_log_path
    original = path.read_bytes()
    path.write_bytes(original.replace(b"ramp to 0.1", b"ramp to 0.9"))
    with pytest.raises(ConfigError, match="admin_log"):
        create_app(cfg)
    path.write_bytes(original.splitlines(keepends=True)[0])  # the last entry cut off
    with pytest.raises(ConfigError, match="does not end where"):
        create_app(cfg)
    path.write_bytes(original)
    assert create_app(cfg).state.service.control.router.canary_share == 0.2


def test_canary_must_fit_production_and_bad_routing_config(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="canary: its observation space"):
        create_app(canary_config(artifacts, tmp_path, canary=str(artifacts["pendulum"])))
    with pytest.raises(ConfigError, match="canary_share: needs a canary"):
        config_for(artifacts["cartpole"], tmp_path, canary_share=0.1)
    with pytest.raises(ConfigError, match="canary_share"):
        canary_config(artifacts, tmp_path, canary_share=10)
    with pytest.raises(ConfigError, match="admin token"):
        create_app(canary_config(artifacts, tmp_path, admin_token="short"))


def test_generated_admin_token_is_printed_once_after_the_url(
    artifacts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RLOPS_ADMIN_TOKEN", raising=False)
    app = create_app(config_for(artifacts["cartpole"], tmp_path))
    lines = startup_lines(app, "http://127.0.0.1:1")
    assert lines[0].startswith("rlops serve: http://127.0.0.1:1")
    token = app.state.service.admin_token
    assert len(token) >= 43 and sum(token in line for line in lines) == 1
    monkeypatch.setenv("RLOPS_ADMIN_TOKEN", TOKEN)
    app = create_app(config_for(artifacts["cartpole"], tmp_path))
    assert app.state.service.admin_token == TOKEN
    assert not any(TOKEN in line for line in startup_lines(app, "http://127.0.0.1:1"))


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_decisions_export_to_parquet_and_check(
    name: str,
    artifacts: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from rlops.cli.main import main

    cfg = config_for(artifacts[name], tmp_path, admin_token=TOKEN, seed=0)
    obs = CARTPOLE_OBS if name == "cartpole" else [0.1, 0.2, 0.3]
    with Server(cfg) as server:
        ids = [act(server.port, f"user-{i}", obs)["decision_id"] for i in range(25)]
        for i, decision_id in enumerate(ids[:10]):
            body = {"decision_id": decision_id, "reward": float(i), "metrics": {"clicks": i}}
            assert request(server.port, "POST", "/v1/feedback", body)[0] == 200
    out = tmp_path / "export" / "decisions.parquet"
    assert main(["decisions", "export", cfg.decision_log, "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 25 and table.column("decision_id").to_pylist() == ids
    rewards = table.column("reward").to_pylist()
    assert rewards[:10] == [float(i) for i in range(10)] and rewards[10:] == [None] * 15
    assert json.loads(table.column("outcome")[3].as_py()) == {"clicks": 3}
    action_type = str(table.schema.field("action").type)
    assert action_type == ("int64" if name == "cartpole" else "list<element: double>")
    np.testing.assert_allclose(table.column("observation")[0].as_py(), obs, rtol=1e-6)
    assert not list(out.parent.glob("*.tmp"))  # written through a temp file, then renamed

    assert main(["decisions", "check", cfg.decision_log]) == 0
    printed = capsys.readouterr().out
    assert "integrity ok" in printed and "decisions: 25" in printed
    assert "with_feedback: 10" in printed
    assert main(["decisions", "check", str(tmp_path / "missing.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    assert main(["decisions", "export", str(tmp_path / "junk.sqlite"), "--out", str(out)]) == 2
    assert pq.read_table(out).num_rows == 25  # the earlier export is untouched


class RaisingPolicy(SlowPolicy):
    """A real policy whose forward always raises."""

    def action_distribution(self, obs: Any, mask: Any = None) -> np.ndarray:
        raise RuntimeError("injected canary failure")


def test_review_regressions_routing_labels_admin_types_and_feedback_repeats(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    guardrail = GuardrailConfig(min_samples=10_000, latency_factor=1000.0)
    cfg = canary_config(artifacts, tmp_path, canary_share=1.0, guardrail=guardrail)
    who = {"actor": "ops", "reason": "review"}
    with Server(cfg) as server:
        port = server.port
        assert admin(port, "override", {"unit_id": "pinned", "arm": "production", **who})[0] == 200
        for units in (["pinned", "free"], ["free", "pinned"]):
            body = {"requests": [{"observation": CARTPOLE_OBS, "unit_id": u} for u in units]}
            _, _, answer = request(port, "POST", "/v1/act", body)
            arms = {u: d["arm"] for u, d in zip(units, answer["decisions"])}
            assert arms == {"pinned": "override", "free": "canary"}  # each row its own label
        status, body = admin(port, "kill-switch", {"on": "yes", **who})
        assert (status, body["error"]["code"]) == (422, "invalid_type")
        status, body = admin(port, "clear-override", {"unit_id": ["x"], **who})
        assert status == 422
        d = act(port, "free")
        for _ in range(5):  # a retried feedback counts once in the comparison
            fb = {"decision_id": d["decision_id"], "reward": 1.0}
            assert request(port, "POST", "/v1/feedback", fb)[0] == 200
        assert server.service.control.guardrail.check().stats["guardrail/rewards_canary"] == 1


def test_a_failing_canary_without_fallback_still_reaches_the_guardrail(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    guardrail = GuardrailConfig(min_requests=20, latency_factor=1000.0)
    cfg = canary_config(artifacts, tmp_path, canary_share=0.5, guardrail=guardrail)
    canary = RaisingPolicy(load_policy(artifacts["cartpole_b"]), 0.0)
    with Server(cfg, canary=canary) as server:
        statuses = [
            request(
                server.port, "POST", "/v1/act", {"observation": CARTPOLE_OBS, "unit_id": f"u{i}"}
            )[0]
            for i in range(120)
        ]
        assert 503 in statuses and 200 in statuses
        verdict = server.service.control.guardrail.check()
        assert verdict.stats["guardrail/error_rate_canary"] == 1.0
        assert verdict.rollback and verdict.reason.startswith("error_rate")


def test_ramping_does_not_erase_a_pending_trip(artifacts: dict[str, Path], tmp_path: Path) -> None:
    cfg = canary_config(artifacts, tmp_path, canary_share=0.2, guardrail_interval_s=3600.0)
    app = create_app(cfg)
    control = app.state.service.control
    for _ in range(300):
        control.observe_reward("production", 1.0)
        control.observe_reward("canary", 0.0)
    control.set_canary_share(0.5, actor="ops", reason="ramp")
    assert control.check_guardrail() is not None  # the trip survived the ramp
    assert control.router.canary_share == 0.0


def test_restart_after_a_crash_between_admin_log_and_state_file(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    cfg = canary_config(artifacts, tmp_path, fallback_action=0)
    app = create_app(cfg)
    app.state.service.control.set_canary_share(0.3, actor="ops", reason="ramp")
    # The process dies after the admin-log append, before the state file is written.
    AdminLog(cfg.admin_log_path).append("ops", "kill_switch_on", {}, "incident")
    control = create_app(cfg).state.service.control
    assert control.router.kill_switch and control.router.canary_share == 0.3
    assert control.admin_log.verify() == (True, None)
    # A persisted kill switch needs a fallback action to serve.
    no_fallback = canary_config(artifacts, tmp_path, fallback_action=None)
    with pytest.raises(ConfigError, match="no fallback action is configured"):
        create_app(no_fallback)
