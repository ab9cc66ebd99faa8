"""Storages: where replay items live, as preallocated per-field ring arrays.

The loop (:class:`~rlops.replay.ReplayBuffer` runs exactly this)::

    indices = storage.add(batch)     # [B] slots written, oldest overwritten first
    batch = storage.get(indices)     # field -> [len(indices), *field.shape]

:class:`RingStorage` keeps the arrays in memory (its :meth:`~RingStorage.state_dict`
carries the contents). :class:`MemmapStorage` keeps them in ``np.memmap`` files
in a directory with a small JSON header, so the contents survive the process:

``replay.json``
    ``{"magic": "rlops.replay.memmap", "format_version": 1, "spec": ...,
    "capacity": C, "cursor": c, "size": s, "files": {field: "<field>.bin"}}``
``<field>.bin``
    ``C * item_nbytes`` raw bytes, C-order, the dtype/shape of the spec.

Durability (:class:`MemmapStorage`): data is always written *before* the header
that counts it. Every :meth:`~MemmapStorage.add` writes the arrays, then
replaces the header atomically (write ``replay.json.tmp``, ``os.replace``), so
a process that dies at any point (exception, ``kill -9``) leaves a header that
describes fully written items, and reopening restores exactly the items of the
last completed ``add``. :meth:`~MemmapStorage.flush` (and every ``add`` when
``durable=True``) additionally ``msync``-s the arrays, ``fsync``-s the temporary
header before the rename and the directory after it, which extends the same
guarantee to an operating-system crash or power loss. Opening never truncates
or overwrites anything: a directory that is not empty and has no header, a
header that is not valid JSON or has the wrong magic, version, spec or
capacity, and a data file of the wrong size are all errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from rlops.core.errors import ConfigError, ReplayError
from rlops.replay.spec import Batch, TransitionSpec
from rlops.replay.sum_tree import _as_indices

__all__ = [
    "HEADER_NAME",
    "MAGIC",
    "MEMMAP_FORMAT_VERSION",
    "MemmapStorage",
    "RingStorage",
    "Storage",
]

I64 = npt.NDArray[np.int64]

HEADER_NAME = "replay.json"
"""File name of :class:`MemmapStorage`'s header."""

MAGIC = "rlops.replay.memmap"
"""The header's ``magic`` value: identifies a directory written by :class:`MemmapStorage`."""

MEMMAP_FORMAT_VERSION = 1
"""The header's ``format_version`` this code reads and writes."""


@runtime_checkable
class Storage(Protocol):
    """Fixed-capacity item storage (see the module docstring for the loop)."""

    spec: TransitionSpec
    capacity: int

    @property
    def size(self) -> int:
        """Items stored (``<= capacity``)."""
        ...

    @property
    def cursor(self) -> int:
        """Slot the next item goes to."""
        ...

    def add(self, batch: Mapping[str, np.ndarray]) -> I64:
        """Write ``B`` items at the cursor (wrapping around); return their slots."""
        ...

    def get(self, indices: npt.ArrayLike) -> Batch:
        """Items at ``indices`` (copies)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to restore (or verify) the contents."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore (or verify) :meth:`state_dict` output."""
        ...


class _Ring:
    """Ring-buffer bookkeeping over per-field arrays (shared by both storages)."""

    def __init__(self, spec: TransitionSpec, capacity: int, arrays: dict[str, np.ndarray]) -> None:
        self.spec = spec
        self.capacity = capacity
        self.arrays = arrays
        self.cursor = 0
        self.size = 0

    def write(self, batch: Mapping[str, np.ndarray]) -> I64:
        count = self.spec.validate(batch)  # everything checked before anything is written
        if count > self.capacity:
            raise ReplayError(
                f"batch of {count} items exceeds the storage capacity {self.capacity}; "
                "add it in smaller pieces"
            )
        start = self.cursor
        first = min(count, self.capacity - start)
        for name, array in self.arrays.items():
            value = batch[name]
            array[start : start + first] = value[:first]
            if first < count:
                array[: count - first] = value[first:]
        indices = np.arange(start, start + count, dtype=np.int64)
        if first < count:
            indices[first:] -= self.capacity
        self.cursor = (start + count) % self.capacity
        self.size = min(self.capacity, self.size + count)
        return indices

    def read(self, indices: npt.ArrayLike) -> Batch:
        idx = _as_indices(indices, self.size, "indices")
        return {name: array.take(idx, axis=0) for name, array in self.arrays.items()}

    def check_counters(self, cursor: int, size: int, where: str) -> None:
        if not (0 <= size <= self.capacity and 0 <= cursor < self.capacity):
            raise ReplayError(
                f"{where}: cursor {cursor} / size {size} are outside capacity {self.capacity}"
            )
        if size < self.capacity and cursor != size:
            raise ReplayError(
                f"{where}: cursor {cursor} must equal size {size} until the ring is full"
            )


def _check_capacity(capacity: int) -> int:
    if isinstance(capacity, bool) or int(capacity) != capacity or capacity < 1:
        raise ConfigError(f"storage capacity must be an integer >= 1, got {capacity!r}")
    return int(capacity)


class RingStorage:
    """In-memory ring storage: one preallocated ``[capacity, *shape]`` array per field.

    ``add`` writes a batch in place with one or two slice copies per field (two
    when it wraps around); ``get`` gathers with ``ndarray.take``.

    Args:
        spec: the item fields.
        capacity: number of slots; the oldest items are overwritten first.

    Raises:
        ConfigError: If ``capacity < 1``.

    >>> spec = TransitionSpec({"obs": ((2,), np.float32), "reward": ((), np.float32)})
    >>> storage = RingStorage(spec, capacity=3)
    >>> batch = {"obs": np.ones((2, 2), np.float32), "reward": np.array([1, 2], np.float32)}
    >>> storage.add(batch).tolist(), storage.add(batch).tolist()
    ([0, 1], [2, 0])
    >>> storage.size, storage.cursor, storage.get([0, 2])["reward"].tolist()
    (3, 1, [2.0, 1.0])
    """

    def __init__(self, spec: TransitionSpec, capacity: int) -> None:
        self.spec = spec
        self.capacity = _check_capacity(capacity)
        arrays = {
            name: np.zeros((self.capacity, *f.shape), dtype=f.dtype) for name, f in spec.items()
        }
        self._ring = _Ring(spec, self.capacity, arrays)

    @property
    def size(self) -> int:
        """Items stored."""
        return self._ring.size

    @property
    def cursor(self) -> int:
        """Slot the next item goes to."""
        return self._ring.cursor

    def add(self, batch: Mapping[str, np.ndarray]) -> I64:
        """Write a batch; return the ``[B]`` slots it went to.

        Raises:
            ReplayError: If the batch does not match the spec (naming the field)
                or has more items than the capacity; nothing is written then.
        """
        return self._ring.write(batch)

    def get(self, indices: npt.ArrayLike) -> Batch:
        """Copies of the items at ``indices`` (each field ``[len(indices), *shape]``).

        Raises:
            ReplayError: If an index is outside ``[0, size)``.
        """
        return self._ring.read(indices)

    def state_dict(self) -> dict[str, Any]:
        """Spec, capacity, counters and a copy of the ``size`` stored items."""
        ring = self._ring
        return {
            "kind": "ring",
            "spec": self.spec.to_json(),
            "capacity": self.capacity,
            "cursor": ring.cursor,
            "size": ring.size,
            "data": {name: array[: ring.size].copy() for name, array in ring.arrays.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ReplayError: If the kind, spec or capacity differ, or the saved
                arrays do not match the spec; nothing is changed then.
        """
        if state.get("kind") != "ring":
            raise ReplayError(f"expected a ring storage state, got kind {state.get('kind')!r}")
        _check_same_spec(self.spec, state["spec"], "ring storage state")
        if int(state["capacity"]) != self.capacity:
            raise ReplayError(
                f"ring storage state has capacity {state['capacity']}, this storage {self.capacity}"
            )
        ring = self._ring
        cursor, size = int(state["cursor"]), int(state["size"])
        ring.check_counters(cursor, size, "ring storage state")
        data = {name: np.asarray(value) for name, value in state["data"].items()}
        if self.spec.validate(data, what="state['data']") != size:
            raise ReplayError(f"state['data'] must hold size={size} items")
        for name, array in ring.arrays.items():
            array[:size] = data[name]
            array[size:] = 0
        ring.cursor, ring.size = cursor, size


def _check_same_spec(spec: TransitionSpec, saved: Mapping[str, Any], where: str) -> None:
    try:
        other = TransitionSpec.from_json(saved)
    except ConfigError as error:
        raise ReplayError(f"{where}: unreadable spec ({error})") from error
    diff = spec.mismatch(other)
    if diff is not None:
        raise ReplayError(f"{where}: spec mismatch, expected vs found: {diff}")


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MemmapStorage:
    """Ring storage in ``np.memmap`` files: contents survive the process.

    Creates ``directory`` (and the files) if it does not exist or is empty;
    otherwise reopens it, restoring contents, cursor and size, after checking
    the header against ``spec`` and ``capacity``. See the module docstring for
    the layout and the durability guarantees.

    Args:
        spec: the item fields.
        capacity: number of slots.
        directory: where the header and one ``<field>.bin`` per field live.
        durable: make every :meth:`add` survive an OS crash or power loss too
            (``msync`` + ``fsync``; costs a disk flush per add). Without it,
            adds survive the process dying and :meth:`flush` makes them durable.

    Raises:
        ConfigError: If ``capacity < 1``.
        ReplayError: If the directory is not empty but has no header, or its
            header is not valid JSON, has the wrong magic, format version,
            spec or capacity, or a data file is missing or of the wrong size.
            The message names the file or field and the expected value;
            nothing on disk is modified.

    >>> import tempfile
    >>> spec = TransitionSpec({"reward": ((), np.float32)})
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     storage = MemmapStorage(spec, 4, directory)
    ...     slots = storage.add({"reward": np.array([1.0, 2.0], np.float32)})
    ...     storage.close()
    ...     reopened = MemmapStorage(spec, 4, directory)  # e.g. in a new process
    ...     print(slots.tolist(), reopened.size, reopened.get([0, 1])["reward"].tolist())
    [0, 1] 2 [1.0, 2.0]
    """

    def __init__(
        self,
        spec: TransitionSpec,
        capacity: int,
        directory: str | os.PathLike[str],
        *,
        durable: bool = False,
    ) -> None:
        self.spec = spec
        self.capacity = _check_capacity(capacity)
        self.directory = Path(directory).resolve()
        self.durable = durable
        self.header_path = self.directory / HEADER_NAME
        if self.header_path.exists():
            self._ring = self._open()
        else:
            if self.directory.exists() and any(self.directory.iterdir()):
                raise ReplayError(
                    f"{self.directory} is not empty and has no {HEADER_NAME}: it is not an rlops "
                    "replay directory (or its creation was interrupted); refusing to write "
                    "into it. Pass an empty or new directory."
                )
            self._ring = self._create()

    # -- open / create -----------------------------------------------------------
    def _file(self, name: str) -> Path:
        return self.directory / f"{name}.bin"

    def _map(self, name: str) -> np.memmap[Any, np.dtype[Any]]:
        field = self.spec[name]
        return np.memmap(
            str(self._file(name)), dtype=field.dtype, mode="r+", shape=(self.capacity, *field.shape)
        )

    def _create(self) -> _Ring:
        self.directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for name, field in self.spec.items():
            # "xb": never clobber a file that appeared in the meantime.
            with open(self._file(name), "xb") as handle:
                handle.truncate(self.capacity * field.item_nbytes)
            arrays[name] = self._map(name)
        ring = _Ring(self.spec, self.capacity, arrays)
        self._ring = ring
        self.flush()
        return ring

    def _open(self) -> _Ring:
        path = self.header_path
        try:
            header = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ReplayError(
                f"{path}: the replay header is not valid JSON ({error}); the directory is "
                "corrupted or not an rlops replay directory (nothing was modified)"
            ) from error
        except (OSError, UnicodeDecodeError) as error:
            raise ReplayError(f"{path}: cannot read the replay header ({error})") from error
        if not isinstance(header, dict):
            raise ReplayError(f"{path}: expected a JSON object, got {type(header).__name__}")
        if header.get("magic") != MAGIC:
            raise ReplayError(
                f"{path}: magic is {header.get('magic')!r}, expected {MAGIC!r}: not an rlops "
                "memmap replay directory"
            )
        if header.get("format_version") != MEMMAP_FORMAT_VERSION:
            raise ReplayError(
                f"{path}: format_version {header.get('format_version')!r}, this rlops reads "
                f"{MEMMAP_FORMAT_VERSION}"
            )
        try:
            _check_same_spec(self.spec, header["spec"], str(path))
            capacity, cursor, size = (int(header[k]) for k in ("capacity", "cursor", "size"))
        except (KeyError, TypeError, ValueError) as error:
            raise ReplayError(f"{path}: malformed header ({error!r})") from error
        if capacity != self.capacity:
            raise ReplayError(
                f"{path}: capacity {capacity} on disk, expected {self.capacity} (the caller's)"
            )
        for name, field in self.spec.items():
            file = self._file(name)
            expected = self.capacity * field.item_nbytes
            found = file.stat().st_size if file.exists() else None
            if found != expected:
                raise ReplayError(
                    f"{file}: field {name!r} needs {expected} bytes (capacity {self.capacity} x "
                    f"{field.item_nbytes} bytes {field.describe()}), found "
                    f"{'no file' if found is None else f'{found} bytes'}"
                )
        ring = _Ring(self.spec, self.capacity, {name: self._map(name) for name in self.spec})
        ring.check_counters(cursor, size, str(path))
        ring.cursor, ring.size = cursor, size
        return ring

    # -- the Storage interface ---------------------------------------------------
    @property
    def size(self) -> int:
        """Items stored."""
        return self._ring.size

    @property
    def cursor(self) -> int:
        """Slot the next item goes to."""
        return self._ring.cursor

    def add(self, batch: Mapping[str, np.ndarray]) -> I64:
        """Write a batch, then commit the header; return the ``[B]`` slots.

        Raises:
            ReplayError: If the batch does not match the spec (naming the
                field) or exceeds the capacity; nothing is written then.
        """
        indices = self._ring.write(batch)
        if self.durable:
            self.flush()
        else:
            self._write_header(sync=False)
        return indices

    def get(self, indices: npt.ArrayLike) -> Batch:
        """Copies of the items at ``indices``.

        Raises:
            ReplayError: If an index is outside ``[0, size)``.
        """
        return self._ring.read(indices)

    def flush(self) -> None:
        """Make everything added so far durable: msync data, then fsync the header."""
        for array in self._ring.arrays.values():
            if isinstance(array, np.memmap):
                array.flush()
        self._write_header(sync=True)

    def close(self) -> None:
        """Flush and unmap the files; the object is unusable afterwards."""
        self.flush()
        self._ring.arrays.clear()

    def _header(self) -> dict[str, Any]:
        return {
            "magic": MAGIC,
            "format_version": MEMMAP_FORMAT_VERSION,
            "spec": self.spec.to_json(),
            "capacity": self.capacity,
            "cursor": self._ring.cursor,
            "size": self._ring.size,
            "files": {name: self._file(name).name for name in self.spec},
        }

    def _write_header(self, *, sync: bool) -> None:
        tmp = self.header_path.with_name(HEADER_NAME + ".tmp")
        data = json.dumps(self._header(), indent=1).encode("utf-8")
        with open(tmp, "wb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, self.header_path)
        if sync:
            _fsync_dir(self.directory)

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Header information only: the contents live on disk (flushed first)."""
        self.flush()
        header = self._header()
        header["kind"] = "memmap"
        header["directory"] = str(self.directory)
        return header

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check the directory still holds what ``state`` recorded.

        The data is on disk, not in the checkpoint, so this cannot roll the
        directory back: it verifies spec, capacity, cursor and size and raises
        if the directory has moved on (restore the directory together with the
        checkpoint, or start the buffer afresh).

        Raises:
            ReplayError: On any difference, naming it.
        """
        if state.get("kind") != "memmap":
            raise ReplayError(f"expected a memmap storage state, got kind {state.get('kind')!r}")
        _check_same_spec(self.spec, state["spec"], "memmap storage state")
        for key in ("capacity", "cursor", "size"):
            if int(state[key]) != getattr(self, key):
                raise ReplayError(
                    f"memmap storage state records {key}={state[key]}, but {self.directory} "
                    f"has {key}={getattr(self, key)}: the directory changed since the "
                    "checkpoint (restore both together)"
                )
