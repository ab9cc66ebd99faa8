"""Checkpoints: exact round trips, atomicity under crashes, pruning, clear failures."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rlops.core.errors import CheckpointError
from rlops.runtime import checkpoint as ckpt
from rlops.runtime.checkpoint import (
    Checkpoint,
    CheckpointWarning,
    atomic_write_bytes,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
    to_jsonable,
)


def step_names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3, 2), value), "b": torch.arange(4, dtype=torch.int64)}


def assert_tensors_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].device.type == "cpu", name
        assert torch.equal(got[name], tensor.detach().cpu()), name


@pytest.fixture(autouse=True)
def forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading must never unpickle: fail loudly if anything tries."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("checkpoint code must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


# --- round trip -----------------------------------------------------------------------------


def test_round_trip_is_exact_for_tensors_and_meta(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(4, 3)
    flat = torch.arange(10, dtype=torch.float32)
    tensors = {
        "policy.weight": linear.weight,  # requires_grad parameter
        "policy.bias": linear.bias,
        "tied.weight": linear.weight,  # same storage under two names
        "transposed": torch.randn(5, 3, generator=generator).t(),  # non-contiguous
        "f64": torch.randn(2, 2, dtype=torch.float64, generator=generator),
        "bf16": torch.randn(3, generator=generator).to(torch.bfloat16),
        "mask": torch.tensor([True, False]),
        "rng/torch": torch.get_rng_state(),  # uint8 bytes
        "empty": torch.zeros(0),
        "flat/head": flat[:4],  # views of one flat buffer
        "flat/tail": flat[4:],
    }
    rng = np.random.default_rng(123)
    legacy = np.random.RandomState(7)
    meta = {
        "counters": {"env_steps": np.int64(2**40), "updates": 17},
        "rng/numpy": rng.bit_generator.state,  # 128-bit ints
        "rng/legacy": legacy.get_state(),  # tuple holding a uint32 array
        "best_return": math.nan,
        "lr": np.float32(3e-4),
        "tags": ("ppo", "cartpole"),
    }

    path = save_checkpoint(tmp_path, 2048, tensors, meta)
    loaded = load_latest_checkpoint(tmp_path)

    assert isinstance(loaded, Checkpoint)
    assert loaded.step == 2048
    assert loaded.path == path == tmp_path / "checkpoints" / "step_000000002048"
    assert_tensors_equal(loaded.tensors, tensors)
    assert loaded.meta["counters"] == {"env_steps": 2**40, "updates": 17}
    assert loaded.meta["tags"] == ["ppo", "cartpole"]
    assert loaded.meta["lr"] == float(np.float32(3e-4))
    assert math.isnan(loaded.meta["best_return"])
    # The numpy generator resumes exactly where it was saved.
    expected_draws = rng.random(5)
    resumed = np.random.default_rng()
    resumed.bit_generator.state = loaded.meta["rng/numpy"]
    assert np.array_equal(resumed.random(5), expected_draws)
    legacy_state = loaded.meta["rng/legacy"]
    restored = np.random.RandomState()
    restored.set_state(
        (legacy_state[0], np.array(legacy_state[1], dtype=np.uint32), *legacy_state[2:])
    )
    assert np.array_equal(restored.randint(0, 10**6, 5), legacy.randint(0, 10**6, 5))
    # The originals were not modified (moved, made contiguous) by saving.
    assert linear.weight.requires_grad and not tensors["transposed"].is_contiguous()


def test_meta_json_records_version_step_and_hash(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 5, weights(1.0), {"note": "hi"})
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "state.safetensors"]
    record = json.loads((path / "meta.json").read_text())
    assert record["format_version"] == ckpt.FORMAT_VERSION == 1
    assert record["step"] == 5
    assert record["meta"] == {"note": "hi"}
    digest = hashlib.sha256((path / "state.safetensors").read_bytes()).hexdigest()
    assert record["sha256"] == digest


def test_to_jsonable_converts_numpy_and_rejects_what_json_would_mangle() -> None:
    assert to_jsonable({"a": np.arange(3).reshape(1, 3), "b": np.bool_(True)}) == {
        "a": [[0, 1, 2]],
        "b": True,
    }
    with pytest.raises(TypeError, match=r"meta\['x'\] is a torch.Tensor"):
        to_jsonable({"x": torch.ones(1)})
    with pytest.raises(TypeError, match="JSON keys must be str"):
        to_jsonable({1: "a"})
    with pytest.raises(TypeError, match=r"meta\['o'\]\[0\] has type object"):
        to_jsonable({"o": [object()]})


# --- crashes and corruption -----------------------------------------------------------------


def test_loader_skips_incomplete_and_corrupt_checkpoints(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 100, weights(1.0), {"n": 1})
    good = save_checkpoint(tmp_path, 200, weights(2.0), {"n": 2})
    good_bytes = {p.name: p.read_bytes() for p in good.iterdir()}
    root = tmp_path / "checkpoints"

    # A save killed before its rename: a .tmp- dir with a partial state file.
    partial = root / ".tmp-step_000000000300-crash"
    partial.mkdir()
    (partial / "state.safetensors").write_bytes(b"\x00" * 10)
    # A checkpoint whose state file was corrupted after the fact (bit rot).
    corrupt = save_checkpoint(tmp_path, 400, weights(4.0), {"n": 4})
    data = bytearray((corrupt / "state.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (corrupt / "state.safetensors").write_bytes(bytes(data))
    # One without meta.json, one with unparsable meta.json, one truncated state.
    no_meta = save_checkpoint(tmp_path, 500, weights(5.0), {}, keep=None)
    (no_meta / "meta.json").unlink()
    bad_meta = save_checkpoint(tmp_path, 600, weights(6.0), {}, keep=None)
    (bad_meta / "meta.json").write_text("{not json")
    truncated = save_checkpoint(tmp_path, 700, weights(7.0), {}, keep=None)
    (truncated / "state.safetensors").write_bytes(b"")
    partial.mkdir(exist_ok=True)  # saves clean up stale .tmp- dirs; recreate the crash leftover
    (partial / "state.safetensors").write_bytes(b"\x00" * 10)

    with pytest.warns(CheckpointWarning) as caught:
        loaded = load_latest_checkpoint(tmp_path)

    assert loaded.step == 200 and loaded.meta == {"n": 2}
    assert_tensors_equal(loaded.tensors, weights(2.0))
    assert {p.name: p.read_bytes() for p in good.iterdir()} == good_bytes  # untouched
    messages = "\n".join(str(w.message) for w in caught)
    assert ".tmp-step_000000000300-crash" in messages
    assert "step_000000000400: state.safetensors is corrupt" in messages
    assert "step_000000000500: no meta.json" in messages
    assert "step_000000000600: unreadable meta.json" in messages
    assert "step_000000000700: state.safetensors is corrupt" in messages


def test_loader_rejects_unknown_format_and_mismatched_step(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, weights(1.0), {})
    future = save_checkpoint(tmp_path, 2, weights(2.0), {})
    record = json.loads((future / "meta.json").read_text())
    (future / "meta.json").write_text(json.dumps({**record, "format_version": 99}))
    moved = save_checkpoint(tmp_path, 3, weights(3.0), {})
    (tmp_path / "checkpoints" / "step_000000000004").mkdir()
    for child in moved.iterdir():  # a dir renamed by hand: its meta says step 3
        shutil.move(child, tmp_path / "checkpoints" / "step_000000000004" / child.name)
    moved.rmdir()

    with pytest.warns(CheckpointWarning) as caught:
        assert load_latest_checkpoint(tmp_path).step == 1
    messages = "\n".join(str(w.message) for w in caught)
    assert "meta.json says step 3, directory says 4" in messages
    assert "format_version 99 is not supported" in messages
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(future)


def test_failed_rename_leaves_previous_checkpoints_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, 10, weights(1.0), {"n": 1})
    save_checkpoint(tmp_path, 20, weights(2.0), {"n": 2})
    before = step_names(tmp_path)

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated power loss during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(CheckpointError, match=r"could not save checkpoint step 30.*power loss"):
        save_checkpoint(tmp_path, 30, weights(3.0), {"n": 3}, keep=1)
    monkeypatch.undo()

    assert step_names(tmp_path) == before  # nothing partial, nothing pruned
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded.step == 20 and loaded.meta == {"n": 2}
    assert_tensors_equal(loaded.tensors, weights(2.0))


def test_failure_while_writing_state_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, 10, weights(1.0), {})

    def half_write(tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt, "save_file", half_write)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(tmp_path, 20, weights(2.0), {})
    assert step_names(tmp_path) == ["step_000000000010"]
    assert load_latest_checkpoint(tmp_path).step == 10


def test_failed_overwrite_of_the_same_step_restores_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, 10, weights(1.0), {"n": 1})
    real_replace = os.replace
    calls = []

    def fail_second(src: Any, dst: Any) -> None:
        calls.append((src, dst))
        if len(calls) == 2:  # 1st moves the old dir aside, 2nd moves the new one in
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path, 10, weights(9.0), {"n": 9})
    monkeypatch.undo()
    assert step_names(tmp_path) == ["step_000000000010"]
    assert load_latest_checkpoint(tmp_path).meta == {"n": 1}

    save_checkpoint(tmp_path, 10, weights(9.0), {"n": 9})  # a working overwrite replaces
    assert load_latest_checkpoint(tmp_path).meta == {"n": 9}


# --- pruning --------------------------------------------------------------------------------


def test_keeps_only_the_newest_n_and_cleans_stale_temp_dirs(tmp_path: Path) -> None:
    for step in range(1, 6):
        save_checkpoint(tmp_path, step * 10, weights(float(step)), {"i": step})
    assert step_names(tmp_path) == [f"step_{s:012d}" for s in (30, 40, 50)]

    (tmp_path / "checkpoints" / ".tmp-step_000000000060-dead").mkdir()
    save_checkpoint(tmp_path, 60, weights(6.0), {}, keep=1)
    assert step_names(tmp_path) == ["step_000000000060"]

    for step in (70, 80, 90, 100):
        save_checkpoint(tmp_path, step, weights(0.0), {}, keep=None)
    assert len(step_names(tmp_path)) == 5


def test_the_checkpoint_just_saved_is_never_pruned(tmp_path: Path) -> None:
    # After resuming from an older step, the new save is older than a stale newer dir.
    save_checkpoint(tmp_path, 300, weights(3.0), {}, keep=None)
    save_checkpoint(tmp_path, 250, weights(2.5), {"resumed": True}, keep=1)
    assert step_names(tmp_path) == ["step_000000000250", "step_000000000300"]


# --- errors ---------------------------------------------------------------------------------


def test_no_checkpoint_raises_a_message_that_says_what_was_found(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_latest_checkpoint(tmp_path)

    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="no step_\\* directories"):
        load_latest_checkpoint(tmp_path)

    broken = save_checkpoint(tmp_path, 1, weights(1.0), {})
    (broken / "meta.json").unlink()
    (tmp_path / "checkpoints" / ".tmp-step_000000000002-x").mkdir()
    with (
        pytest.warns(CheckpointWarning),
        pytest.raises(CheckpointError) as excinfo,
    ):
        load_latest_checkpoint(tmp_path)
    message = str(excinfo.value)
    assert "no valid checkpoint" in message
    assert "step_000000000001: no meta.json" in message
    assert ".tmp-step_000000000002-x" in message


@pytest.mark.parametrize(
    ("step", "tensors", "meta", "keep", "match"),
    [
        (-1, {}, {}, 3, "non-negative int"),
        (1.5, {}, {}, 3, "non-negative int"),
        (1, {"w": [1.0]}, {}, 3, "str -> torch.Tensor"),
        (1, {}, {"t": torch.ones(1)}, 3, "not JSON-serialisable"),
        (1, {}, {}, 0, "keep must be >= 1"),
    ],
)
def test_invalid_arguments_fail_before_writing(
    tmp_path: Path, step: Any, tensors: Any, meta: Any, keep: int, match: str
) -> None:
    with pytest.raises(CheckpointError, match=match):
        save_checkpoint(tmp_path, step, tensors, meta, keep=keep)
    assert not (tmp_path / "checkpoints").exists() or step_names(tmp_path) == []


# --- atomic_write_bytes ---------------------------------------------------------------------


def test_atomic_write_bytes_replaces_whole_file_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "policy.json"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_bytes(target, b"half")
    monkeypatch.undo()
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["policy.json"]  # no temp file left
