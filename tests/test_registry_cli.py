"""The registry CLI as a user runs it: identities from ``$RLOPS_USER`` / ``--as``,
settings from ``rlops.yaml``, exit codes (0 done, 1 refused by a gate or a
broken audit chain, 2 an error in one line), and ``rlops reproduce``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from rlops.cli.main import main


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Path]) -> Path:
    """A project directory with an rlops.yaml whose allowed root holds the trained runs."""
    monkeypatch.chdir(tmp_path)
    for var in ("RLOPS_USER", "RLOPS_REGISTRY_URL", "RLOPS_REGISTRY_STORE", "RLOPS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    runs = artifacts["cartpole"].parent.parent
    (tmp_path / "rlops.yaml").write_text(
        f"registry:\n  url: sqlite:///{tmp_path}/data/registry.sqlite\n"
        f"  store: {tmp_path}/data/artifacts\n  allowed_roots: [{runs}]\n"
    )
    assert main(["registry", "init", "--admin", "ada"]) == 0
    for user, role in [("ada", "author"), ("bo", "approver"), ("dee", "operator")]:
        assert main(["registry", "grant", user, role, "--as", "ada"]) == 0
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_register_promote_approve_audit(
    project: Path,
    artifacts: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    capsys.readouterr()
    monkeypatch.setenv("RLOPS_USER", "ada")
    code, out, _ = run(capsys, "registry", "register", "cartpole", str(artifacts["cartpole"]))
    assert code == 0 and "registered cartpole@1" in out and "lineage : run" in out
    code, out, _ = run(capsys, "promote", "cartpole", "1", "--to", "production", "--reason", "go")
    assert code == 0 and "pending" in out and "rlops approve 1" in out
    code, _, err = run(capsys, "approve", "1")
    assert code == 2 and "separation of duties" in err and "Traceback" not in err
    assert err.count("\n") == 1
    code, out, _ = run(capsys, "approve", "1", "--as", "bo", "--comment", "lgtm")
    assert code == 0 and "applied" in out
    code, out, _ = run(capsys, "registry", "list", "cartpole", "--json")
    assert json.loads(out)["aliases"] == {"production": 1}
    code, out, _ = run(capsys, "registry", "at", "cartpole", "production", "--time", "2100-01-01")
    assert code == 0 and "version 1" in out
    code, out, _ = run(capsys, "registry", "at", "cartpole", "production", "--time", "2000-01-01")
    assert code == 0 and "was not set" in out
    code, out, _ = run(
        capsys, "rollback", "cartpole", "--alias", "production", "--reason", "drill", "--as", "dee"
    )
    assert code == 0 and "1 -> unset" in out
    code, out, _ = run(capsys, "audit", "log", "--policy", "cartpole")
    assert "alias.promote" in out and "alias.rollback" in out and "drill" in out
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "intact" in out
    conn = sqlite3.connect(project / "data" / "registry.sqlite")
    with conn:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 6")
    conn.close()
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 1 and "BROKEN at event 6" in out


def test_gate_refusal_exits_1_and_bad_input_exits_2(
    project: Path,
    artifacts: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RLOPS_USER", "ada")
    (project / "nan.json").write_text('{"mean_return": NaN}')
    gate = project / "gate.yaml"
    gate.write_text("gates:\n  - holdout.mean_return >= 1000\n")
    report = project / "holdout.json"
    report.write_text(json.dumps({"mean_return": 12.0}))
    assert main(["registry", "protect", "production", "--approvals", "1", "--gate", str(gate)]) == 0
    assert (
        main(
            [
                "registry",
                "register",
                "cartpole",
                str(artifacts["cartpole"]),
                "--evidence",
                f"holdout={report}",
            ]
        )
        == 0
    )
    capsys.readouterr()
    code, out, _ = run(capsys, "promote", "cartpole", "1", "--to", "production", "--reason", "x")
    assert code == 1 and "refused" in out and "holdout.mean_return >= 1000" in out
    for argv, words in [
        (["registry", "show", "nope@1"], "not registered"),
        (["registry", "register", "cartpole", "/etc"], "outside the allowed roots"),
        (["registry", "at", "cartpole", "production", "--time", "yesterday"], "ISO 8601"),
        (["approve", "42"], "does not exist"),
        (["registry", "register", "cartpole", str(artifacts["cartpole"]), "--as", "dee"], "author"),
        (["registry", "show", "cartpole@\u00b2"], "not a valid alias"),
        (["registry", "show", "cartpole@99999999999999999999"], "not a valid alias"),
        (["approve", "99999999999999999999"], "does not exist"),
        (["registry", "at", "cartpole", "production", "--time", "1e20"], "outside 1970"),
        (
            ["registry", "record", "cartpole@1", f"ok={report}", f"bad={project / 'nan.json'}"],
            "NaN",
        ),
    ]:
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert words in err and "Traceback" not in err, (argv, err)
    code, out, _ = run(capsys, "registry", "show", "cartpole@1")
    assert "ok" not in json.loads(out)["evidence"]  # the failed record wrote nothing
    monkeypatch.delenv("RLOPS_USER")
    code, _, err = run(capsys, "promote", "cartpole", "1", "--to", "canary", "--reason", "x")
    assert code == 2 and "RLOPS_USER" in err


def test_reproduce_gives_the_same_weights_on_the_inline_backend(
    project: Path,
    artifacts: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RLOPS_USER", "ada")
    assert main(["registry", "register", "cartpole", str(artifacts["cartpole_b"])]) == 0
    capsys.readouterr()
    code, out, _ = run(
        capsys, "reproduce", "cartpole@1", "--out", str(project / "again"), "--json", "--strict"
    )
    result = json.loads(out)
    assert code == 0 and result["identical"] is True
    assert result["reproduced"] == result["registered"]
