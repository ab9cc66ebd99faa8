"""Metric sinks and phase timers: what lands on disk / screen, and the timing accounting."""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from rlops.observability import (
    ConsoleSink,
    JsonlSink,
    MetricSink,
    MultiLogger,
    NullSink,
    PhaseTimer,
    TensorBoardSink,
)


class RecordingSink:
    """A MetricSink that remembers every call."""

    def __init__(self, fail_on_close: bool = False) -> None:
        self.writes: list[tuple[dict[str, float], int]] = []
        self.closed = 0
        self.fail_on_close = fail_on_close

    def write(self, metrics: Mapping[str, float], step: int) -> None:
        self.writes.append((dict(metrics), step))

    def close(self) -> None:
        self.closed += 1
        if self.fail_on_close:
            raise OSError("disk gone")


class FakeTerminal(io.StringIO):
    """A text stream that claims to be a TTY, so rich draws a live display."""

    def isatty(self) -> bool:
        return True


# --- JsonlSink ------------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_writes_one_flushed_object_per_write(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "metrics.jsonl"  # parent is created
    sink = JsonlSink(path)
    before = time.time()
    sink.write({"charts/episode_return": 12.5, "replay/size": 3}, step=100)
    # Flushed on every write: visible to another reader before close.
    assert read_lines(path) == [
        {
            "step": 100,
            "time": pytest.approx(before, abs=5),
            "charts/episode_return": 12.5,
            "replay/size": 3,
        }
    ]
    sink.write({"losses/policy": 0.25}, step=200)
    lines = read_lines(path)
    assert [line["step"] for line in lines] == [100, 200]
    assert lines[1]["losses/policy"] == 0.25
    assert isinstance(lines[0]["replay/size"], int)
    sink.close()
    sink.close()  # idempotent


def test_jsonl_non_finite_values_are_null_and_lines_are_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with JsonlSink(path) as sink:
        sink.write({"losses/a": math.nan, "losses/b": math.inf, "losses/c": -math.inf}, step=1)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    line = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert line["losses/a"] is None and line["losses/b"] is None and line["losses/c"] is None


def test_jsonl_appends_on_reopen_and_rejects_reserved_keys(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with JsonlSink(path) as sink:
        sink.write({"charts/x": 1.0}, step=1)
    with JsonlSink(path) as sink:  # a resumed run continues the file
        sink.write({"charts/x": 2.0}, step=2)
        with pytest.raises(ValueError, match="reserved"):
            sink.write({"step": 3.0}, step=3)
    assert [line["charts/x"] for line in read_lines(path)] == [1.0, 2.0]
    with pytest.raises(ValueError, match="closed"):
        sink.write({"charts/x": 3.0}, step=3)


def test_jsonl_accepts_numpy_scalars(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    path = tmp_path / "metrics.jsonl"
    with JsonlSink(path) as sink:
        sink.write({"charts/r": np.float32(1.5), "perf/n": np.int64(7)}, step=1)
    line = read_lines(path)[0]
    assert line["charts/r"] == 1.5 and line["perf/n"] == 7.0


# --- MultiLogger / NullSink -----------------------------------------------------------------


def test_multilogger_fans_out_to_every_sink_in_order() -> None:
    first, second = RecordingSink(), RecordingSink()
    with MultiLogger([first, NullSink(), second]) as logger:
        logger.write({"losses/value": 0.5}, step=10)
        logger.write({"losses/value": 0.4}, step=20)
    expected = [({"losses/value": 0.5}, 10), ({"losses/value": 0.4}, 20)]
    assert first.writes == expected and second.writes == expected
    assert first.closed == 1 and second.closed == 1


def test_multilogger_closes_every_sink_even_if_one_fails() -> None:
    broken, healthy = RecordingSink(fail_on_close=True), RecordingSink()
    logger = MultiLogger([broken, healthy])
    with pytest.raises(OSError, match="disk gone"):
        logger.close()
    assert healthy.closed == 1


def test_every_sink_satisfies_the_protocol(tmp_path: Path) -> None:
    sinks: list[MetricSink] = [
        NullSink(),
        JsonlSink(tmp_path / "m.jsonl"),
        ConsoleSink(10, file=io.StringIO()),
        MultiLogger([]),
        RecordingSink(),
    ]
    for sink in sinks:
        assert isinstance(sink, MetricSink)
        sink.close()


# --- TensorBoardSink ------------------------------------------------------------------------


def test_tensorboard_sink_writes_an_events_file(tmp_path: Path) -> None:
    with TensorBoardSink(tmp_path / "tb") as sink:
        sink.write({"charts/episode_return": 1.0, "losses/policy": 0.5}, step=1)
        sink.write({"charts/episode_return": 3.0}, step=2)
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    returns = accumulator.Scalars("charts/episode_return")
    assert [(e.step, e.value) for e in returns] == [(1, 1.0), (2, 3.0)]
    assert [e.value for e in accumulator.Scalars("losses/policy")] == [0.5]


# --- ConsoleSink ----------------------------------------------------------------------------


def test_console_sink_without_terminal_prints_sparse_compact_lines() -> None:
    out = io.StringIO()
    sink = ConsoleSink(1000, "ppo-cartpole", file=out, min_interval_s=3600)
    for step in range(10, 1001, 10):  # 100 writes
        sink.write({"perf/env_steps_per_s": 2500.0, "charts/episode_return": step / 10}, step=step)
    sink.close()
    sink.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # one per 10% of progress, not one per write
    assert lines[-1].startswith("ppo-cartpole 1,000/1,000 (100%)")
    assert "2,500 steps/s" in lines[-1] and "return 100.00" in lines[-1]
    assert "\x1b[" not in out.getvalue()  # no escape codes in a log file


def test_console_sink_time_throttle_and_final_line_on_close() -> None:
    out = io.StringIO()
    sink = ConsoleSink(10**9, file=out, min_interval_s=0.0)
    sink.write({}, step=1)
    sink.write({"charts/episode_return": 5.0}, step=2)  # keeps showing the last values
    assert len(out.getvalue().splitlines()) == 2
    assert "return -" in out.getvalue().splitlines()[0]

    out = io.StringIO()
    sink = ConsoleSink(1000, file=out, min_interval_s=3600)
    sink.write({"perf/env_steps_per_s": 10.0}, step=5)  # below 10%: silent
    assert out.getvalue() == ""
    sink.close()  # but the final state is printed once
    (line,) = out.getvalue().splitlines()
    assert line.startswith("train 5/1,000 (0%) | 10 steps/s | return -")
    sink.write({}, step=6)  # writes after close are ignored
    assert len(out.getvalue().splitlines()) == 1


def test_console_sink_live_display_on_a_terminal_stops_on_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    threads_before = threading.active_count()
    out = FakeTerminal()
    with ConsoleSink(100, "live", file=out) as sink:
        sink.write({"perf/env_steps_per_s": 1234.0, "charts/episode_return": 7.0}, step=40)
        sink.write({"perf/env_steps_per_s": 2345.0}, step=100)
    text = out.getvalue()
    assert "100/100" in text and "2,345 steps/s" in text and "return 7.00" in text
    # close() told rich's refresh thread to stop; it exits within moments.
    deadline = time.monotonic() + 2.0
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == threads_before


def test_console_sink_rejects_a_non_positive_budget() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        ConsoleSink(0, file=io.StringIO())


# --- PhaseTimer -----------------------------------------------------------------------------


def test_phase_timer_accounts_known_sleeps() -> None:
    timer = PhaseTimer()
    with timer.phase("env"):
        time.sleep(0.05)
    timer.start("learn")
    time.sleep(0.02)
    timer.stop("learn")
    with timer.phase("env"):
        time.sleep(0.03)
    report = timer.report(steps=800)

    assert report["perf/time_env_s"] == pytest.approx(0.08, abs=0.03)
    assert report["perf/time_learn_s"] == pytest.approx(0.02, abs=0.03)
    assert report["perf/time_env_s"] >= 0.08 and report["perf/time_learn_s"] >= 0.02
    fractions = report["perf/frac_env"] + report["perf/frac_learn"]
    assert 0.8 < fractions <= 1.0
    window = report["perf/time_env_s"] / report["perf/frac_env"]
    assert report["perf/env_steps_per_s"] == pytest.approx(800 / window, rel=1e-6)


def test_phase_timer_report_resets_the_window() -> None:
    timer = PhaseTimer(steps=1000)  # resumed run: 1000 steps already done
    with timer.phase("env"):
        time.sleep(0.01)
    first = timer.report(steps=1100)
    time.sleep(0.02)
    second = timer.report(steps=1300)
    # An idle phase is still reported, as zero, so curves stay continuous.
    assert second["perf/time_env_s"] == 0.0 and second["perf/frac_env"] == 0.0
    # Throughput counts only the steps of each window.
    assert first["perf/env_steps_per_s"] == pytest.approx(100 / 0.01, rel=0.8)
    assert second["perf/env_steps_per_s"] == pytest.approx(200 / 0.02, rel=0.5)
    assert second["perf/env_steps_per_s"] < 200 / 0.02


def test_phase_timer_nested_phases_and_reuse() -> None:
    timer = PhaseTimer()
    env = timer.phase("env")
    assert timer.phase("env") is env  # one object per name, reused
    with timer.phase("learn"), timer.phase("forward"):
        time.sleep(0.01)
    report = timer.report(steps=0)
    assert report["perf/time_learn_s"] >= report["perf/time_forward_s"] >= 0.01
    assert report["perf/time_env_s"] == 0.0
    assert report["perf/env_steps_per_s"] == 0.0


def test_phase_timer_misuse_fails_clearly() -> None:
    timer = PhaseTimer()
    with pytest.raises(RuntimeError, match="without a matching start"):
        timer.stop("env")
    with pytest.raises(ValueError, match="phase name"):
        timer.phase("perf/env")
    with pytest.raises(ValueError, match="phase name"):
        timer.phase("")


def test_phase_timer_overhead_is_small() -> None:
    timer = PhaseTimer()
    phase = timer.phase
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        with phase("env"):
            pass
    per_use = (time.perf_counter() - start) / n
    assert per_use < 20e-6  # a few hundred ns in practice; generous for slow CI
