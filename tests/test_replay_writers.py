"""NStepWriter known answers, a brute-force reference, and the RateLimiter across threads."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
import pytest

from rlops.core.errors import ConfigError, ReplayError
from rlops.replay import (
    NStepWriter,
    RateLimiter,
    ReplayBuffer,
    RingStorage,
    TransitionSpec,
    UniformSampler,
)

FINAL = 99.0  # the final observation of an ended episode, distinct from every obs


def step(
    writer: NStepWriter, t: int, reward: float, *, term: bool = False, trunc: bool = False
) -> dict[str, list[Any]]:
    """One single-env step with obs = t, action = t, next_obs = t + 1 (or FINAL)."""
    ended = term or trunc
    out = writer.add(
        np.array([[t]], np.float32),
        np.array([t]),
        np.array([reward]),
        np.array([[FINAL if ended else t + 1]], np.float32),
        np.array([term]),
        np.array([trunc]),
    )
    return {
        "obs": out["obs"][:, 0].tolist(),
        "action": out["action"].tolist(),
        "reward": out["reward"].tolist(),
        "next_obs": out["next_obs"][:, 0].tolist(),
        "terminated": out["terminated"].tolist(),
        "discount": out["discount"].tolist(),
    }


NOTHING: dict[str, list[Any]] = {
    k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "discount")
}


def test_nstep_no_episode_end() -> None:
    writer = NStepWriter(n=3, gamma=0.5, num_envs=1)
    assert step(writer, 0, 1.0) == NOTHING
    assert step(writer, 1, 2.0) == NOTHING
    # R_0 = 1 + 0.5 * 2 + 0.25 * 3, bootstrapping from obs 3 with gamma^3.
    assert step(writer, 2, 3.0) == {
        "obs": [0.0],
        "action": [0],
        "reward": [2.75],
        "next_obs": [3.0],
        "terminated": [False],
        "discount": [0.125],
    }
    assert step(writer, 3, 4.0)["reward"] == [2.0 + 1.5 + 1.0]
    out = step(writer, 4, 5.0)
    assert out["obs"] == [2.0] and out["reward"] == [3.0 + 2.0 + 1.25] and out["next_obs"] == [5.0]


def test_nstep_termination_mid_window_flushes_without_bootstrap() -> None:
    writer = NStepWriter(n=3, gamma=0.5, num_envs=1)
    step(writer, 0, 1.0)
    step(writer, 1, 2.0)
    assert step(writer, 2, 3.0)["reward"] == [2.75]
    assert step(writer, 3, 4.0, term=True) == {
        "obs": [1.0, 2.0, 3.0],
        "action": [1, 2, 3],
        "reward": [2.0 + 1.5 + 1.0, 3.0 + 2.0, 4.0],
        "next_obs": [FINAL, FINAL, FINAL],
        "terminated": [True, True, True],
        "discount": [0.125, 0.25, 0.5],
    }
    assert writer.pending.tolist() == [0]


def test_nstep_truncation_mid_window_keeps_the_bootstrap() -> None:
    writer = NStepWriter(n=3, gamma=0.5, num_envs=1)
    assert step(writer, 0, 1.0) == NOTHING
    assert step(writer, 1, 2.0, trunc=True) == {
        "obs": [0.0, 1.0],
        "action": [0, 1],
        "reward": [1.0 + 1.0, 2.0],
        "next_obs": [FINAL, FINAL],  # bootstrap from the final observation
        "terminated": [False, False],
        "discount": [0.25, 0.5],
    }
    # The next episode starts fresh: nothing mixes in rewards from before the cut.
    assert step(writer, 2, 10.0) == NOTHING
    assert step(writer, 3, 20.0) == NOTHING
    out = step(writer, 4, 30.0)
    assert out["obs"] == [2.0] and out["reward"] == [10.0 + 10.0 + 7.5]
    assert out["discount"] == [0.125] and out["terminated"] == [False]


def random_steps(rng: np.random.Generator, steps: int, num_envs: int) -> list[dict[str, Any]]:
    out = []
    for t in range(steps):
        term = rng.random(num_envs) < 0.15
        out.append(
            {
                "obs": rng.standard_normal((num_envs, 2)).astype(np.float32),
                "action": rng.integers(0, 4, num_envs),
                "reward": rng.standard_normal(num_envs),
                "next_obs": rng.standard_normal((num_envs, 2)).astype(np.float32),
                "terminated": term,
                "truncated": ~term & (rng.random(num_envs) < 0.1) | (t == steps - 3),
            }
        )
    return out


def reference_nstep(
    steps: list[dict[str, Any]], n: int, gamma: float, num_envs: int
) -> list[list[tuple[Any, ...]]]:
    """Per-env deques, one Python loop per item: the obvious implementation."""
    windows: list[deque[tuple[Any, ...]]] = [deque() for _ in range(num_envs)]
    emitted = []
    for s in steps:
        out = []
        for e in range(num_envs):
            windows[e].append((s["obs"][e], s["action"][e], s["reward"][e]))
            done = bool(s["terminated"][e] or s["truncated"][e])
            starts = range(len(windows[e])) if done else ([0] if len(windows[e]) == n else [])
            for k in starts:
                items = list(windows[e])[k:]
                ret = sum(gamma**i * r for i, (_, _, r) in enumerate(items))
                m = len(items)
                term = bool(s["terminated"][e])
                out.append((*items[0][:2], ret, s["next_obs"][e], term, gamma**m))
            if done:
                windows[e].clear()
            elif len(windows[e]) == n:
                windows[e].popleft()
        emitted.append(out)
    return emitted


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_nstep_matches_reference_on_random_vector_envs(n: int) -> None:
    rng = np.random.default_rng(n)
    gamma, num_envs = 0.9, 4
    steps = random_steps(rng, 60, num_envs)
    writer = NStepWriter(n, gamma, num_envs)
    for got, want in zip(
        (writer.add(**s) for s in steps), reference_nstep(steps, n, gamma, num_envs)
    ):
        assert len(got["reward"]) == len(want)
        for i, (obs, action, ret, next_obs, term, discount) in enumerate(want):
            np.testing.assert_array_equal(got["obs"][i], obs)
            assert got["action"][i] == action
            assert got["reward"][i] == pytest.approx(ret, rel=1e-6, abs=1e-6)
            np.testing.assert_array_equal(got["next_obs"][i], next_obs)
            assert got["terminated"][i] == term
            assert got["discount"][i] == pytest.approx(discount, rel=1e-6)
        spec = TransitionSpec.transitions((2,), n_step=True)
        assert spec.validate({**got, "action": got["action"].astype(np.int64)}) == len(want)


def test_n1_equals_plain_transitions() -> None:
    rng = np.random.default_rng(0)
    steps = random_steps(rng, 30, 3)
    writer = NStepWriter(n=1, gamma=0.97, num_envs=3)
    for s in steps:
        out = writer.add(**s)
        np.testing.assert_array_equal(out["obs"], s["obs"])
        np.testing.assert_array_equal(out["action"], s["action"])
        np.testing.assert_array_equal(out["reward"], s["reward"].astype(np.float32))
        np.testing.assert_array_equal(out["next_obs"], s["next_obs"])
        np.testing.assert_array_equal(out["terminated"], s["terminated"])
        np.testing.assert_allclose(out["discount"], 0.97)


def test_nstep_state_dict_captures_pending_windows() -> None:
    rng = np.random.default_rng(5)
    steps = random_steps(rng, 30, 3)
    writer = NStepWriter(n=4, gamma=0.8, num_envs=3)
    for s in steps[:13]:
        writer.add(**s)
    assert writer.pending.any()
    restored = NStepWriter(n=4, gamma=0.8, num_envs=3)
    restored.load_state_dict(writer.state_dict())
    for s in steps[13:]:
        a, b = writer.add(**s), restored.add(**s)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    with pytest.raises(ReplayError, match="gamma"):
        NStepWriter(n=4, gamma=0.9, num_envs=3).load_state_dict(writer.state_dict())


def test_nstep_bad_input() -> None:
    writer = NStepWriter(n=2, gamma=0.9, num_envs=2)
    good: dict[str, Any] = {
        "obs": np.zeros((2, 3), np.float32),
        "action": np.zeros(2, np.int64),
        "reward": np.zeros(2),
        "next_obs": np.zeros((2, 3), np.float32),
        "terminated": np.zeros(2, bool),
        "truncated": np.zeros(2, bool),
    }
    writer.add(**good)
    for change, needle in (
        ({"obs": np.zeros((3, 3), np.float32)}, "obs must be [num_envs=2"),
        ({"obs": np.zeros((2, 3), np.float64), "next_obs": np.zeros((2, 3))}, "obs changed"),
        ({"next_obs": np.zeros((2, 4), np.float32)}, "next_obs"),
        ({"reward": np.array([0.0, np.nan])}, "reward[1]"),
        ({"terminated": np.zeros(3, bool)}, "terminated"),
    ):
        with pytest.raises(ReplayError) as info:
            writer.add(**(good | change))
        assert needle in str(info.value)
    assert writer.pending.tolist() == [1, 1]  # the bad calls recorded nothing
    for kwargs in ({"n": 0}, {"gamma": 1.5}, {"num_envs": 0}):
        with pytest.raises(ConfigError):
            NStepWriter(**({"n": 2, "gamma": 0.9, "num_envs": 1} | kwargs))


# -- rate limiter ------------------------------------------------------------------
def test_rate_limiter_ratio_bounds() -> None:
    limiter = RateLimiter(min_size=2, samples_per_insert=2.0, tolerance=2.0)
    assert not limiter.can_sample(1)
    assert limiter.can_insert(2)  # filling up to min_size is always allowed
    limiter.on_insert(2)
    assert limiter.can_sample(2) and not limiter.can_sample(3)
    limiter.on_sample(2)
    assert not limiter.can_sample(1)
    assert limiter.can_insert(1) and not limiter.can_insert(3)
    limiter.on_insert(1)
    assert limiter.can_sample(2)


def _in_thread(target: Any) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    done, errors = threading.Event(), []

    def run() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done, errors


def test_rate_limiter_blocks_and_unblocks_across_threads() -> None:
    limiter = RateLimiter(min_size=3, samples_per_insert=1.0, tolerance=1.0, timeout_s=5.0)
    thread, done, errors = _in_thread(lambda: limiter.await_can_sample(1))
    assert not done.wait(0.05)  # nothing stored: the sampler waits
    limiter.on_insert(3)
    assert done.wait(2.0) and not errors
    thread.join()

    limiter.on_sample(1)  # at the sample bound; inserts of 2 would overshoot by 2 > 1
    assert not limiter.can_insert(3)
    thread, done, errors = _in_thread(lambda: limiter.await_can_insert(3))
    assert not done.wait(0.05)
    limiter.on_sample(1)
    assert done.wait(2.0) and not errors
    thread.join()


def test_rate_limiter_times_out_with_its_state() -> None:
    limiter = RateLimiter(min_size=2, samples_per_insert=1.0, tolerance=1.0, timeout_s=0.05)
    limiter.on_insert(2)
    limiter.on_sample(1)
    start = time.monotonic()
    with pytest.raises(ReplayError) as info:
        limiter.await_can_sample(1)
    assert 0.04 < time.monotonic() - start < 2.0
    message = str(info.value)
    for needle in ("waited 0.05s to sample 1", "size=2", "inserts=2", "samples=1", "target 1"):
        assert needle in message, (needle, message)
    with pytest.raises(ReplayError, match="to insert 5"):
        limiter.await_can_insert(5, timeout_s=0.01)


def test_rate_limited_buffer_with_an_inserter_and_a_sampler_thread() -> None:
    spec = TransitionSpec({"x": ((), np.float32)})
    limiter = RateLimiter(min_size=16, samples_per_insert=1.0, tolerance=40.0, timeout_s=5.0)
    buffer = ReplayBuffer(RingStorage(spec, 64), UniformSampler(0), limiter)
    seen: list[float] = []

    def insert() -> None:
        for i in range(40):
            buffer.add({"x": np.full(8, i, np.float32)})

    def sample() -> None:
        for _ in range(40):
            buffer.sample(8)
            with limiter._cond:  # the ratio never leaves its band
                seen.append((limiter.inserts - 16) * 1.0 - limiter.samples)

    inserter, inserted, insert_errors = _in_thread(insert)
    sampler, sampled, sample_errors = _in_thread(sample)
    assert inserted.wait(10) and sampled.wait(10)
    assert not insert_errors and not sample_errors
    inserter.join()
    sampler.join()
    assert (limiter.inserts, limiter.samples) == (320, 320)
    assert min(seen) >= -40.0 and max(seen) <= 40.0


def test_rate_limiter_config_and_state() -> None:
    for args in ((0,), (1, 0.0, 1.0), (1, 4.0, 2.0), (1, 1.0, None), (1, None, None, 0.0)):
        with pytest.raises(ConfigError):
            RateLimiter(*args)
    limiter = RateLimiter(4, 1.0, 8.0)
    limiter.on_insert(10)
    limiter.on_sample(3)
    limiter.on_delete(2)
    other = RateLimiter(4, 1.0, 8.0)
    other.load_state_dict(limiter.state_dict())
    assert (other.inserts, other.samples, other.deletes, other.size) == (10, 3, 2, 8)
    with pytest.raises(ReplayError, match="min_size"):
        RateLimiter(5, 1.0, 8.0).load_state_dict(limiter.state_dict())
