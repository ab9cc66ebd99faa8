"""rlops.replay: the Storage x Sampler cross product, the buffer, storages and bad input."""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlops.core.errors import ConfigError, ReplayError
from rlops.replay import (
    MemmapStorage,
    PrioritizedSampler,
    RateLimiter,
    ReplayBuffer,
    RingStorage,
    Sampler,
    Storage,
    TransitionSpec,
    UniformSampler,
    make_replay,
)

SPEC = TransitionSpec.transitions((3,), n_step=True)
CAPACITY = 64


def make_batch(start: int, count: int) -> dict[str, np.ndarray]:
    """Items whose every field encodes the item's sequence number ``start + k``."""
    k = np.arange(start, start + count)
    return {
        "obs": np.repeat(k[:, None], 3, axis=1).astype(np.float32),
        "action": k.astype(np.int64),
        "reward": (k * 0.5).astype(np.float32),
        "next_obs": np.repeat(k[:, None] + 1, 3, axis=1).astype(np.float32),
        "terminated": (k % 3 == 0),
        "discount": np.full(count, 0.99, dtype=np.float32),
    }


def ring(tmp: Path) -> Storage:
    return RingStorage(SPEC, CAPACITY)


def memmap(tmp: Path) -> Storage:
    return MemmapStorage(SPEC, CAPACITY, tmp / "replay")


def uniform() -> Sampler:
    return UniformSampler(seed=3)


def per_batch() -> Sampler:
    return PrioritizedSampler(CAPACITY, alpha=0.7, beta=0.5, seed=3)


def per_buffer() -> Sampler:
    return PrioritizedSampler(CAPACITY, alpha=0.7, beta=0.5, seed=3, weight_normalization="buffer")


STORAGES: dict[str, Callable[[Path], Storage]] = {"ring": ring, "memmap": memmap}
SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "uniform": uniform,
    "per_batch": per_batch,
    "per_buffer": per_buffer,
}
CROSS = [(s, p) for s in STORAGES for p in SAMPLERS]


def contents(storage: Storage) -> dict[str, np.ndarray]:
    return storage.get(np.arange(storage.size))


def assert_batches_equal(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def leaves(state: Any) -> list[Any]:
    """Every non-container value of a nested state."""
    if isinstance(state, Mapping):
        return [x for v in state.values() for x in leaves(v)]
    if isinstance(state, list | tuple):
        return [x for v in state for x in leaves(v)]
    return [state]


# -- the cross product -----------------------------------------------------------
@pytest.mark.parametrize(("storage_name", "sampler_name"), CROSS)
def test_add_sample_roundtrip(storage_name: str, sampler_name: str, tmp_path: Path) -> None:
    buffer = ReplayBuffer(STORAGES[storage_name](tmp_path), SAMPLERS[sampler_name]())
    assert buffer.add(make_batch(0, 40)).tolist() == list(range(40))
    assert buffer.add(make_batch(40, 40)).tolist() == [*range(40, 64), *range(16)]
    assert len(buffer) == CAPACITY and buffer.storage.cursor == 16
    batch, indices, weights = buffer.sample(32)
    assert indices.shape == (32,) and indices.dtype == np.int64
    assert weights.shape == (32,) and weights.dtype == np.float32
    assert np.all((weights > 0) & (weights <= 1))
    # Slot s holds item s + 64 for s < 16 (overwritten), item s otherwise.
    expected = np.where(indices < 16, indices + 64, indices)
    np.testing.assert_array_equal(batch["action"], expected)
    np.testing.assert_array_equal(batch["obs"][:, 0], expected.astype(np.float32))
    np.testing.assert_array_equal(batch["terminated"], expected % 3 == 0)
    buffer.update_priorities(indices, np.linspace(0.1, 3.0, 32))


@pytest.mark.parametrize(("storage_name", "sampler_name"), CROSS)
def test_state_roundtrip_gives_identical_samples(
    storage_name: str, sampler_name: str, tmp_path: Path
) -> None:
    limiter = RateLimiter(min_size=8, samples_per_insert=4.0, tolerance=1000.0, timeout_s=1.0)
    original = ReplayBuffer(STORAGES[storage_name](tmp_path), SAMPLERS[sampler_name](), limiter)
    original.add(make_batch(0, 50))
    _, indices, _ = original.sample(16)
    original.update_priorities(indices, np.arange(16) * 0.3)
    state = original.state_dict()
    for value in leaves(state):  # checkpointable: arrays or plain JSON values, no objects
        assert isinstance(value, np.ndarray | int | float | str | bool | type(None)), type(value)
    json.dumps([v for v in leaves(state) if not isinstance(v, np.ndarray)])

    restored_limiter = RateLimiter(8, 4.0, 1000.0, timeout_s=1.0)
    restored = ReplayBuffer(
        STORAGES[storage_name](tmp_path), SAMPLERS[sampler_name](), restored_limiter
    )
    if storage_name == "ring":
        assert len(restored) == 0
    restored.load_state_dict(state)
    assert len(restored) == 50
    assert_batches_equal(contents(restored.storage), contents(original.storage))
    assert restored_limiter.state_dict() == limiter.state_dict()
    for step in range(3):
        a, b = original.sample(8), restored.sample(8)
        assert_batches_equal(a.batch, b.batch)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.weights, b.weights)
        new = np.linspace(0.5, 2.0, 8) * (step + 1)
        original.update_priorities(a.indices, new)
        restored.update_priorities(b.indices, new)
    if storage_name == "ring":  # memmap: both objects share the directory
        original.add(make_batch(50, 5))
        restored.add(make_batch(50, 5))
    a, b = original.sample(8), restored.sample(8)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.weights, b.weights)


@pytest.mark.parametrize(("storage_name", "sampler_name"), CROSS)
def test_bad_batches_store_nothing(storage_name: str, sampler_name: str, tmp_path: Path) -> None:
    buffer = ReplayBuffer(STORAGES[storage_name](tmp_path), SAMPLERS[sampler_name]())
    buffer.add(make_batch(0, 10))
    before = contents(buffer.storage)
    good = make_batch(10, 4)
    bad_batches: dict[str, Any] = {
        "missing": {k: v for k, v in good.items() if k != "reward"},
        "extra": good | {"bonus": np.zeros(4, np.float32)},
        "dtype": good | {"reward": good["reward"].astype(np.float64)},
        "shape": good | {"obs": np.zeros((4, 5), np.float32)},
        "lengths": good | {"action": np.zeros(3, np.int64)},
        "list": good | {"reward": [0.0, 1.0, 2.0, 3.0]},
        "too_big": make_batch(0, CAPACITY + 1),
    }
    for name, bad in bad_batches.items():
        with pytest.raises(ReplayError) as info:
            buffer.add(bad)
        if name in ("dtype", "shape", "list"):
            field = "reward" if name != "shape" else "obs"
            assert f"[{field!r}]" in str(info.value)
            assert "expected" in str(info.value) and "got" in str(info.value)
        assert len(buffer) == 10 and buffer.storage.cursor == 10, name
        assert_batches_equal(contents(buffer.storage), before)
    message = _error(lambda: buffer.add(bad_batches["dtype"]))
    assert "float32" in message and "float64" in message
    message = _error(lambda: buffer.add(bad_batches["shape"]))
    assert "(3,)" in message and "(4, 5)" in message
    assert "reward" in _error(lambda: buffer.add(bad_batches["missing"]))


@pytest.mark.parametrize(("storage_name", "sampler_name"), CROSS)
def test_bad_priorities_change_nothing(
    storage_name: str, sampler_name: str, tmp_path: Path
) -> None:
    buffer = ReplayBuffer(STORAGES[storage_name](tmp_path), SAMPLERS[sampler_name]())
    buffer.add(make_batch(0, 20))
    buffer.update_priorities(np.arange(5), np.arange(5) + 1.0)
    before = buffer.sampler.state_dict()
    indices = np.arange(4)
    cases = {
        "negative": (indices, np.array([1.0, -2.0, 1.0, 1.0]), "priorities[1]"),
        "nan": (indices, np.array([1.0, 1.0, np.nan, 1.0]), "priorities[2]"),
        "inf": (indices, np.array([np.inf, 1.0, 1.0, 1.0]), "priorities[0]"),
        "length": (indices, np.ones(3), "priorities"),
        "index_range": (np.array([0, 1, 20, 2]), np.ones(4), "indices[2] = 20"),
        "negative_index": (np.array([-1, 1, 2, 3]), np.ones(4), "indices[0] = -1"),
        "float_index": (np.array([0.0, 1.0]), np.ones(2), "integer"),
    }
    for name, (idx, prio, needle) in cases.items():
        message = _error(partial(buffer.update_priorities, idx, prio))
        assert needle in message, (name, message)
        after = buffer.sampler.state_dict()
        if "tree" in before:
            np.testing.assert_array_equal(after["tree"]["leaves"], before["tree"]["leaves"])
            assert after["max_priority"] == before["max_priority"]
    assert "-2.0" in _error(lambda: buffer.update_priorities(indices, cases["negative"][1]))


@pytest.mark.parametrize(("storage_name", "sampler_name"), CROSS)
def test_sampling_too_few_items(storage_name: str, sampler_name: str, tmp_path: Path) -> None:
    buffer = ReplayBuffer(STORAGES[storage_name](tmp_path), SAMPLERS[sampler_name]())
    message = _error(lambda: buffer.sample(4))
    assert "holds 0" in message and "sample 4" in message
    buffer.add(make_batch(0, 3))
    message = _error(lambda: buffer.sample(4))
    assert "holds 3" in message and "sample 4" in message
    assert "batch_size" in _error(lambda: buffer.sample(0))
    assert buffer.sample(3).indices.shape == (3,)


def _error(call: Callable[[], object]) -> str:
    with pytest.raises(ReplayError) as info:
        call()
    return str(info.value)


# -- buffer ----------------------------------------------------------------------
def test_buffer_checks_its_parts() -> None:
    with pytest.raises(ConfigError, match="capacity"):
        ReplayBuffer(RingStorage(SPEC, 10), PrioritizedSampler(20))
    with pytest.raises(ConfigError, match="min_size"):
        ReplayBuffer(RingStorage(SPEC, 10), UniformSampler(), RateLimiter(min_size=11))


def test_sampling_below_limiter_min_size_times_out_with_sizes() -> None:
    limiter = RateLimiter(min_size=10, timeout_s=0.05)
    buffer = ReplayBuffer(RingStorage(SPEC, 32), UniformSampler(0), limiter)
    buffer.add(make_batch(0, 5))
    message = _error(lambda: buffer.sample(2))
    assert "size=5" in message and "min_size=10" in message and "sample 2" in message


def test_limiter_counts_overwrites_as_deletes() -> None:
    limiter = RateLimiter(min_size=4)
    buffer = ReplayBuffer(RingStorage(SPEC, 8), UniformSampler(0), limiter)
    buffer.add(make_batch(0, 6))
    buffer.add(make_batch(6, 6))
    assert (limiter.inserts, limiter.deletes, limiter.size) == (12, 4, 8)
    buffer.sample(5)
    assert limiter.samples == 5


def test_uniform_update_priorities_is_a_validated_no_op() -> None:
    buffer = ReplayBuffer(RingStorage(SPEC, 8), UniformSampler(1))
    buffer.add(make_batch(0, 8))
    before = buffer.sampler.state_dict()
    buffer.update_priorities(np.arange(4), np.ones(4))
    assert buffer.sampler.state_dict() == before
    assert "priorities[0]" in _error(lambda: buffer.update_priorities([0], [np.nan]))


def test_load_state_rejects_foreign_states(tmp_path: Path) -> None:
    buffer = ReplayBuffer(RingStorage(SPEC, 8), per_batch_sampler(8))
    buffer.add(make_batch(0, 4))
    state = buffer.state_dict()
    other_spec = TransitionSpec.transitions((4,), n_step=True)
    for target, needle in (
        (ReplayBuffer(RingStorage(other_spec, 8), per_batch_sampler(8)), "obs"),
        (ReplayBuffer(RingStorage(SPEC, 16), per_batch_sampler(16)), "capacity"),
        (ReplayBuffer(RingStorage(SPEC, 8), UniformSampler()), "uniform"),
        (ReplayBuffer(RingStorage(SPEC, 8), PrioritizedSampler(8, alpha=0.1)), "alpha"),
        (ReplayBuffer(RingStorage(SPEC, 8), per_batch_sampler(8), RateLimiter(1)), "limiter"),
    ):
        assert needle in _error(partial(target.load_state_dict, state))


def per_batch_sampler(capacity: int) -> PrioritizedSampler:
    return PrioritizedSampler(capacity, seed=0)


def test_make_replay_feeds_a_dqn_style_loop() -> None:
    buffer, writer = make_replay(
        obs_dim=3, capacity=50, num_envs=2, n_step=3, gamma=0.9, prioritized=True, seed=0
    )
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((2, 3)).astype(np.float32)
    for t in range(20):
        next_obs = rng.standard_normal((2, 3)).astype(np.float32)
        items = writer.add(
            obs,
            np.array([t % 2, 1], dtype=np.int64),
            rng.standard_normal(2),
            next_obs,
            np.array([t == 7, False]),
            np.array([False, t == 11]),
        )
        buffer.add(items)
        obs = next_obs
    assert len(buffer) == 2 * 20 - 2 * 2  # every step but the last n-1 of each env's tail
    batch, indices, _ = buffer.sample(8)
    assert set(batch) == set(buffer.spec) and batch["discount"].dtype == np.float32
    buffer.update_priorities(indices, np.abs(rng.standard_normal(8)))


def test_replay_does_not_import_torch() -> None:
    code = (
        "import sys, rlops.replay, rlops.replay.storage; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- ring storage ------------------------------------------------------------------
def test_ring_storage_wraps_and_checks_indices() -> None:
    storage = RingStorage(SPEC, 5)
    assert storage.add(make_batch(0, 3)).tolist() == [0, 1, 2]
    assert storage.add(make_batch(3, 4)).tolist() == [3, 4, 0, 1]
    assert (storage.size, storage.cursor) == (5, 2)
    assert storage.get(np.arange(5))["action"].tolist() == [5, 6, 2, 3, 4]
    assert storage.add(make_batch(7, 0)).tolist() == []
    assert "indices[1] = 5" in _error(lambda: storage.get([0, 5]))
    with pytest.raises(ConfigError):
        RingStorage(SPEC, 0)


def test_spec_validation_messages() -> None:
    with pytest.raises(ConfigError, match="identifier"):
        TransitionSpec({"bad name": ((), np.float32)})
    with pytest.raises(ConfigError):
        TransitionSpec({})
    spec = TransitionSpec({"x": (2, "float32")})
    assert spec["x"].shape == (2,)
    assert TransitionSpec.from_json(SPEC.to_json()) == SPEC
    assert SPEC.mismatch(TransitionSpec.transitions((3,))) is not None
    assert "scalar" not in repr(SPEC) and "float32" in repr(SPEC)


# -- memmap storage ----------------------------------------------------------------
def test_memmap_reopen_restores_contents_cursor_and_size(tmp_path: Path) -> None:
    directory = tmp_path / "replay"
    storage = MemmapStorage(SPEC, 10, directory)
    storage.add(make_batch(0, 7))
    storage.add(make_batch(7, 6))
    expected = contents(storage)
    del storage
    reopened = MemmapStorage(SPEC, 10, directory)
    assert (reopened.size, reopened.cursor) == (10, 3)
    assert_batches_equal(contents(reopened), expected)
    header = json.loads((directory / "replay.json").read_text())
    assert header["magic"] == "rlops.replay.memmap" and header["format_version"] == 1
    durable = MemmapStorage(SPEC, 10, tmp_path / "durable", durable=True)
    durable.add(make_batch(0, 2))
    durable.close()
    assert MemmapStorage(SPEC, 10, tmp_path / "durable").size == 2


def test_memmap_state_verifies_the_directory(tmp_path: Path) -> None:
    storage = MemmapStorage(SPEC, 10, tmp_path / "d")
    storage.add(make_batch(0, 4))
    state = storage.state_dict()
    assert state["size"] == 4 and state["kind"] == "memmap"
    storage.load_state_dict(state)  # unchanged: fine
    storage.add(make_batch(4, 1))
    assert "cursor=4" in _error(lambda: storage.load_state_dict(state))


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _corrupt_header(directory: Path, **changes: Any) -> None:
    path = directory / "replay.json"
    header = json.loads(path.read_text())
    header.update(changes)
    path.write_text(json.dumps(header))


@pytest.mark.parametrize(
    ("corruption", "needles"),
    [
        ("no_header", ["not empty", "replay.json"]),
        ("bad_json", ["replay.json", "JSON"]),
        ("not_object", ["JSON object"]),
        ("magic", ["magic", "'rlops.replay.memmap'"]),
        ("version", ["format_version", "99"]),
        ("spec_dtype", ["'reward'", "float32", "float64"]),
        ("spec_field", ["'discount'"]),
        ("capacity", ["capacity 12", "expected 10"]),
        ("counters", ["cursor", "size"]),
        ("truncated", ["obs.bin", "120 bytes", "found 60 bytes"]),
        ("missing_file", ["action.bin", "no file"]),
    ],
)
def test_memmap_refuses_corrupted_or_foreign_directories(
    corruption: str, needles: list[str], tmp_path: Path
) -> None:
    directory = tmp_path / "replay"
    storage = MemmapStorage(SPEC, 10, directory)
    storage.add(make_batch(0, 6))
    storage.close()
    header = directory / "replay.json"
    if corruption == "no_header":
        header.unlink()
    elif corruption == "bad_json":
        header.write_text('{"magic": "rlops.replay.mem')
    elif corruption == "not_object":
        header.write_text("[1, 2]")
    elif corruption == "magic":
        _corrupt_header(directory, magic="someone.else")
    elif corruption == "version":
        _corrupt_header(directory, format_version=99)
    elif corruption == "spec_dtype":
        spec = SPEC.to_json()
        spec["reward"]["dtype"] = "<f8"
        _corrupt_header(directory, spec=spec)
    elif corruption == "spec_field":
        _corrupt_header(
            directory, spec={k: v for k, v in SPEC.to_json().items() if k != "discount"}
        )
    elif corruption == "capacity":
        _corrupt_header(directory, capacity=12)
    elif corruption == "counters":
        _corrupt_header(directory, cursor=3, size=6)
    elif corruption == "truncated":
        (directory / "obs.bin").write_bytes(b"\0" * 60)
    elif corruption == "missing_file":
        (directory / "action.bin").unlink()
    before = _snapshot(directory)
    message = _error(lambda: MemmapStorage(SPEC, 10, directory))
    for needle in needles:
        assert needle in message, (needle, message)
    assert _snapshot(directory) == before  # nothing truncated or overwritten


def test_memmap_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert "not empty" in _error(lambda: MemmapStorage(SPEC, 10, tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


CHILD = """
import sys
import numpy as np
from rlops.replay import MemmapStorage, TransitionSpec

spec = TransitionSpec({"obs": ((4,), np.float32), "step": ((), np.int64)})
storage = MemmapStorage(spec, 200_000, sys.argv[1])
count = 0
def add(n):
    global count
    k = np.arange(count, count + n)
    storage.add({"obs": np.repeat(k[:, None], 4, axis=1).astype(np.float32), "step": k})
    count += n
for _ in range(10):
    add(100)
print("ready", flush=True)
for _ in range(1500):  # keep writing until killed, without wrapping around
    add(100)
import time
time.sleep(60)
"""


def test_memmap_survives_sigkill_mid_writes(tmp_path: Path) -> None:
    directory = tmp_path / "replay"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.kill()  # SIGKILL: no cleanup, no flush, possibly in the middle of an add
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -9
    spec = TransitionSpec({"obs": ((4,), np.float32), "step": ((), np.int64)})
    storage = MemmapStorage(spec, 200_000, directory)
    assert storage.size >= 1000 and storage.cursor == storage.size
    items = storage.get(np.arange(storage.size))
    np.testing.assert_array_equal(items["step"], np.arange(storage.size))
    np.testing.assert_array_equal(items["obs"][:, 3], np.arange(storage.size, dtype=np.float32))


@pytest.mark.parametrize(
    "module", ["buffer", "rate_limiter", "samplers", "spec", "storage", "sum_tree", "writers"]
)
def test_docstring_examples_run(module: str) -> None:
    mod = importlib.import_module(f"rlops.replay.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
