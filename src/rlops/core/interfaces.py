"""The small interfaces the actor-learner loop is made of.

The loop they show (the inline backend runs exactly this)::

    actor.update(source.get_variables())        # pull the newest weights
    batch = actor.collect()                      # step envs, return a Rollout
    metrics = learner.step(batch)                # one update on that batch
    # learner is the VariableSource the actors pull from
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rlops.core.batch import Rollout


@runtime_checkable
class Saveable(Protocol):
    """Anything whose state can be checkpointed and restored exactly."""

    def state_dict(self) -> dict[str, Any]:
        """Return the state needed to resume exactly where this object is."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state produced by :meth:`state_dict`."""
        ...


@runtime_checkable
class VariableSource(Protocol):
    """Publishes versioned weights (the learner, or a parameter server)."""

    def get_variables(self) -> tuple[int, dict[str, np.ndarray]]:
        """Return ``(version, {name: array})`` of the newest weights."""
        ...


@runtime_checkable
class Actor(Protocol):
    """Steps environments with the current policy and returns fragments."""

    def update(self, version: int, variables: Mapping[str, np.ndarray]) -> None:
        """Install new weights; later fragments carry ``version``."""
        ...

    def collect(self) -> Rollout:
        """Step the environments for one fragment and return it."""
        ...


@runtime_checkable
class Learner(VariableSource, Saveable, Protocol):
    """Consumes fragments and updates the policy."""

    def step(self, batch: Rollout) -> dict[str, float]:
        """Run one update on ``batch``; return namespaced metrics (``losses/...``)."""
        ...
