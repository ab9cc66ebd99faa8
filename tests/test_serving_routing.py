"""Sticky canary assignment and the Router: known answers, properties, thread safety, state."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from rlops.core.errors import ConfigError
from rlops.serving.routing import Route, Router, assign_arm, assignment_value

UNITS = [f"user-{i}" for i in range(5000)]


# ------------------------------------------------------------- assignment


@pytest.mark.parametrize(
    ("unit", "salt", "expected"),
    [
        ("user-42", "exp-1", 0.8454548253968414),
        ("user-1", "exp-1", 0.8804012447232316),
        ("a", "b", 0.5900774961743798),
        ("service/7", "canary-v18", 0.8996465677992196),
    ],
)
def test_assignment_value_known_answers(unit: str, salt: str, expected: float) -> None:
    assert assignment_value(unit, salt) == expected
    # The documented formula: first 8 bytes of sha256(salt + unit_id), big-endian, / 2**64.
    digest = hashlib.sha256((salt + unit).encode()).digest()
    assert int.from_bytes(digest[:8], "big") / 2**64 == expected


def test_assign_arm_threshold_known_answer() -> None:
    # u("user-42", "exp-1") = 0.84545...: canary iff share > u.
    assert assign_arm("user-42", 0.84, salt="exp-1") == "production"
    assert assign_arm("user-42", 0.85, salt="exp-1") == "canary"


def test_share_zero_and_one_are_all_or_nothing() -> None:
    assert {assign_arm(u, 0.0, salt="s") for u in UNITS} == {"production"}
    assert {assign_arm(u, 1.0, salt="s") for u in UNITS} == {"canary"}


def test_share_fraction_matches_canary_share() -> None:
    units = [f"u{i}" for i in range(20000)]
    for share in (0.05, 0.1, 0.5):
        frac = np.mean([assign_arm(u, share, salt="exp") == "canary" for u in units])
        assert abs(frac - share) < 0.01  # binomial sd <= 0.0036


def test_raising_the_share_only_moves_units_to_the_canary() -> None:
    shares = [0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 0.9, 1.0]
    previous: set[str] = set()
    for share in shares:
        canary = {u for u in UNITS if assign_arm(u, share, salt="ramp") == "canary"}
        assert previous <= canary, f"a unit left the canary when the share rose to {share}"
        previous = canary


def test_assignment_is_stable_across_processes() -> None:
    # A different PYTHONHASHSEED proves nothing depends on Python's per-process hash().
    code = (
        "from rlops.serving.routing import assign_arm\n"
        "print(''.join('c' if assign_arm(f'user-{i}', 0.3, salt='exp') == 'canary' else 'p'"
        " for i in range(500)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    here = "".join(
        "c" if assign_arm(f"user-{i}", 0.3, salt="exp") == "canary" else "p" for i in range(500)
    )
    assert out == here


def test_salt_reshuffles_units() -> None:
    a = {u for u in UNITS if assign_arm(u, 0.5, salt="exp-a") == "canary"}
    b = {u for u in UNITS if assign_arm(u, 0.5, salt="exp-b") == "canary"}
    overlap = len(a & b) / len(UNITS)
    assert abs(overlap - 0.25) < 0.03  # independent halves overlap on a quarter


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan"), float("inf"), True, "0.1", None])
def test_invalid_share_is_refused(share: object) -> None:
    with pytest.raises(ConfigError, match="canary_share"):
        assign_arm("u", share, salt="s")  # type: ignore[arg-type]


def test_empty_unit_is_refused() -> None:
    with pytest.raises(ConfigError, match="unit_id"):
        assign_arm("", 0.5, salt="s")


# ------------------------------------------------------------------ Router


def test_route_follows_assignment_by_default() -> None:
    router = Router(salt="exp", canary_share=0.3)
    for u in UNITS[:500]:
        route = router.route(u)
        assert route == Route(assign_arm(u, 0.3, salt="exp"), "assignment", False, 0.3)


def test_precedence_override_then_kill_switch_then_assignment() -> None:
    router = Router(salt="exp-1", canary_share=1.0)  # everyone assigned to canary
    assert router.route("user-42") == Route("canary", "assignment", False, 1.0)
    router.set_kill_switch(True)
    assert router.route("user-42") == Route("fallback", "kill_switch", False, 1.0)
    router.set_override("user-42", "production")
    assert router.route("user-42") == Route("production", "override", False, 1.0)
    assert router.route("user-1").reason == "kill_switch"  # others still killed
    router.set_kill_switch(False)
    assert router.route("user-42").reason == "override"
    assert router.clear_override("user-42") is True
    assert router.clear_override("user-42") is False
    assert router.route("user-42") == Route("canary", "assignment", False, 1.0)


def test_rollback_sends_assigned_units_to_production_but_keeps_overrides() -> None:
    router = Router(salt="exp", canary_share=0.5)
    router.set_override("pinned", "canary")
    assert router.rollback() == 0.5
    assert router.canary_share == 0.0
    assert {router.route(u).arm for u in UNITS[:1000]} == {"production"}
    assert router.route("pinned") == Route("canary", "override", False, 0.0)


def test_shadow_sampling_is_sticky_independent_and_off_under_kill_switch() -> None:
    router = Router(salt="exp", canary_share=0.5)
    assert not any(router.route(u).shadow for u in UNITS)
    router.set_shadow(True, share=0.5)
    shadowed = {u for u in UNITS if router.route(u).shadow}
    assert abs(len(shadowed) / len(UNITS) - 0.5) < 0.03
    assert shadowed == {u for u in UNITS if router.route(u).shadow}  # sticky
    canary = {u for u in UNITS if router.route(u).arm == "canary"}
    # Independent of the canary split: about half of the canary units are shadowed.
    assert abs(len(canary & shadowed) / len(canary) - 0.5) < 0.05
    router.set_shadow(True, share=1.0)
    assert all(router.route(u).shadow for u in UNITS[:200])
    router.set_kill_switch(True)
    assert not any(router.route(u).shadow for u in UNITS[:200])
    router.set_kill_switch(False)
    router.set_shadow(False)
    assert not any(router.route(u).shadow for u in UNITS[:200])


def test_router_validates_inputs() -> None:
    with pytest.raises(ConfigError, match="salt"):
        Router(salt="")
    router = Router(salt="s")
    with pytest.raises(ConfigError, match="canary_share"):
        router.set_canary_share(2.0)
    with pytest.raises(ConfigError, match="shadow_share"):
        router.set_shadow(True, share=-1.0)
    with pytest.raises(ConfigError, match="arm 'shadow'"):
        router.set_override("u", "shadow")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unit_id"):
        router.set_override("", "canary")
    with pytest.raises(ConfigError, match="unit_id"):
        router.route("")


# ------------------------------------------------------------------- state


def test_state_round_trip_through_json_routes_identically() -> None:
    router = Router(salt="exp-7", canary_share=0.2, shadow=True, shadow_share=0.3)
    router.set_override("user-3", "fallback")
    router.set_override("user-4", "canary")
    state = json.loads(json.dumps(router.state_dict()))
    restored = Router(salt="another-salt")
    restored.load_state_dict(state)
    assert restored.state_dict() == router.state_dict()
    assert [restored.route(u) for u in UNITS] == [router.route(u) for u in UNITS]
    router.set_kill_switch(True)
    restored.load_state_dict(json.loads(json.dumps(router.state_dict())))
    assert restored.route("user-9") == Route("fallback", "kill_switch", False, 0.2)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"extra": 1}, "unknown key"),
        ({"format": 99}, "format 99"),
        ({"canary_share": 1.5}, "canary_share"),
        ({"salt": ""}, "salt"),
        ({"kill_switch": "yes"}, "kill_switch"),
        ({"overrides": {"u": "shadow"}}, "overrides"),
        ({"overrides": ["u"]}, "overrides"),
    ],
)
def test_load_state_refuses_bad_state_and_changes_nothing(
    change: dict[str, object], match: str
) -> None:
    router = Router(salt="exp", canary_share=0.1)
    router.set_override("keep", "canary")
    before = router.state_dict()
    with pytest.raises(ConfigError, match=match):
        router.load_state_dict({**before, **change})
    assert router.state_dict() == before


def test_load_state_names_missing_keys() -> None:
    state = Router(salt="s").state_dict()
    del state["overrides"]
    with pytest.raises(ConfigError, match=r"missing key.*overrides"):
        Router(salt="s").load_state_dict(state)


# ----------------------------------------------------------- thread safety


def test_router_is_consistent_under_concurrent_route_and_update() -> None:
    """Readers never see a half-applied update; writers never corrupt the overrides."""
    router = Router(salt="exp", canary_share=0.1)
    pinned = {f"user-{i}": "fallback" for i in range(0, 5000, 50)}
    errors: list[BaseException] = []
    stop = threading.Event()
    values = {u: assignment_value(u, "exp") for u in UNITS}

    def reader() -> None:
        try:
            for _ in range(3):
                for u in UNITS:
                    r = router.route(u)
                    if r.reason == "assignment":
                        assert r.canary_share in (0.1, 0.3)
                        assert (r.arm == "canary") == (values[u] < r.canary_share)
                    elif r.reason == "kill_switch":
                        assert r.arm == "fallback"
                    else:
                        assert r.arm == pinned[u]
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    def share_writer() -> None:
        i = 0
        while not stop.is_set():
            router.set_canary_share(0.3 if i % 2 else 0.1)
            router.set_kill_switch(i % 7 == 0)
            i += 1

    def override_writer() -> None:
        try:
            while not stop.is_set():
                for u, arm in pinned.items():
                    router.set_override(u, arm)  # type: ignore[arg-type]
                router.state_dict()  # iterates the overrides while others mutate them
                for u in pinned:
                    router.clear_override(u)
        except BaseException as exc:
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # force frequent thread switches
    try:
        readers = [threading.Thread(target=reader) for _ in range(4)]
        writers = [threading.Thread(target=share_writer), threading.Thread(target=override_writer)]
        for t in readers + writers:
            t.start()
        for t in readers:
            t.join()
        stop.set()
        for t in writers:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[0]
    assert router.overrides() == {}
