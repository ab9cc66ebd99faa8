"""Domain randomization: per-episode parameter draws for numpy-batched simulators.

A simulator that supports randomization keeps its numeric parameters as
per-sub-env arrays ``[N]`` and, whenever sub-envs ``ids`` (auto)reset, asks
its :class:`DomainRandomization` for fresh values::

    values = randomization.sample(rng, len(ids))   # {"field": array [len(ids)]}
    for name, column in values.items():
        self._params[name][ids] = column

Evaluation fixes parameters by passing none (or a fixed params dataclass).
Ranges come from config as ``{field: [low, high]}`` (uniform),
``{field: {"choice": [v1, v2, ...]}}`` or ``{field: {"normal": [mean, std],
"clip": [low, high]}}``, and are checked against the params dataclass:
unknown fields and empty or inverted ranges fail with the field named.

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class P:
...     demand: float = 1.0
>>> dr = DomainRandomization.from_config(P, {"demand": [0.5, 1.5]})
>>> draw = dr.sample(np.random.default_rng(0), 3)["demand"]
>>> bool(((draw >= 0.5) & (draw <= 1.5)).all())
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlops.core.errors import ConfigError

__all__ = ["DomainRandomization", "ParamDistribution"]


@dataclass(frozen=True)
class ParamDistribution:
    """One parameter's distribution: ``uniform``, ``choice`` or clipped ``normal``."""

    kind: str
    args: tuple[float, ...]
    clip: tuple[float, float] | None = None

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` float64 draws."""
        if self.kind == "uniform":
            return rng.uniform(self.args[0], self.args[1], size=n)
        if self.kind == "choice":
            return rng.choice(np.asarray(self.args, dtype=np.float64), size=n)
        draws = rng.normal(self.args[0], self.args[1], size=n)
        if self.clip is not None:
            draws = np.clip(draws, self.clip[0], self.clip[1])
        return draws

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest value it can draw."""
        if self.kind == "uniform":
            return self.args[0], self.args[1]
        if self.kind == "choice":
            return min(self.args), max(self.args)
        return self.clip if self.clip is not None else (-math.inf, math.inf)


def _numbers(value: Any, key: str, count: int | None = None) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or (count is not None and len(value) != count):
        want = f"a list of {count} numbers" if count else "a non-empty list of numbers"
        raise ConfigError(f"{key}: expected {want}, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise ConfigError(f"{key}: expected finite numbers, got {value!r}")
        out.append(float(item))
    if not out:
        raise ConfigError(f"{key}: expected a non-empty list of numbers, got {value!r}")
    return tuple(out)


def _distribution(key: str, spec: Any) -> ParamDistribution:
    if isinstance(spec, list | tuple):
        low, high = _numbers(spec, key, 2)
        if not low <= high:
            raise ConfigError(f"{key}: empty range [{low}, {high}]; low must be <= high")
        return ParamDistribution("uniform", (low, high))
    if isinstance(spec, Mapping):
        if set(spec) == {"choice"}:
            return ParamDistribution("choice", _numbers(spec["choice"], f"{key}.choice"))
        if set(spec) in ({"normal"}, {"normal", "clip"}):
            mean, std = _numbers(spec["normal"], f"{key}.normal", 2)
            if std < 0:
                raise ConfigError(f"{key}.normal: std must be >= 0, got {std}")
            clip = None
            if "clip" in spec:
                low, high = _numbers(spec["clip"], f"{key}.clip", 2)
                if not low <= high:
                    raise ConfigError(f"{key}.clip: empty range [{low}, {high}]")
                clip = (low, high)
            return ParamDistribution("normal", (mean, std), clip)
    raise ConfigError(
        f"{key}: expected [low, high], {{choice: [...]}} or "
        f"{{normal: [mean, std], clip: [low, high]}}, got {spec!r}"
    )


class DomainRandomization:
    """Per-episode draws of a params dataclass's numeric fields.

    Args:
        distributions: field name -> :class:`ParamDistribution`.
    """

    def __init__(self, distributions: Mapping[str, ParamDistribution]) -> None:
        self.distributions = dict(distributions)

    @classmethod
    def from_config(
        cls, params_cls: type[Any], spec: Mapping[str, Any], prefix: str = "randomize"
    ) -> DomainRandomization:
        """Parse ``{field: range}`` for ``params_cls`` (a dataclass of numeric fields).

        Raises:
            ConfigError: an unknown field, a non-numeric field, or an empty/invalid range.
        """
        fields = {f.name: f for f in dataclasses.fields(params_cls)}
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{prefix}: expected a mapping of field -> range, got {spec!r}")
        out = {}
        for name, value in spec.items():
            key = f"{prefix}.{name}"
            if name not in fields:
                raise ConfigError(
                    f"{key}: {params_cls.__name__} has no field {name!r}; "
                    f"known: {', '.join(sorted(fields))}"
                )
            default = getattr(params_cls(), name)
            if isinstance(default, bool) or not isinstance(default, int | float):
                raise ConfigError(f"{key}: only numeric fields can be randomized")
            out[name] = _distribution(key, value)
        return cls(out)

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """``{field: [n] float64 draws}``."""
        return {name: dist.sample(rng, n) for name, dist in self.distributions.items()}

    def __bool__(self) -> bool:
        return bool(self.distributions)
