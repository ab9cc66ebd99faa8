"""Metric sinks: where namespaced training metrics go.

Every producer (learner, runtime, evaluation) hands a flat mapping of
namespaced keys to a single logger, which fans it out to the sinks the run
asked for. The loop is always::

    logger = MultiLogger([JsonlSink(run_dir / "metrics.jsonl"), ConsoleSink(total_steps)])
    for ...:
        logger.write({"charts/episode_return": 21.0, "losses/policy": 0.13}, step=env_steps)
    logger.close()

Keys are namespaced (``charts/...``, ``perf/...``, ``losses/...``, ``replay/...``,
``runtime/...``) so TensorBoard groups them and a JSONL file reads at a glance.
``step`` is the run's global environment-step count, the one x axis every sink
shares.

Heavy dependencies are imported inside the sink that needs them (TensorBoard
pulls in all of ``torch.utils.tensorboard``; rich's console costs tens of
milliseconds), so ``import rlops`` stays fast.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TextIO, runtime_checkable

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = [
    "ConsoleSink",
    "JsonlSink",
    "MetricSink",
    "MultiLogger",
    "NullSink",
    "TensorBoardSink",
]

EPISODE_RETURN_KEY = "charts/episode_return"
"""Key the console sink shows as the latest episode return."""

STEPS_PER_S_KEY = "perf/env_steps_per_s"
"""Key the console sink shows as the current throughput."""


@runtime_checkable
class MetricSink(Protocol):
    """Somewhere metrics go: a file, TensorBoard, the console, several of them.

    A sink is written to once per logging step and closed once at the end of
    the run; ``close`` is idempotent. Every sink in this module is also a
    context manager that closes itself on exit.

    >>> sink: MetricSink = NullSink()
    >>> sink.write({"losses/policy": 0.5}, step=128)
    >>> sink.close()
    """

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` (namespaced key -> scalar) at global step ``step``."""
        ...

    def close(self) -> None:
        """Flush and release whatever the sink holds; safe to call twice."""
        ...


class _ClosingSink:
    """Gives a sink ``with sink: ...`` that calls ``close`` on exit."""

    def close(self) -> None:  # pragma: no cover - every sink overrides it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class NullSink(_ClosingSink):
    """A sink that drops everything (for tests and ``logging: none``).

    >>> with NullSink() as sink:
    ...     sink.write({"charts/episode_return": 1.0}, step=1)
    """

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        """Ignore ``metrics``."""

    def close(self) -> None:
        """Do nothing."""


def _json_scalar(value: float) -> float | int | None:
    """Return ``value`` as a strict-JSON scalar; NaN and +-inf become ``None``.

    Ints stay ints (counters such as ``replay/size`` read better unrounded);
    anything else numeric (numpy scalars, 0-d tensors) goes through ``float``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = float(value)
    return number if math.isfinite(number) else None


class JsonlSink(_ClosingSink):
    """Appends one JSON object per :meth:`write` to a ``.jsonl`` file.

    Each line is ``{"step": step, "time": unix_seconds, **metrics}``. The file
    is flushed after every write, so a crashed run keeps every line it
    logged and ``tail -f`` shows progress live. Non-finite values (NaN, +-inf)
    are written as ``null`` so every line is strict JSON that any parser
    (``jq``, pandas, browsers) reads. The file is opened in append mode, so a
    resumed run continues the same file.

    Args:
        path: The ``.jsonl`` file; parent directories are created.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> with JsonlSink(path) as sink:
    ...     sink.write({"losses/policy": float("nan")}, step=3)
    >>> '"losses/policy": null' in path.read_text()
    True
    """

    _RESERVED = frozenset({"step", "time"})

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        """Append one line for ``metrics`` at ``step`` and flush it.

        Args:
            metrics: Namespaced key -> scalar.
            step: The global environment-step count.

        Raises:
            ValueError: If a key is ``"step"`` or ``"time"`` (they are the
                line's own fields) or the sink is closed.
        """
        if self._file is None:
            raise ValueError(f"JsonlSink({self.path}) is closed; create a new sink to write")
        clash = self._RESERVED.intersection(metrics)
        if clash:
            raise ValueError(
                f"metric keys {sorted(clash)} are reserved by JsonlSink; "
                "use a namespaced key such as 'charts/step'"
            )
        record: dict[str, Any] = {"step": int(step), "time": time.time()}
        for key, value in metrics.items():
            record[key] = _json_scalar(value)
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardSink(_ClosingSink):
    """Writes every metric as a TensorBoard scalar (``tensorboard --logdir``).

    ``torch.utils.tensorboard`` is imported when the sink is created, not when
    this module is, because it is slow to import.

    Args:
        log_dir: Directory for the ``events.out.tfevents.*`` files.
        flush_secs: How often the writer flushes pending events to disk.

    >>> import tempfile
    >>> with TensorBoardSink(tempfile.mkdtemp()) as sink:  # doctest: +SKIP
    ...     sink.write({"charts/episode_return": 200.0}, step=10_000)
    """

    def __init__(self, log_dir: str | Path, *, flush_secs: int = 30) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer: Any = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)
        self._closed = False

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        """Add each metric as a scalar at ``step``.

        Args:
            metrics: Namespaced key -> scalar; the namespace becomes the
                TensorBoard section.
            step: The global environment-step count.
        """
        for key, value in metrics.items():
            self._writer.add_scalar(key, float(value), global_step=int(step))

    def close(self) -> None:
        """Flush pending events and close the writer."""
        if not self._closed:
            self._closed = True
            self._writer.close()


def _fmt_duration(seconds: float) -> str:
    """Format seconds as ``H:MM:SS`` (``-:--:--`` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _fmt_number(value: float | None, spec: str) -> str:
    """Format an optional metric for display; ``-`` while it is unknown."""
    return "-" if value is None else format(value, spec)


class ConsoleSink(_ClosingSink):
    """A live progress bar on a terminal, sparse one-line summaries elsewhere.

    On an interactive terminal (or Jupyter) this is a rich progress bar with
    steps done/total, env steps/s, the latest episode return, elapsed and
    remaining time, redrawn in place. When the output is not a terminal (CI
    logs, ``nohup``, pipes) a live display would spam the log, so the sink
    prints one compact line only when progress crosses another 10% or
    ``min_interval_s`` has passed since the last line, plus a final line on
    :meth:`close`.

    The throughput and return shown are the latest values of
    ``perf/env_steps_per_s`` and ``charts/episode_return`` seen in any write,
    so writes that lack them keep the previous values on screen.

    Args:
        total_steps: The run's environment-step budget (100% of the bar).
        description: Label in front of the bar, e.g. the experiment name.
        file: Where to draw; defaults to ``sys.stdout``.
        min_interval_s: Longest silence between lines when not a terminal.

    Raises:
        ValueError: If ``total_steps`` is not positive.

    >>> import io
    >>> out = io.StringIO()  # not a terminal: compact lines only
    >>> with ConsoleSink(total_steps=100, description="ppo", file=out) as console:
    ...     console.write({"charts/episode_return": 9.5, "perf/env_steps_per_s": 1e3}, step=50)
    >>> "ppo 50/100 (50%)" in out.getvalue()
    True
    """

    def __init__(
        self,
        total_steps: int,
        description: str = "train",
        *,
        file: TextIO | None = None,
        min_interval_s: float = 30.0,
    ) -> None:
        if total_steps <= 0:
            raise ValueError(f"ConsoleSink total_steps must be > 0, got {total_steps}")
        from rich.console import Console

        self.total_steps = int(total_steps)
        self.description = description
        self.min_interval_s = float(min_interval_s)
        self._console = Console(file=file if file is not None else sys.stdout)
        self._live = self._console.is_interactive or self._console.is_jupyter
        self._sps: float | None = None
        self._return: float | None = None
        self._step = 0
        self._closed = False
        self._start = time.perf_counter()
        # Non-terminal mode: throughput baseline and print throttling.
        self._first: tuple[int, float] | None = None
        self._last_line_time = self._start
        self._last_line_decile = 0
        self._last_line_step: int | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self._live:
            self._progress, self._task = self._make_progress()

    def _make_progress(self) -> tuple[Progress, TaskID]:
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[sps]} steps/s"),
            TextColumn("return {task.fields[ret]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self._console,
            # Redirecting sys.stdout would hijack prints made by other code.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        # The task exists (and its clock runs) from construction; the live
        # display starts at the first write so nothing is drawn for a sink
        # that is never used.
        task = progress.add_task(escape(self.description), total=self.total_steps, sps="-", ret="-")
        return progress, task

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        """Advance the display to ``step`` and show the latest throughput/return.

        Args:
            metrics: Namespaced key -> scalar; only ``perf/env_steps_per_s``
                and ``charts/episode_return`` are displayed.
            step: The global environment-step count (steps done so far).
        """
        if self._closed:
            return
        if STEPS_PER_S_KEY in metrics:
            self._sps = float(metrics[STEPS_PER_S_KEY])
        if EPISODE_RETURN_KEY in metrics:
            self._return = float(metrics[EPISODE_RETURN_KEY])
        self._step = int(step)
        if self._progress is not None and self._task is not None:
            if not self._progress.live.is_started:
                self._progress.start()
            self._progress.update(
                self._task,
                completed=min(self._step, self.total_steps),
                sps=_fmt_number(self._sps, ",.0f"),
                ret=_fmt_number(self._return, ".2f"),
            )
            return
        now = time.perf_counter()
        if self._first is None:
            self._first = (self._step, now)
        decile = min(10, 10 * self._step // self.total_steps)
        if decile > self._last_line_decile or now - self._last_line_time >= self.min_interval_s:
            self._print_line(now)

    def _print_line(self, now: float) -> None:
        """Print one compact progress line (non-terminal mode)."""
        elapsed = now - self._start
        eta = math.nan
        if self._first is not None:
            first_step, first_time = self._first
            if self._step > first_step and now > first_time:
                rate = (self._step - first_step) / (now - first_time)
                eta = max(0, self.total_steps - self._step) / rate
        percent = min(100, 100 * self._step // self.total_steps)
        line = (
            f"{self.description} {self._step:,}/{self.total_steps:,} ({percent}%)"
            f" | {_fmt_number(self._sps, ',.0f')} steps/s"
            f" | return {_fmt_number(self._return, '.2f')}"
            f" | {_fmt_duration(elapsed)} elapsed | eta {_fmt_duration(eta)}"
        )
        self._console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        self._last_line_time = now
        self._last_line_decile = min(10, 10 * self._step // self.total_steps)
        self._last_line_step = self._step

    def close(self) -> None:
        """Stop the live display (or print the final line); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._progress is not None:
            if self._progress.live.is_started:
                self._progress.stop()
        elif self._first is not None and self._last_line_step != self._step:
            self._print_line(time.perf_counter())


class MultiLogger(_ClosingSink):
    """The run's logger: fans every write out to several sinks.

    Args:
        sinks: The sinks to write to, in order.

    >>> import io
    >>> logger = MultiLogger([NullSink(), ConsoleSink(10, file=io.StringIO())])
    >>> logger.write({"losses/value": 0.25}, step=10)
    >>> logger.close()
    """

    def __init__(self, sinks: Iterable[MetricSink]) -> None:
        self.sinks: tuple[MetricSink, ...] = tuple(sinks)

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        """Write ``metrics`` at ``step`` to every sink.

        Args:
            metrics: Namespaced key -> scalar.
            step: The global environment-step count.
        """
        for sink in self.sinks:
            sink.write(metrics, step)

    def close(self) -> None:
        """Close every sink, even if one fails; then re-raise the first failure.

        Raises:
            Exception: The first exception a sink's ``close`` raised.
        """
        first_error: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as error:
                if first_error is None:
                    first_error = error
        if first_error is not None:
            raise first_error
