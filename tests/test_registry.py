"""The policy registry: governed promotion, aliases in time, the audit chain, the store.

Every behavioural test runs against two SQLAlchemy URLs (a SQLite file and an
in-memory SQLite) and, when ``$RLOPS_TEST_POSTGRES_URL`` names a reachable
PostgreSQL (with ``psycopg`` installed), against PostgreSQL too; otherwise
that case is skipped with the reason. Time is a scripted clock, so "which
version was production at T" has exact answers.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from rlops.core.errors import ConfigError, Conflict, PermissionDenied, RegistryError
from rlops.registry import Registry, RegistrySettings
from rlops.registry import core as registry_core
from rlops.registry.schema import SCHEMA_VERSION

PASSING_GATE = "gates:\n  - holdout.mean_return >= 10\n"
FAILING_GATE = "gates:\n  - holdout.mean_return >= 1000000\n"


class Clock:
    """A scripted clock: each call returns ``now`` and advances it by ``step``."""

    def __init__(self, start: float = 1_800_000_000.0, step: float = 1.0) -> None:
        self.now, self.step = start, step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


def _postgres_url() -> str:
    url = os.environ.get("RLOPS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("PostgreSQL not configured: set RLOPS_TEST_POSTGRES_URL to a scratch database")
    pytest.importorskip(
        "psycopg", reason="PostgreSQL driver missing: pip install 'rlops[postgres]'"
    )
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:  # a scratch database: start empty
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL at RLOPS_TEST_POSTGRES_URL is not reachable: {exc}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'registry.sqlite'}"
    if request.param == "sqlite-memory":
        return "sqlite://"
    return _postgres_url()


@pytest.fixture
def sources(artifacts: dict[str, Path]) -> Path:
    """The directory holding the session's trained runs (an allowed root)."""
    return artifacts["cartpole"].parent.parent


@pytest.fixture
def reg(backend_url: str, tmp_path: Path, sources: Path) -> Iterator[Registry]:
    settings = RegistrySettings(
        url=backend_url, store=tmp_path / "store", allowed_roots=(sources,), user="ada"
    )
    r = Registry.open(settings, clock=Clock())
    r.init("ada")
    for user, role in [
        ("ada", "author"),
        ("bo", "approver"),
        ("cy", "approver"),
        ("dee", "operator"),
        ("eve", "viewer"),
    ]:
        r.grant(user, role)  # type: ignore[arg-type]
    yield r
    r.close()


def _two_versions(reg: Registry, artifacts: dict[str, Path]) -> None:
    reg.register("cartpole", artifacts["cartpole"])
    reg.register("cartpole", artifacts["cartpole_b"])


def _gate(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    return path


# -- promotion ----------------------------------------------------------------------


def test_promotion_waits_for_approval_from_someone_else(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    _two_versions(reg, artifacts)
    req = reg.request_promotion("cartpole", 1, "production", reason="first launch")
    assert req.status == "pending" and req.approvals_required == 1
    assert reg.aliases("cartpole") == {}  # nothing moves without an approval
    with pytest.raises(PermissionDenied, match="separation of duties"):
        reg.approve(req.id)  # ada requested it; ada is admin, still not allowed
    with pytest.raises(PermissionDenied, match="needs 'approver'"):
        reg.as_user("dee").approve(req.id)  # an operator is not an approver
    assert reg.aliases("cartpole") == {}
    done = reg.as_user("bo").approve(req.id, "numbers look right")
    assert done.status == "applied" and done.approvers == ("bo",)
    assert reg.aliases("cartpole") == {"production": 1}
    assert reg.version("cartpole@production").number == 1


def test_two_approvals_needed_means_two_distinct_people(
    reg: Registry, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    _two_versions(reg, artifacts)
    reg.set_rule("production", approvals_required=2, gate_file=None, reason="policy")
    req = reg.request_promotion("cartpole", 2, "production", reason="v2")
    reg.as_user("bo").approve(req.id)
    with pytest.raises(RegistryError, match="already approved"):
        reg.as_user("bo").approve(req.id)
    assert reg.aliases("cartpole") == {}
    assert reg.as_user("cy").approve(req.id).status == "applied"
    assert reg.aliases("cartpole") == {"production": 2}


def test_failing_gate_refuses_the_request_and_records_why(
    reg: Registry, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    _two_versions(reg, artifacts)
    reg.set_rule("production", approvals_required=1, gate_file=_gate(tmp_path, FAILING_GATE))
    reg.record_evidence("cartpole@1", "holdout", {"mean_return": 200.0})
    req = reg.request_promotion("cartpole", 1, "production", reason="try")
    assert req.status == "refused"
    assert (
        req.decision_reason is not None and "holdout.mean_return >= 1000000" in req.decision_reason
    )
    assert req.gate is not None and req.gate["passed"] is False
    with pytest.raises(RegistryError, match="refused"):
        reg.as_user("bo").approve(req.id)
    assert reg.aliases("cartpole") == {}


def test_missing_evidence_fails_the_gate(
    reg: Registry, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    _two_versions(reg, artifacts)
    reg.set_rule("production", approvals_required=1, gate_file=_gate(tmp_path, PASSING_GATE))
    assert reg.request_promotion("cartpole", 1, "production", reason="x").status == "refused"


def test_passing_gate_and_approval_apply_with_the_gate_result_kept(
    reg: Registry, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    _two_versions(reg, artifacts)
    gate = _gate(tmp_path, PASSING_GATE)
    reg.set_rule("production", approvals_required=1, gate_file=gate)
    gate.write_text(FAILING_GATE)  # editing the file later changes nothing: the rule holds the text
    reg.record_evidence("cartpole@2", "holdout", {"mean_return": 150.0})
    req = reg.request_promotion("cartpole", 2, "production", reason="v2 beats v1")
    assert req.status == "pending"
    done = reg.as_user("cy").approve(req.id)
    assert done.status == "applied"
    assert done.gate is not None and done.gate["passed"] is True
    assert done.gate["checks"][0]["left"] == 150.0


def test_gate_is_checked_again_when_the_last_approval_arrives(
    reg: Registry, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    _two_versions(reg, artifacts)
    reg.set_rule("production", approvals_required=1, gate_file=_gate(tmp_path, PASSING_GATE))
    reg.record_evidence("cartpole@1", "holdout", {"mean_return": 150.0})
    req = reg.request_promotion("cartpole", 1, "production", reason="x")
    reg.record_evidence("cartpole@1", "holdout", {"mean_return": 3.0})  # newer, worse evidence
    assert reg.as_user("bo").approve(req.id).status == "refused"
    assert reg.aliases("cartpole") == {}


def test_zero_approval_rule_applies_at_once(reg: Registry, artifacts: dict[str, Path]) -> None:
    _two_versions(reg, artifacts)
    reg.set_rule("candidate", approvals_required=0, gate_file=None)
    assert reg.request_promotion("cartpole", 2, "candidate", reason="ci").status == "applied"
    assert reg.aliases("cartpole") == {"candidate": 2}


def test_reject_needs_a_reason_and_frees_the_alias(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    _two_versions(reg, artifacts)
    req = reg.request_promotion("cartpole", 1, "production", reason="x")
    with pytest.raises(RegistryError, match="reason"):
        reg.as_user("bo").reject(req.id, " ")
    assert reg.as_user("bo").reject(req.id, "OPE interval too wide").status == "rejected"
    again = reg.request_promotion("cartpole", 2, "production", reason="y")
    assert again.status == "pending"


# -- concurrency ----------------------------------------------------------------------


def test_a_second_request_for_the_same_alias_conflicts(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    _two_versions(reg, artifacts)
    first = reg.request_promotion("cartpole", 1, "production", reason="a")
    with pytest.raises(Conflict, match=f"#{first.id} .*already pending"):
        reg.request_promotion("cartpole", 2, "production", reason="b")


def test_concurrent_requests_exactly_one_wins(
    backend_url: str, reg: Registry, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    if backend_url == "sqlite://":
        pytest.skip("one in-memory database is one connection: no concurrency to test")
    _two_versions(reg, artifacts)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt(k: int) -> None:
        # Each thread opens its own engine: separate connections racing for the lock.
        other = Registry.open(reg.settings, clock=Clock(start=1_900_000_000.0 + k))
        barrier.wait()
        try:
            other.request_promotion("cartpole", 1 + k % 2, "production", reason=f"t{k}")
            outcomes.append("won")
        except Conflict:
            outcomes.append("conflict")
        finally:
            other.close()

    threads = [threading.Thread(target=attempt, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    assert len(reg.requests(status="pending")) == 1
    assert reg.verify_audit().ok


def test_a_request_made_before_the_alias_moved_goes_stale(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    _two_versions(reg, artifacts)
    reg.set_rule("production", approvals_required=0, gate_file=None)
    reg.request_promotion("cartpole", 1, "production", reason="v1")
    reg.set_rule("production", approvals_required=1, gate_file=None)
    req = reg.request_promotion("cartpole", 2, "production", reason="v2")
    reg.as_user("dee").rollback("cartpole", "production", reason="incident 42")  # moves it
    with pytest.raises(Conflict, match="stale"):
        reg.as_user("bo").approve(req.id)
    assert reg.request(req.id).status == "stale"
    assert reg.aliases("cartpole") == {}  # the rollback unset it; the stale request did nothing


# -- rollback and history ---------------------------------------------------------------


def test_rollback_is_immediate_for_operators_and_audited(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    _two_versions(reg, artifacts)
    reg.set_rule("production", approvals_required=0, gate_file=None)
    reg.request_promotion("cartpole", 1, "production", reason="v1")
    reg.request_promotion("cartpole", 2, "production", reason="v2")
    with pytest.raises(PermissionDenied, match="operator"):
        reg.as_user("bo").rollback("cartpole", "production", reason="x")
    with pytest.raises(RegistryError, match="reason"):
        reg.as_user("dee").rollback("cartpole", "production", reason="")
    move = reg.as_user("dee").rollback("cartpole", "production", reason="p99 regression")
    assert (move.previous, move.number) == (2, 1)
    assert reg.aliases("cartpole") == {"production": 1}
    last = reg.audit_log(policy="cartpole")[-1]
    assert (last.actor, last.action, last.reason) == ("dee", "alias.rollback", "p99 regression")
    assert (last.before, last.after) == ({"version": 2}, {"version": 1})


def test_which_version_was_production_at_time_t(reg: Registry, artifacts: dict[str, Path]) -> None:
    _two_versions(reg, artifacts)
    clock = reg.clock
    assert isinstance(clock, Clock)
    reg.set_rule("production", approvals_required=0, gate_file=None)
    clock.now = 2_000_000_000.0
    reg.request_promotion("cartpole", 1, "production", reason="v1")  # moves at ~2e9 + 2
    clock.now = 2_000_000_100.0
    reg.request_promotion("cartpole", 2, "production", reason="v2")  # moves at ~2e9 + 102
    clock.now = 2_000_000_200.0
    reg.as_user("dee").rollback("cartpole", "production", reason="bad")  # at ~2e9 + 201
    clock.now = 2_000_000_300.0
    reg.as_user("dee").rollback("cartpole", "production", reason="bad", unset=True)
    moments = [h.at for h in reg.history("cartpole", "production")]
    assert reg.at("cartpole", "production", moments[0] - 1) is None
    assert reg.at("cartpole", "production", moments[0]) == 1
    assert reg.at("cartpole", "production", moments[1] - 0.5) == 1
    assert reg.at("cartpole", "production", moments[1]) == 2
    assert reg.at("cartpole", "production", moments[2] + 10) == 1
    assert reg.at("cartpole", "production", moments[3] + 10) is None
    assert reg.at("cartpole", "canary", moments[3]) is None


# -- audit chain ----------------------------------------------------------------------------


def _tamper(reg: Registry, *sql: str) -> None:
    """Edit the audit tables the way someone with database access could: switch the
    append-only triggers off first (SQLite: drop them; PostgreSQL: disable them)."""
    with reg.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_events_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_events_no_delete")
        else:
            conn.exec_driver_sql(
                "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"
            )
        for statement in sql:
            conn.exec_driver_sql(statement)


def _history(reg: Registry, artifacts: dict[str, Path]) -> int:
    _two_versions(reg, artifacts)
    reg.set_rule("production", approvals_required=0, gate_file=None)
    reg.request_promotion("cartpole", 1, "production", reason="v1")
    reg.as_user("dee").rollback("cartpole", "production", reason="drill")
    result = reg.verify_audit()
    assert result.ok and result.events >= 10
    return result.events


def test_the_audit_table_refuses_updates_and_deletes(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    _history(reg, artifacts)
    for statement in [
        "UPDATE audit_events SET reason = 'nothing happened' WHERE seq = 3",
        "DELETE FROM audit_events WHERE seq = 3",
    ]:
        with pytest.raises(DBAPIError, match="append-only"), reg.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    assert reg.verify_audit().ok


@pytest.mark.parametrize(
    ("sql", "first_bad", "words"),
    [
        (["UPDATE audit_events SET reason = 'routine' WHERE seq = 5"], 5, "edited"),
        (["UPDATE audit_events SET actor = 'mallory' WHERE seq = 2"], 2, "edited"),
        (["DELETE FROM audit_events WHERE seq = 4"], 4, "missing"),
        # Swap events 3 and 4 with their seq numbers (a reorder that keeps seq dense).
        (
            [
                "UPDATE audit_events SET seq = -3 WHERE seq = 3",
                "UPDATE audit_events SET seq = 3 WHERE seq = 4",
                "UPDATE audit_events SET seq = 4 WHERE seq = -3",
            ],
            3,
            "broken",
        ),
    ],
)
def test_verify_names_the_first_tampered_event(
    reg: Registry, artifacts: dict[str, Path], sql: list[str], first_bad: int, words: str
) -> None:
    _history(reg, artifacts)
    _tamper(reg, *sql)
    result = reg.verify_audit()
    assert not result.ok
    assert result.first_bad == first_bad
    assert words in result.problem


def test_verify_catches_deleted_newest_events_and_a_rewritten_chain(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    n = _history(reg, artifacts)
    kept_head = reg.verify_audit().head_hash
    _tamper(reg, f"DELETE FROM audit_events WHERE seq = {n}")
    result = reg.verify_audit()
    assert not result.ok and "newest events were deleted" in result.problem
    _tamper(
        reg,
        f"UPDATE audit_head SET seq = {n - 1}, hash = (SELECT hash FROM audit_events "
        f"WHERE seq = {n - 1})",
    )
    assert reg.verify_audit().ok  # head rewritten too: only an outside copy can tell
    outside = reg.verify_audit(expected_head=kept_head)
    assert not outside.ok and "rewritten" in outside.problem


# -- store and sources ----------------------------------------------------------------------


def test_sources_outside_the_allowed_roots_are_refused(
    reg: Registry, artifacts: dict[str, Path], tmp_path: Path, sources: Path
) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(artifacts["cartpole"], outside)
    escaping_link = sources / "link-out"
    escaping_link.symlink_to(outside, target_is_directory=True)
    try:
        for source in [
            "file:///etc/",
            "/etc",
            str(sources / ".." / "outside"),
            str(outside),
            f"file://{outside}",
            str(escaping_link),
            "http://example.com/artifact",
        ]:
            with pytest.raises(RegistryError, match="source"):
                reg.register("cartpole", source)
    finally:
        escaping_link.unlink()
    assert reg.policies() == []


def test_a_link_inside_the_artifact_is_refused(
    reg: Registry, artifacts: dict[str, Path], sources: Path
) -> None:
    art = sources / "linked-artifact"
    art.mkdir()
    try:
        shutil.copy(artifacts["cartpole"] / "model.safetensors", art / "model.safetensors")
        (art / "policy.json").symlink_to(artifacts["cartpole"] / "policy.json")
        with pytest.raises(RegistryError, match="symbolic link"):
            reg.register("cartpole", art)
    finally:
        shutil.rmtree(art)


def test_tampered_copies_are_refused(
    reg: Registry, artifacts: dict[str, Path], sources: Path
) -> None:
    v = reg.register("cartpole", artifacts["cartpole"])
    assert reg.artifact_path("cartpole@1") == v.path
    manifest = v.path / "policy.json"
    manifest.write_text(manifest.read_text().replace('"ppo"', '"dqn"'))
    with pytest.raises(RegistryError, match="store"):
        reg.artifact_path("cartpole@1")
    bad = sources / "bad-artifact"
    shutil.copytree(artifacts["cartpole_b"], bad)
    try:
        data = bytearray((bad / "model.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (bad / "model.safetensors").write_bytes(bytes(data))
        with pytest.raises(RegistryError, match="register"):
            reg.register("cartpole", bad)
    finally:
        shutil.rmtree(bad)


def test_registering_a_run_directory_takes_its_artifact_and_lineage(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    v = reg.register("cartpole", artifacts["cartpole"].parent)
    assert v.lineage["complete"] is True
    assert v.lineage["run"]["config_sha256"] == v.lineage["manifest"]["training"]["config_sha256"]
    assert v.lineage["training_summary"]["version"] == v.content_hash


# -- bad input ------------------------------------------------------------------------------


def test_unknown_names_duplicates_and_bad_refs(reg: Registry, artifacts: dict[str, Path]) -> None:
    with pytest.raises(RegistryError, match="not registered; the registry is empty"):
        reg.version("nope@1")
    reg.register("cartpole", artifacts["cartpole"])
    with pytest.raises(RegistryError, match="already this artifact"):
        reg.register("cartpole", artifacts["cartpole"])
    with pytest.raises(RegistryError, match="has no version 7"):
        reg.version("cartpole@7")
    with pytest.raises(RegistryError, match="no version at alias 'production'"):
        reg.version("cartpole@production")
    with pytest.raises(RegistryError, match="not a valid alias"):
        reg.request_promotion("cartpole", 1, "Prod!", reason="x")
    with pytest.raises(RegistryError, match="not a valid name"):
        reg.register("../etc", artifacts["cartpole"])
    with pytest.raises(RegistryError, match="does not exist"):
        reg.as_user("bo").approve(99)
    with pytest.raises(RegistryError, match="reason"):
        reg.request_promotion("cartpole", 1, "production", reason="")
    assert (
        reg.version("cartpole@sha256:" + reg.version("cartpole@1").content_hash[7:15]).number == 1
    )


def test_roles_are_checked_on_every_mutation(reg: Registry, artifacts: dict[str, Path]) -> None:
    with pytest.raises(PermissionDenied, match="'eve' has role"):
        reg.as_user("eve").register("cartpole", artifacts["cartpole"])
    with pytest.raises(PermissionDenied, match="not a member"):
        reg.as_user("stranger").register("cartpole", artifacts["cartpole"])
    with pytest.raises(PermissionDenied, match="no user"):
        Registry(replace(reg.settings, user=None), reg.engine).grant("x", "author")
    reg.register("cartpole", artifacts["cartpole"])
    with pytest.raises(PermissionDenied, match="needs 'admin'"):
        reg.as_user("bo").grant("bo", "admin")
    with pytest.raises(PermissionDenied, match="already has members"):
        reg.init("mallory")
    with pytest.raises(RegistryError, match="last admin"):
        reg.revoke("ada", "admin")
    token = reg.create_token("bo", "ci")
    assert reg.identity_for_token(token) == "bo"
    assert reg.identity_for_token(token + "x") is None
    stored = [e for e in reg.audit_log() if e.action == "token.create"]
    assert token not in str(stored[0].to_dict())


def test_nothing_half_written_when_a_step_fails(
    reg: Registry, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_versions(reg, artifacts)
    before = len(reg.audit_log())

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk gone mid-transaction")

    monkeypatch.setattr(registry_core.audit, "append", boom)
    with pytest.raises(RuntimeError):
        reg.request_promotion("cartpole", 1, "production", reason="x")
    monkeypatch.undo()
    assert reg.requests() == [] and len(reg.audit_log()) == before


def test_a_locked_database_is_a_clear_error(
    tmp_path: Path, sources: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "locked.sqlite"
    settings = RegistrySettings(
        url=f"sqlite:///{db}", store=tmp_path / "s", allowed_roots=(sources,), user="ada"
    )
    reg = Registry.open(settings)
    reg.init("ada")
    monkeypatch.setattr(registry_core, "BUSY_TIMEOUT_S", 0.2)
    locked = Registry.open(settings)  # a new engine picks up the short timeout
    holder = sqlite3.connect(db, timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RegistryError, match=r"locked .*nothing was written"):
            locked.grant("bo", "author")
    finally:
        holder.rollback()
        holder.close()
    assert "bo" not in reg.members()
    locked.close()
    reg.close()


def test_an_unreachable_or_unusable_database_is_a_clear_error(tmp_path: Path) -> None:
    afile = tmp_path / "plain-file"
    afile.write_text("x")
    with pytest.raises(RegistryError, match="cannot create the directory"):
        Registry.open(RegistrySettings(url=f"sqlite:///{afile}/reg.sqlite"))
    notdb = tmp_path / "not-a-db.sqlite"
    notdb.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="database error"):
        Registry.open(RegistrySettings(url=f"sqlite:///{notdb}"))
    with pytest.raises(ConfigError, match=r"registry\.url"):
        Registry.open(RegistrySettings(url="not a url"))


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    Registry.open(RegistrySettings(url=url)).close()
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    with conn:
        conn.execute(f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1}, 0)")
    conn.close()
    with pytest.raises(RegistryError, match="Upgrade rlops"):
        Registry.open(RegistrySettings(url=url))


# -- found in review ----------------------------------------------------------------------


def test_a_linked_artifact_directory_inside_a_run_is_refused(
    reg: Registry, artifacts: dict[str, Path], tmp_path: Path, sources: Path
) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(artifacts["cartpole"], outside)
    run = sources / "run-with-linked-artifact"
    run.mkdir()
    try:
        (run / "artifact").symlink_to(outside, target_is_directory=True)
        with pytest.raises(RegistryError, match="symbolic link"):
            reg.register("cartpole", run)
    finally:
        shutil.rmtree(run)
    assert reg.policies() == []


def test_rollbacks_walk_back_instead_of_flipping(reg: Registry, artifacts: dict[str, Path]) -> None:
    _two_versions(reg, artifacts)
    reg.set_rule("production", approvals_required=0, gate_file=None)
    for number in (1, 2):
        reg.request_promotion("cartpole", number, "production", reason=f"v{number}")
    reg.request_promotion("cartpole", 1, "production", reason="v1 again")  # history 1, 2, 1
    reg.request_promotion("cartpole", 2, "production", reason="v2 again")  # 1, 2, 1, 2
    operator = reg.as_user("dee")
    assert operator.rollback("cartpole", "production", reason="bad").number == 1
    assert operator.rollback("cartpole", "production", reason="bad too").number == 2
    assert operator.rollback("cartpole", "production", reason="and again").number == 1
    assert operator.rollback("cartpole", "production", reason="empty").number is None


def test_rollback_with_an_expected_version_leaves_a_newer_one_alone(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    _two_versions(reg, artifacts)
    reg.set_rule("canary", approvals_required=0, gate_file=None)
    reg.request_promotion("cartpole", 1, "canary", reason="try 1")
    reg.request_promotion("cartpole", 2, "canary", reason="try 2")
    with pytest.raises(Conflict, match="not 1"):
        reg.as_user("dee").rollback("cartpole", "canary", reason="old", unset=True, expected=1)
    assert reg.aliases("cartpole") == {"canary": 2}


def test_a_tightened_rule_and_revoked_approvers_count_at_apply_time(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    _two_versions(reg, artifacts)
    req = reg.request_promotion("cartpole", 1, "canary", reason="x")  # needs 1 when made
    reg.set_rule("canary", approvals_required=2, gate_file=None, reason="stricter")
    assert reg.as_user("bo").approve(req.id).status == "pending"  # 1 of 2 now
    reg.revoke("bo", "approver", reason="left the team")
    assert reg.as_user("cy").approve(req.id).status == "pending"  # bo's approval lapsed
    reg.grant("fay", "approver")
    assert reg.as_user("fay").approve(req.id).status == "applied"


def test_withdrawing_ones_own_request_needs_the_author_role(
    reg: Registry, artifacts: dict[str, Path]
) -> None:
    _two_versions(reg, artifacts)
    reg.grant("gus", "author")
    req = reg.as_user("gus").request_promotion("cartpole", 1, "canary", reason="x")
    reg.revoke("gus", "author")
    with pytest.raises(PermissionDenied):
        reg.as_user("gus").reject(req.id, "withdrawn")
    assert reg.request(req.id).status == "pending"


def test_non_json_numbers_in_evidence_are_refused_and_nothing_is_left(
    reg: Registry, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    nan = tmp_path / "nan.json"
    nan.write_text('{"mean_return": NaN}')
    with pytest.raises(RegistryError, match="NaN"):
        reg.register("cartpole", artifacts["cartpole"], evidence_files=[("holdout", nan)])
    assert not (reg.store / "sha256").exists() or not any((reg.store / "sha256").iterdir())
    reg.register("cartpole", artifacts["cartpole"])
    with pytest.raises(RegistryError, match="evidence"):
        reg.record_evidence("cartpole@1", "holdout", {"mean_return": float("inf")})
    with pytest.raises(RegistryError, match="evidence"):
        reg.record_evidence_many("cartpole@1", [("good", {"x": 1}), ("bad", {"x": float("nan")})])
    assert reg.evidence("cartpole@1") == {}  # all or none


def test_approve_and_reject_racing_leave_one_consistent_outcome(
    backend_url: str, reg: Registry, artifacts: dict[str, Path]
) -> None:
    if backend_url == "sqlite://":
        pytest.skip("one in-memory database is one connection: no concurrency to test")
    _two_versions(reg, artifacts)
    reg.set_rule("production", approvals_required=2, gate_file=None)
    req = reg.request_promotion("cartpole", 1, "production", reason="race")
    reg.grant("fay", "approver")
    reg.as_user("fay").approve(req.id)
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(3)

    def act(user: str, verb: str) -> None:
        other = Registry.open(reg.settings.with_user(user))
        barrier.wait()
        try:
            if verb == "approve":
                other.approve(req.id)
            else:
                other.reject(req.id, "no")
            outcomes[user] = "done"
        except RegistryError as exc:
            outcomes[user] = str(exc)
        finally:
            other.close()

    threads = [
        threading.Thread(target=act, args=("bo", "approve")),
        threading.Thread(target=act, args=("cy", "reject")),
        threading.Thread(target=act, args=("ada", "approve")),  # ada requested: refused
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = reg.request(req.id)
    assert outcomes["ada"] != "done"  # her own request: refused, whatever came first
    assert final.status in ("applied", "rejected")
    assert (reg.aliases("cartpole") == {"production": 1}) == (final.status == "applied")
    assert list(outcomes.values()).count("done") == 1  # bo's approval or cy's rejection
    assert reg.verify_audit().ok
