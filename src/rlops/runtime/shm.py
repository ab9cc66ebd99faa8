"""Shared-memory blocks for the process backend: fragment slots and the weight board.

Arrays cross the process boundary as bytes in :mod:`multiprocessing.shared_memory`
blocks that the learner process creates (and unlinks); only small control
messages (slot index, version, step counts) are pickled. Every block has a fixed
:class:`Layout` (names, shapes, dtypes) known to both sides before the first
write, so reads and writes are one ``memcpy`` per array.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np

ALIGN = 64
"""Byte alignment of every array in a block (a cache line)."""


@dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of the arrays packed into one block.

    ``fields`` is a tuple of ``(name, shape, dtype string)``; it pickles as
    plain data so a worker can rebuild the views.
    """

    fields: tuple[tuple[str, tuple[int, ...], str], ...]

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Layout:
        """The layout that holds ``arrays`` (in their order)."""
        return cls(
            tuple((name, tuple(a.shape), np.dtype(a.dtype).str) for name, a in arrays.items())
        )

    def offsets(self) -> list[int]:
        """Byte offset of each field."""
        out, offset = [], 0
        for _, shape, dtype in self.fields:
            out.append(offset)
            size = math.prod(shape) * np.dtype(dtype).itemsize
            offset += -(-size // ALIGN) * ALIGN
        return out

    @property
    def nbytes(self) -> int:
        """Bytes needed (at least one)."""
        if not self.fields:
            return 1
        _, shape, dtype = self.fields[-1]
        last = math.prod(shape) * np.dtype(dtype).itemsize
        return max(1, self.offsets()[-1] + last)

    def views(self, buffer: Any) -> dict[str, np.ndarray]:
        """Numpy views of every field into ``buffer``."""
        return {
            name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=buffer, offset=offset)
            for (name, shape, dtype), offset in zip(self.fields, self.offsets(), strict=True)
        }


class SharedArrays:
    """A shared-memory block holding the arrays of a :class:`Layout`.

    The creating process owns the block (:meth:`unlink`); others attach by
    ``name``.

    Args:
        layout: what the block holds.
        name: attach to this existing block instead of creating one.
    """

    def __init__(self, layout: Layout, name: str | None = None) -> None:
        self.layout = layout
        self.owner = name is None
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=layout.nbytes)
        else:
            self.shm = _attach(name)
        self.arrays = layout.views(self.shm.buf)

    @property
    def name(self) -> str:
        """The block's system-wide name."""
        return self.shm.name

    def close(self) -> None:
        """Drop this process's mapping (and the block itself if this process created it)."""
        self.arrays = {}
        with contextlib.suppress(BufferError):  # a caller still holds a view: freed at exit
            self.shm.close()
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach to block ``name`` without taking ownership.

    Before Python 3.13 attaching registers the block with this process's
    resource tracker, which would unlink it when this (actor) process exits,
    pulling it from under the learner and any restarted actor; so the
    registration is undone here. The creating process alone unlinks.
    """
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg,unused-ignore]
    shm = shared_memory.SharedMemory(name=name)
    with contextlib.suppress(Exception):
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm


def batch_arrays(batch: Any) -> dict[str, np.ndarray]:
    """The numpy-array fields of a batch dataclass (``Rollout``/``Transitions``)."""
    return {
        f.name: getattr(batch, f.name)
        for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), np.ndarray)
    }


class WeightBoard:
    """The learner's newest ``(version, weights)``, readable by every actor process.

    A seqlock: the writer makes the sequence number odd, copies the weights,
    writes the version and makes the sequence even again; a reader retries
    until it saw the same even sequence before and after its copy, so it never
    installs half-written weights. Readers never block the writer.

    Args:
        layout: the weights' names, shapes and dtypes.
        name: attach to an existing board (actor side).
    """

    def __init__(self, layout: Layout, name: str | None = None) -> None:
        header = Layout((("seq", (1,), "<i8"), ("version", (1,), "<i8")))
        self._header_bytes = header.nbytes
        full = Layout(header.fields + layout.fields)
        self.block = SharedArrays(full, name)
        self.layout = layout
        self._names = [name for name, _, _ in layout.fields]

    @property
    def name(self) -> str:
        """The shared block's name (pass it to actor processes)."""
        return self.block.name

    def publish(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        """Write ``weights`` as ``version`` (learner side)."""
        arrays = self.block.arrays
        seq = arrays["seq"]
        seq[0] += 1  # odd: write in progress
        for name in self._names:
            np.copyto(arrays[name], weights[name], casting="same_kind")
        arrays["version"][0] = version
        seq[0] += 1  # even: consistent

    def version(self) -> int:
        """The version currently on the board (-1 before the first publish)."""
        return int(self.block.arrays["version"][0]) if int(self.block.arrays["seq"][0]) else -1

    def read(self, spins: int = 100_000) -> tuple[int, dict[str, np.ndarray]]:
        """A consistent copy of ``(version, weights)`` (actor side)."""
        arrays = self.block.arrays
        seq = arrays["seq"]
        for _ in range(spins):
            before = int(seq[0])
            if before % 2:
                continue
            version = int(arrays["version"][0])
            weights = {name: arrays[name].copy() for name in self._names}
            if int(seq[0]) == before:
                return version, weights
        raise TimeoutError("WeightBoard.read: the learner never finished a publish")

    def close(self) -> None:
        """Release the mapping (and the block, on the creating side)."""
        self.block.close()
