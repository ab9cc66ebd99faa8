"""Pieces shared by the ``*_vs_sb3.py`` benchmarks (not a test, not part of rlops).

* :func:`sb3_eval_clock`: an SB3 callback that keeps a training clock which
  pauses while it evaluates, at the same points rlops' loop evaluates;
* :func:`phase_seconds`: rlops' ``perf/time_<phase>_s`` totals from a run dir;
* :func:`median` / :func:`rounded`: None-tolerant summary helpers for the JSON line.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any


def sb3_eval_clock(eval_env: Any, every: int, episodes: int) -> Any:
    """An SB3 ``BaseCallback`` timing training with evaluation time excluded.

    It evaluates ``episodes`` deterministic episodes at the first rollout start
    at or after each multiple of ``every`` env steps (right after the update
    that crossed it, where rlops evaluates) and once when training ends.
    Results: ``.train_time_s`` and ``.evals`` as
    ``(env_steps, train_time_s, mean_return)``.
    """
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    class EvalClock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = every
            self.started = 0.0
            self.eval_time = 0.0
            self.train_time_s = 0.0
            self.evals: list[tuple[int, float, float]] = []

        def _on_training_start(self) -> None:
            self.started = time.perf_counter()

        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            if self.num_timesteps >= self.next_eval:
                self._evaluate()
                self.next_eval = (self.num_timesteps // every + 1) * every

        def _on_training_end(self) -> None:
            self._evaluate()

        def _evaluate(self) -> None:
            paused = time.perf_counter()
            self.train_time_s = paused - self.started - self.eval_time
            returns, _ = evaluate_policy(
                self.model,
                eval_env,
                n_eval_episodes=episodes,
                deterministic=True,
                return_episode_rewards=True,
            )
            mean_return = float(statistics.fmean(returns))
            self.evals.append((self.num_timesteps, self.train_time_s, mean_return))
            self.eval_time += time.perf_counter() - paused

    return EvalClock()


def phase_seconds(metrics_path: Path) -> dict[str, float]:
    """Sum ``perf/time_<phase>_s`` over a run's ``metrics.jsonl`` (one window per line)."""
    totals: dict[str, float] = {}
    if not metrics_path.is_file():
        return totals
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        for key, value in row.items():
            if key.startswith("perf/time_") and key.endswith("_s") and value is not None:
                phase = key[len("perf/time_") : -len("_s")]
                totals[phase] = totals.get(phase, 0.0) + float(value)
    return totals


def median(values: list[float]) -> float | None:
    """Median, or None for no values."""
    return statistics.median(values) if values else None


def rounded(value: float | None, digits: int) -> float | None:
    """``round`` that passes None through."""
    return None if value is None else round(value, digits)
