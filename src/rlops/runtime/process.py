"""The ``process`` backend: actors in their own processes, fragments in shared memory.

Each actor process builds its own vector env and the algorithm's actor
(numpy inference only: no torch, no learner), then serves ``collect``
requests from the learner process:

* weights: the learner publishes ``(version, weights)`` on a
  :class:`~rlops.runtime.shm.WeightBoard`; an actor reads the newest one at
  the start of every fragment, so no broadcast is lost and the version each
  actor holds is known (``runtime/actor_version_min``);
* fragments: the actor writes the fragment's arrays into one of its two
  shared-memory slots and sends a few bytes over a pipe (slot, version, step
  count, finished episodes). Arrays are never pickled;
* step accounting: the actor bumps a shared per-actor counter after every env
  step, so when it dies the learner knows how many steps its partial
  fragment held and counts them as lost, whole.

Failures: an actor that raises, dies (SIGKILL included) or exceeds
``runtime.fragment_timeout_s`` / ``runtime.start_timeout_s`` is killed,
counted and restarted with a fresh seed and the current weights, up to
``runtime.max_restarts`` times in the run; then :class:`ActorFailure` stops
training with the cause. An actor that cannot start at all in the first
place (bad env id, env constructor raising) stops training right away.

Actor processes die with the learner process (``PR_SET_PDEATHSIG`` on Linux,
plus a parent check while they wait), so none is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any

import gymnasium as gym
import numpy as np

from rlops.core.batch import Rollout, Transitions
from rlops.observability import PhaseTimer
from rlops.runtime.agents import PLUGINS, actor_seed, env_seed, make_training_env
from rlops.runtime.config import ExperimentConfig, config_from_dict
from rlops.runtime.fleet import Delivery, FleetCounters, allow_restart
from rlops.runtime.shm import Layout, SharedArrays, WeightBoard, batch_arrays

SLOTS = 2
"""Fragment slots per actor: it fills one while the learner reads the other."""


class CountSteps(gym.vector.VectorWrapper):
    """Adds ``num_envs`` to ``counter[index]`` after every completed ``step``."""

    def __init__(self, env: Any, counter: np.ndarray, index: int) -> None:
        super().__init__(env)
        self._counter = counter
        self._index = index

    def step(self, actions: Any) -> Any:
        """Step the env, then count it."""
        out = self.env.step(actions)
        self._counter[self._index] += self.num_envs
        return out


# -- the actor process ------------------------------------------------------------------
@dataclass(frozen=True)
class _WorkerArgs:
    actor_id: int
    incarnation: int
    config: dict[str, Any]
    board: str
    board_layout: Layout
    slots: tuple[str, ...]
    slot_layout: Layout
    counters: str
    counters_layout: Layout
    parent_pid: int
    seed_offset: int


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def worker_entry(fd: int) -> None:
    """``python -m rlops.runtime._actor_main FD``: serve the learner on socket ``fd``."""
    conn = Connection(fd)
    args = conn.recv()
    _worker_main(args, conn)


def _worker_main(args: _WorkerArgs, conn: Connection) -> None:
    """Entry point of an actor process."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle
    phase = "build"  # a build failure is deterministic: the learner does not retry it
    try:
        config = config_from_dict(args.config)
        plugin = PLUGINS[config.algo.name]
        counters = SharedArrays(args.counters_layout, args.counters)
        _, stats = make_training_env(config)
        env = CountSteps(stats, counters.arrays["steps"], args.actor_id)
        spec = plugin.spec(config, env)
        timer = PhaseTimer()
        offset = args.seed_offset  # a resumed run must not replay its first episodes
        actor = plugin.actor(
            config, env, spec, timer, actor_seed(config, args.actor_id, args.incarnation) + offset
        )
        phase = "run"
        actor.reset(seed=env_seed(config, args.actor_id, args.incarnation) + offset)
        board = WeightBoard(args.board_layout, args.board)
        slots = [SharedArrays(args.slot_layout, name) for name in args.slots]
        conn.send(("ready", os.getpid()))
        held = -1
        while True:
            while not conn.poll(1.0):
                if os.getppid() != args.parent_pid:
                    return  # the learner is gone
            message = conn.recv()
            if message[0] == "stop":
                return
            slot = slots[int(message[1])]
            if board.version() != held:
                held, weights = board.read()
                actor.update(held, weights)
            batch = actor.collect()
            for name, array in batch_arrays(batch).items():
                np.copyto(slot.arrays[name], array)
            returns, lengths = stats.pop_episodes()
            conn.send(
                (
                    "fragment",
                    int(message[1]),
                    batch.policy_version,
                    batch.num_steps * batch.num_envs,
                    returns.tolist(),
                    lengths.tolist(),
                    {key: v.tolist() for key, v in stats.pop_components().items()},
                )
            )
    except Exception as exc:  # report the cause, then die: the learner restarts us
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", detail, phase))
        conn.close()
        os._exit(1)


# -- the learner side -------------------------------------------------------------------
class _Child:
    """A worker interpreter started with :mod:`subprocess`.

    A fresh ``python -m rlops.runtime._actor_main`` imports only what an actor
    needs (no torch, and never the user's script, unlike multiprocessing's
    spawn), so it starts in well under a second and needs no ``__main__`` guard.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        ours, theirs = socket.socketpair()
        self.conn = Connection(ours.detach())
        fd = theirs.fileno()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "rlops.runtime._actor_main", str(fd)],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)


@dataclass
class _Actor:
    """The learner's view of one actor process."""

    actor_id: int
    incarnation: int = 0
    process: _Child | None = None
    conn: Connection | None = None
    ready: bool = False
    started_at: float = 0.0
    outstanding: list[int] = field(default_factory=list)
    """Slots requested and not yet delivered, oldest first."""
    busy_since: float = 0.0
    """When the oldest outstanding request started (for the fragment timeout)."""
    accounted: int = 0
    """Steps of this actor's counter already delivered or counted lost."""
    version: int = -1


class ProcessFleet:
    """Actors in processes; see the module docstring.

    Args:
        config: the experiment (``runtime.num_actors``, ``runtime.mode``, timeouts).
        template: an empty fragment of the right shapes (the local actor's),
            which fixes the shared-memory slot layout.
        weights: the learner's weights (their layout fixes the weight board's).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        template: Rollout | Transitions,
        weights: Mapping[str, np.ndarray],
        seed_offset: int = 0,
    ) -> None:
        self.config = config
        self.seed_offset = seed_offset
        rt = config.runtime
        self.num_actors = rt.num_actors
        self.sync = rt.mode == "sync"
        self._kind = type(template)
        self._scalars = {"policy_version": 0}
        self._slot_layout = Layout.of(batch_arrays(template))
        self._board = WeightBoard(Layout.of(weights))
        self._counters_block = SharedArrays(Layout((("steps", (self.num_actors,), "<i8"),)))
        self._counters_block.arrays["steps"][:] = 0
        self._slots = [
            [SharedArrays(self._slot_layout) for _ in range(SLOTS)] for _ in range(self.num_actors)
        ]
        self._actors = [_Actor(i) for i in range(self.num_actors)]
        self._stats = FleetCounters(actors=self.num_actors, actor_versions=[-1] * self.num_actors)
        self._closed = False
        self._config_data = config.to_dict()

    # -- lifecycle ------------------------------------------------------------------
    def start(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        """Publish the first weights and start every actor; wait until all are ready.

        Raises:
            ActorFailure: an actor's env could not be built (its error named), or
                starts kept failing or exceeding ``runtime.start_timeout_s`` until
                ``runtime.max_restarts`` ran out.
        """
        self.publish(version, weights)
        for actor in self._actors:
            self._spawn(actor)
        # Each start is bounded by start_timeout_s; a hung start is replaced like
        # any failure (counted), so this loop ends with all ready or ActorFailure.
        while not all(a.ready for a in self._actors):
            self._poll([a for a in self._actors if not a.ready], 1.0)
        if not self.sync:
            for actor in self._actors:
                for slot in range(SLOTS):
                    self._request(actor, slot)

    def close(self) -> None:
        """Stop all actors (politely, then by force) and free the shared memory."""
        if self._closed:
            return
        self._closed = True
        for actor in self._actors:
            if actor.conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    actor.conn.send(("stop",))
        deadline = time.monotonic() + 2.0
        for actor in self._actors:
            if actor.process is not None:
                actor.process.join(max(0.0, deadline - time.monotonic()))
                if actor.process.is_alive():
                    actor.process.kill()
                    actor.process.join(5.0)
        self._settle_all()
        self._stats.steps_taken = int(self._counters_block.arrays["steps"].sum())
        for actor in self._actors:
            self._forget(actor)
        self._stats.actors_alive = 0
        for slots in self._slots:
            for block in slots:
                block.close()
        self._board.close()
        self._counters_block.close()

    # -- weights --------------------------------------------------------------------
    def publish(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        """Put ``(version, weights)`` on the board; actors read it at their next fragment."""
        self._board.publish(version, weights)

    # -- fragments ------------------------------------------------------------------
    def gather(self) -> list[Delivery]:
        """Sync: request one fragment from every actor and wait for all of them.
        Async: wait until at least one fragment is ready and return all ready ones.

        A fragment lost to a crash is re-requested from the restarted actor, so
        a sync round always has one fragment per actor.

        Raises:
            ActorFailure: restarts are exhausted.
        """
        if self.sync:
            for actor in self._actors:
                if not actor.outstanding:
                    self._request(actor, 0)
            delivered: dict[int, Delivery] = {}
            while len(delivered) < self.num_actors:
                for delivery in self._poll(self._actors, 1.0):
                    delivered[delivery.actor_id] = delivery
            return [delivered[i] for i in range(self.num_actors)]
        while True:
            deliveries = self._poll(self._actors, 1.0)
            if deliveries:
                return deliveries

    def counters(self) -> FleetCounters:
        """Cumulative counts, with ``steps_taken`` read from the shared counters."""
        if self._closed:
            return replace(self._stats, actor_versions=list(self._stats.actor_versions))
        self._stats.steps_taken = int(self._counters_block.arrays["steps"].sum())
        self._stats.actors_alive = sum(
            1 for a in self._actors if a.process is not None and a.process.is_alive()
        )
        self._stats.actor_versions = [a.version for a in self._actors]
        return replace(self._stats, actor_versions=list(self._stats.actor_versions))

    # -- internals ------------------------------------------------------------------
    def _spawn(self, actor: _Actor) -> None:
        args = _WorkerArgs(
            actor_id=actor.actor_id,
            incarnation=actor.incarnation,
            config=self._config_data,
            board=self._board.name,
            board_layout=self._board.layout,
            slots=tuple(block.name for block in self._slots[actor.actor_id]),
            slot_layout=self._slot_layout,
            counters=self._counters_block.name,
            counters_layout=self._counters_block.layout,
            parent_pid=os.getpid(),
            seed_offset=self.seed_offset,
        )
        child = _Child(f"rlops-actor-{actor.actor_id}")
        actor.process, actor.conn = child, child.conn  # owned now: close() stops it
        with contextlib.suppress(OSError):  # a child that died at once is noticed by _poll
            child.conn.send(args)
        actor.ready = False
        actor.started_at = time.monotonic()
        actor.version = -1

    def _request(self, actor: _Actor, slot: int) -> None:
        assert actor.conn is not None
        if not actor.outstanding:
            actor.busy_since = time.monotonic()
        actor.outstanding.append(slot)
        with contextlib.suppress(OSError):  # a dead actor is noticed (and replaced) by _poll
            actor.conn.send(("collect", slot))

    def _poll(self, actors: list[_Actor], timeout: float) -> list[Delivery]:
        """Handle messages, deaths and timeouts of ``actors`` for up to ``timeout`` s."""
        waitables: list[Any] = []
        for actor in actors:
            if actor.conn is not None and actor.process is not None:
                waitables.append(actor.conn)  # EOF when the actor dies
        if waitables:
            wait(waitables, timeout)
        else:
            time.sleep(timeout)
        deliveries: list[Delivery] = []
        for actor in actors:
            if actor.conn is None or actor.process is None:
                continue
            failure = ""
            fatal = False
            try:
                while actor.conn.poll():
                    message = actor.conn.recv()
                    if message[0] == "ready":
                        actor.ready = True
                        actor.busy_since = time.monotonic()  # fragment clock starts now
                    elif message[0] == "fragment":
                        deliveries.append(self._receive(actor, message))
                    elif message[0] == "error":
                        failure = f"actor {actor.actor_id} raised {message[1]}"
                        fatal = message[2] == "build"
            except (EOFError, OSError):
                failure = failure or self._death_cause(actor)
            if not failure and not actor.process.is_alive():
                failure = self._death_cause(actor)
            if not failure:
                failure = self._timed_out(actor)
            if failure:
                self._replace(actor, failure, fatal=fatal and actor.incarnation == 0)
        return deliveries

    def _receive(self, actor: _Actor, message: tuple[Any, ...]) -> Delivery:
        _, slot, version, steps, returns, lengths, components = message
        arrays = {name: a.copy() for name, a in self._slots[actor.actor_id][slot].arrays.items()}
        fields: dict[str, Any] = dict(arrays, policy_version=int(version))
        if self._kind is Transitions:
            fields["source"] = actor.actor_id
        batch = self._kind(**fields)
        actor.outstanding.remove(slot)
        actor.busy_since = time.monotonic()
        actor.accounted += int(steps)
        actor.version = int(version)
        self._stats.steps_delivered += int(steps)
        self._stats.fragments_delivered += 1
        if not self.sync:
            self._request(actor, slot)  # keep it busy: refill the slot just read
        return Delivery(
            actor.actor_id,
            batch,
            int(steps),
            np.asarray(returns, dtype=np.float64),
            np.asarray(lengths, dtype=np.int64),
            {key: np.asarray(v, dtype=np.float64) for key, v in components.items()},
        )

    def _death_cause(self, actor: _Actor) -> str:
        assert actor.process is not None
        actor.process.join(1.0)
        code = actor.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"actor {actor.actor_id} was killed by {name}"
        return f"actor {actor.actor_id} exited with code {code}"

    def _timed_out(self, actor: _Actor) -> str:
        rt = self.config.runtime
        now = time.monotonic()
        if not actor.ready:
            if now - actor.started_at > rt.start_timeout_s:
                self._stats.timeouts += 1
                return (
                    f"actor {actor.actor_id} did not start within "
                    f"runtime.start_timeout_s={rt.start_timeout_s:g} s"
                )
            return ""
        if actor.outstanding and now - actor.busy_since > rt.fragment_timeout_s:
            self._stats.timeouts += 1
            return (
                f"actor {actor.actor_id} produced no fragment within "
                f"runtime.fragment_timeout_s={rt.fragment_timeout_s:g} s (a hung env step?)"
            )
        return ""

    def _settle(self, actor: _Actor, stopping: bool = False) -> None:
        """Count the steps of a dead actor's partial fragment as lost (or discarded at stop)."""
        taken = int(self._counters_block.arrays["steps"][actor.actor_id])
        unaccounted = taken - actor.accounted
        if unaccounted > 0 and stopping:
            self._stats.steps_discarded += unaccounted
        elif unaccounted > 0:
            self._stats.steps_lost += unaccounted
            self._stats.fragments_lost += 1
        actor.accounted = taken

    def _settle_all(self) -> None:
        for actor in self._actors:
            self._settle(actor, stopping=True)

    def _forget(self, actor: _Actor) -> None:
        if actor.conn is not None:
            actor.conn.close()
        actor.conn, actor.process = None, None
        actor.ready = False

    def _replace(self, actor: _Actor, failure: str, fatal: bool) -> None:
        """Kill ``actor``, count its partial fragment lost, and start a new incarnation.

        ``fatal``: the first incarnation could not be built (bad env id, env
        constructor raising): a configuration problem a restart would only repeat.
        """
        assert actor.process is not None
        if actor.process.is_alive():
            actor.process.kill()
        actor.process.join(5.0)
        self._settle(actor)
        self._forget(actor)
        pending = actor.outstanding
        actor.outstanding = []
        allow_restart(self._stats, failure, fatal, self.config.runtime.max_restarts, self.close)
        actor.incarnation += 1
        self._spawn(actor)
        for slot in pending:  # the new incarnation redoes what was asked of the old one
            self._request(actor, slot)
