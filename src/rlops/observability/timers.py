"""Named phase timers, so a profile of the training loop is one glance.

Wrap each part of the loop in a named phase (``env``, ``forward``, ``learn``,
``replay``, as PufferLib does) and report once per logging interval::

    timer = PhaseTimer()
    while env_steps < total:
        with timer.phase("env"):
            obs, reward, ... = envs.step(actions)
        with timer.phase("learn"):
            metrics = learner.step(batch)
        if should_log:
            logger.write({**metrics, **timer.report(env_steps)}, step=env_steps)

The report gives seconds and the fraction of wall time spent in each phase
since the previous report, plus environment steps per second over the same
window; what is left over (1 - sum of fractions) is untimed overhead.
"""

from __future__ import annotations

from time import perf_counter

__all__ = ["PhaseTimer"]


class _Phase:
    """One phase's stopwatch; the same object is reused for every ``with``."""

    __slots__ = ("_started", "frac_key", "time_key", "total")

    def __init__(self, name: str) -> None:
        self.total = 0.0
        self._started = -1.0  # < 0: not running
        self.time_key = f"perf/time_{name}_s"
        self.frac_key = f"perf/frac_{name}"

    def __enter__(self) -> None:
        self._started = perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self.total += perf_counter() - self._started
        self._started = -1.0


class PhaseTimer:
    """Accumulates wall time per named phase between reports.

    Built for hot paths: :meth:`phase` returns a stopwatch object cached per
    name, so a ``with timer.phase("env"):`` block costs one dict lookup and two
    ``time.perf_counter`` calls and allocates nothing after the first use of a
    name. Phases may nest (time in an inner phase also counts for the outer
    one), but one name must not be entered again while it is running. Time of a
    phase still running at :meth:`report` is counted in the next window.

    Args:
        steps: The cumulative environment-step count when timing starts
            (non-zero when a run resumes from a checkpoint), so the first
            report's throughput counts only steps taken since.

    >>> import time
    >>> timer = PhaseTimer()
    >>> with timer.phase("env"):
    ...     time.sleep(0.01)
    >>> timer.start("learn"); timer.stop("learn")
    >>> report = timer.report(steps=64)
    >>> sorted(report)  # doctest: +NORMALIZE_WHITESPACE
    ['perf/env_steps_per_s', 'perf/frac_env', 'perf/frac_learn',
     'perf/time_env_s', 'perf/time_learn_s']
    >>> report["perf/time_env_s"] >= 0.01
    True
    """

    def __init__(self, steps: int = 0) -> None:
        self._phases: dict[str, _Phase] = {}
        self._window_start = perf_counter()
        self._steps = int(steps)

    def phase(self, name: str) -> _Phase:
        """Return the reusable context manager timing phase ``name``.

        Args:
            name: A short phase name (``env``, ``forward``, ``learn``,
                ``replay``); it becomes part of the metric keys.

        Returns:
            A context manager that adds the time spent inside it to ``name``.

        Raises:
            ValueError: If ``name`` is empty or contains ``/`` or whitespace.
        """
        timer = self._phases.get(name)
        if timer is None:
            if not name or "/" in name or any(ch.isspace() for ch in name):
                raise ValueError(
                    f"phase name must be non-empty without '/' or spaces, got {name!r}"
                )
            timer = self._phases[name] = _Phase(name)
        return timer

    def start(self, name: str) -> None:
        """Start timing phase ``name`` (for code that cannot use ``with``).

        Args:
            name: The phase name, as in :meth:`phase`.
        """
        self.phase(name).__enter__()

    def stop(self, name: str) -> None:
        """Stop timing phase ``name`` and add the elapsed time to it.

        Args:
            name: A phase started with :meth:`start`.

        Raises:
            RuntimeError: If ``name`` is not running.
        """
        timer = self._phases.get(name)
        if timer is None or timer._started < 0:
            raise RuntimeError(f"PhaseTimer.stop({name!r}) without a matching start({name!r})")
        timer.__exit__()

    def report(self, steps: int) -> dict[str, float]:
        """Summarise the window since the last report and start a new one.

        Args:
            steps: The cumulative environment-step count now; throughput is
                computed from the steps taken since the previous report.

        Returns:
            ``perf/time_<phase>_s`` (seconds in the window) and
            ``perf/frac_<phase>`` (share of the window's wall time) for every
            phase ever used (0 when idle this window, so curves stay
            continuous), and ``perf/env_steps_per_s``.
        """
        now = perf_counter()
        window = now - self._window_start
        inverse = 1.0 / window if window > 0 else 0.0
        out: dict[str, float] = {}
        for timer in self._phases.values():
            out[timer.time_key] = timer.total
            out[timer.frac_key] = timer.total * inverse
            timer.total = 0.0
        out["perf/env_steps_per_s"] = (int(steps) - self._steps) * inverse
        self._steps = int(steps)
        self._window_start = now
        return out
