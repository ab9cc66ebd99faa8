"""Admin tokens and the hash-chained admin log: known answers, refusal, tamper detection."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from rlops.core.errors import ConfigError, RlopsError
from rlops.serving.admin import (
    ADMIN_ACTIONS,
    GENESIS_HASH,
    AdminLog,
    check_token,
    entry_hash,
    resolve_token,
)

TOKEN = "A-very-secret_token.0123456789"


# ------------------------------------------------------------------ tokens


def test_explicit_token_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLOPS_ADMIN_TOKEN", "from-the-environment-0123")
    assert resolve_token(TOKEN) == (TOKEN, False)
    assert resolve_token(None) == ("from-the-environment-0123", False)
    monkeypatch.setenv("MY_TOKEN", "another-env-token-0123456")
    assert resolve_token(None, env_var="MY_TOKEN") == ("another-env-token-0123456", False)


@pytest.mark.parametrize("env_value", [None, ""])
def test_token_is_generated_never_defaulted(
    monkeypatch: pytest.MonkeyPatch, env_value: str | None
) -> None:
    if env_value is None:
        monkeypatch.delenv("RLOPS_ADMIN_TOKEN", raising=False)
    else:
        monkeypatch.setenv("RLOPS_ADMIN_TOKEN", env_value)
    first, generated = resolve_token(None)
    second, _ = resolve_token(None)
    assert generated is True
    assert first != second  # fresh randomness, not a default
    assert len(first) >= 43  # token_urlsafe(32): 32 random bytes
    assert check_token(f"Bearer {first}", first)


@pytest.mark.parametrize(
    ("token", "match"),
    [("", "at least 16"), ("short", "at least 16"), ("has a space 0123456789", "only letters")],
)
def test_weak_or_malformed_tokens_are_refused(token: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_token(token)


def test_weak_environment_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLOPS_ADMIN_TOKEN", "abc")
    with pytest.raises(ConfigError, match=r"\$RLOPS_ADMIN_TOKEN"):
        resolve_token(None)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"  Bearer   {TOKEN}  ", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Bearer {TOKEN} extra", False),
        (f"Basic {TOKEN}", False),
        (f"Bearer{TOKEN}", False),
        (TOKEN, False),
        ("Bearer", False),
        ("Bearer ", False),
        ("", False),
        (None, False),
        ("Bearer tøken-with-non-ascii-0123", False),
        ("Bearer " + "a" * 5000, False),
    ],
)
def test_check_token(header: str | None, ok: bool) -> None:
    assert check_token(header, TOKEN) is ok


def test_check_token_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # admin looks it up at call time
    assert check_token(f"Bearer {TOKEN}", TOKEN)
    assert not check_token("Bearer wrong-token-0123456789", TOKEN)
    assert len(calls) == 2


def test_check_token_refuses_an_empty_expected_token() -> None:
    with pytest.raises(ConfigError, match="empty"):
        check_token("Bearer ", "")


# -------------------------------------------------------------------- log


def clock() -> Callable[[], float]:
    ticks = iter(range(1_700_000_000, 1_800_000_000))
    return lambda: float(next(ticks))


def make_log(tmp_path: Path, n: int = 5) -> AdminLog:
    log = AdminLog(tmp_path / "admin" / "log.jsonl", clock=clock())
    for i in range(n):
        log.append(f"user{i}", ADMIN_ACTIONS[i % len(ADMIN_ACTIONS)], {"i": i}, f"reason {i}")
    return log


def read_lines(log: AdminLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


def write_lines(log: AdminLog, lines: list[str]) -> None:
    log.path.write_text("".join(lines))


def test_first_entry_known_answer(tmp_path: Path) -> None:
    log = AdminLog(tmp_path / "log.jsonl", clock=lambda: 1700000000.5)
    entry = log.append("alice", "set_canary_share", {"share": 0.05}, "start v18 canary")
    body = (
        '{"action":"set_canary_share","actor":"alice","params":{"share":0.05},'
        f'"prev_hash":"{"0" * 64}","reason":"start v18 canary","seq":1,'
        '"timestamp":1700000000.5}'
    )
    expected = hashlib.sha256(("0" * 64 + body).encode()).hexdigest()
    assert entry.hash == expected
    assert entry.prev_hash == GENESIS_HASH
    written = json.dumps(
        {**json.loads(body), "hash": expected}, sort_keys=True, separators=(",", ":")
    )
    assert log.path.read_text() == written + "\n"


def test_chain_links_every_entry(tmp_path: Path) -> None:
    log = make_log(tmp_path, len(ADMIN_ACTIONS))
    entries = log.entries()
    assert [e.seq for e in entries] == list(range(1, len(ADMIN_ACTIONS) + 1))
    assert [e.action for e in entries] == list(ADMIN_ACTIONS)  # every action is accepted
    prev = GENESIS_HASH
    for e in entries:
        assert e.prev_hash == prev
        assert e.hash == entry_hash(prev, {k: v for k, v in e.to_dict().items() if k != "hash"})
        prev = e.hash
    assert log.head == (len(ADMIN_ACTIONS), prev)
    assert log.verify() == (True, None)


def test_append_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    log = AdminLog(tmp_path / "log.jsonl")
    log.append("alice", "kill_switch_on", {}, "incident")
    first = len(synced)
    assert first >= 1  # the file (and, on creation, its directory)
    log.append("alice", "kill_switch_off", {}, "resolved")
    assert len(synced) == first + 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", "rollback", {}, "why"), "actor"),
        (("  ", "rollback", {}, "why"), "actor"),
        (("alice", "rollback", {}, ""), "reason"),
        (("alice", "rollback", {}, " \n"), "reason"),
        (("alice", "delete_everything", {}, "why"), "action"),
        (("alice", "rollback", {"x": float("nan")}, "why"), "params"),
        (("alice", "rollback", {"x": object()}, "why"), "params"),
        (("alice", "rollback", {1: "a"}, "why"), "params"),
    ],
)
def test_append_refuses_bad_entries_and_writes_nothing(
    tmp_path: Path, args: tuple[object, ...], match: str
) -> None:
    log = make_log(tmp_path, 2)
    before = log.path.read_bytes()
    with pytest.raises(ConfigError, match=match):
        log.append(*args)  # type: ignore[arg-type]
    assert log.path.read_bytes() == before
    assert log.verify() == (True, None)


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    log = make_log(tmp_path, 3)
    head = log.head
    reopened = AdminLog(log.path, clock=clock())
    assert reopened.head == head
    entry = reopened.append("bob", "enable_shadow", {"share": 0.5}, "compare v19")
    assert (entry.seq, entry.prev_hash) == (4, head[1])
    assert reopened.verify() == (True, None)
    assert AdminLog(log.path).verify() == (True, None)


# --------------------------------------------------------- tamper detection


def edit_reason(lines: list[str]) -> list[str]:
    entry = json.loads(lines[2])
    entry["reason"] = "nothing to see here"
    lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    return lines


def edit_and_rehash(lines: list[str]) -> list[str]:
    entry = json.loads(lines[2])
    entry["params"] = {"share": 1.0}
    body = {k: v for k, v in entry.items() if k != "hash"}
    entry["hash"] = entry_hash(entry["prev_hash"], body)
    lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    return lines


def insert_forged(lines: list[str]) -> list[str]:
    # A well-formed entry 3 chained onto entry 2: the old entry 3 no longer links.
    prev = json.loads(lines[1])
    body = {
        "seq": 3,
        "timestamp": prev["timestamp"] + 0.5,
        "actor": "mallory",
        "action": "set_canary_share",
        "params": {"share": 1.0},
        "reason": "looks legit",
        "prev_hash": prev["hash"],
    }
    forged = {**body, "hash": entry_hash(prev["hash"], body)}
    return [
        *lines[:2],
        json.dumps(forged, sort_keys=True, separators=(",", ":")) + "\n",
        *lines[2:],
    ]


TAMPERS: dict[str, tuple[Callable[[list[str]], list[str]], int]] = {
    # name: (edit of the lines, first bad seq)
    "edit a field": (edit_reason, 3),
    "edit a field and recompute its hash": (edit_and_rehash, 4),
    "reformat a line (same content)": (lambda ls: [*ls[:2], ls[2].replace(",", ", "), *ls[3:]], 3),
    "delete a middle line": (lambda ls: ls[:2] + ls[3:], 3),
    "delete the first line": (lambda ls: ls[1:], 1),
    "delete the last line": (lambda ls: ls[:-1], 6),
    "swap two lines": (lambda ls: [*ls[:1], ls[2], ls[1], *ls[3:]], 2),
    "duplicate a line": (lambda ls: [*ls[:3], ls[2], *ls[3:]], 4),
    "insert a forged, well-chained line": (insert_forged, 4),
    "torn last line": (lambda ls: [*ls[:-1], ls[-1][:40]], 6),
    "blank line": (lambda ls: [*ls[:2], "\n", *ls[2:]], 3),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_verify_detects_tampering(tmp_path: Path, name: str) -> None:
    tamper, first_bad = TAMPERS[name]
    log = make_log(tmp_path, 6)
    write_lines(log, tamper(read_lines(log)))
    assert log.verify() == (False, first_bad)
    with pytest.raises(RlopsError, match="refusing to append"):
        log.append("alice", "rollback", {}, "after tampering")


def test_reopened_log_with_broken_chain_can_be_inspected_but_not_extended(tmp_path: Path) -> None:
    log = make_log(tmp_path, 6)
    write_lines(log, edit_reason(read_lines(log)))
    reopened = AdminLog(log.path)
    assert reopened.verify() == (False, 3)
    assert [e.seq for e in reopened.entries()] == [1, 2]
    with pytest.raises(RlopsError, match="fails verification at seq 3"):
        reopened.append("alice", "rollback", {}, "after tampering")


def test_cut_tail_and_appended_forgery_need_the_head(tmp_path: Path) -> None:
    """A chain cannot see its own tail cut off: the known head (in memory or stored) does."""
    log = make_log(tmp_path, 6)
    head = log.head
    write_lines(log, read_lines(log)[:-2])
    assert AdminLog(log.path).verify() == (True, None)  # a fresh reader sees a valid chain...
    assert AdminLog(log.path).verify(expected_head=head) == (
        False,
        5,
    )  # ...the stored head does not
    assert log.verify() == (False, 5)

    other = make_log(tmp_path / "b", 3)
    writer = AdminLog(other.path, clock=clock())  # a second writer behind the first one's back
    writer.append("mallory", "set_canary_share", {"share": 1.0}, "sneaky")
    assert other.verify() == (False, 4)
    with pytest.raises(RlopsError, match="fails verification at seq 4"):
        other.append("alice", "rollback", {}, "too late")


def test_rewritten_tail_is_caught_by_a_stored_head(tmp_path: Path) -> None:
    log = make_log(tmp_path, 4)
    head = log.head
    lines = read_lines(log)[:3]
    write_lines(log, lines)
    rewriter = AdminLog(log.path, clock=clock())
    rewriter.append("mallory", "rollback", {}, "rewritten seq 4")
    assert rewriter.verify() == (True, None)
    assert AdminLog(log.path).verify(expected_head=head) == (False, 4)


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    log = AdminLog(tmp_path / "log.jsonl")

    def worker(name: str) -> None:
        for i in range(25):
            log.append(name, "override_unit", {"unit": f"{name}-{i}", "arm": "canary"}, "pin")

    threads = [threading.Thread(target=worker, args=(f"op{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.verify() == (True, None)
    assert [e.seq for e in AdminLog(log.path).entries()] == list(range(1, 101))
