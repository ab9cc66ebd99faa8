"""``rlops ope`` end to end: log + candidate in; estimates, reading, gate evidence out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from rlops.artifacts import NetworkSpec, save_policy
from rlops.cli.main import main
from rlops.core.decisions import DecisionRecord
from rlops.evaluation.ope.report import ope_report, render_markdown

DIM, K = 3, 4


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _linear_policy(path: Path, w: np.ndarray) -> Path:
    """A categorical artifact whose logits are ``x @ w`` (no hidden layer)."""
    save_policy(
        path,
        tensors={"pi.layers.0.weight": w.T.copy(), "pi.layers.0.bias": np.zeros(K)},
        observation_space=spaces.Box(-np.inf, np.inf, (DIM,), np.float32),
        action_space=spaces.Discrete(K),
        network=NetworkSpec(
            obs_dim=DIM, act_dim=K, hidden_sizes=(), activation="tanh", head="categorical"
        ),
    )
    return path


@pytest.fixture(scope="module")
def bandit_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A logged contextual bandit with a known expected reward and the candidate's true value."""
    root = tmp_path_factory.mktemp("ope")
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(DIM, K))
    w_behaviour = 0.3 * rng.normal(size=(DIM, K))
    w_candidate = 1.5 * theta  # prefers the actions that pay more

    def q(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(x @ theta)))

    n = 4000
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    pb = _softmax(x.astype(np.float64) @ w_behaviour)
    actions = (pb.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    rewards = (rng.random(n) < q(x)[np.arange(n), actions]).astype(float)
    log = root / "log.jsonl"
    with log.open("w") as fh:
        for i in range(n):
            record = DecisionRecord(
                decision_id=f"d{i}",
                timestamp=float(i),
                unit_id=f"u{i}",
                step=0,
                observation=x[i].tolist(),
                action=int(actions[i]),
                action_distribution=pb[i].tolist(),
                propensity=float(pb[i, actions[i]]),
                policy_version="sha256:behaviour",
                arm="production",
                reward=float(rewards[i]),
            )
            fh.write(record.to_json() + "\n")
    candidate = _linear_policy(root / "candidate", w_candidate.astype(np.float32))
    fresh = rng.normal(size=(200_000, DIM))
    truth = float((_softmax(fresh @ w_candidate.astype(np.float32)) * q(fresh)).sum(axis=1).mean())
    return {"log": log, "candidate": candidate, "truth": truth, "logged": float(rewards.mean())}


def test_bandit_report_covers_the_truth_and_feeds_a_gate(
    bandit_case: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, candidate, truth = bandit_case["log"], bandit_case["candidate"], bandit_case["truth"]
    assert isinstance(truth, float)
    report = ope_report(str(log), str(candidate), baseline_value=bandit_case["logged"])  # type: ignore[arg-type]
    assert report["mode"] == "bandit" and report["decisions"] == 4000
    assert report["recommended"] == "dr"
    assert {"dm", "ips", "snips", "dr", "sndr", "switch_dr"} <= set(report["estimators"])
    dr = report["dr"]
    assert dr["lower_95"] <= truth <= dr["upper_95"], (dr, truth)
    assert abs(report["ips"]["value"] - truth) < 0.05
    assert report["ess"] > 100 and 0 < report["kl_to_production"] < 5
    assert "DR estimate" in report["reading"]
    assert "| dr (recommended) |" in render_markdown(report)

    out = tmp_path / "ope"
    assert (
        main(["ope", "--log", str(log), "--policy", str(candidate), "--out", str(out), "--json"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["dr"]["value"] == pytest.approx(dr["value"])  # same seed, same answer
    assert (out / "ope.md").read_text().startswith("# Off-policy evaluation")
    gate = tmp_path / "gate.yaml"
    gate.write_text("gates:\n  - dr.lower_95 >= 0.3\n  - ess >= 100\n")
    assert main(["gate", "check", str(gate), "--evidence", str(out / "ope.json")]) == 0
    gate.write_text("gates:\n  - dr.lower_95 >= 0.99\n")
    assert main(["gate", "check", str(gate), "--evidence", str(out / "ope.json")]) == 1


def _bad_log(path: Path, **change: object) -> Path:
    base = {
        "decision_id": "d0",
        "timestamp": 0.0,
        "unit_id": "u",
        "step": 0,
        "observation": [0.0, 0.0, 0.0],
        "action": 1,
        "propensity": 0.25,
        "policy_version": "v",
        "arm": "production",
        "action_distribution": [0.25] * 4,
        "reward": 1.0,
    }
    with path.open("w") as fh:
        for i in range(5):
            record = {**base, "decision_id": f"d{i}", **(change if i == 2 else {})}
            fh.write(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"propensity": 0.0}, "propensity: 1 record(s) outside (0, 1] (1 equal to 0)"),
        ({"propensity": 1.5}, "line 3: propensity: must be in [0, 1], got 1.5"),
        ({"action": 7}, "action: 1 record(s) have an action outside the 4 actions"),
        ({"observation": [0.0, 0.0]}, "observation: records have different sizes"),
        ({"action": [0.5]}, "continuous actions"),
    ],
)
def test_bad_logs_are_refused_by_name_with_counts(
    bandit_case: dict[str, object],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, object],
    message: str,
) -> None:
    log = _bad_log(tmp_path / "bad.jsonl", **change)
    code = main(["ope", "--log", str(log), "--policy", str(bandit_case["candidate"])])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_rewards_and_wrong_policy_are_refused(
    bandit_case: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _bad_log(tmp_path / "noreward.jsonl")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({**r, "reward": None}) + "\n" for r in lines))
    assert main(["ope", "--log", str(log), "--policy", str(bandit_case["candidate"])]) == 2
    assert "none of the 5 record(s) has a joined reward" in capsys.readouterr().err
    other = _linear_policy(tmp_path / "wide", np.zeros((DIM, K), np.float32))
    assert main(["ope", "--log", str(tmp_path / "missing.jsonl"), "--policy", str(other)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(["ope", "--log", str(bandit_case["log"]), "--policy", str(other), "--level", "2"]) == 2
    )
    assert "level" in capsys.readouterr().err


def test_sequential_report_on_a_recording(artifacts: dict[str, Path], tmp_path: Path) -> None:
    import rlops
    from rlops.evaluation.recording import record_decisions

    behaviour = rlops.load_policy(artifacts["cartpole_b"])
    log = tmp_path / "rec.jsonl"
    record_decisions(behaviour, "rlops/CartPole-v1", 30, log, seed=3)
    report = ope_report(str(log), str(artifacts["cartpole"]))
    assert report["mode"] == "sequential" and report["episodes"] == 30
    assert report["recommended"] == "seq_dr"
    assert {"pdis", "wpdis", "seq_dr", "fqe"} <= set(report["estimators"])
    json.dumps(report, allow_nan=False)
    on_policy = ope_report(str(log), str(artifacts["cartpole_b"]))
    # Evaluating the logging policy itself: PDIS is the logged mean return exactly.
    assert on_policy["pdis"]["value"] == pytest.approx(on_policy["logged_value"], rel=1e-9)


def test_review_regressions_arms_episode_keys_gaps_and_malformed_records(
    bandit_case: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rlops.evaluation.ope.data import load_decisions, to_episodes

    log = Path(str(bandit_case["log"]))
    lines = log.read_text().splitlines()
    fallback = {
        **json.loads(lines[0]),
        "decision_id": "fb",
        "arm": "fallback",
        "action": 0,
        "propensity": 1.0,
        "action_distribution": [1.0, 0.0, 0.0, 0.0],
    }
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([*lines, json.dumps(fallback)]) + "\n")
    report = ope_report(str(mixed), str(bandit_case["candidate"]))
    assert report["dropped_arms"] == {"fallback": 1} and report["decisions"] == 4000
    assert report["kl_to_production"] is not None  # one fallback row no longer voids it

    # Every user has a session "s1": episodes are per unit, and must start at step 0.
    records = [
        json.loads(line) | {"unit_id": f"user-{i // 2}", "episode_id": "s1", "step": i % 2}
        for i, line in enumerate(lines[:20])
    ]
    records.append(records[0] | {"decision_id": "late", "unit_id": "cut", "step": 3})
    seq = tmp_path / "seq.jsonl"
    seq.write_text("".join(json.dumps(r) + "\n" for r in records))
    episodes = to_episodes(load_decisions(seq), n_actions=4)
    assert episodes.n_episodes == 10 and episodes.dropped_incomplete == 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(json.loads(lines[0]) | {"action_mask": [True, True, True]}) + "\n")
    assert main(["ope", "--log", str(bad), "--policy", str(bandit_case["candidate"])]) == 2
    assert "action_mask: 1 record(s) do not have exactly 4 entries" in capsys.readouterr().err
    argv = ["ope", "--log", str(log), "--policy", str(bandit_case["candidate"])]
    assert main([*argv, "--baseline-value", "nan"]) == 2
    assert "baseline_value: must be a finite number" in capsys.readouterr().err
