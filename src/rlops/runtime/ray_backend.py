"""The ``ray`` backend: actors as Ray actors, weights and fragments through the object store.

Each actor is a :class:`RlopsActor` wrapped with ``ray.remote`` at run time
(``num_cpus=1``, ``max_restarts=0``: rlops replaces actors itself, so that
every replacement is counted and capped by ``runtime.max_restarts``). It
builds its vector env and the algorithm's actor exactly as a ``process``
actor does (same seeds, :class:`~rlops.envs.EpisodeStatistics`, step
counter), then serves ``collect`` calls:

* weights: :meth:`RayFleet.publish` puts ``(version, weights)`` in the object
  store once; every ``collect`` call carries the newest reference and the
  actor fetches and installs it only when the version changed;
* fragments: ``collect`` returns the fragment's numpy arrays through the
  object store, with the policy version, step count and finished episodes;
  the learner reads them zero-copy and takes one copy it owns (writable, and
  no view keeps the object pinned in the store);
* sync mode sends one ``collect`` per actor per :meth:`RayFleet.gather` and
  waits for all of them; async mode keeps two calls in flight per actor and
  returns whatever has finished.

Failures: an actor whose env raises (``RayTaskError``: the cause's type and
message are reported), that dies (``RayActorError``: SIGKILL, OOM, node
loss) or exceeds ``runtime.fragment_timeout_s`` / ``runtime.start_timeout_s``
is killed with ``ray.kill`` and recreated with the next incarnation's seeds
and the newest weights, up to ``runtime.max_restarts`` times in the run; then
:class:`~rlops.core.errors.ActorFailure` stops training with the cause. A
first actor whose env cannot even be built (bad env id, constructor raising)
stops training right away: a restart would only repeat it. A crashing or hung
env reset at start is replaced and counted like any other failure.

Lost steps (the step identity of :class:`~rlops.runtime.fleet.FleetCounters`):

* an actor on the learner's node (a local Ray instance, or the head node of a
  cluster the learner runs on) counts its env steps in a small shared-memory
  block the learner owns, exactly like a ``process`` actor; the count
  survives SIGKILL, so the steps of a partial fragment are known and counted
  lost *exactly*, whatever ended the actor;
* an actor on another node counts in its own memory and reports the running
  count with every fragment. If its env raises, the count travels with the
  error (:class:`ActorCrash`), so the loss is still exact. If it is killed,
  hangs or its node disappears, the steps since its last fragment are
  unknown; the fleet then counts one whole fragment (``T * N`` steps) as
  lost, an upper bound, and adds the same to ``steps_taken``, so the
  identity keeps holding with ``steps_taken`` an estimate for such actors.
  Work still in flight on another node at :meth:`RayFleet.close` is not
  counted at all (neither taken nor discarded).

Running on a cluster::

    # every node: the same Python with rlops installed (pip install 'rlops[ray]')
    ray start --head --port=6379                # on the head node
    ray start --address=HEAD:6379               # on each worker node

    # the experiment config
    runtime:
      backend: ray
      num_actors: 32
      ray_address: auto              # the learner runs on a cluster node (e.g. `ray job submit`)
      # ray_address: HEAD:6379       # the same, naming the head explicitly
      # ray_address: ray://HEAD:10001  # the learner runs elsewhere (Ray Client;
      #                                  checked with RAY_AUTH_MODE=disabled only)

Ray 2.60 clusters started with ``ray start`` use token authentication by
default: ``auto`` finds the token of a local cluster by itself, an explicit
address needs ``RAY_AUTH_MODE=token`` in the learner's environment (and the
cluster's token, see Ray's token-authentication docs). Each actor asks for one
CPU; a cluster without enough free CPUs shows as actors that do not start
within ``runtime.start_timeout_s``. An address that accepts no connection is a
:class:`~rlops.core.errors.ConfigError` within ``CONNECT_TIMEOUT_S``.

``ray_address: null`` starts a private local Ray instance for the run and
shuts it down at the end; a ``ray.init`` done before :func:`rlops.train`
is used as it is and left running. rlops has no launcher of its own: get the
cluster from ``ray start``, Ray's cluster launcher (``ray up``) or KubeRay.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from rlops.core.batch import Rollout, Transitions
from rlops.core.errors import ConfigError
from rlops.envs import EpisodeStatistics
from rlops.observability import PhaseTimer
from rlops.runtime.agents import PLUGINS, actor_seed, env_seed, make_training_env
from rlops.runtime.config import ExperimentConfig, config_from_dict
from rlops.runtime.fleet import Delivery, FleetCounters, allow_restart
from rlops.runtime.process import CountSteps
from rlops.runtime.shm import Layout, SharedArrays, batch_arrays

IN_FLIGHT = 2
"""Async mode: ``collect`` calls queued per actor, so it never waits for the learner."""

CONNECT_TIMEOUT_S = 5.0
"""How long a cluster address may take to accept a TCP connection before it is refused."""

_COUNTERS = "steps"


def import_ray() -> Any:
    """The ``ray`` module, imported on first use so ``import rlops`` stays fast.

    Raises:
        ConfigError: Ray is not installed.
    """
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ConfigError(
            "runtime.backend: 'ray' needs Ray: pip install 'rlops[ray]' "
            f"(or use backend 'process' on one machine); import failed: {exc}"
        ) from exc


def _counters_layout(num_actors: int) -> Layout:
    return Layout(((_COUNTERS, (num_actors,), "<i8"),))


def _describe(exc: BaseException) -> str:
    """``module.Type: message``, as the process backend reports an actor's exception."""
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


# -- the Ray actor ----------------------------------------------------------------------
class ActorCrash(Exception):
    """Raised by a :class:`RlopsActor` when its env or policy raised.

    Args:
        detail: the original exception as ``Type: message``.
        steps: env steps this actor incarnation had taken when it failed.
        phase: ``"build"`` (env or actor construction: deterministic, a restart
            would only repeat it) or ``"run"`` (reset or a step: restartable).
    """

    def __init__(self, detail: str, steps: int, phase: str = "run") -> None:
        super().__init__(detail, steps, phase)
        self.detail = detail
        self.steps = steps
        self.phase = phase

    def __str__(self) -> str:
        return self.detail


class RlopsActor:
    """One actor inside a Ray worker process (``ray.remote`` wraps it at run time).

    The constructor only stores its arguments; :meth:`ready` builds the env and
    the algorithm's actor, so that a failing env constructor or reset comes
    back as an ordinary task error naming the cause.

    Args:
        actor_id: its index in the fleet.
        incarnation: how many times this actor was replaced before (seeds).
        config: the experiment as a plain dict (``ExperimentConfig.to_dict()``).
        seed_offset: added to the seeds (a resumed run must not replay its episodes).
        counters: ``(block name, learner's node id)``: count steps in that shared
            block when running on that node.
    """

    def __init__(
        self,
        actor_id: int,
        incarnation: int,
        config: dict[str, Any],
        seed_offset: int,
        counters: tuple[str, str],
    ) -> None:
        self.actor_id = actor_id
        self.incarnation = incarnation
        self.config_data = config
        self.seed_offset = seed_offset
        self.counters = counters
        self.actor: Any = None
        self.stats: EpisodeStatistics | None = None
        self.block: SharedArrays | None = None
        self.counter = np.zeros(1, dtype=np.int64)
        self.index = 0
        self.start_count = 0
        self.held = -1

    def ready(self) -> tuple[int, str, bool]:
        """Build env and actor; return ``(pid, node id, counts in the shared block)``.

        Raises:
            ActorCrash: the env or the actor could not be built (phase ``build``)
                or reset (phase ``run``).
        """
        ray = import_ray()
        node = str(ray.get_runtime_context().get_node_id())
        phase = "build"  # a build failure is deterministic: the learner does not retry it
        try:
            config = config_from_dict(self.config_data)
            self._attach_counters(config.runtime.num_actors, node)
            plugin = PLUGINS[config.algo.name]
            _, self.stats = make_training_env(config)
            env = CountSteps(self.stats, self.counter, self.index)
            spec = plugin.spec(config, env)
            offset = self.seed_offset
            seed = actor_seed(config, self.actor_id, self.incarnation) + offset
            self.actor = plugin.actor(config, env, spec, PhaseTimer(), seed)
            phase = "run"
            self.actor.reset(seed=env_seed(config, self.actor_id, self.incarnation) + offset)
        except Exception as exc:
            raise ActorCrash(_describe(exc), self.steps_taken(), phase) from None
        return os.getpid(), node, self.block is not None

    def _attach_counters(self, num_actors: int, node: str) -> None:
        name, learner_node = self.counters
        if name and node == learner_node:
            with contextlib.suppress(FileNotFoundError):  # a Ray Client learner's machine
                self.block = SharedArrays(_counters_layout(num_actors), name)
                self.counter = self.block.arrays[_COUNTERS]
                self.index = self.actor_id
                self.start_count = int(self.counter[self.index])

    def collect(
        self, version: int, weights: list[Any]
    ) -> tuple[dict[str, np.ndarray], int, int, np.ndarray, np.ndarray, int, dict[str, np.ndarray]]:
        """One fragment with the newest weights.

        Args:
            version: the newest published version.
            weights: ``[ObjectRef of (version, weights)]``, wrapped in a list so
                that Ray does not fetch it for calls that do not need it.

        Returns:
            ``(arrays, policy_version, env_steps, episode_returns,
            episode_lengths, steps_taken, components)``, ``steps_taken``
            counting this incarnation's env steps so far, ``components`` the
            per-episode sums of the logged ``info`` keys.

        Raises:
            ActorCrash: the env or the policy raised (with the step count).
        """
        assert self.actor is not None and self.stats is not None, "ready() first"
        try:
            if version != self.held:
                held, variables = import_ray().get(weights[0])
                self.actor.update(held, variables)
                self.held = held
            batch = self.actor.collect()
            returns, lengths = self.stats.pop_episodes()
            components = self.stats.pop_components()
        except Exception as exc:
            raise ActorCrash(_describe(exc), self.steps_taken()) from None
        steps = batch.num_steps * batch.num_envs
        return (
            batch_arrays(batch),
            batch.policy_version,
            steps,
            returns,
            lengths,
            self.steps_taken(),
            components,
        )

    def pid(self) -> int:
        """The worker process id."""
        return os.getpid()

    def steps_taken(self) -> int:
        """Env steps this incarnation has taken."""
        return int(self.counter[self.index]) - self.start_count


# -- the learner side -------------------------------------------------------------------
@dataclass
class _Actor:
    """The learner's view of one Ray actor."""

    actor_id: int
    incarnation: int = 0
    handle: Any = None
    ready_ref: Any = None
    """The pending ``ready()`` call (None once it answered)."""
    started_at: float = 0.0
    pid: int = 0
    local: bool = False
    """Runs on the learner's node (its pid can be watched)."""
    shared: bool = False
    """Counts its steps in the learner's shared block."""
    outstanding: list[Any] = field(default_factory=list)
    """``collect`` calls in flight, oldest first."""
    busy_since: float = 0.0
    """When the oldest outstanding call started (for the fragment timeout)."""
    base: int = 0
    """Steps reported by earlier incarnations that did not use the shared block."""
    reported: int = 0
    """Steps the current incarnation reported (when it does not use the shared block)."""
    accounted: int = 0
    """Steps already delivered or counted lost."""
    version: int = -1


class RayFleet:
    """Actors as Ray actors; see the module docstring.

    Args:
        config: the experiment (``runtime.num_actors``, ``runtime.mode``, timeouts,
            ``runtime.ray_address``).
        template: an empty fragment of the right shapes (the local actor's).
        weights: the learner's weights (unused until :meth:`start`; kept for the
            same signature as :class:`~rlops.runtime.process.ProcessFleet`).
        seed_offset: added to every actor seed (a resumed run's env steps).

    Raises:
        ConfigError: Ray is not installed, or ``runtime.ray_address`` does not answer.

    >>> fleet = RayFleet(config, actor.template(), weights)  # doctest: +SKIP
    >>> fleet.start(0, weights); deliveries = fleet.gather(); fleet.close()  # doctest: +SKIP
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
        self._fragment_steps = template.num_steps * template.num_envs
        self._config_data = config.to_dict()
        self._ray = import_ray()
        self._owns_ray = _connect(self._ray, rt.ray_address, rt.num_actors)
        self._counters_block = SharedArrays(_counters_layout(self.num_actors))
        self._counters_block.arrays[_COUNTERS][:] = 0
        self._node = _node_id(self._ray)
        self._remote = self._ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(RlopsActor)
        self._version = -1
        self._weights: Any = None
        self._actors = [_Actor(i) for i in range(self.num_actors)]
        self._stats = FleetCounters(actors=self.num_actors, actor_versions=[-1] * self.num_actors)
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------
    def start(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        """Publish the first weights, create every actor and wait until all are ready.

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
        while any(a.ready_ref is not None for a in self._actors):
            self._poll([a for a in self._actors if a.ready_ref is not None], 1.0)
        if not self.sync:
            for actor in self._actors:
                for _ in range(IN_FLIGHT):
                    self._request(actor)

    def close(self) -> None:
        """Kill every actor, count what was in flight as discarded, release Ray."""
        if self._closed:
            return
        self._closed = True
        for actor in self._actors:
            self._kill(actor, wait=False)
        for actor in self._actors:
            self._await_exit(actor)
            self._settle(actor, stopping=True)
            actor.handle, actor.ready_ref, actor.outstanding = None, None, []
        self._stats.steps_taken = self._taken_total()
        self._stats.actors_alive = 0
        self._stats.actor_versions = [a.version for a in self._actors]
        self._weights = None
        self._counters_block.close()
        if self._owns_ray:
            self._ray.shutdown()

    # -- weights --------------------------------------------------------------------
    def publish(self, version: int, weights: Mapping[str, np.ndarray]) -> None:
        """Put ``(version, weights)`` in the object store once; actors fetch it when needed."""
        self._weights = self._ray.put((version, dict(weights)))
        self._version = version

    # -- fragments ------------------------------------------------------------------
    def gather(self) -> list[Delivery]:
        """Sync: one fragment from every actor, ordered by actor. Async: the finished ones (>= 1).

        A fragment lost to a crash is requested again from the replacement actor,
        so a sync round always has one fragment per actor.

        Raises:
            ActorFailure: restarts are exhausted.
        """
        if self.sync:
            for actor in self._actors:
                if not actor.outstanding:
                    self._request(actor)
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
        if not self._closed:
            self._stats.steps_taken = self._taken_total()
            self._stats.actors_alive = sum(
                1 for a in self._actors if a.handle is not None and a.ready_ref is None
            )
            self._stats.actor_versions = [a.version for a in self._actors]
        return replace(self._stats, actor_versions=list(self._stats.actor_versions))

    # -- internals ------------------------------------------------------------------
    def _spawn(self, actor: _Actor) -> None:
        actor.handle = self._remote.remote(
            actor.actor_id,
            actor.incarnation,
            self._config_data,
            self.seed_offset,
            (self._counters_block.name, self._node),
        )
        actor.ready_ref = actor.handle.ready.remote()
        actor.started_at = time.monotonic()
        actor.pid, actor.local, actor.shared = 0, False, False
        actor.version = -1

    def _request(self, actor: _Actor) -> None:
        if not actor.outstanding:
            actor.busy_since = time.monotonic()
        actor.outstanding.append(actor.handle.collect.remote(self._version, [self._weights]))

    def _poll(self, actors: list[_Actor], timeout: float) -> list[Delivery]:
        """Handle answers, failures and timeouts of ``actors`` for up to ``timeout`` s."""
        ray = self._ray
        refs = [r for a in actors for r in [a.ready_ref, *a.outstanding] if r is not None]
        done: set[Any] = set()
        if refs:
            first, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if first:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                done = set(ready) | set(first)
        else:
            time.sleep(timeout)
        deliveries: list[Delivery] = []
        for actor in actors:
            if actor.handle is None:
                continue
            failure = ""
            fatal = False
            try:
                if actor.ready_ref is not None and actor.ready_ref in done:
                    pid, node, shared = ray.get(actor.ready_ref)
                    actor.ready_ref = None
                    actor.pid, actor.local, actor.shared = pid, node == self._node, shared
                    actor.busy_since = time.monotonic()  # the fragment clock starts now
                while actor.outstanding and actor.outstanding[0] in done:
                    value = ray.get(actor.outstanding[0])  # a failed call stays outstanding
                    actor.outstanding.pop(0)
                    deliveries.append(self._receive(actor, value))
            except ray.exceptions.RayTaskError as exc:
                failure = self._task_error(actor, exc)
                cause = getattr(exc, "cause", None)
                fatal = isinstance(cause, ActorCrash) and cause.phase == "build"
            except ray.exceptions.RayError as exc:  # RayActorError (death), lost objects, OOM
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                failure = f"actor {actor.actor_id} died: {lines[0]}"
                if not actor.shared:
                    self._estimate_loss(actor)
            if not failure:
                failure = self._timed_out(actor)
            if failure:
                self._replace(actor, failure, fatal=fatal and actor.incarnation == 0)
        return deliveries

    def _receive(self, actor: _Actor, value: tuple[Any, ...]) -> Delivery:
        arrays, version, steps, returns, lengths, taken, components = value
        # One copy out of the zero-copy read: the learner owns writable arrays (torch
        # refuses read-only ones), and no view pins the fragment in the object store.
        fields: dict[str, Any] = {name: np.array(a) for name, a in arrays.items()}
        fields["policy_version"] = int(version)
        if self._kind is Transitions:
            fields["source"] = actor.actor_id
        batch = self._kind(**fields)
        actor.busy_since = time.monotonic()
        if not actor.shared:
            actor.reported = int(taken)
        actor.accounted += int(steps)
        actor.version = int(version)
        self._stats.steps_delivered += int(steps)
        self._stats.fragments_delivered += 1
        if not self.sync:
            self._request(actor)  # keep IN_FLIGHT calls queued
        return Delivery(
            actor.actor_id,
            batch,
            int(steps),
            np.asarray(returns, dtype=np.float64),
            np.asarray(lengths, dtype=np.int64),
            {key: np.asarray(v, dtype=np.float64) for key, v in components.items()},
        )

    def _task_error(self, actor: _Actor, exc: Any) -> str:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ActorCrash):
            if not actor.shared:
                actor.reported = max(actor.reported, int(cause.steps))
            return f"actor {actor.actor_id} raised {cause.detail}"
        if not actor.shared:
            self._estimate_loss(actor)
        detail = _describe(cause) if isinstance(cause, BaseException) else str(exc)
        return f"actor {actor.actor_id} raised {detail}"

    def _estimate_loss(self, actor: _Actor) -> None:
        """An actor off the learner's node died mid-fragment: count one whole fragment."""
        if actor.outstanding and actor.ready_ref is None:
            actor.reported += self._fragment_steps

    def _timed_out(self, actor: _Actor) -> str:
        rt = self.config.runtime
        now = time.monotonic()
        if actor.ready_ref is not None:
            if now - actor.started_at > rt.start_timeout_s:
                self._stats.timeouts += 1
                return (
                    f"actor {actor.actor_id} did not start within "
                    f"runtime.start_timeout_s={rt.start_timeout_s:g} s (a hung env reset, "
                    "or no free CPU for it in the Ray cluster?)"
                )
            return ""
        if actor.outstanding and now - actor.busy_since > rt.fragment_timeout_s:
            self._stats.timeouts += 1
            if not actor.shared:
                self._estimate_loss(actor)
            return (
                f"actor {actor.actor_id} produced no fragment within "
                f"runtime.fragment_timeout_s={rt.fragment_timeout_s:g} s (a hung env step?)"
            )
        return ""

    def _kill(self, actor: _Actor, wait: bool = True) -> None:
        if actor.handle is not None:
            with contextlib.suppress(Exception):  # already dead, or Ray is shutting down
                self._ray.kill(actor.handle, no_restart=True)
        if wait:
            self._await_exit(actor)

    def _await_exit(self, actor: _Actor, timeout: float = 5.0) -> None:
        """Wait until a local actor's process is gone, so its step counter is final."""
        if not (actor.local and actor.pid):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _running(actor.pid):
            time.sleep(0.01)

    def _taken(self, actor: _Actor) -> int:
        shared = int(self._counters_block.arrays[_COUNTERS][actor.actor_id])
        return shared + actor.base + actor.reported

    def _taken_total(self) -> int:
        return sum(self._taken(a) for a in self._actors)

    def _settle(self, actor: _Actor, stopping: bool = False) -> None:
        """Count the steps of a dead actor's partial fragment as lost (or discarded at stop)."""
        taken = self._taken(actor)
        unaccounted = taken - actor.accounted
        if unaccounted > 0 and stopping:
            self._stats.steps_discarded += unaccounted
        elif unaccounted > 0:
            self._stats.steps_lost += unaccounted
            self._stats.fragments_lost += 1
        actor.accounted = taken
        actor.base += actor.reported  # the next incarnation reports from zero
        actor.reported = 0

    def _replace(self, actor: _Actor, failure: str, fatal: bool) -> None:
        """Kill ``actor``, count its partial fragment lost, and create the next incarnation.

        ``fatal``: the first incarnation could not be built (bad env id, env
        constructor raising): a configuration problem a restart would only repeat.
        """
        self._kill(actor)
        self._settle(actor)
        actor.handle, actor.ready_ref = None, None
        pending = len(actor.outstanding)
        actor.outstanding = []
        allow_restart(self._stats, failure, fatal, self.config.runtime.max_restarts, self.close)
        actor.incarnation += 1
        self._spawn(actor)
        for _ in range(pending):  # the new incarnation redoes what was asked of the old one
            self._request(actor)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux ``/proc``; else ``kill 0``)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _node_id(ray: Any) -> str:
    """This process's Ray node id ("" where there is none, e.g. a Ray Client)."""
    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return ""


def check_reachable(
    address: str,
    *,
    key: str = "runtime.ray_address",
    local_hint: str = "set runtime.ray_address: null",
) -> None:
    """Fail fast when ``host:port`` or ``ray://host:port`` accepts no connection.

    ``ray.init`` itself retries an unreachable cluster for minutes before it gives up.

    Args:
        address: the cluster address.
        key: the setting the error names.
        local_hint: how the user asks for a local Ray instance instead.

    Raises:
        ConfigError: nothing accepts a TCP connection at ``address``.
    """
    target = address if "://" in address else f"tcp://{address}"
    try:
        parts = urlsplit(target)
        host, port = parts.hostname, parts.port
    except ValueError:
        return  # not host:port: let ray.init judge it
    if not host or port is None:
        return
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{key}: no Ray cluster answers at {address!r} ({exc}); "
            f"start one with `ray start --head` and give its address, or {local_hint} "
            "to start a local Ray instance"
        ) from exc


def _connect(ray: Any, address: str | None, num_actors: int) -> bool:
    """Join the cluster at ``address`` or start a local instance; True if we started Ray.

    Raises:
        ConfigError: ``address`` does not answer or is not a Ray cluster.
    """
    if ray.is_initialized():
        return False  # the caller's own ray.init (a notebook, a test fixture) is used as it is
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
    if address is None:
        ray.init(num_cpus=max(os.cpu_count() or 1, num_actors), include_dashboard=False, **quiet)
        return True
    check_reachable(address)
    try:
        ray.init(address=address, **quiet)
    except Exception as exc:
        raise ConfigError(
            f"runtime.ray_address: could not join the Ray cluster at {address!r}: "
            f"{_describe(exc)}; check `ray status` on the head node (a cluster with token "
            "authentication needs RAY_AUTH_MODE=token and its token), or set "
            "runtime.ray_address: null to start a local Ray instance"
        ) from exc
    return True
