"""Actor fleets: where the actors run, behind one small interface.

The training loop talks to a fleet the same way on every backend::

    fleet.start(version, weights)       # actors up, weights installed
    while training:
        for delivery in fleet.gather(): # sync: one fragment per actor, same version
            learner.step(delivery.batch)#   async: whatever fragments are ready
        fleet.publish(*learner.get_variables())
    fleet.close()

:class:`InlineFleet` is the deterministic reference: one actor in this
process, stepping only when asked. :class:`~rlops.runtime.process.ProcessFleet`
runs actors in processes, :class:`~rlops.runtime.ray_backend.RayFleet` as Ray
actors. Every fragment carries the policy version that produced it, and every
env step an actor took is either delivered or counted as dropped
(:class:`FleetCounters`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rlops.core.batch import Rollout, Transitions
from rlops.envs import EpisodeStatistics


@dataclass
class Delivery:
    """One fragment as the learner receives it.

    Attributes:
        actor_id: the actor that collected it.
        batch: the fragment (its ``policy_version`` is the weights it was collected with).
        env_steps: env steps it holds (``T * N``).
        episode_returns: returns of the episodes that ended during it.
        episode_lengths: their lengths.
        components: per-episode sums of ``env.info_metrics`` / shaping keys.
    """

    actor_id: int
    batch: Rollout | Transitions
    env_steps: int
    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class FleetCounters:
    """What the fleet has done so far; every field is a cumulative count.

    The step identity ``steps_taken == steps_delivered + steps_lost +
    steps_discarded`` holds whenever no fragment is in flight (after
    :meth:`Fleet.close`): steps of a fragment cut short by a crash, kill or
    timeout are ``steps_lost``, never half-delivered; work still in flight when
    the fleet stops (async mode keeps actors busy) is ``steps_discarded``.

    Attributes:
        actors: configured number of actors.
        actors_alive: actors running right now.
        restarts: actors replaced after a crash, kill or timeout.
        timeouts: actors cut off because a fragment or a start took too long.
        steps_taken: env steps all actors took (all sub-envs).
        steps_delivered: env steps in fragments handed to the learner.
        steps_lost: env steps of partial fragments dropped with their actor.
        fragments_delivered: fragments handed to the learner.
        fragments_lost: partial fragments dropped with their actor.
        steps_discarded: env steps in flight when the fleet stopped.
        actor_versions: the weight version each actor holds now (-1: none yet).
        last_error: the most recent actor failure, for messages.
    """

    actors: int
    actors_alive: int = 0
    restarts: int = 0
    timeouts: int = 0
    steps_taken: int = 0
    steps_delivered: int = 0
    steps_lost: int = 0
    fragments_delivered: int = 0
    fragments_lost: int = 0
    steps_discarded: int = 0
    actor_versions: list[int] = field(default_factory=list)
    last_error: str = ""


def concat_fragments(batches: list[Any]) -> Any:
    """Join same-shaped fragments from several actors along the env axis.

    ``[T, N_i, ...]`` fields become ``[T, sum N_i, ...]``; per-env fields
    without a time axis (``last_*``, shape ``[N_i, ...]``) are joined on axis 0.
    Scalars (``policy_version``, ``source``) come from the first fragment.

    >>> from rlops.core.batch import Transitions
    >>> z = lambda *s: np.zeros(s, np.float32)
    >>> t = Transitions(z(2, 3, 4), z(2, 3), z(2, 3), z(2, 3, 4), z(2, 3) > 0, z(2, 3) > 0)
    >>> concat_fragments([t, t]).num_envs
    6
    """
    first = batches[0]
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        values = [getattr(b, f.name) for b in batches]
        if isinstance(values[0], np.ndarray):
            axis = 0 if f.name.startswith("last_") else 1
            fields[f.name] = np.concatenate(values, axis=axis)
        else:
            fields[f.name] = values[0]
    return type(first)(**fields)


def allow_restart(
    counters: FleetCounters, failure: str, fatal: bool, max_restarts: int, close: Any
) -> None:
    """The restart policy every backend shares: count one restart, or stop with the cause.

    Records ``failure`` as the last error. Calls ``close()`` and raises
    :class:`~rlops.core.errors.ActorFailure` when the failure is ``fatal`` (the
    first incarnation could not be built) or ``max_restarts`` are used up.
    """
    from rlops.core.errors import ActorFailure

    counters.last_error = failure
    if fatal:
        close()
        raise ActorFailure(f"{failure} while starting; training stopped before it began")
    if counters.restarts >= max_restarts:
        close()
        raise ActorFailure(
            f"{failure}; restarts exhausted (runtime.max_restarts={max_restarts}, "
            f"{counters.restarts} used). Training stopped; the last checkpoint is intact"
        )
    counters.restarts += 1


class Fleet(Protocol):
    """Actors that collect fragments with versioned weights (see the module docstring)."""

    num_actors: int

    def start(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        """Start the actors with these weights; raises if an actor cannot start."""
        ...

    def publish(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        """Make ``(version, weights)`` the newest; actors pick it up at their next fragment."""
        ...

    def gather(self) -> list[Delivery]:
        """Sync: one fragment per actor, ordered by actor. Async: the ready ones (>= 1)."""
        ...

    def counters(self) -> FleetCounters:
        """Cumulative counts (alive, restarts, steps taken/delivered/lost, versions)."""
        ...

    def close(self) -> None:
        """Stop every actor; no process or Ray actor outlives this call."""
        ...


class InlineFleet:
    """One actor in this process, stepping only inside :meth:`gather`.

    Args:
        actor: the local actor (``update``, ``collect``).
        stats: the episode statistics wrapper of its env.
    """

    def __init__(self, actor: Any, stats: EpisodeStatistics) -> None:
        self.actor = actor
        self.stats = stats
        self.num_actors = 1
        self._counters = FleetCounters(actors=1, actor_versions=[-1])

    def start(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        """Install the first weights."""
        self.publish(version, weights)
        self._counters.actors_alive = 1

    def publish(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        """Install ``weights`` in the actor right away."""
        self.actor.update(version, weights)
        self._counters.actor_versions[0] = version

    def gather(self) -> list[Delivery]:
        """Collect one fragment."""
        batch = self.actor.collect()
        steps = batch.num_steps * batch.num_envs
        returns, lengths = self.stats.pop_episodes()
        c = self._counters
        c.steps_taken += steps
        c.steps_delivered += steps
        c.fragments_delivered += 1
        return [Delivery(0, batch, steps, returns, lengths, self.stats.pop_components())]

    def counters(self) -> FleetCounters:
        """Cumulative counts."""
        return self._counters

    def close(self) -> None:
        """Nothing to stop."""
        self._counters.actors_alive = 0
