"""Atomic, verifiable training checkpoints (safetensors + JSON, never pickle).

A run directory holds its checkpoints as::

    run_dir/checkpoints/
        step_000000010000/
            state.safetensors   # every tensor: weights, optimizer moments, RNG bytes
            meta.json           # {"format_version": 1, "step": ..., "sha256": ..., "meta": {...}}
        step_000000020000/
        .tmp-...                # a save in progress, or one a crash interrupted

A checkpoint directory only ever appears under its final name complete: it is
built under a ``.tmp-`` name, every file and the directory are fsynced, then it
is renamed into place and the parent is fsynced (a rename is atomic on POSIX
file systems). Loading verifies the SHA-256 of the state file against
``meta.json`` and falls back to the previous checkpoint when the newest one is
incomplete or corrupt, so a crash or a full disk at any moment leaves a
resumable run. Nothing is ever unpickled: tensors come from safetensors and
everything else from JSON, so loading a checkpoint cannot execute code.

One process writes a run directory at a time (the learner); concurrent writers
are not supported.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlops.core.errors import CheckpointError

__all__ = [
    "CHECKPOINT_DIRNAME",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointWarning",
    "atomic_write_bytes",
    "load_checkpoint",
    "load_latest_checkpoint",
    "save_checkpoint",
    "to_jsonable",
]

FORMAT_VERSION = 1
"""Version of the on-disk layout; bumped on any incompatible change."""

CHECKPOINT_DIRNAME = "checkpoints"
"""Subdirectory of a run directory that holds the checkpoints."""

STATE_FILENAME = "state.safetensors"
META_FILENAME = "meta.json"
TMP_PREFIX = ".tmp-"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_HASH_CHUNK = 1 << 20


class CheckpointWarning(UserWarning):
    """A checkpoint directory was skipped because it is incomplete or corrupt."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A loaded, verified checkpoint.

    Attributes:
        step: The global environment step the checkpoint was taken at.
        path: The checkpoint directory (``.../checkpoints/step_<step>``).
        tensors: Every saved tensor by name, on CPU.
        meta: The JSON metadata given to :func:`save_checkpoint`, after
            :func:`to_jsonable` (tuples came back as lists).
    """

    step: int
    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def to_jsonable(value: Any, *, _where: str = "meta") -> Any:
    """Convert ``value`` into plain JSON types (dict, list, str, int, float, bool, None).

    numpy scalars become Python scalars and arrays become (nested) lists, so
    RNG states such as ``np.random.RandomState().get_state()`` or a
    ``Generator``'s ``bit_generator.state`` (Python ints of any size) survive
    a JSON round trip exactly. Tuples become lists, dataclasses become dicts,
    enums their values and paths strings.

    Args:
        value: The object to convert.

    Returns:
        An equivalent object made only of JSON types.

    Raises:
        TypeError: If ``value`` holds something JSON cannot represent
            faithfully (a tensor, a non-string dict key, an arbitrary object);
            the message names where in ``value`` it is.

    >>> to_jsonable({"rng": (np.uint32(7), np.arange(3)), "lr": np.float32(0.5)})
    {'rng': [7, [0, 1, 2]], 'lr': 0.5}
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{_where} has key {key!r} of type {type(key).__name__}; JSON keys must "
                    "be str (convert it, or the key would silently come back as a string)"
                )
            out[key] = to_jsonable(item, _where=f"{_where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [to_jsonable(item, _where=f"{_where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, _where=_where)
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(
            {field.name: getattr(value, field.name) for field in dataclasses.fields(value)},
            _where=_where,
        )
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{_where} is a torch.Tensor; put tensors in `tensors`, not in meta")
    raise TypeError(f"{_where} has type {type(value).__name__}, which JSON cannot represent")


def _fsync_dir(path: Path) -> None:
    """Make a rename or file creation inside ``path`` durable (POSIX only)."""
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, which is flushed,
    fsynced and renamed over ``path``; the directory is then fsynced so the
    rename survives a power loss.

    Args:
        path: Destination file; its directory must exist.
        data: The complete new content.

    Raises:
        OSError: If writing fails; ``path`` is then unchanged and the
            temporary file is removed.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "policy.json"
    >>> atomic_write_bytes(target, b'{"version": 1}')
    >>> target.read_bytes()
    b'{"version": 1}'
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    """Complete-looking checkpoint dirs under ``root``, newest step first."""
    found = []
    for entry in root.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    found.sort(key=lambda item: item[0], reverse=True)
    return found


def _prepare_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, none sharing memory (safetensors refuses that)."""
    prepared: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(
                f"tensors must map str -> torch.Tensor; {name!r} maps to "
                f"{type(tensor).__name__} (put non-tensor state in `meta`)"
            )
        if tensor.is_sparse:
            raise CheckpointError(f"tensor {name!r} is sparse; call .to_dense() before saving")
        cpu = tensor.detach().to("cpu").contiguous()
        storage = cpu.untyped_storage().data_ptr()
        if cpu.numel() > 0 and storage in seen_storage:
            cpu = cpu.clone()  # tied weights: store each name's own copy
        seen_storage.add(storage)
        prepared[name] = cpu
    return prepared


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    *,
    keep: int | None = 3,
) -> Path:
    """Atomically write ``run_dir/checkpoints/step_<step>/`` and prune old ones.

    The checkpoint is built in a ``.tmp-`` directory next to its final place
    (``state.safetensors`` with every tensor, ``meta.json`` with the format
    version, the step, the SHA-256 of the state file and ``meta``), fsynced,
    and renamed into place. Only then are checkpoints beyond the newest
    ``keep`` deleted (and ``.tmp-`` leftovers of interrupted saves), so a
    crash at any point leaves every previously complete checkpoint loadable.
    Saving a step that already exists replaces it.

    Args:
        run_dir: The run directory; ``checkpoints/`` is created inside it.
        step: The global environment step (non-negative); names the directory.
        tensors: Name -> tensor (weights, optimizer state, torch RNG state).
            They are saved as contiguous CPU copies; the originals are untouched.
        meta: JSON-serialisable metadata (counters, config, numpy RNG
            states); numpy values are converted with :func:`to_jsonable`.
        keep: How many checkpoints to keep, newest by step (the one just
            saved is always kept); ``None`` keeps all.

    Returns:
        The path of the new checkpoint directory.

    Raises:
        CheckpointError: If an argument is invalid, ``meta`` is not
            JSON-serialisable, or writing fails (nothing partial is left
            under a checkpoint name).

    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> path = save_checkpoint(run, 100, {"w": torch.ones(2)}, {"episodes": 4})
    >>> path.name
    'step_000000000100'
    >>> load_latest_checkpoint(run).meta
    {'episodes': 4}
    """
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise CheckpointError(f"checkpoint step must be a non-negative int, got {step!r}")
    if keep is not None and keep < 1:
        raise CheckpointError(f"keep must be >= 1 or None (keep all), got {keep}")
    step = int(step)
    prepared = _prepare_tensors(tensors)
    try:
        user_meta = to_jsonable(dict(meta))
    except TypeError as error:
        raise CheckpointError(f"checkpoint meta is not JSON-serialisable: {error}") from error

    root = Path(run_dir) / CHECKPOINT_DIRNAME
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:012d}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=root))
    replaced: Path | None = None
    try:
        state_path = tmp / STATE_FILENAME
        save_file(prepared, str(state_path), metadata={"format_version": str(FORMAT_VERSION)})
        _fsync_file(state_path)
        record = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "sha256": _sha256_file(state_path),
            "meta": user_meta,
        }
        # allow_nan keeps float('nan') in meta round-tripping exactly through Python.
        meta_bytes = json.dumps(record, indent=2, allow_nan=True).encode("utf-8")
        with (tmp / META_FILENAME).open("wb") as file:
            file.write(meta_bytes)
            file.flush()
            os.fsync(file.fileno())
        _fsync_dir(tmp)
        if final.exists():
            # A directory cannot be renamed over a non-empty one: move the old
            # one aside under a .tmp- name (the loader ignores those) first.
            replaced = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{final.name}-", dir=root))
            os.replace(final, replaced / final.name)
        os.replace(tmp, final)
        _fsync_dir(root)
    except Exception as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if replaced is not None:
            _restore_replaced(replaced / final.name, final)
        raise CheckpointError(
            f"could not save checkpoint step {step} to {final}: {error}"
        ) from error
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    _prune(root, keep=keep, newest_saved=final)
    return final


def _restore_replaced(previous: Path, final: Path) -> None:
    """Put a checkpoint moved aside for an overwrite back after the overwrite failed."""
    try:
        if not final.exists():
            os.replace(previous, final)
            _fsync_dir(final.parent)
        shutil.rmtree(previous.parent, ignore_errors=True)
    except OSError:
        # Leave it under its .tmp- name rather than lose it; the error being
        # raised already says the save failed.
        pass


def _prune(root: Path, *, keep: int | None, newest_saved: Path) -> None:
    """Delete checkpoints beyond the newest ``keep`` and stale ``.tmp-`` dirs."""
    for entry in root.iterdir():
        if entry.name.startswith(TMP_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
    if keep is None:
        return
    for _, path in _step_dirs(root)[keep:]:
        if path != newest_saved:
            shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and verify one checkpoint directory.

    Args:
        path: A ``step_<step>`` directory written by :func:`save_checkpoint`.

    Returns:
        The checkpoint, its state file verified against the recorded SHA-256.

    Raises:
        CheckpointError: If ``meta.json`` is missing or malformed, the format
            version is unsupported, or the state file is missing or does not
            match its hash.

    >>> import tempfile
    >>> saved = save_checkpoint(tempfile.mkdtemp(), 7, {"w": torch.zeros(1)}, {})
    >>> load_checkpoint(saved).step
    7
    """
    path = Path(path)
    meta_path = path / META_FILENAME
    state_path = path / STATE_FILENAME
    try:
        record = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {META_FILENAME} (incomplete save)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable {META_FILENAME}: {error}") from error
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: {META_FILENAME} is not a JSON object")
    version = record.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported (this rlops reads "
            f"{FORMAT_VERSION}); load it with the rlops version that wrote it"
        )
    step, expected, user_meta = record.get("step"), record.get("sha256"), record.get("meta")
    if (
        not isinstance(step, int)
        or not isinstance(expected, str)
        or not isinstance(user_meta, dict)
    ):
        raise CheckpointError(f"{path}: {META_FILENAME} lacks a valid step, sha256 or meta")
    if not state_path.is_file():
        raise CheckpointError(f"{path}: no {STATE_FILENAME} (incomplete save)")
    actual = _sha256_file(state_path)
    if actual != expected:
        raise CheckpointError(
            f"{path}: {STATE_FILENAME} is corrupt (sha256 {actual[:12]}..., "
            f"meta.json expects {expected[:12]}...)"
        )
    try:
        tensors = load_file(str(state_path), device="cpu")
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot read {STATE_FILENAME}: {error}") from error
    return Checkpoint(step=step, path=path, tensors=dict(tensors), meta=user_meta)


def load_latest_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Load the newest valid checkpoint of a run, skipping broken ones.

    Candidates are the ``step_<step>`` directories under
    ``run_dir/checkpoints``, newest step first. One that is incomplete or fails
    verification (see :func:`load_checkpoint`) is skipped with a
    :class:`CheckpointWarning` and the previous one is tried; ``.tmp-``
    directories (saves a crash interrupted) are never candidates.

    Args:
        run_dir: The run directory passed to :func:`save_checkpoint`.

    Returns:
        The newest checkpoint that verifies.

    Raises:
        CheckpointError: If there is no valid checkpoint; the message lists
            what was found and why each was rejected.

    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> _ = save_checkpoint(run, 1, {"w": torch.zeros(1)}, {})
    >>> _ = save_checkpoint(run, 2, {"w": torch.ones(1)}, {})
    >>> load_latest_checkpoint(run).tensors["w"].item()
    1.0
    """
    root = Path(run_dir) / CHECKPOINT_DIRNAME
    if not root.is_dir():
        raise CheckpointError(
            f"no checkpoint to resume from: {root} does not exist "
            "(start a fresh run, or point at the run directory that saved checkpoints)"
        )
    rejected: list[str] = []
    leftovers = sorted(p.name for p in root.iterdir() if p.name.startswith(TMP_PREFIX))
    if leftovers:
        warnings.warn(
            f"ignoring {len(leftovers)} incomplete checkpoint dir(s) in {root} left by an "
            f"interrupted save: {', '.join(leftovers)}",
            CheckpointWarning,
            stacklevel=2,
        )
    for step, path in _step_dirs(root):
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            rejected.append(str(error))
            warnings.warn(f"skipping checkpoint: {error}", CheckpointWarning, stacklevel=2)
            continue
        if checkpoint.step != step:
            reason = f"{path}: meta.json says step {checkpoint.step}, directory says {step}"
            rejected.append(reason)
            warnings.warn(f"skipping checkpoint: {reason}", CheckpointWarning, stacklevel=2)
            continue
        return checkpoint
    found = "; ".join(rejected) if rejected else "no step_* directories"
    if leftovers:
        found += f"; incomplete: {', '.join(leftovers)}"
    raise CheckpointError(f"no valid checkpoint in {root}: {found}")
