"""rlops.envs.adapters: replaying recorded traces and driving a live system over HTTP.

Trace replay is checked against the logged rows themselves (N=1 and N=3, JSONL
and CSV), and every malformed file must name the file and the line. The HTTP env
runs against :class:`rlops.testing.FakeHTTPEnvServer` (CartPole on 127.0.0.1, an
ephemeral port); every failure mode must raise EnvError naming the URL within
the timeout, and each test shuts its server down.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from rlops.core.errors import EnvError
from rlops.envs import check_vector_env, make_vec
from rlops.envs.adapters import HTTPEnv, TraceReplayEnv, load_logged_episodes
from rlops.testing import FakeHTTPEnvServer

# ----------------------------------------------------------------------------- trace data

# Four logged episodes, deliberately uneven: terminated, truncated, cut off (no
# flag on the last row) and a one-step episode; propensity missing on one row.
EPISODES: list[dict[str, Any]] = [
    {
        "id": "a",
        "obs": [[0.0, 1.0], [0.5, 1.5], [1.0, 2.0]],
        "actions": [0, 1, 1],
        "rewards": [1.0, -2.5, 3.0],
        "end": "terminated",
        "next": [9.0, 9.5],
        "propensity": [0.5, 0.25, None],
    },
    {
        "id": "b",
        "obs": [[-1.0, 0.0], [-1.25, 0.125]],
        "actions": [2, 0],
        "rewards": [0.5, 0.75],
        "end": "truncated",
        "next": None,
        "propensity": [0.2, 0.8],
    },
    {
        "id": "c",
        "obs": [[3.0, 3.0], [3.5, 3.25], [4.0, 3.5], [4.5, 3.75]],
        "actions": [1, 1, 0, 2],
        "rewards": [0.0, 0.0, 1.0, 10.0],
        "end": None,
        "next": None,
        "propensity": [1.0, 0.5, 0.5, 0.5],
    },
    {
        "id": "d",
        "obs": [[7.0, -7.0]],
        "actions": [1],
        "rewards": [-1.0],
        "end": "terminated",
        "next": [8.0, -8.0],
        "propensity": [0.9],
    },
]


def _records() -> list[dict[str, Any]]:
    records = []
    for ep in EPISODES:
        n = len(ep["obs"])
        for t in range(n):
            last = t == n - 1
            record: dict[str, Any] = {
                "episode_id": ep["id"],
                "step": t,
                "observation": ep["obs"][t],
                "action": ep["actions"][t],
                "reward": ep["rewards"][t],
                "terminated": last and ep["end"] == "terminated",
                "truncated": last and ep["end"] == "truncated",
            }
            if ep["propensity"][t] is not None:
                record["propensity"] = ep["propensity"][t]
            if last and ep["next"] is not None:
                record["next_observation"] = ep["next"]
            records.append(record)
    return records


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _write_csv(path: Path, records: list[dict[str, Any]]) -> Path:
    header = "episode_id,step,obs_0,obs_1,action,reward,terminated,truncated,propensity,"
    header += "next_obs_0,next_obs_1"
    lines = [header]
    for r in records:
        nxt = r.get("next_observation") or ["", ""]
        cells = [r["episode_id"], r["step"], *r["observation"], r["action"], r["reward"]]
        cells += [str(r["terminated"]).lower(), str(r["truncated"]).lower()]
        cells += [r.get("propensity", ""), *nxt]
        lines.append(",".join(str(c) for c in cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(params=["jsonl", "csv"])
def trace_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "jsonl":
        return _write_jsonl(tmp_path / "log.jsonl", _records())
    return _write_csv(tmp_path / "log.csv", _records())


def _expected_stream(first_episode: int, num_envs: int, steps: int) -> list[dict[str, Any]]:
    """What one sub-env must emit per step: its episodes i, i+N, ... mod E, row by row."""
    out: list[dict[str, Any]] = []
    k = 0
    while len(out) < steps:
        ep = EPISODES[(first_episode + k * num_envs) % len(EPISODES)]
        n = len(ep["obs"])
        for t in range(n):
            last = t == n - 1
            out.append(
                {
                    "obs_before": ep["obs"][t],
                    "reward": ep["rewards"][t],
                    "terminated": last and ep["end"] == "terminated",
                    # a cut-off episode (no flag on its last row) replays as truncated
                    "truncated": last and ep["end"] != "terminated",
                    "final": (ep["next"] or ep["obs"][t]) if last else None,
                    "action": ep["actions"][t],
                    "propensity": ep["propensity"][t],
                    "episode_id": ep["id"],
                }
            )
        k += 1
    return out[:steps]


# ----------------------------------------------------------------------------- trace replay


def test_load_logged_episodes_layout(trace_file: Path) -> None:
    log = load_logged_episodes(trace_file)
    assert log.episode_ids == ("a", "b", "c", "d")
    assert log.episode_lengths.tolist() == [3, 2, 4, 1]
    assert log.episode_starts.tolist() == [0, 3, 5, 9]
    assert log.discrete_actions
    assert log.observations.dtype == np.float32 and log.observations.shape == (10, 2)
    assert log.final_observations.tolist() == [[9.0, 9.5], [-1.25, 0.125], [4.5, 3.75], [8, -8]]
    assert log.cut_off.tolist() == [False] * 8 + [True, False]
    assert np.isnan(log.propensities[2]) and log.propensities[3] == 0.2
    offset = 2 if trace_file.suffix == ".csv" else 1  # the CSV header is line 1
    assert log.lines.tolist() == [i + offset for i in range(10)]


@pytest.mark.parametrize("num_envs", [1, 3])
def test_trace_replay_reproduces_the_log(trace_file: Path, num_envs: int) -> None:
    env = TraceReplayEnv(trace_file, num_envs)
    assert env.single_action_space == spaces.Discrete(3)
    assert env.single_observation_space.shape == (2,)
    steps = 25  # every sub-env wraps around at least once
    streams = [_expected_stream(i, num_envs, steps + 1) for i in range(num_envs)]
    obs, info = env.reset(seed=123)
    assert info == {}
    np.testing.assert_array_equal(obs, np.float32([s[0]["obs_before"] for s in streams]))
    rng = np.random.default_rng(0)
    for t in range(steps):
        actions = rng.integers(0, 3, num_envs)
        obs, rewards, terminated, truncated, info = env.step(actions)
        assert obs.dtype == np.float32 and rewards.dtype == np.float64
        assert terminated.dtype == np.bool_ and truncated.dtype == np.bool_
        rows = [s[t] for s in streams]
        np.testing.assert_array_equal(obs, np.float32([s[t + 1]["obs_before"] for s in streams]))
        assert rewards.tolist() == [r["reward"] for r in rows]
        assert terminated.tolist() == [r["terminated"] for r in rows]
        assert truncated.tolist() == [r["truncated"] for r in rows]
        logged = [r["action"] for r in rows]
        assert info["logged_action"].tolist() == logged
        assert info["action_matches"].tolist() == [a == b for a, b in zip(actions, logged)]
        expected_p = [np.nan if r["propensity"] is None else r["propensity"] for r in rows]
        np.testing.assert_array_equal(info["propensity"], expected_p)
        assert info["episode_id"].tolist() == [r["episode_id"] for r in rows]
        done = [r["final"] is not None for r in rows]
        if any(done):
            assert info["_final_obs"].tolist() == done
            for i, r in enumerate(rows):
                expected = r["final"] if done[i] else streams[i][t + 1]["obs_before"]
                np.testing.assert_array_equal(info["final_obs"][i], np.float32(expected))
        else:
            assert "final_obs" not in info
    # reset rewinds every sub-env to its first episode
    np.testing.assert_array_equal(env.reset()[0], np.float32([s[0]["obs_before"] for s in streams]))


def test_trace_replay_passes_the_checker(trace_file: Path) -> None:
    check_vector_env(TraceReplayEnv(trace_file, 3), steps=40)


def test_trace_replay_through_make_vec(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "log.jsonl", _records())
    env = make_vec("rlops/TraceReplay-v0", 2, path=str(path), action_space=spaces.Discrete(5))
    assert isinstance(env, TraceReplayEnv) and env.num_envs == 2
    assert env.single_action_space == spaces.Discrete(5)
    with pytest.raises(EnvError, match="needs kwarg"):
        make_vec("rlops/TraceReplay-v0", 1)
    with pytest.raises(EnvError, match="unknown kwarg"):
        make_vec("rlops/TraceReplay-v0", 1, path=str(path), speed=2)


def test_trace_replay_continuous_actions(tmp_path: Path) -> None:
    records = _records()
    for r in records:
        r["action"] = [float(r["action"]) / 2, -1.5]
    env = TraceReplayEnv(_write_jsonl(tmp_path / "log.jsonl", records), 2)
    assert isinstance(env.single_action_space, spaces.Box)
    assert env.single_action_space.shape == (2,)
    env.reset()
    _, _, _, _, info = env.step(np.array([[0.0, -1.5], [0.0, 0.0]], np.float32))
    assert info["logged_action"].tolist() == [[0.0, -1.5], [1.0, -1.5]]
    assert info["action_matches"].tolist() == [True, False]
    check_vector_env(env, steps=20)


def test_trace_replay_explicit_spaces_must_fit(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "log.jsonl", _records())
    box = spaces.Box(-10.0, 10.0, (2,), np.float32)
    env = TraceReplayEnv(path, observation_space=box, action_space=spaces.Discrete(4))
    assert env.single_observation_space == box
    with pytest.raises(EnvError, match=r"log\.jsonl: observation_space must be a float32 Box"):
        TraceReplayEnv(path, observation_space=spaces.Box(-1.0, 1.0, (3,), np.float32))
    # episode "b" logs obs_0 = -1.25 on line 5
    low_box = spaces.Box(np.float32([-1.1, -10]), np.float32([10, 10]), dtype=np.float32)
    with pytest.raises(EnvError, match=r"log\.jsonl, line 5: observation outside"):
        TraceReplayEnv(path, observation_space=low_box)
    # episode "a" ends on line 3 with next_observation [9.0, 9.5]
    high_box = spaces.Box(np.float32([-10, -10]), np.float32([10, 3.6]), dtype=np.float32)
    with pytest.raises(EnvError, match=r"log\.jsonl, line 3: observation outside"):
        TraceReplayEnv(path, observation_space=high_box)
    with pytest.raises(EnvError, match=r"log\.jsonl, line 4: logged action outside"):
        TraceReplayEnv(path, action_space=spaces.Discrete(2))


def test_trace_replay_rejects_bad_actions(trace_file: Path) -> None:
    env = TraceReplayEnv(trace_file, 2)
    with pytest.raises(EnvError, match="before reset"):
        env.step(np.zeros(2, np.int64))
    env.reset()
    with pytest.raises(EnvError, match="integer actions"):
        env.step(np.array([0, 3]))
    with pytest.raises(EnvError, match="integer actions"):
        env.step(np.zeros(3, np.int64))


JSONL_ROW = (
    '{"episode_id": "e", "step": %s, "observation": %s, "action": 1, "reward": %s, '
    '"terminated": %s, "truncated": false}'
)


def _jsonl(*rows: tuple[Any, Any, Any, Any]) -> str:
    return "\n".join(JSONL_ROW % row for row in rows) + "\n"


GOOD = (0, "[0.0, 1.0]", 1.0, "false")

BAD_JSONL = {
    "empty": ("", 1, "no transitions"),
    "blank lines only": ("\n\n", 1, "no transitions"),
    "invalid json": (_jsonl(GOOD) + "{not json\n", 2, "not valid JSON"),
    "not an object": (_jsonl(GOOD) + "[1, 2]\n", 2, "expected a JSON object"),
    "missing key": (
        _jsonl(GOOD) + '{"episode_id": "e", "step": 1, "observation": [0, 1], "action": 0}\n',
        2,
        r"missing key\(s\) \['reward', 'terminated', 'truncated'\]",
    ),
    "non-numeric reward": (_jsonl(GOOD, (1, "[0.0, 1.0]", '"lots"', "false")), 2, "reward must"),
    "non-numeric observation": (
        _jsonl(GOOD, (1, '[0.0, "x"]', 1.0, "false")),
        2,
        r"observation\[1\] must be a number",
    ),
    "nan observation": (_jsonl(GOOD, (1, "[NaN, 1.0]", 1.0, "false")), 2, "NaN or Inf"),
    "infinite reward": (_jsonl(GOOD, (1, "[0.0, 1.0]", "Infinity", "false")), 2, "finite"),
    "non-integer step": (_jsonl(GOOD, ("1.5", "[0.0, 1.0]", 1.0, "false")), 2, "step must"),
    "steps skip": (
        _jsonl(GOOD, (1, "[0.0, 1.0]", 1.0, "false"), (3, "[0.0, 1.0]", 1.0, "false")),
        3,
        "step 3 of episode 'e' does not follow step 1",
    ),
    "steps repeat": (_jsonl(GOOD, GOOD), 2, "does not follow step 0"),
    "observation length": (_jsonl(GOOD, (1, "[0.0, 1.0, 2.0]", 1.0, "false")), 2, "3 values"),
    "continues after end": (
        _jsonl((0, "[0.0, 1.0]", 1.0, "true"), (1, "[0.0, 1.0]", 1.0, "false")),
        2,
        "continues after it ended",
    ),
    "bad flag": (_jsonl(GOOD, (1, "[0.0, 1.0]", 1.0, '"maybe"')), 2, "terminated must"),
    "bad propensity": (
        _jsonl(GOOD).replace('"truncated": false', '"truncated": false, "propensity": 1.5'),
        1,
        r"propensity 1\.5 is not in \(0, 1\]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_JSONL))
def test_bad_jsonl_names_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, fragment = BAD_JSONL[case]
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EnvError, match=rf"{re.escape(str(path))}, line {line}: .*{fragment}"):
        TraceReplayEnv(path)


CSV_HEADER = "episode_id,step,obs_0,obs_1,action,reward,terminated,truncated\n"

BAD_CSV = {
    "empty": ("", 1, "empty file"),
    "header only": (CSV_HEADER, 2, "no transitions"),
    "missing column": (
        "episode_id,step,obs_0,action,terminated,truncated\ne,0,0.0,1,false,false\n",
        1,
        r"missing column\(s\) \['reward'\]",
    ),
    "missing observation columns": (
        "episode_id,step,action,reward,terminated,truncated\ne,0,1,0.0,false,false\n",
        1,
        r"missing column\(s\) \['obs_0'\]",
    ),
    "gap in obs columns": (
        "episode_id,step,obs_0,obs_2,action,reward,terminated,truncated\n",
        1,
        "no gap",
    ),
    "non-numeric reward": (
        CSV_HEADER + "e,0,0.0,1.0,1,0.5,false,false\ne,1,0,1,0,abc,false,false\n",
        3,
        "reward must be a number, got 'abc'",
    ),
    "non-numeric observation": (CSV_HEADER + "e,0,0.0,one,1,0.5,false,false\n", 2, "obs_1 must"),
    "wrong field count": (CSV_HEADER + "e,0,0.0,1.0,1,0.5,false\n", 2, "7 fields"),
    "steps skip": (
        CSV_HEADER + "e,0,0,0,1,0,false,false\nf,0,0,0,1,0,false,false\ne,2,0,0,1,0,false,false\n",
        4,
        "step 2 of episode 'e' does not follow step 0 \\(line 2\\)",
    ),
    "negative discrete action": (CSV_HEADER + "e,0,0,0,-1,0,false,false\n", 2, "negative"),
}


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_bad_csv_names_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, fragment = BAD_CSV[case]
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EnvError, match=rf"{re.escape(str(path))}, line {line}: .*{fragment}"):
        TraceReplayEnv(path)


def test_missing_or_unknown_trace_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(EnvError, match=rf"{re.escape(str(missing))}: trace file not found"):
        TraceReplayEnv(missing)
    other = tmp_path / "log.parquet"
    other.write_bytes(b"PAR1")
    with pytest.raises(EnvError, match=r"log\.parquet: cannot tell the trace format"):
        TraceReplayEnv(other)


def test_interleaved_episodes_are_grouped(tmp_path: Path) -> None:
    rows = [
        '{"episode_id": 1, "step": 0, "observation": [1], "action": 0, "reward": 1, '
        '"terminated": false, "truncated": false}',
        '{"episode_id": 2, "step": 5, "observation": [2], "action": 1, "reward": 2, '
        '"terminated": true, "truncated": false}',
        '{"episode_id": 1, "step": 1, "observation": [3], "action": 0, "reward": 3, '
        '"terminated": true, "truncated": false}',
    ]
    path = tmp_path / "log.ndjson"
    path.write_text("\n".join(rows), encoding="utf-8")
    log = load_logged_episodes(path)
    assert log.episode_ids == ("1", "2")
    assert log.observations[:, 0].tolist() == [1.0, 3.0, 2.0]
    assert log.lines.tolist() == [1, 3, 2]
    assert log.steps.tolist() == [0, 1, 5]


# ----------------------------------------------------------------------------- HTTP env


@pytest.fixture
def server() -> Iterator[FakeHTTPEnvServer]:
    fake = FakeHTTPEnvServer(max_episode_steps=50, sleep_s=5.0)
    try:
        yield fake
    finally:
        fake.close()


def test_http_env_passes_the_checker(server: FakeHTTPEnvServer) -> None:
    env = HTTPEnv(server.url, 3, timeout_s=5.0)
    try:
        assert env.single_action_space == spaces.Discrete(2)
        assert env.single_observation_space == CartPoleEnv().observation_space
        check_vector_env(env, steps=60)  # CartPole under random actions ends within ~60
    finally:
        env.close()
    assert ("GET", "/spaces") in server.requests


def test_http_env_plays_a_full_episode(server: FakeHTTPEnvServer) -> None:
    env = make_vec("rlops/HTTP-v0", 1, url=server.url + "/", timeout_s=5.0)
    reference = CartPoleEnv()
    try:
        obs, _ = env.reset(seed=7)
        expected, _ = reference.reset(seed=7)
        np.testing.assert_array_equal(obs[0], expected)
        for t in range(1, 200):  # noqa: B007 (t is checked after the loop)
            obs, rewards, terminated, truncated, info = env.step(np.array([1]))
            expected, reward, done, _, _ = reference.step(1)
            assert rewards.tolist() == [reward]
            if done:
                assert terminated.tolist() == [True] and truncated.tolist() == [False]
                assert info["_final_obs"].tolist() == [True]
                np.testing.assert_array_equal(info["final_obs"][0], expected)
                break
            np.testing.assert_array_equal(obs[0], expected)
            assert info == {}
        else:
            pytest.fail("always pushing right must topple the pole")
        assert t < 50
        # same-step autoreset: the returned observation starts a new episode
        assert server.requests[-1] == ("POST", "/reset")
        assert np.abs(obs[0]).max() <= 0.05
        obs, rewards, *_ = env.step(np.array([0]))
        assert rewards.tolist() == [1.0]
    finally:
        env.close()
        reference.close()


def test_http_env_seeds_each_sub_env_and_sends_headers(server: FakeHTTPEnvServer) -> None:
    env = HTTPEnv(server.url, 2, timeout_s=5.0, headers={"Authorization": "Bearer s3cret"})
    try:
        obs, _ = env.reset(seed=10)
        for i in range(2):
            np.testing.assert_array_equal(obs[i], CartPoleEnv().reset(seed=10 + i)[0])
        assert server.last_headers["Authorization"] == "Bearer s3cret"
        np.testing.assert_array_equal(env.reset(seed=10)[0], obs)
    finally:
        env.close()


def test_http_env_truncates(server: FakeHTTPEnvServer) -> None:
    server.max_episode_steps = 3
    env = HTTPEnv(server.url, 2, timeout_s=5.0)
    try:
        env.reset(seed=0)
        for _ in range(2):
            _, _, terminated, truncated, info = env.step(np.array([0, 1]))
            assert not truncated.any() and "final_obs" not in info
        _, _, terminated, truncated, info = env.step(np.array([1, 0]))
        assert truncated.tolist() == [True, True] and not terminated.any()
        assert info["_final_obs"].tolist() == [True, True]
    finally:
        env.close()


STEP_FAULTS = {
    "status500": r"HTTP 500 Internal Server Error: .*injected failure",
    "malformed": "malformed JSON",
    "missing_key": r"no key\(s\) \['reward'\]",
    "wrong_length": r"'observation' has shape \(3,\), expected \(4,\)",
    "nan": "'observation' contains NaN",
}


@pytest.mark.parametrize("fault", list(STEP_FAULTS))
def test_http_step_faults_name_the_url(server: FakeHTTPEnvServer, fault: str) -> None:
    env = HTTPEnv(server.url, 2, timeout_s=2.0)
    try:
        env.reset(seed=0)
        server.faults["step"] = fault
        start = time.monotonic()
        pattern = rf"POST {re.escape(server.url)}/step \(env 0\): .*{STEP_FAULTS[fault]}"
        with pytest.raises(EnvError, match=pattern):
            env.step(np.array([0, 1]))
        assert time.monotonic() - start < 2.0
        server.faults.clear()
        with pytest.raises(EnvError, match=r"call env\.reset"):
            env.step(np.array([0, 1]))  # a failed step leaves the sub-envs out of step
        env.reset(seed=0)
        env.step(np.array([0, 1]))
    finally:
        env.close()


@pytest.mark.parametrize("fault", ["missing_key", "wrong_length", "nan", "status500"])
def test_http_reset_faults_name_the_url(server: FakeHTTPEnvServer, fault: str) -> None:
    env = HTTPEnv(server.url, 1, timeout_s=2.0)
    server.faults["reset"] = fault
    try:
        with pytest.raises(EnvError, match=rf"POST {re.escape(server.url)}/reset \(env 0\): "):
            env.reset(seed=0)
    finally:
        env.close()


@pytest.mark.parametrize(
    ("fault", "fragment"),
    [("status500", "HTTP 500"), ("malformed", "malformed JSON"), ("missing_key", "'action'")],
)
def test_http_spaces_faults_name_the_url(
    server: FakeHTTPEnvServer, fault: str, fragment: str
) -> None:
    server.faults["spaces"] = fault
    with pytest.raises(EnvError, match=rf"GET {re.escape(server.url)}/spaces: .*{fragment}"):
        HTTPEnv(server.url, timeout_s=2.0)


@pytest.mark.parametrize("endpoint", ["spaces", "step"])
def test_http_timeout_is_bounded(server: FakeHTTPEnvServer, endpoint: str) -> None:
    timeout_s = 0.3
    env = HTTPEnv(server.url, 3, timeout_s=timeout_s) if endpoint == "step" else None
    try:
        if env is not None:
            env.reset(seed=0)
        server.faults[endpoint] = "sleep"  # the server sleeps 5 s
        start = time.monotonic()
        pattern = rf"{re.escape(server.url)}/{endpoint}.*no complete response within timeout_s=0.3"
        with pytest.raises(EnvError, match=pattern):
            if env is None:
                HTTPEnv(server.url, timeout_s=timeout_s)
            else:
                env.step(np.array([0, 1, 0]))  # the three sub-envs wait concurrently
        assert time.monotonic() - start < timeout_s + 1.0
    finally:
        if env is not None:
            env.close()


def test_http_timeout_holds_against_a_trickling_server(server: FakeHTTPEnvServer) -> None:
    """Socket timeouts alone would wait forever: each byte arrives within them."""
    server.faults["spaces"] = "trickle"
    start = time.monotonic()
    with pytest.raises(EnvError, match=rf"{re.escape(server.url)}/spaces: no complete response"):
        HTTPEnv(server.url, timeout_s=0.4)
    assert time.monotonic() - start < 1.5


def test_http_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(EnvError, match=rf"GET {re.escape(url)}/spaces: connection refused"):
        HTTPEnv(url, timeout_s=1.0)


def test_http_env_validates_arguments_and_actions(server: FakeHTTPEnvServer) -> None:
    with pytest.raises(EnvError, match="url must look like"):
        HTTPEnv("ftp://127.0.0.1/x")
    with pytest.raises(EnvError, match="timeout_s"):
        HTTPEnv(server.url, timeout_s=0)
    with pytest.raises(EnvError, match=r"needs kwarg\(s\) \['url'\]"):
        make_vec("rlops/HTTP-v0", 1)
    env = HTTPEnv(server.url, 2, timeout_s=2.0)
    try:
        with pytest.raises(EnvError, match="before reset"):
            env.step(np.array([0, 1]))
        env.reset(seed=0)
        with pytest.raises(EnvError, match="integer actions"):
            env.step(np.array([0, 2]))
        with pytest.raises(EnvError, match="integer actions"):
            env.step(np.array([0.5, 1.0]))
        env.step(np.array([0, 1]))  # a rejected action sends nothing and breaks nothing
    finally:
        env.close()


def test_csv_with_crlf_and_vector_actions(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    rows = [
        "episode_id,step,obs_0,action_0,action_1,reward,terminated,truncated,note",
        'e,0,0.5,0.25,-1,1.0,false,false,"a, quoted note"',
        "e,1,0.75,0.5,-1,2.0,True,False,",
    ]
    path.write_bytes("\r\n".join(rows).encode())
    env = TraceReplayEnv(path)
    assert env.single_action_space == spaces.Box(-np.inf, np.inf, (2,), np.float32)
    assert env.episodes.lines.tolist() == [2, 3]
    env.reset()
    _, rewards, _, _, info = env.step(np.float32([[0.25, -1.0]]))
    assert rewards.tolist() == [1.0] and info["action_matches"].tolist() == [True]
    _, rewards, terminated, _, _ = env.step(np.float32([[0.0, 0.0]]))
    assert rewards.tolist() == [2.0] and terminated.tolist() == [True]
