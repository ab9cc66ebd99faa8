"""Promotion gates: declarative checks on recorded evidence, thin evidence refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlops.cli.main import main
from rlops.core.errors import ConfigError
from rlops.evaluation.gates import check_gates, load_evidence, load_gate_file

GATES = """\
description: production promotion
gates:
  - dr.lower_95 >= baseline_value
  - dr.diagnostics.ess >= 1000
  - name: edge cases clean
    check: edge_case_suite.violations == 0
  - kl_to_production <= 0.1
"""


def _write(tmp: Path, name: str, data: object) -> Path:
    path = tmp / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "gates": _write(tmp_path, "gates.yaml", GATES),
        "ope": _write(
            tmp_path,
            "ope.json",
            {
                "dr": {"lower_95": 0.61, "diagnostics": {"ess": 4000.0}},
                "baseline_value": 0.58,
                "kl_to_production": 0.04,
            },
        ),
        "edge": _write(tmp_path, "edge.json", {"violations": 0}),
    }


def test_all_checks_pass_and_the_record_keeps_every_number(files: dict[str, Path]) -> None:
    spec, digest = load_gate_file(files["gates"])
    evidence, sources = load_evidence([str(files["ope"]), f"edge_case_suite={files['edge']}"])
    result = check_gates(spec, evidence, gate_file="g", gate_sha256=digest, sources=sources)
    assert result.passed
    assert [(c.name, c.left, c.right) for c in result.checks] == [
        ("dr.lower_95 >= baseline_value", 0.61, 0.58),
        ("dr.diagnostics.ess >= 1000", 4000.0, 1000.0),
        ("edge cases clean", 0.0, 0.0),
        ("kl_to_production <= 0.1", 0.04, 0.1),
    ]
    assert set(result.evidence) == {str(files["ope"]), "edge_case_suite"}
    assert len(result.gate_sha256 or "") == 64
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_failing_or_missing_number_fails_the_gate(files: dict[str, Path]) -> None:
    spec, _ = load_gate_file(files["gates"])
    evidence, _ = load_evidence([str(files["ope"])])  # no edge-case evidence
    result = check_gates(spec, evidence)
    assert not result.passed
    missing = result.checks[2]
    assert not missing.passed and "not in the evidence" in missing.reason
    evidence["dr"]["lower_95"] = 0.5
    evidence["edge_case_suite"] = {"violations": 2}
    result = check_gates(spec, evidence)
    assert [c.passed for c in result.checks] == [False, True, False, True]
    evidence["dr"]["lower_95"] = "0.7"  # a string is not a number: refused, not coerced
    assert "not a number" in check_gates(spec, evidence).checks[0].reason
    evidence["dr"]["lower_95"] = None  # an estimator that could not bound the value
    assert not check_gates(spec, evidence).checks[0].passed


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("gates: []", "non-empty list"),
        ("checks: [a >= 1]", "'gates' list"),
        ("gates: ['dr.lower_95 => 1']", "LEFT OP RIGHT"),
        ("gates: ['dr lower >= 1']", "LEFT OP RIGHT"),
        ("gates: [{name: x}]", "check"),
        ("gates: [3]", "a check is a string"),
        ("gates: ['a >= 1']\nextra: 1", "unknown key"),
        ("gates: [a >= [1", "not valid YAML"),
    ],
)
def test_bad_gate_files_are_config_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_gate_file(_write(tmp_path, "g.yaml", text))


def test_evidence_keys_may_not_collide(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.json", {"ess": 1})
    b = _write(tmp_path, "b.json", {"ess": 2})
    with pytest.raises(ConfigError, match="already defined"):
        load_evidence([str(a), str(b)])
    with pytest.raises(ConfigError, match="not JSON"):
        load_evidence([str(_write(tmp_path, "c.json", "{nope"))])
    with pytest.raises(ConfigError, match="not a name"):
        load_evidence([f"bad.name={a}"])


def test_cli_exit_codes_and_record(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "records" / "gate.json"
    argv = ["gate", "check", str(files["gates"]), "--evidence", str(files["ope"])]
    assert main([*argv, "--evidence", f"edge_case_suite={files['edge']}", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["passed"] is True
    assert "gate: PASS" in capsys.readouterr().out
    assert main(argv) == 1  # edge-case evidence missing: refused
    assert "[FAIL] edge cases clean" in capsys.readouterr().out
    assert main(["gate", "check", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
