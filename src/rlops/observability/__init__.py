"""Observability: metric sinks and phase timers.

>>> from rlops.observability import MultiLogger, NullSink, PhaseTimer
>>> timer = PhaseTimer()
>>> with timer.phase("env"):
...     pass
>>> with MultiLogger([NullSink()]) as logger:
...     logger.write(timer.report(steps=128), step=128)
"""

from rlops.observability.logger import (
    ConsoleSink,
    JsonlSink,
    MetricSink,
    MultiLogger,
    NullSink,
    TensorBoardSink,
)
from rlops.observability.timers import PhaseTimer

__all__ = [
    "ConsoleSink",
    "JsonlSink",
    "MetricSink",
    "MultiLogger",
    "NullSink",
    "PhaseTimer",
    "TensorBoardSink",
]
