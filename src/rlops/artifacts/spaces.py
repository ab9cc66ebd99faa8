"""JSON (de)serialisation of the Gymnasium spaces a policy artifact supports."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from rlops.core.errors import ArtifactError


def _floats_to_json(values: np.ndarray) -> list[Any]:
    # JSON has no infinity; spell it as a string so the manifest stays strict JSON.
    return [v if np.isfinite(v) else ("inf" if v > 0 else "-inf") for v in values.ravel().tolist()]


def _floats_from_json(values: list[Any], shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=dtype).reshape(shape)


def space_to_json(space: spaces.Space[Any]) -> dict[str, Any]:
    """Describe a ``Box`` or ``Discrete`` space as JSON-able data.

    Raises:
        ArtifactError: for any other space type.

    >>> space_to_json(spaces.Discrete(3))
    {'type': 'Discrete', 'n': 3, 'start': 0}
    """
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _floats_to_json(space.low.astype(np.float64)),
            "high": _floats_to_json(space.high.astype(np.float64)),
        }
    raise ArtifactError(
        f"unsupported space {space!r}: policy artifacts support Box and Discrete spaces"
    )


def space_from_json(data: dict[str, Any]) -> spaces.Space[Any]:
    """Rebuild a space written by :func:`space_to_json`.

    Raises:
        ArtifactError: if the description is malformed.
    """
    try:
        if data["type"] == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
        if data["type"] == "Box":
            shape = tuple(int(s) for s in data["shape"])
            dtype = str(data["dtype"])
            low = _floats_from_json(data["low"], shape, dtype)
            high = _floats_from_json(data["high"], shape, dtype)
            return spaces.Box(low=low, high=high, shape=shape, dtype=np.dtype(dtype))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"malformed space description {data!r}: {exc}") from None
    raise ArtifactError(f"unsupported space type {data.get('type')!r}: expected Box or Discrete")
