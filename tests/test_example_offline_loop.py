"""``examples/offline_loop.py --quick``: the whole offline loop through the real CLI.

One subprocess run (about 15 s on 2 cores): baseline training, two weeks of
simulated traffic through ``rlops serve``, ``train-offline``, ``ope`` and
``gate check``, then the simulator's truth. The gate's verdict is not asserted:
on the quick run's 2,000 decisions the interval is wide and either verdict is
an honest one.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "offline_loop.py"


def test_quick_loop_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "loop"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    # Every command is shown before it runs, as a user would type it.
    commands = ("train", "serve", "decisions check", "train-offline", "ope", "gate check")
    for command in (f"rlops {c} " for c in commands):
        assert f"$ {command}" in proc.stderr, command
    assert proc.stderr.count("$ rlops serve ") == 2  # two weeks, two decision logs

    # The artifacts of each step exist.
    for path in ("week1.sqlite", "week2.sqlite", "baseline/artifact/policy.json",
                 "candidate/artifact/policy.json", "ope/ope.json", "ope/ope.md",
                 "gate.json", "summary.json"):  # fmt: skip
        assert (out / path).is_file(), path

    summary = json.loads((out / "summary.json").read_text())
    report = json.loads((out / "ope" / "ope.json").read_text())
    gate = json.loads((out / "gate.json").read_text())
    assert summary["episodes_per_week"] == 2000
    assert report["mode"] == "bandit" and report["decisions"] == 2000  # horizon 1: one-step
    assert report["log"]["path"].endswith("week2.sqlite")  # evaluated on the held-out week
    assert summary["algo"] == "bandit-dr"
    assert gate["passed"] == summary["gate"]["passed"]
    assert gate["checks"][0]["expression"] == "recommended_estimate.lower_95 >= baseline_value"
    candidate = summary["truth"]["candidate"]
    assert math.isfinite(candidate["value"]) and 0 < candidate["se"] < 0.2
    dr = summary["ope"]["dr"]
    assert dr["lower_95"] <= dr["value"] <= dr["upper_95"]

    # The final table: the candidate's true value beside the recommended OPE estimate.
    table = proc.stdout
    truth_row = re.search(r"candidate bandit-dr, simulator \(the truth\)\s+([\d.]+)", table)
    ope_row = re.search(
        r"candidate, OPE on week 2: dr \(recommended\)\s+([\d.]+)\s+([\d.]+) to ([\d.]+)", table
    )
    assert truth_row and ope_row, table
    assert float(truth_row.group(1)) == pytest.approx(candidate["value"], abs=0.006)
    assert float(ope_row.group(1)) == pytest.approx(dr["value"], abs=0.006)
    assert "truth inside the dr interval: " in table
    assert re.search(r"gate gates\.yaml: (PASS|FAIL)", table)
    assert "OPE reading: On 2,000 logged decisions" in table


def test_refuses_a_used_output_directory(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "not empty" in proc.stderr
