"""A Reverb-style rate limiter: keep samples per insert near a target, never hang.

The design follows DeepMind Reverb's ``RateLimiter`` (Cassirer et al. 2021,
"Reverb: A Framework For Experience Replay"; ``reverb/cc/rate_limiter.cc`` and
``reverb.rate_limiters.SampleToInsertRatio``). Counts are in *items*:

* sampling needs ``size >= min_size`` and, with ``samples_per_insert`` set,
  ``(inserts - min_size) * samples_per_insert - (samples + n) >= -tolerance``;
* inserting is allowed while ``size + n <= min_size`` (filling up) or
  ``(inserts + n - min_size) * samples_per_insert - samples <= tolerance``.

So after the first ``min_size`` items the learner may run at most
``tolerance`` samples ahead of ``samples_per_insert`` per inserted item and the
actors at most ``tolerance`` behind, which decouples learning speed from
acting speed without letting either race away (Reverb's ``error_buffer`` is
``tolerance`` here). ``tolerance`` must be at least ``max(1, samples_per_insert)``
for single-item progress; with batches, make it cover one insert batch times
``samples_per_insert`` and one sample batch, or an inserter and a sampler can
wait on each other.

The ``await_*`` methods block on a ``threading.Condition`` (other threads'
``on_*`` calls wake them) for at most ``timeout_s`` seconds, then raise
:class:`~rlops.core.errors.ReplayError` describing the limiter state instead
of hanging.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from rlops.core.errors import ConfigError, ReplayError

__all__ = ["RateLimiter"]


class RateLimiter:
    """Gate inserts and samples on a samples-per-insert ratio (Reverb-style).

    Thread-safe: counts change under one lock, and waiters are woken by every
    ``on_insert`` / ``on_sample`` / ``on_delete``.

    Args:
        min_size: items that must be stored before the first sample.
        samples_per_insert: target sampled items per inserted item; ``None``
            only enforces ``min_size``.
        tolerance: how far (in sampled items) the ratio may drift either way;
            required with ``samples_per_insert``.
        timeout_s: how long the ``await_*`` methods wait before raising.

    Raises:
        ConfigError: If ``min_size < 1``, ``samples_per_insert <= 0``,
            ``tolerance`` is missing or below ``max(1, samples_per_insert)``, or
            ``timeout_s`` is not a positive finite number.

    >>> limiter = RateLimiter(min_size=2, samples_per_insert=1.0, tolerance=2.0, timeout_s=0.1)
    >>> limiter.on_insert(2)
    >>> limiter.can_sample(2), limiter.can_sample(3)
    (True, False)
    """

    def __init__(
        self,
        min_size: int,
        samples_per_insert: float | None = None,
        tolerance: float | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if min_size < 1:
            raise ConfigError(f"RateLimiter min_size must be >= 1, got {min_size}")
        if samples_per_insert is not None:
            if not (samples_per_insert > 0 and math.isfinite(samples_per_insert)):
                raise ConfigError(f"samples_per_insert must be > 0, got {samples_per_insert}")
            if tolerance is None or not tolerance >= max(1.0, samples_per_insert):
                raise ConfigError(
                    f"tolerance must be >= max(1, samples_per_insert) = "
                    f"{max(1.0, samples_per_insert)} (else inserts and samples can deadlock), "
                    f"got {tolerance}"
                )
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
        self.min_size = int(min_size)
        self.samples_per_insert = samples_per_insert
        self.tolerance = tolerance
        self.timeout_s = float(timeout_s)
        self.inserts = 0
        self.samples = 0
        self.deletes = 0
        self._cond = threading.Condition()

    @property
    def size(self) -> int:
        """Items stored: ``inserts - deletes``."""
        return self.inserts - self.deletes

    # -- checks (callers hold the lock or accept a snapshot) ---------------------
    def _sample_ok(self, n: int) -> bool:
        if self.inserts - self.deletes < self.min_size:
            return False
        spi = self.samples_per_insert
        if spi is None:
            return True
        assert self.tolerance is not None
        return (self.inserts - self.min_size) * spi - (self.samples + n) >= -self.tolerance

    def _insert_ok(self, n: int) -> bool:
        spi = self.samples_per_insert
        if spi is None or self.inserts - self.deletes + n <= self.min_size:
            return True
        assert self.tolerance is not None
        return (self.inserts + n - self.min_size) * spi - self.samples <= self.tolerance

    def can_sample(self, n: int = 1) -> bool:
        """Whether sampling ``n`` items now keeps the limiter's bounds."""
        with self._cond:
            return self._sample_ok(n)

    def can_insert(self, n: int = 1) -> bool:
        """Whether inserting ``n`` items now keeps the limiter's bounds."""
        with self._cond:
            return self._insert_ok(n)

    # -- blocking ----------------------------------------------------------------
    def await_can_sample(self, n: int = 1, timeout_s: float | None = None) -> None:
        """Block until sampling ``n`` items is allowed.

        Args:
            n: items about to be sampled.
            timeout_s: overrides the limiter's ``timeout_s`` for this call.

        Raises:
            ReplayError: After the timeout, stating size, inserts, samples,
                the ratio and what was awaited.
        """
        self._await("sample", n, self._sample_ok, timeout_s)

    def await_can_insert(self, n: int = 1, timeout_s: float | None = None) -> None:
        """Block until inserting ``n`` items is allowed.

        Raises:
            ReplayError: After the timeout, stating the limiter state.
        """
        self._await("insert", n, self._insert_ok, timeout_s)

    def _await(self, what: str, n: int, ok: Callable[[int], bool], timeout_s: float | None) -> None:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        with self._cond:
            if self._cond.wait_for(lambda: ok(n), timeout=timeout):
                return
            raise ReplayError(
                f"rate limiter: waited {timeout:g}s to {what} {n} items; " + self._describe()
            )

    def _describe(self) -> str:
        spi = self.samples_per_insert
        state = (
            f"size={self.size} (min_size={self.min_size}), inserts={self.inserts}, "
            f"deletes={self.deletes}, samples={self.samples}"
        )
        if spi is None:
            return state + "; sampling waits for min_size items (insert from another thread)"
        ratio = self.samples / max(1, self.inserts - self.min_size)
        assert self.tolerance is not None
        ahead = self.samples - (self.inserts - self.min_size) * spi
        return (
            f"{state}, samples per insert since min_size={ratio:.3g} (target {spi:g}), "
            f"samples ahead of target={ahead:g} (allowed -{self.tolerance:g}..{self.tolerance:g}). "
            "Another thread must insert (to sample) or sample (to insert); if one thread "
            "does both, or batches exceed the tolerance, raise tolerance or change "
            "samples_per_insert"
        )

    # -- counting ----------------------------------------------------------------
    def on_insert(self, n: int) -> None:
        """Count ``n`` inserted items and wake waiters."""
        with self._cond:
            self.inserts += int(n)
            self._cond.notify_all()

    def on_sample(self, n: int) -> None:
        """Count ``n`` sampled items and wake waiters."""
        with self._cond:
            self.samples += int(n)
            self._cond.notify_all()

    def on_delete(self, n: int) -> None:
        """Count ``n`` items removed (e.g. overwritten by a full ring) and wake waiters."""
        with self._cond:
            self.deletes += int(n)
            self._cond.notify_all()

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The counters (and the settings, for checking)."""
        with self._cond:
            return {
                "inserts": self.inserts,
                "samples": self.samples,
                "deletes": self.deletes,
                "min_size": self.min_size,
                "samples_per_insert": self.samples_per_insert,
                "tolerance": self.tolerance,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the counters of :meth:`state_dict` output and wake waiters.

        Raises:
            ReplayError: If the saved settings differ from this limiter's.
        """
        for key in ("min_size", "samples_per_insert", "tolerance"):
            if state[key] != getattr(self, key):
                raise ReplayError(
                    f"rate limiter state has {key}={state[key]!r}, this limiter "
                    f"{getattr(self, key)!r}"
                )
        with self._cond:
            self.inserts = int(state["inserts"])
            self.samples = int(state["samples"])
            self.deletes = int(state["deletes"])
            self._cond.notify_all()
