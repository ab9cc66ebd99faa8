"""Service autoscaling simulator: replicas behind a load balancer, one decision per step.

An operator (the agent) watches one stateless web service and, every
``step_seconds`` (default 300 s = 5 min), scales it down by one replica, holds,
or scales up by one. An episode is one day (``max_episode_steps = 288`` five-minute
steps): long enough to contain a full diurnal cycle, short enough that PPO
with ``gamma = 0.99`` (a ~100-step, ~8-hour horizon) sees the consequence of
pre-provisioning for the morning ramp within one rollout.

Load ``lambda_t`` [requests/s], constant within step ``t``
    *Synthetic* (the default), drawn per episode from the reset generator::

        c_t       = cos(2 pi (hour_t - peak_hour) / 24)
        diurnal_t = 1 + diurnal_amplitude * tanh(s c_t) / tanh(s)   (c_t when s = 0)
        noise_t   = exp(noise_std * z_t - noise_std**2 / 2),  z_t ~ N(0, 1) iid
        burst_t   = 1 + (burst_multiplier - 1) * sum_u B_u * env(t - u)
        lambda_t  = base_rps * diurnal_t * noise_t * burst_t

    where ``hour_t = start_hour + t * step_seconds / 3600`` (mod 24), ``s =
    diurnal_sharpness`` (0: a cosine day; larger: flat day and night joined by
    steep ramps around ``peak_hour -+ 6`` h), a burst starts at step ``u``
    with probability ``burst_prob`` (``B_u ~ Bernoulli``), and ``env(k) =
    sin(pi (k + 1) / (burst_steps + 1))`` for ``0 <= k < burst_steps`` (0
    otherwise) is a flash crowd that builds up and decays over ``burst_steps``
    steps; overlapping bursts add. The noise factor has mean 1.

    The defaults model a business-hours service on VMs: about 30 requests/s at
    night and 170 by day, a morning ramp around 08:00 of up to 9 requests/s per
    step (1.5 replicas at 60 % utilisation), replicas that boot for 15 minutes,
    and ~0.6 random bursts a day peaking at 1.8 x the load. A reactive rule cannot keep up with the
    ramp one replica per step; a policy that reads the clock can provision
    ahead of it. (With a cosine day and frequent bursts, the headroom needed
    for bursts dominates and Kubernetes' HPA is close to the best any policy
    does.)

    *Recorded*: a :class:`LoadTrace` (e.g. from :func:`load_trace_csv`, a CSV
    with columns ``timestamp,requests_per_s``) replayed one row per step,
    cyclically, from a random row each episode (``trace_start="random"``) or
    from row 0 (``"start"``). The hour of day is ``timestamp mod 86400``
    (timestamps are taken as UTC). The synthetic-load fields are then unused.

Replicas
    ``ready`` replicas serve traffic; ``pending`` replicas were requested and
    are booting. Every step, in this order:

    1. replicas whose boot finished become ready: one requested at step ``t``
       serves from step ``t + provision_delay`` on (``provision_delay = 0``
       serves at once);
    2. the action applies. ``UP`` (2) requests a replica unless ``ready +
       pending == max_replicas``. ``DOWN`` (0) takes effect immediately:
       it cancels the most recently requested pending replica if there is one,
       otherwise stops a ready one, unless ``ready + pending == min_replicas``.
       ``HOLD`` (1) does nothing. An ``UP``/``DOWN`` refused at a bound is a
       no-op; :attr:`AutoscalingVectorEnv.noop_actions` counts them.
    3. the load of step ``t`` is served by the ready replicas.

    ``ready >= min_replicas >= 1`` always holds (a ready replica is only stopped
    when nothing is pending).

Serving, per step (each replica an M/M/1 queue, load split evenly)
    With capacity ``c = ready * capacity_rps`` [requests/s]::

        rho        = lambda_t / c                                   utilisation [-]
        latency_ms = service_time_ms / max(1 - rho, service_time_ms / max_latency_ms)
        served     = min(lambda_t, c) * step_seconds                [requests]
        dropped    = arrived - served,  arrived = lambda_t * step_seconds

    i.e. the M/M/1 mean sojourn time ``service_time / (1 - rho)`` capped at the
    client timeout ``max_latency_ms``, which it also is whenever ``rho >= 1``
    (the queue is unstable; load above capacity is shed). ``served + dropped
    == arrived`` exactly. The step violates the SLO when ``latency_ms >
    slo_latency_ms``; with the defaults (60 ms, 400 ms) that is ``rho > 0.85``.

Reward [cost units per step], float64
    ``-(replica_cost * (ready + pending) + slo_penalty * violation)``: booting
    replicas are billed (clouds bill from launch). With the defaults a replica
    costs 0.01 per 5-minute step and an SLO-violating step costs 1.0 (as much
    as 100 replica-steps).

Observation, float32 ``[N, history_len + 6]``, all about the step just served
(after ``reset``: the step before the episode, with ``initial_replicas``)
    ===========================  ==================================================
    ``[0, history_len)``         load of steps ``t, t-1, ...`` / (``capacity_rps *
                                 max_replicas``): demand as a fraction of the
                                 largest fleet
    ``history_len``              ready replicas / ``max_replicas``
    ``history_len + 1``          pending replicas / ``max_replicas``
    ``history_len + 2``          utilisation ``rho`` (unbounded, ``>= 1`` = overload)
    ``history_len + 3``          latency / ``slo_latency_ms`` (``> 1`` = violation)
    ``history_len + 4, + 5``     ``sin``, ``cos`` of ``2 pi hour / 24``
    ===========================  ==================================================

    :data:`OBS_READY` etc. give the offsets past the history block.

Action: ``Discrete(3)``, ``0 = DOWN``, ``1 = HOLD``, ``2 = UP`` (one replica).

Episodes never terminate; they are truncated after ``max_episode_steps`` and
autoreset on the same step (:mod:`rlops.envs.base`): ``info["final_obs"]`` /
``info["_final_obs"]`` as in :mod:`rlops.envs.classic`; every step's ``info`` also
carries ``replica_cost``, ``slo_violations`` (0/1) and ``dropped_requests`` ([N]
float64 each, the reward's components). Per-step accounting (served, dropped,
latency, violation, cost) is in :attr:`AutoscalingVectorEnv.last_metrics`, a
typed :class:`AutoscalingMetrics`.

Domain randomisation: every numeric field of :class:`AutoscalingParams` except
the shape-fixing ones (:data:`FIXED_FIELDS`) may be drawn per sub-env and per
episode by a :class:`~rlops.envs.randomization.DomainRandomization`; integer
fields are rounded. Baselines: :class:`HPAPolicy` (Kubernetes' Horizontal Pod
Autoscaler rule) and :func:`hold_policy`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlops.core.config import check
from rlops.core.errors import ConfigError, EnvError
from rlops.envs.classic import _rng_from_state
from rlops.envs.randomization import DomainRandomization

__all__ = [
    "DOWN",
    "FIXED_FIELDS",
    "HOLD",
    "OBS_LATENCY",
    "OBS_PENDING",
    "OBS_READY",
    "OBS_UTILISATION",
    "UP",
    "AutoscalingMetrics",
    "AutoscalingParams",
    "AutoscalingVectorEnv",
    "EpisodeCosts",
    "HPAPolicy",
    "LoadTrace",
    "hold_policy",
    "load_trace_csv",
    "make_autoscaling_env",
    "run_cost_episodes",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
StepResult = tuple[F32, F64, Bools, Bools, dict[str, Any]]

DOWN: Final = 0
"""Action: remove one replica (cancel the newest pending one first)."""
HOLD: Final = 1
"""Action: keep the fleet as it is."""
UP: Final = 2
"""Action: request one more replica (ready after ``provision_delay`` steps)."""

OBS_READY: Final = 0
"""Offset past the load history of ``ready / max_replicas``."""
OBS_PENDING: Final = 1
"""Offset past the load history of ``pending / max_replicas``."""
OBS_UTILISATION: Final = 2
"""Offset past the load history of the utilisation ``rho``."""
OBS_LATENCY: Final = 3
"""Offset past the load history of ``latency / slo_latency_ms``."""
_OBS_EXTRA: Final = 6
"""Features after the load history (ready, pending, rho, latency, sin, cos)."""

FIXED_FIELDS: Final = frozenset(
    {"step_seconds", "max_episode_steps", "history_len", "min_replicas", "max_replicas"}
)
"""Fields that fix array shapes or observation scaling: never randomised."""
_INT_FIELDS: Final = ("initial_replicas", "provision_delay", "burst_steps")
"""Randomisable integer fields (draws are rounded to the nearest integer)."""
_SECONDS_PER_DAY: Final = 86_400.0


# --------------------------------------------------------------------------- params


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoscalingParams:
    """Constants of :class:`AutoscalingVectorEnv`; see the module docstring for the model.

    >>> AutoscalingParams(provision_delay=3).slo_latency_ms
    400.0
    >>> AutoscalingParams(max_replicas=0)
    Traceback (most recent call last):
    ...
    rlops.core.errors.ConfigError: AutoscalingParams.max_replicas: must be an int >= 1, got 0
    """

    step_seconds: float = 300.0
    """Duration of one step (one scaling decision) [s]."""
    max_episode_steps: int = 288
    """Steps after which an episode is truncated (288 five-minute steps = 1 day)."""
    history_len: int = 4
    """Loads in the observation: steps ``t, t-1, ..., t-history_len+1``."""
    min_replicas: int = 1
    """Fewest replicas (ready + pending); ``DOWN`` at this bound is a no-op. >= 1."""
    max_replicas: int = 50
    """Most replicas (ready + pending); ``UP`` at this bound is a no-op."""
    initial_replicas: int = 10
    """Ready replicas at the start of an episode (clipped to the bounds)."""
    provision_delay: int = 3
    """Steps from an ``UP`` until the replica serves (0 = the same step) [steps]."""
    capacity_rps: float = 10.0
    """Requests per second one replica serves at 100 % utilisation [requests/s]."""
    service_time_ms: float = 60.0
    """Mean latency of an idle replica (M/M/1 service time) [ms]."""
    slo_latency_ms: float = 400.0
    """The SLO: a step whose mean latency exceeds this violates it [ms]."""
    max_latency_ms: float = 10_000.0
    """Client timeout: latency cap, reached when ``rho >= 1`` [ms]."""
    replica_cost: float = 0.01
    """Cost of one replica (ready or booting) for one step [cost units / replica-step]."""
    slo_penalty: float = 1.0
    """Cost of one step that violates the SLO [cost units / step]."""
    base_rps: float = 100.0
    """Synthetic load: mean of the day [requests/s]."""
    diurnal_amplitude: float = 0.7
    """Synthetic load: relative amplitude of the daily cycle, in ``[0, 1)`` [-]."""
    diurnal_sharpness: float = 6.0
    """Synthetic load: 0 = a cosine day; larger values flatten day and night into
    plateaus joined by steep morning and evening ramps (``>= 0``) [-]."""
    peak_hour: float = 14.0
    """Synthetic load: hour of the daily peak, in ``[0, 24)`` [h]."""
    start_hour: float = 0.0
    """Synthetic load: hour of day of the episode's first step, in ``[0, 24)`` [h]."""
    noise_std: float = 0.05
    """Synthetic load: std of the log of the iid multiplicative noise (mean 1) [-]."""
    burst_prob: float = 0.002
    """Synthetic load: probability that a burst starts at a step, in ``[0, 1]`` [1/step]."""
    burst_multiplier: float = 1.8
    """Synthetic load: load factor at a burst's peak, ``>= 1`` [-]."""
    burst_steps: int = 12
    """Synthetic load: duration of one burst (rise and decay) [steps]."""
    trace_start: Literal["random", "start"] = "random"
    """Recorded load: start each episode at a uniformly drawn row or at row 0."""

    def __post_init__(self) -> None:
        for name in ("max_episode_steps", "history_len", "min_replicas", "max_replicas"):
            _check_int(self, name, 1)
        for name in ("initial_replicas", "provision_delay"):
            _check_int(self, name, 0)
        _check_int(self, "burst_steps", 1)
        owner = "AutoscalingParams"
        check(
            self.min_replicas <= self.max_replicas,
            f"{owner}.min_replicas",
            f"must be <= max_replicas ({self.max_replicas}), got {self.min_replicas}",
        )
        for name in ("step_seconds", "capacity_rps", "service_time_ms", "base_rps"):
            _check_number(self, name, 0.0, math.inf, low_open=True)
        for name in ("replica_cost", "slo_penalty", "noise_std", "diurnal_sharpness"):
            _check_number(self, name, 0.0, math.inf)
        _check_number(self, "slo_latency_ms", self.service_time_ms, math.inf, low_open=True)
        _check_number(self, "max_latency_ms", self.slo_latency_ms, math.inf, low_open=True)
        _check_number(self, "diurnal_amplitude", 0.0, 1.0, high_open=True)
        _check_number(self, "peak_hour", 0.0, 24.0, high_open=True)
        _check_number(self, "start_hour", 0.0, 24.0, high_open=True)
        _check_number(self, "burst_prob", 0.0, 1.0)
        _check_number(self, "burst_multiplier", 1.0, math.inf)
        check(
            self.trace_start in ("random", "start"),
            f"{owner}.trace_start",
            f"must be 'random' or 'start', got {self.trace_start!r}",
        )


def _check_int(params: object, name: str, low: int) -> None:
    value = getattr(params, name)
    check(
        isinstance(value, int) and not isinstance(value, bool) and value >= low,
        f"AutoscalingParams.{name}",
        f"must be an int >= {low}, got {value!r}",
    )


def _check_number(
    params: object,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    value = getattr(params, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    check(ok, f"AutoscalingParams.{name}", f"must be a finite number in {interval}, got {value!r}")


# --------------------------------------------------------------------------- traces


@dataclasses.dataclass(frozen=True, eq=False)
class LoadTrace:
    """A recorded load, one row per env step.

    Attributes:
        timestamps: ``[L]`` float64 seconds since the Unix epoch (UTC),
            strictly increasing; only their time of day is used.
        requests_per_s: ``[L]`` float64 load, finite and ``>= 0`` [requests/s].
        source: where it came from (a file path), for messages.

    >>> trace = LoadTrace(np.arange(3) * 300.0, np.array([50.0, 80.0, 60.0]))
    >>> len(trace)
    3
    """

    timestamps: F64
    requests_per_s: F64
    source: str = "<array>"

    def __post_init__(self) -> None:
        ts = np.asarray(self.timestamps, dtype=np.float64)
        rps = np.asarray(self.requests_per_s, dtype=np.float64)
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "requests_per_s", rps)
        if ts.ndim != 1 or ts.shape != rps.shape or ts.size == 0:
            raise EnvError(
                f"{self.source}: a load trace needs equally long, non-empty 1-D timestamps "
                f"and requests_per_s, got shapes {ts.shape} and {rps.shape}"
            )
        if not (np.isfinite(ts).all() and np.isfinite(rps).all() and (rps >= 0).all()):
            raise EnvError(f"{self.source}: timestamps and loads must be finite, loads >= 0")
        if ts.size > 1 and not (np.diff(ts) > 0).all():
            row = int(np.flatnonzero(np.diff(ts) <= 0)[0]) + 1
            raise EnvError(f"{self.source}: timestamps must increase strictly (row {row})")

    def __len__(self) -> int:
        return int(self.timestamps.size)


def _parse_time(text: str) -> float:
    """Seconds since the epoch from a number or an ISO 8601 time (naive = UTC)."""
    try:
        return float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)  # raises ValueError on anything else
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


def load_trace_csv(path: str | Path) -> LoadTrace:
    """Read a recorded load trace from a CSV file with a header line.

    The file needs the columns ``timestamp`` (seconds since the Unix epoch, or
    an ISO 8601 time; naive times are UTC) and ``requests_per_s`` (a number
    ``>= 0``); other columns are ignored. Each row is one env step, so resample
    the trace to ``step_seconds`` first; timestamps must increase strictly.

    Args:
        path: the CSV file.

    Returns:
        The :class:`LoadTrace` (``source`` is the path).

    Raises:
        EnvError: naming the file and line, if the file is missing or empty, a
            column is missing, a value is not a number (or time), a load is
            negative or not finite, or timestamps do not increase.

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(f, "w").write("timestamp,requests_per_s\\n0,50\\n300,70\\n")
    >>> load_trace_csv(f).requests_per_s.tolist()
    [50.0, 70.0]
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EnvError(f"{where}: load trace file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvError(f"{where}: cannot read the load trace: {exc}") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    expected = "expected a header line 'timestamp,requests_per_s' and one row per step"
    if header is None or not any(cell.strip() for cell in header):
        raise EnvError(f"{where}, line 1: empty file; {expected}")
    names = [cell.strip() for cell in header]
    missing = [c for c in ("timestamp", "requests_per_s") if c not in names]
    if missing:
        raise EnvError(
            f"{where}, line 1: missing column(s) {missing} in header {names}; {expected}"
        )
    i_time, i_load = names.index("timestamp"), names.index("requests_per_s")
    times: list[float] = []
    loads: list[float] = []
    previous_line = 1
    for row in rows:
        line = rows.line_num
        if not row or not any(cell.strip() for cell in row):
            continue  # blank lines carry no step
        if len(row) != len(names):
            raise EnvError(f"{where}, line {line}: {len(row)} fields, the header has {len(names)}")
        raw_time, raw_load = row[i_time].strip(), row[i_load].strip()
        try:
            stamp = _parse_time(raw_time)
        except ValueError:
            raise EnvError(
                f"{where}, line {line}: timestamp {raw_time!r} is neither a number of "
                "seconds nor an ISO 8601 time"
            ) from None
        try:
            load = float(raw_load)
        except ValueError:
            raise EnvError(
                f"{where}, line {line}: requests_per_s {raw_load!r} is not a number"
            ) from None
        if not (math.isfinite(stamp) and math.isfinite(load) and load >= 0):
            raise EnvError(
                f"{where}, line {line}: timestamp and requests_per_s must be finite and the "
                f"load >= 0, got {raw_time!r}, {raw_load!r}"
            )
        if times and stamp <= times[-1]:
            raise EnvError(
                f"{where}, line {line}: timestamp {raw_time!r} is not after the previous one "
                f"(line {previous_line}); timestamps must increase strictly"
            )
        times.append(stamp)
        loads.append(load)
        previous_line = line
    if not times:
        raise EnvError(f"{where}, line 2: no data rows after the header; {expected}")
    return LoadTrace(np.asarray(times), np.asarray(loads), source=where)


# --------------------------------------------------------------------------- metrics


class AutoscalingMetrics(NamedTuple):
    """Accounting of the step just taken; every field is a fresh ``[N]`` array."""

    load_rps: F64
    """Offered load [requests/s]."""
    arrived: F64
    """Requests that arrived during the step (``load_rps * step_seconds``)."""
    served: F64
    """Requests served; ``served + dropped == arrived``."""
    dropped: F64
    """Requests shed because the load exceeded capacity."""
    ready: I64
    """Replicas that served the step."""
    pending: I64
    """Replicas booting after the step's action."""
    utilisation: F64
    """``rho = load / (ready * capacity_rps)``."""
    latency_ms: F64
    """Mean latency [ms]."""
    violation: Bools
    """The SLO was violated (``latency_ms > slo_latency_ms``)."""
    cost: F64
    """Replica cost of the step (``replica_cost * (ready + pending)``), penalty excluded."""
    noop: Bools
    """The action was refused at a replica bound."""


# --------------------------------------------------------------------------- env


class AutoscalingVectorEnv(gym.vector.VectorEnv[F32, I64, npt.NDArray[Any]]):
    """``N`` autoscaled services stepped together; same-step autoreset.

    Args:
        num_envs: number of sub-envs ``N``.
        params: constants (and per-sub-env defaults of the randomised fields).
        randomization: redraws numeric fields for each sub-env that (auto)resets;
            ``None`` keeps ``params`` fixed (use that for evaluation).
        trace: a recorded load replayed instead of the synthetic generator.

    Raises:
        EnvError: if ``num_envs < 1`` or ``trace`` is not a :class:`LoadTrace`.
        ConfigError: if ``randomization`` names a field of :data:`FIXED_FIELDS`
            or can draw a value ``params`` would reject.

    >>> env = AutoscalingVectorEnv(2)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((2, 10), dtype('float32'))
    >>> obs, rewards, terminated, truncated, info = env.step(np.array([UP, HOLD]))
    >>> env.last_metrics.pending.tolist(), rewards.round(2).tolist()
    ([1, 0], [-0.11, -0.1])
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium's class attribute)
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(
        self,
        num_envs: int = 1,
        *,
        params: AutoscalingParams | None = None,
        randomization: DomainRandomization | None = None,
        trace: LoadTrace | None = None,
    ) -> None:
        owner = type(self).__name__
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise EnvError(f"{owner}: num_envs must be an int >= 1, got {num_envs!r}")
        if trace is not None and not isinstance(trace, LoadTrace):
            raise EnvError(f"{owner}: trace must be a LoadTrace, got {type(trace).__name__}")
        self.num_envs = n = int(num_envs)
        self.params = p = AutoscalingParams() if params is None else params
        self.randomization = randomization if randomization else None
        self.trace = trace
        max_delay = p.provision_delay
        if self.randomization is not None:
            max_delay = max(max_delay, _check_randomization(p, self.randomization))

        h = p.history_len
        low = np.zeros(h + _OBS_EXTRA, dtype=np.float32)
        low[h + 4 :] = -1.0
        high = np.full(h + _OBS_EXTRA, np.inf, dtype=np.float32)
        high[h : h + 2] = 1.0
        high[h + 4 :] = 1.0
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(3)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)

        # Per-sub-env values of every randomisable numeric field, [N] float64.
        self._values: dict[str, F64] = {
            f.name: np.full(n, float(getattr(p, f.name)))
            for f in dataclasses.fields(AutoscalingParams)
            if f.name not in FIXED_FIELDS and f.name != "trace_start"
        }
        span = p.max_episode_steps + h  # h steps of history before step 0
        self._load: F64 = np.zeros((n, span), dtype=np.float64)  # [N, T + H] requests/s
        self._hour: F64 = np.zeros((n, span), dtype=np.float64)  # [N, T + H] hour of day
        self._ready: I64 = np.zeros(n, dtype=np.int64)
        # _boot[i, k]: replicas of sub-env i that become ready in k + 1 steps.
        self._boot: I64 = np.zeros((n, max(1, max_delay)), dtype=np.int64)
        self._elapsed: I64 = np.zeros(n, dtype=np.int64)
        self.noop_actions: I64 = np.zeros(n, dtype=np.int64)
        """Refused ``UP``/``DOWN`` actions per sub-env since the last :meth:`reset`."""
        self.last_metrics: AutoscalingMetrics | None = None
        """Accounting of the last :meth:`step` (``None`` before the first)."""
        self._needs_reset = True
        self._rows = np.arange(n)
        self._lags = np.arange(h)  # column offsets of the load history, newest first

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Start a new episode (a new load day) in every sub-env.

        Args:
            seed: reseeds the batch's single generator; ``None`` continues it.
            options: not supported (must be ``None`` or empty).

        Returns:
            ``(obs [N, history_len + 6] float32, {})``.

        Raises:
            EnvError: if ``options`` is not empty.
        """
        if options:
            raise EnvError(
                f"{type(self).__name__}.reset does not take options (got keys "
                f"{sorted(options)}); set the load model through AutoscalingParams"
            )
        super().reset(seed=seed)
        self._start_episodes(self._rows)
        self.noop_actions[:] = 0
        self.last_metrics = None
        self._needs_reset = False
        return self._observe(self._rows), {}

    def step(self, actions: I64) -> StepResult:
        """Scale every service by one decision and serve one step of load.

        Args:
            actions: int array ``[N]`` with values in ``{0: DOWN, 1: HOLD, 2: UP}``.

        Returns:
            ``(obs [N, history_len + 6] float32, rewards [N] float64, terminations
            [N] bool (always False), truncations [N] bool, info)``; see the
            module docstring for ``info``. :attr:`last_metrics` holds the step's
            accounting.

        Raises:
            EnvError: if called before :meth:`reset`, or ``actions`` has the wrong
                shape, a non-integer dtype or a value outside ``{0, 1, 2}``.
        """
        if self._needs_reset:
            raise EnvError(
                f"{type(self).__name__}.step called before reset(); call env.reset(seed=...) first"
            )
        a = self._check_actions(actions)
        p, v, boot, ready = self.params, self._values, self._boot, self._ready

        # 1. Boots that finish now.
        ready += boot[:, 0]
        boot[:, :-1] = boot[:, 1:]
        boot[:, -1] = 0
        pending = boot.sum(axis=1)
        total = ready + pending

        # 2. The action (bounds make it a no-op).
        up = (a == UP) & (total < p.max_replicas)
        down = (a == DOWN) & (total > p.min_replicas)
        noop = (a != HOLD) & ~up & ~down
        self.noop_actions += noop
        delay = v["provision_delay"].astype(np.int64)
        now = up & (delay == 0)
        ready += now
        later = np.flatnonzero(up & ~now)
        boot[later, delay[later] - 1] += 1
        cancel = down & (pending > 0)
        rows = np.flatnonzero(cancel)
        if rows.size:
            # The newest request is the one with the most boot time left.
            newest = boot.shape[1] - 1 - np.argmax(boot[rows, ::-1] > 0, axis=1)
            boot[rows, newest] -= 1
        ready -= down & ~cancel
        pending += up & ~now
        pending -= cancel

        # 3. Serve the step's load.
        column = self._elapsed + p.history_len
        load = self._load[self._rows, column]
        rho, latency = self._serving(load, ready, self._rows)
        capacity = ready * v["capacity_rps"]
        arrived = load * p.step_seconds
        served = np.minimum(load, capacity) * p.step_seconds
        violation = latency > v["slo_latency_ms"]
        cost = v["replica_cost"] * (ready + pending)
        rewards = -(cost + v["slo_penalty"] * violation)
        self.last_metrics = AutoscalingMetrics(
            load_rps=load,
            arrived=arrived,
            served=served,
            dropped=arrived - served,
            ready=ready.copy(),
            pending=pending,
            utilisation=rho,
            latency_ms=latency,
            violation=violation,
            cost=cost,
            noop=noop,
        )

        self._elapsed += 1
        obs = self._observe(self._rows, column=column, pending=pending)
        truncated = self._elapsed >= p.max_episode_steps
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        # Per-step business metrics, so evaluation suites and training logs see
        # cost and SLO violations separately from the combined reward.
        info: dict[str, Any] = {
            "replica_cost": cost,
            "slo_violations": violation.astype(np.float64),
            "dropped_requests": arrived - served,
        }
        if truncated.any():
            final_obs = obs.copy()
            ended = np.flatnonzero(truncated)
            self._start_episodes(ended)
            obs[ended] = self._observe(ended)
            info.update(final_obs=final_obs, _final_obs=truncated)
        return obs, rewards, terminated, truncated, info

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly mid-episode.

        Returns:
            ``{"num_envs": int, "elapsed_steps": [N] int64, "ready": [N] int64,
            "boot": [N, D] int64, "load": [N, T + H] float64, "hour": [N, T + H]
            float64, "values": {field: [N] float64}, "noop_actions": [N] int64,
            "rng": dict}``; ``rng`` is ``np_random.bit_generator.state``. Arrays
            are copies.

        Raises:
            EnvError: if called before :meth:`reset`.
        """
        if self._needs_reset:
            raise EnvError(f"{type(self).__name__}.state_dict called before reset()")
        return {
            "num_envs": self.num_envs,
            "elapsed_steps": self._elapsed.copy(),
            "ready": self._ready.copy(),
            "boot": self._boot.copy(),
            "load": self._load.copy(),
            "hour": self._hour.copy(),
            "values": {name: column.copy() for name, column in self._values.items()},
            "noop_actions": self.noop_actions.copy(),
            "rng": self.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Args:
            state: a mapping produced by :meth:`state_dict` of an env with the
                same ``num_envs`` and params shapes.

        Raises:
            EnvError: on missing keys, a different ``num_envs``, wrong shapes or
                an unknown bit generator.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        keys = ("num_envs", "elapsed_steps", "ready", "boot", "load", "hour", "values")
        missing = sorted({*keys, "noop_actions", "rng"} - set(state))
        if missing:
            raise EnvError(f"{owner}: missing keys {missing}")
        if int(state["num_envs"]) != self.num_envs:
            raise EnvError(
                f"{owner}: state was saved with num_envs={state['num_envs']}, "
                f"this env has num_envs={self.num_envs}"
            )
        values = state["values"]
        if not isinstance(values, Mapping) or set(values) != set(self._values):
            raise EnvError(f"{owner}: 'values' must map exactly {sorted(self._values)}")
        targets: dict[str, npt.NDArray[Any]] = {
            "elapsed_steps": self._elapsed,
            "ready": self._ready,
            "boot": self._boot,
            "load": self._load,
            "hour": self._hour,
            "noop_actions": self.noop_actions,
        }
        targets.update({f"values.{k}": column for k, column in self._values.items()})
        arrays = {k: np.asarray(state[k]) for k in targets if not k.startswith("values.")}
        arrays.update({f"values.{k}": np.asarray(values[k]) for k in self._values})
        for key, target in targets.items():
            if arrays[key].shape != target.shape:
                raise EnvError(
                    f"{owner}: {key!r} must have shape {target.shape}, got {arrays[key].shape}"
                )
        rng = _rng_from_state(state["rng"], type(self).__name__)
        for key, target in targets.items():
            target[...] = arrays[key]
        self.np_random = rng
        self._needs_reset = False

    # ------------------------------------------------------------------ internals

    def _check_actions(self, actions: Any) -> I64:
        a = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
        owner = type(self).__name__
        if a.shape != (self.num_envs,):
            raise EnvError(
                f"{owner}.step expected actions of shape ({self.num_envs},) (one of "
                f"0=DOWN, 1=HOLD, 2=UP per sub-env), got shape {a.shape}"
            )
        if a.dtype.kind not in "iu":
            raise EnvError(
                f"{owner}.step expected integer actions in {{0, 1, 2}}, got dtype {a.dtype}; "
                "cast with actions.astype(np.int64)"
            )
        bad = np.flatnonzero((a < 0) | (a > 2))
        if bad.size:
            raise EnvError(
                f"{owner}.step: actions must be 0 (DOWN), 1 (HOLD) or 2 (UP), got "
                f"{a[bad[0]]} for env {bad[0]} ({bad.size} invalid)"
            )
        return a.astype(np.int64, copy=False)

    def _serving(self, load: F64, ready: I64, rows: npt.NDArray[np.intp]) -> tuple[F64, F64]:
        """Utilisation and M/M/1 latency capped at the timeout, ``[len(rows)]`` each."""
        v = self._values
        service, cap = v["service_time_ms"][rows], v["max_latency_ms"][rows]
        rho = load / (ready * v["capacity_rps"][rows])
        latency = service / np.maximum(1.0 - rho, service / cap)
        return rho, latency

    def _observe(
        self,
        rows: npt.NDArray[np.intp],
        *,
        column: I64 | None = None,
        pending: I64 | None = None,
    ) -> F32:
        """Observations of sub-envs ``rows`` for the step in ``column`` of the load arrays.

        Defaults describe the step before the episode (column ``history_len - 1``).
        """
        p, v = self.params, self._values
        h = p.history_len
        if column is None:
            column = np.full(rows.size, h - 1, dtype=np.int64)
        if pending is None:
            pending = self._boot[rows].sum(axis=1)
        ready = self._ready[rows]
        load = self._load[rows, column]
        rho, latency = self._serving(load, ready, rows)
        obs = np.empty((rows.size, h + _OBS_EXTRA), dtype=np.float32)
        scale = v["capacity_rps"][rows] * p.max_replicas
        history = self._load[rows[:, None], column[:, None] - self._lags]
        obs[:, :h] = history / scale[:, None]
        obs[:, h + OBS_READY] = ready / p.max_replicas
        obs[:, h + OBS_PENDING] = pending / p.max_replicas
        obs[:, h + OBS_UTILISATION] = rho
        obs[:, h + OBS_LATENCY] = latency / v["slo_latency_ms"][rows]
        angle = self._hour[rows, column] * (2 * np.pi / 24)
        obs[:, h + 4] = np.sin(angle)
        obs[:, h + 5] = np.cos(angle)
        return obs

    def _start_episodes(self, ids: npt.NDArray[np.intp]) -> None:
        """Redraw parameters, draw the episode's load and reset the fleet of ``ids``."""
        p, v, rng = self.params, self._values, self.np_random
        if self.randomization is not None:
            for name, draws in self.randomization.sample(rng, ids.size).items():
                v[name][ids] = np.rint(draws) if name in _INT_FIELDS else draws
        if self.trace is None:
            self._synthetic_load(ids)
        else:
            self._trace_load(ids, self.trace)
        self._ready[ids] = np.clip(v["initial_replicas"][ids], p.min_replicas, p.max_replicas)
        self._boot[ids] = 0
        self._elapsed[ids] = 0

    def _synthetic_load(self, ids: npt.NDArray[np.intp]) -> None:
        p, v = self.params, self._values
        n, span, h = ids.size, self._load.shape[1], p.history_len
        steps = np.arange(-h, span - h, dtype=np.float64)
        hour = (v["start_hour"][ids, None] + steps * (p.step_seconds / 3600.0)) % 24.0
        amplitude, peak = v["diurnal_amplitude"][ids, None], v["peak_hour"][ids, None]
        cycle = np.cos((hour - peak) * (2 * np.pi / 24))
        sharp = v["diurnal_sharpness"][ids, None]
        # tanh(s c) / tanh(s) -> c as s -> 0; the guard avoids 0 / 0.
        safe = np.maximum(sharp, 1e-6)
        cycle = np.where(sharp > 1e-6, np.tanh(safe * cycle) / np.tanh(safe), cycle)
        load = 1.0 + amplitude * cycle
        sigma = v["noise_std"][ids, None]
        load *= np.exp(sigma * self.np_random.standard_normal((n, span)) - 0.5 * sigma * sigma)
        starts = self.np_random.random((n, span)) < v["burst_prob"][ids, None]
        durations = v["burst_steps"][ids].astype(np.int64)
        envelope = np.zeros((n, span))
        for k in range(min(int(durations.max()), span)):
            # Bursts that started k steps ago contribute env(k) (0 once they are over).
            weight = np.where(k < durations, np.sin(np.pi * (k + 1) / (durations + 1)), 0.0)
            envelope[:, k:] += starts[:, : span - k] * weight[:, None]
        load *= 1.0 + (v["burst_multiplier"][ids, None] - 1.0) * envelope
        load *= v["base_rps"][ids, None]
        self._load[ids] = load
        self._hour[ids] = hour

    def _trace_load(self, ids: npt.NDArray[np.intp], trace: LoadTrace) -> None:
        p, span, length = self.params, self._load.shape[1], len(trace)
        if p.trace_start == "random":
            first = self.np_random.integers(0, length, size=ids.size)
        else:
            first = np.zeros(ids.size, dtype=np.int64)
        index = (first[:, None] + np.arange(-p.history_len, span - p.history_len)) % length
        self._load[ids] = trace.requests_per_s[index]
        self._hour[ids] = (trace.timestamps[index] % _SECONDS_PER_DAY) / 3600.0


def _check_randomization(params: AutoscalingParams, randomization: DomainRandomization) -> int:
    """Reject fixed fields and ranges ``params`` would refuse; return the largest delay."""
    names = set(randomization.distributions)
    fixed = sorted(names & FIXED_FIELDS)
    if fixed:
        raise ConfigError(
            f"AutoscalingParams.{fixed[0]} cannot be randomised (it fixes array shapes or "
            "observation scaling); set it as a plain value"
        )
    if "trace_start" in names:
        raise ConfigError("AutoscalingParams.trace_start is not numeric; it cannot be randomised")
    max_delay = params.provision_delay
    for name, dist in randomization.distributions.items():
        for bound in dist.bounds():
            if not math.isfinite(bound):
                raise ConfigError(
                    f"randomize.{name}: the distribution is unbounded; give a normal "
                    "distribution a 'clip' range"
                )
            value: Any = round(bound) if name in _INT_FIELDS else bound
            try:
                dataclasses.replace(params, **{name: value})
            except ConfigError as exc:
                raise ConfigError(
                    f"randomize.{name}: range bound {bound!r} is invalid: {exc}"
                ) from None
            if name == "provision_delay":
                max_delay = max(max_delay, int(value))
    return max_delay


def make_autoscaling_env(
    num_envs: int = 1,
    *,
    params: AutoscalingParams | None = None,
    trace_csv: str | Path | None = None,
    randomize: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AutoscalingVectorEnv:
    """Build an :class:`AutoscalingVectorEnv` from flat config values (``env.kwargs``).

    Args:
        num_envs: number of sub-envs.
        params: base constants; ``overrides`` replace fields of it.
        trace_csv: replay this recorded trace (see :func:`load_trace_csv`)
            instead of the synthetic load.
        randomize: ``{field: range}`` drawn per episode, in the syntax of
            :meth:`DomainRandomization.from_config`.
        **overrides: fields of :class:`AutoscalingParams`, e.g. ``provision_delay=3``.

    Returns:
        The env (not reset).

    Raises:
        EnvError: on an unknown field or an unreadable / malformed trace.
        ConfigError: on a bad field value or randomisation range.

    >>> env = make_autoscaling_env(2, provision_delay=1, randomize={"base_rps": [50, 150]})
    >>> env.params.provision_delay
    1
    """
    known = {f.name for f in dataclasses.fields(AutoscalingParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise EnvError(
            f"unknown AutoscalingParams field(s) {unknown}; known: {sorted(known)} "
            "(plus trace_csv, randomize, params)"
        )
    if params is not None and not isinstance(params, AutoscalingParams):
        raise EnvError(f"params must be an AutoscalingParams, got {type(params).__name__}")
    base = AutoscalingParams() if params is None else params
    resolved = dataclasses.replace(base, **overrides)
    randomization = None
    if randomize:
        randomization = DomainRandomization.from_config(
            AutoscalingParams, randomize, prefix="env.kwargs.randomize"
        )
    trace = None if trace_csv is None else load_trace_csv(trace_csv)
    return AutoscalingVectorEnv(num_envs, params=resolved, randomization=randomization, trace=trace)


# --------------------------------------------------------------------------- baselines


class HPAPolicy:
    """Kubernetes' Horizontal Pod Autoscaler rule, mapped to one-replica steps.

    From each observation it reads only what a metrics server shows: the ready
    and pending replica counts and the utilisation ``rho`` of the ready ones.
    Per sub-env and step::

        ratio   = rho / target_utilisation
        desired = ready                     if |ratio - 1| <= tolerance
                  ceil(ready * ratio)       otherwise, clipped to [min, max]
        target  = desired                   if desired > ready + pending  (scale up at once)
                  min(ready + pending, max(desired over the last
                      stabilisation_steps decisions))            (scale down slowly)

    and the action is ``UP``/``DOWN``/``HOLD`` as ``target`` is above, below or
    equal to ``ready + pending`` (the env moves one replica per step, so a large
    gap takes several steps). This is the ``kube-controller-manager`` algorithm
    (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/)
    with its default tolerance 0.1; its default scale-down window of 300 s is
    ``stabilisation_steps * step_seconds``.

    Args:
        params: the env's params (``history_len``, ``min_replicas`` and
            ``max_replicas`` locate and scale the observation features).
        target_utilisation: utilisation the rule steers to (e.g. 60 % CPU).
        tolerance: relative dead band around the target.
        stabilisation_steps: scale-down window, in decisions (>= 1; 1 = none).

    Raises:
        ConfigError: on a target outside ``(0, 1]``, a negative tolerance or a
            window below 1.

    >>> env = AutoscalingVectorEnv(3)
    >>> obs, _ = env.reset(seed=0)
    >>> hpa = HPAPolicy(env.params)
    >>> hpa.act(obs).shape
    (3,)
    """

    def __init__(
        self,
        params: AutoscalingParams,
        *,
        target_utilisation: float = 0.6,
        tolerance: float = 0.1,
        stabilisation_steps: int = 1,
    ) -> None:
        check(
            0 < target_utilisation <= 1,
            "HPAPolicy.target_utilisation",
            f"must be in (0, 1], got {target_utilisation}",
        )
        check(tolerance >= 0, "HPAPolicy.tolerance", f"must be >= 0, got {tolerance}")
        check(
            stabilisation_steps >= 1,
            "HPAPolicy.stabilisation_steps",
            f"must be >= 1, got {stabilisation_steps}",
        )
        self.params = params
        self.target_utilisation = target_utilisation
        self.tolerance = tolerance
        self.stabilisation_steps = stabilisation_steps
        self._recent: I64 | None = None  # [N, window] recent recommendations, -1 = none
        self._cursor = 0

    def reset(self) -> None:
        """Forget the scale-down window (call at the start of new episodes)."""
        self._recent = None
        self._cursor = 0

    def act(self, obs: npt.ArrayLike) -> I64:
        """Actions ``[N]`` int64 (``DOWN``/``HOLD``/``UP``) for observations ``[N, obs_dim]``.

        Raises:
            EnvError: if ``obs`` is not ``[N, history_len + 6]``.
        """
        p = self.params
        x = np.asarray(obs, dtype=np.float64)
        h = p.history_len
        if x.ndim != 2 or x.shape[1] != h + _OBS_EXTRA:
            raise EnvError(
                f"HPAPolicy.act expects observations [N, {h + _OBS_EXTRA}], got {x.shape}"
            )
        ready = np.rint(x[:, h + OBS_READY] * p.max_replicas)
        total = ready + np.rint(x[:, h + OBS_PENDING] * p.max_replicas)
        ratio = x[:, h + OBS_UTILISATION] / self.target_utilisation
        # The small epsilon keeps ceil(10 * 0.7 / 0.7) at 10 despite float32 rounding.
        scaled = np.ceil(ready * ratio - 1e-6)
        desired = np.where(np.abs(ratio - 1.0) <= self.tolerance, ready, scaled)
        desired = np.clip(desired, p.min_replicas, p.max_replicas).astype(np.int64)

        if self._recent is None or self._recent.shape[0] != desired.shape[0]:
            self._recent = np.full((desired.shape[0], self.stabilisation_steps), -1, np.int64)
            self._cursor = 0
        self._recent[:, self._cursor] = desired
        self._cursor = (self._cursor + 1) % self.stabilisation_steps
        stable = np.minimum(total, self._recent.max(axis=1))
        target = np.where(desired > total, desired, stable)
        return np.where(target > total, UP, np.where(target < total, DOWN, HOLD)).astype(np.int64)

    __call__ = act


def hold_policy(obs: npt.ArrayLike) -> I64:
    """The static baseline: never rescale. ``[N, obs_dim]`` -> ``[N]`` of ``HOLD``.

    >>> hold_policy(np.zeros((2, 10))).tolist()
    [1, 1]
    """
    return np.full(np.asarray(obs).shape[0], HOLD, dtype=np.int64)


# --------------------------------------------------------------------------- evaluation


@dataclasses.dataclass(frozen=True)
class EpisodeCosts:
    """Per-episode totals of one policy, one entry per reset seed (``[S]`` arrays).

    Attributes:
        seeds: the reset seeds.
        replica_cost: summed ``replica_cost * (ready + pending)`` [cost units].
        violations: SLO-violating steps.
        dropped_fraction: dropped / arrived requests.
        noop_actions: actions refused at a replica bound.
    """

    seeds: I64
    replica_cost: F64
    violations: I64
    dropped_fraction: F64
    noop_actions: I64


def run_cost_episodes(
    env: AutoscalingVectorEnv, act: Callable[[F32], npt.ArrayLike], seeds: list[int]
) -> EpisodeCosts:
    """Run one full episode of every sub-env per seed and total its costs.

    Each seed resets the env with ``reset(seed=seed)``; the totals are summed
    over the ``N`` sub-envs of that reset (use ``num_envs=1`` for one day per
    seed). If ``act`` has a ``reset()`` method (e.g. :class:`HPAPolicy`), it is
    called before each episode.

    Args:
        env: the env, built without randomisation for held-out evaluation.
        act: ``[N, obs_dim]`` observations -> ``[N]`` actions.
        seeds: reset seeds.

    Returns:
        The :class:`EpisodeCosts`.

    >>> env = AutoscalingVectorEnv(1)
    >>> costs = run_cost_episodes(env, hold_policy, [0])
    >>> round(float(costs.replica_cost[0]), 6)  # 10 replicas * 0.01 * 288 steps
    28.8
    """
    replica_cost, violations, dropped, noops = [], [], [], []
    for seed in seeds:
        reset = getattr(act, "reset", None)
        if callable(reset):
            reset()
        obs, _ = env.reset(seed=seed)
        cost = arrived = lost = 0.0
        bad = 0
        for _ in range(env.params.max_episode_steps):
            obs, _, _, _, _ = env.step(np.asarray(act(obs), dtype=np.int64))
            m = env.last_metrics
            assert m is not None  # set by every step
            cost += float(m.cost.sum())
            bad += int(m.violation.sum())
            arrived += float(m.arrived.sum())
            lost += float(m.dropped.sum())
        replica_cost.append(cost)
        violations.append(bad)
        dropped.append(lost / arrived if arrived > 0 else 0.0)
        noops.append(int(env.noop_actions.sum()))
    return EpisodeCosts(
        seeds=np.asarray(seeds, dtype=np.int64),
        replica_cost=np.asarray(replica_cost),
        violations=np.asarray(violations, dtype=np.int64),
        dropped_fraction=np.asarray(dropped),
        noop_actions=np.asarray(noops, dtype=np.int64),
    )
