"""Serving metrics in the Prometheus text exposition format (version 0.0.4), by hand.

Updated from the event-loop thread only, so plain integers suffice. Names
follow the ``serving/...`` namespace of ``shared/ARCHITECTURE.md`` as
``rlops_serving_...`` (Prometheus names cannot hold ``/``).

>>> m = ServingMetrics()
>>> m.observe_request("/v1/act", "production", 200, 0.0012)
>>> 'rlops_serving_requests_total{route="/v1/act",arm="production",status="200"} 1' in m.render()
True
"""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Iterable, Mapping

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Upper bounds of the request-latency histogram (seconds; ``+Inf`` is implied)."""

BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper bounds of the micro-batch size histogram (rows)."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return f"{{{body}}}" if body else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name: str, labels: tuple[tuple[str, str], ...]) -> list[str]:
        out, cumulative = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts):
            cumulative += count
            le = _labels((*labels, ("le", _number(bound))))
            out.append(f"{name}_bucket{le} {cumulative}")
        out.append(f"{name}_sum{_labels(labels)} {_number(self.total)}")
        out.append(f"{name}_count{_labels(labels)} {cumulative}")
        return out


class ServingMetrics:
    """Counters and histograms of one server process; :meth:`render` exposes them."""

    def __init__(self) -> None:
        self.requests: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.decisions: collections.Counter[str] = collections.Counter()
        self.safety: collections.Counter[str] = collections.Counter()
        self.shadow_rows: collections.Counter[str] = collections.Counter()
        self.latency: dict[str, _Histogram] = {}
        self.batch_rows = _Histogram(BATCH_BUCKETS)

    def observe_request(self, route: str, arm: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (``arm="none"`` when no decision)."""
        self.requests[(route, arm, str(status))] += 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = _Histogram(LATENCY_BUCKETS_S)
        hist.observe(seconds)

    def observe_decisions(self, arm: str, count: int) -> None:
        """Count decisions served (and logged) by ``arm``."""
        self.decisions[arm] += count

    def safety_trigger(self, kind: str, count: int = 1) -> None:
        """Count a safety trigger (``policy_error``, ``timeout``, ``exploration_capped``...)."""
        self.safety[kind] += count

    def shadow(self, outcome: str, count: int = 1) -> None:
        """Count shadow evaluations by outcome (``logged``, ``skipped``, ``error``, ``dropped``)."""
        self.shadow_rows[outcome] += count

    def render(self, extra: Mapping[str, tuple[str, str, float]] | None = None) -> str:
        """The exposition text; ``extra`` maps more metric names to ``(type, help, value)``."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        family("rlops_serving_requests_total", "counter", "HTTP requests answered.")
        for (route, arm, status), n in sorted(self.requests.items()):
            labels = _labels((("route", route), ("arm", arm), ("status", status)))
            lines.append(f"rlops_serving_requests_total{labels} {n}")
        family("rlops_serving_decisions_total", "counter", "Decisions served and logged.")
        for arm, n in sorted(self.decisions.items()):
            lines.append(f"rlops_serving_decisions_total{_labels([('arm', arm)])} {n}")
        family("rlops_serving_safety_triggers_total", "counter", "Safety mechanisms that acted.")
        for kind, n in sorted(self.safety.items()):
            lines.append(f"rlops_serving_safety_triggers_total{_labels([('kind', kind)])} {n}")
        family("rlops_serving_shadow_total", "counter", "Shadow-policy evaluations by outcome.")
        for outcome, n in sorted(self.shadow_rows.items()):
            lines.append(f"rlops_serving_shadow_total{_labels([('outcome', outcome)])} {n}")
        family("rlops_serving_latency_seconds", "histogram", "Request latency in the server.")
        for route, hist in sorted(self.latency.items()):
            lines.extend(hist.lines("rlops_serving_latency_seconds", (("route", route),)))
        family("rlops_serving_batch_rows", "histogram", "Observations per policy forward.")
        lines.extend(self.batch_rows.lines("rlops_serving_batch_rows", ()))
        for name, (kind, help_text, value) in sorted((extra or {}).items()):
            family(name, kind, help_text)
            lines.append(f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"
