"""What a replay item is made of: named numpy fields with fixed shapes and dtypes.

A :class:`TransitionSpec` maps field names to :class:`FieldSpec` (per-item shape
and dtype). Batches cross the replay API as plain ``dict[str, np.ndarray]``
whose every field is ``[B, *field.shape]`` of exactly ``field.dtype``; the spec
is the typed contract, checked at the boundary (:meth:`TransitionSpec.validate`)
so a wrong shape or dtype fails with the field's name instead of being silently
cast into storage. The field set is configured per experiment (pixels or
vectors, discrete or continuous actions, with or without an n-step
``discount``), which is why the batch is a checked mapping rather than a fixed
dataclass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from rlops.core.errors import ConfigError, ReplayError

__all__ = ["Batch", "FieldSpec", "TransitionSpec"]

Batch = dict[str, npt.NDArray[Any]]
"""A batch of ``B`` replay items: field name -> ``[B, *field.shape]`` array."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Shape and dtype of one field of one item (no batch dimension).

    Attributes:
        shape: per-item shape, e.g. ``(8,)`` for an 8-dim observation, ``()`` for
            a scalar reward.
        dtype: numpy dtype; anything ``np.dtype`` accepts is normalised to it.

    >>> FieldSpec((8,), "float32")
    FieldSpec(shape=(8,), dtype=dtype('float32'))
    """

    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(d) for d in self.shape)
            dtype = np.dtype(self.dtype)
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"field spec ({self.shape!r}, {self.dtype!r}) is not a (shape, dtype) pair: {error}"
            ) from error
        if any(d < 0 for d in shape):
            raise ConfigError(f"field shape {shape} has a negative dimension")
        if dtype.hasobject or dtype.fields is not None:
            raise ConfigError(f"field dtype {dtype} is not a plain numeric/bool dtype")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype)

    @property
    def item_nbytes(self) -> int:
        """Bytes one item of this field takes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def describe(self) -> str:
        """``"(shape (8,), float32)"``: how error messages show this spec."""
        return f"(shape {self.shape}, {self.dtype.name})"


class TransitionSpec(Mapping[str, FieldSpec]):
    """Field name -> :class:`FieldSpec`, the contract every replay batch follows.

    Args:
        fields: name -> ``FieldSpec`` or ``(shape, dtype)``. Names must be
            Python identifiers (they become file names in
            :class:`~rlops.replay.MemmapStorage`).

    Raises:
        ConfigError: If there are no fields, a name is not an identifier or a
            spec is not a valid ``(shape, dtype)``.

    >>> spec = TransitionSpec({"obs": ((8,), np.float32), "reward": ((), np.float32)})
    >>> spec["obs"].describe()
    '(shape (8,), float32)'
    >>> spec.validate({"obs": np.zeros((4, 8), np.float32), "reward": np.zeros(4, np.float32)})
    4
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, FieldSpec | tuple[Any, Any]]) -> None:
        if not fields:
            raise ConfigError("a TransitionSpec needs at least one field")
        parsed: dict[str, FieldSpec] = {}
        for name, value in fields.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(f"field name {name!r} must be a Python identifier")
            if isinstance(value, FieldSpec):
                parsed[name] = value
            else:
                try:
                    shape, dtype = value
                except (TypeError, ValueError) as error:
                    raise ConfigError(
                        f"field {name!r}: expected a FieldSpec or (shape, dtype), got {value!r}"
                    ) from error
                if isinstance(shape, int):
                    shape = (shape,)
                parsed[name] = FieldSpec(tuple(shape), dtype)
        self._fields: Mapping[str, FieldSpec] = MappingProxyType(parsed)

    @classmethod
    def transitions(
        cls,
        obs_shape: tuple[int, ...],
        *,
        obs_dtype: npt.DTypeLike = np.float32,
        action_shape: tuple[int, ...] = (),
        action_dtype: npt.DTypeLike = np.int64,
        n_step: bool = False,
    ) -> TransitionSpec:
        """The usual one-step (or n-step) transition fields.

        Fields: ``obs`` and ``next_obs`` (``obs_shape``, ``obs_dtype``),
        ``action`` (``action_shape``, ``action_dtype``), ``reward`` (scalar
        float32), ``terminated`` (scalar bool) and, with ``n_step``, ``discount``
        (scalar float32, the ``gamma**m`` to bootstrap with; see
        :class:`~rlops.replay.NStepWriter`).

        Args:
            obs_shape: per-item observation shape.
            obs_dtype: observation dtype.
            action_shape: per-item action shape (``()`` for discrete actions).
            action_dtype: action dtype.
            n_step: add the ``discount`` field.

        Returns:
            The spec.

        >>> list(TransitionSpec.transitions((8,), n_step=True))
        ['obs', 'action', 'reward', 'next_obs', 'terminated', 'discount']
        """
        fields: dict[str, tuple[Any, Any]] = {
            "obs": (tuple(obs_shape), obs_dtype),
            "action": (tuple(action_shape), action_dtype),
            "reward": ((), np.float32),
            "next_obs": (tuple(obs_shape), obs_dtype),
            "terminated": ((), np.bool_),
        }
        if n_step:
            fields["discount"] = ((), np.float32)
        return cls(fields)

    def __getitem__(self, name: str) -> FieldSpec:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {v.describe()}" for k, v in self._fields.items())
        return f"TransitionSpec({{{inner}}})"

    def validate(self, batch: Mapping[str, Any], *, what: str = "batch") -> int:
        """Check a batch against the spec and return its batch size ``B``.

        Every field must be present (and no other), be a numpy array of exactly
        the field's dtype, and have shape ``[B, *field.shape]`` with one ``B``
        shared by all fields. Nothing is cast: a float64 reward for a float32
        field is an error, so a silent precision or bool/int mix-up cannot
        reach storage.

        Args:
            batch: field name -> array.
            what: how the message names the batch.

        Returns:
            ``B``, the number of items.

        Raises:
            ReplayError: Naming the first offending field with the expected
                ``(shape, dtype)`` and what it got.
        """
        if not isinstance(batch, Mapping):
            raise ReplayError(f"{what} must be a mapping of field -> array, got {type(batch)}")
        missing = [name for name in self._fields if name not in batch]
        extra = [name for name in batch if name not in self._fields]
        if missing or extra:
            raise ReplayError(
                f"{what} fields do not match the spec: missing {missing}, unexpected {extra}; "
                f"expected exactly {list(self._fields)}"
            )
        size = -1
        first = ""
        for name, field in self._fields.items():
            value = batch[name]
            if not isinstance(value, np.ndarray):
                raise ReplayError(
                    f"{what}[{name!r}]: expected a numpy array {field.describe()} per item, "
                    f"got {type(value).__name__}"
                )
            shape = value.shape
            if value.dtype != field.dtype or shape[1:] != field.shape or len(shape) == 0:
                raise ReplayError(
                    f"{what}[{name!r}]: expected [B, *{field.shape}] of {field.dtype.name} "
                    f"(per item {field.describe()}), got shape {shape} of {value.dtype.name}"
                    + (
                        f"; cast it with .astype(np.{field.dtype.name})"
                        if value.dtype != field.dtype
                        else ""
                    )
                )
            if size < 0:
                size, first = shape[0], name
            elif shape[0] != size:
                raise ReplayError(
                    f"{what}[{name!r}] has {shape[0]} items but {what}[{first!r}] has {size}; "
                    "every field needs the same leading batch dimension"
                )
        return size

    def empty(self, batch_size: int = 0) -> Batch:
        """A zero-filled batch of ``batch_size`` items."""
        return {
            name: np.zeros((batch_size, *f.shape), dtype=f.dtype)
            for name, f in self._fields.items()
        }

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``{name: {"shape": [...], "dtype": "<f4"}}`` (exact dtype strings, with byte order)."""
        return {
            name: {"shape": list(f.shape), "dtype": f.dtype.str} for name, f in self._fields.items()
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TransitionSpec:
        """Inverse of :meth:`to_json`.

        Raises:
            ConfigError: If ``data`` is not in the :meth:`to_json` format.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"spec must be a mapping, got {type(data).__name__}")
        fields: dict[str, tuple[Any, Any]] = {}
        for name, entry in data.items():
            if not isinstance(entry, Mapping) or set(entry) != {"shape", "dtype"}:
                raise ConfigError(f"spec field {name!r}: expected {{shape, dtype}}, got {entry!r}")
            fields[name] = (tuple(entry["shape"]), entry["dtype"])
        return cls(fields)

    def mismatch(self, other: TransitionSpec) -> str | None:
        """Describe the first difference from ``other`` (None if they are equal)."""
        for name, field in self._fields.items():
            if name not in other:
                return f"field {name!r} {field.describe()} is missing from the other spec"
            if other[name] != field:
                return f"field {name!r}: {field.describe()} vs {other[name].describe()}"
        for name in other:
            if name not in self._fields:
                return f"field {name!r} {other[name].describe()} is not in this spec"
        return None
