"""The canary guardrail: the confidence sequence, its coverage under continuous peeking,
its power, the latency / error / safety rules, reasons, latching and state.

The coverage and power simulations are vectorised over runs with numpy: the
time-paired differences are built step by step for all runs at once, and the
confidence sequence of every prefix comes from :func:`eb_confidence_sequence`,
which ``test_online_cs_matches_vectorised_reference`` and
``test_vectorised_simulation_agrees_with_guardrail`` tie to the online
:class:`Guardrail` exactly.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from rlops.core.errors import ConfigError
from rlops.serving.guardrail import (
    EmpiricalBernsteinCS,
    GuardedArm,
    Guardrail,
    GuardrailConfig,
    PairedDifferenceCS,
    eb_confidence_sequence,
)

FloatArray = npt.NDArray[np.float64]
Sampler = Callable[[np.random.Generator, tuple[int, int]], FloatArray]
ALPHA = 0.05


# ------------------------------------------------------------ simulation


def bernoulli(p: float) -> Sampler:
    return lambda rng, shape: (rng.random(shape) < p).astype(np.float64)


def simulate(
    rng: np.random.Generator,
    runs: int,
    steps: int,
    share: float,
    canary: Sampler,
    production: Sampler,
) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """``[R, T]`` arm of each feedback (True = canary) and its reward."""
    is_canary = rng.random((runs, steps)) < share
    values = np.where(is_canary, canary(rng, (runs, steps)), production(rng, (runs, steps)))
    return is_canary, values


def paired_differences(is_canary: npt.NDArray[np.bool_], x01: FloatArray) -> FloatArray:
    """``[R, T]``: ``(canary - production + 1) / 2`` where a pair completes at step t, else NaN.

    The pairing rule of :class:`PairedDifferenceCS`, written independently and
    vectorised over runs: a value pairs with the pending value of the other arm,
    otherwise it replaces the pending value.
    """
    runs, steps = x01.shape
    pending_arm = np.full(runs, -1)
    pending = np.zeros(runs)
    out = np.full((runs, steps), np.nan)
    for t in range(steps):
        arm = is_canary[:, t].astype(int)
        v = x01[:, t]
        form = (pending_arm >= 0) & (pending_arm != arm)
        canary = np.where(arm == 1, v, pending)
        production = np.where(arm == 1, pending, v)
        out[form, t] = ((canary - production + 1.0) / 2.0)[form]
        pending_arm = np.where(form, -1, arm)
        pending = np.where(form, 0.0, v)
    return out


def first_rollback(
    is_canary: npt.NDArray[np.bool_],
    values: FloatArray,
    *,
    alpha: float = ALPHA,
    min_pairs: int = 1,
    min_effect: float = 0.0,
    reward_range: tuple[float, float] = (0.0, 1.0),
) -> npt.NDArray[np.int64]:
    """Per run, the 1-based feedback count at the first reward rollback, or -1."""
    lo, hi = reward_range
    d = paired_differences(is_canary, (np.clip(values, lo, hi) - lo) / (hi - lo))
    missing = np.isnan(d)
    order = np.argsort(missing, axis=1, kind="stable")  # pairs first, in time order
    n_pairs = (~missing).sum(axis=1)
    compact = np.where(np.take_along_axis(missing, order, 1), 0.5, np.take_along_axis(d, order, 1))
    _, upper = eb_confidence_sequence(compact, 2 * alpha)
    k = np.arange(1, d.shape[1] + 1)
    fire = (k >= min_pairs) & (k <= n_pairs[:, None]) & ((2 * upper - 1) * (hi - lo) < -min_effect)
    fired = fire.any(axis=1)
    step = np.take_along_axis(order, fire.argmax(axis=1)[:, None], 1)[:, 0] + 1
    return np.where(fired, step, -1)


# ------------------------------------------------------ the CS itself


def test_cs_known_answer_first_steps() -> None:
    # Waudby-Smith & Ramdas (2023) PrPl-EB, restated by hand for x = (1, 0, 1), alpha = 0.1.
    a, x = 0.1, [1.0, 0.0, 1.0]
    log_term = math.log(2 / a)
    mu_prev, s2_prev = 0.5, 0.25
    lam_sum = lam_x = pen = 0.0
    x_sum = sq_sum = 0.0
    for t, xt in enumerate(x, start=1):
        lam = min(math.sqrt(2 * log_term / (s2_prev * t * math.log(1 + t))), 0.5)
        pen += 4 * (xt - mu_prev) ** 2 * (-math.log(1 - lam) - lam) / 4
        lam_sum, lam_x = lam_sum + lam, lam_x + lam * xt
        x_sum += xt
        mu_t = (0.5 + x_sum) / (t + 1)
        sq_sum += (xt - mu_t) ** 2
        mu_prev, s2_prev = mu_t, (0.25 + sq_sum) / (t + 1)
    center, margin = lam_x / lam_sum, (log_term + pen) / lam_sum
    assert lam_sum == pytest.approx(1.5)  # every bet capped at 1/2 this early
    lower, upper = eb_confidence_sequence(np.array(x), a)
    assert lower[-1] == max(0.0, center - margin) == 0.0
    assert upper[-1] == min(1.0, center + margin) == 1.0
    # Much later the interval is tight and centred on the lambda-weighted mean.
    lo, hi = eb_confidence_sequence(np.tile([1.0, 0.0, 1.0, 1.0], 2500), a)
    assert lo[-1] < 0.75 < hi[-1]
    assert hi[-1] - lo[-1] < 0.06


def test_online_cs_matches_vectorised_reference() -> None:
    rng = np.random.default_rng(0)
    for x in (rng.random(800), (rng.random(800) < 0.1).astype(float), np.ones(50)):
        lower, upper = eb_confidence_sequence(x, 0.05)
        cs = EmpiricalBernsteinCS(0.05)
        for t, v in enumerate(x):
            cs.update(float(v))
            assert cs.lower == pytest.approx(lower[t], abs=1e-12)
            assert cs.upper == pytest.approx(upper[t], abs=1e-12)
        assert cs.mean == pytest.approx(x.mean())


def test_single_stream_cs_covers_the_mean_at_all_times() -> None:
    rng = np.random.default_rng(1)
    for p in (0.5, 0.1):
        x = (rng.random((500, 2000)) < p).astype(float)
        lower, upper = eb_confidence_sequence(x, ALPHA)
        ever_missed = ((lower > p) | (upper < p)).any(axis=1).mean()
        assert ever_missed <= ALPHA


def test_cs_rejects_data_outside_unit_interval() -> None:
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        eb_confidence_sequence([0.5, 1.5], 0.05)
    with pytest.raises(ConfigError, match="alpha"):
        EmpiricalBernsteinCS(1.0)


def test_paired_difference_keeps_only_latest_unpaired_value() -> None:
    d = PairedDifferenceCS(alpha=0.05)
    d.observe("production", 0.0)
    d.observe("production", 1.0)  # replaces the pending 0.0
    d.observe("canary", 1.0)  # pairs with 1.0: difference 0 -> (0 + 1) / 2
    assert d.n == 1 and d.pending_arm is None
    assert d.cs.x_sum == 0.5
    d.observe("canary", 0.0)
    assert d.n == 1 and d.pending_arm == "canary"


# ------------------------------------------- (a) coverage under the null


NULL_SCENARIOS: dict[str, tuple[float, Sampler, Sampler, float]] = {
    # name: (canary share, canary rewards, production rewards, min_effect)
    "same Bernoulli(0.5), 50/50": (0.5, bernoulli(0.5), bernoulli(0.5), 0.0),
    "same Bernoulli(0.5), 10% canary": (0.1, bernoulli(0.5), bernoulli(0.5), 0.0),
    "same mean, different shapes": (0.5, bernoulli(0.5), lambda r, s: r.random(s), 0.0),
    "common drift": (
        0.3,
        lambda r, s: (r.random(s) < 0.5 + 0.4 * np.sin(np.linspace(0, 6 * np.pi, s[1]))).astype(
            float
        ),
        lambda r, s: (r.random(s) < 0.5 + 0.4 * np.sin(np.linspace(0, 6 * np.pi, s[1]))).astype(
            float
        ),
        0.0,
    ),
    "worse by exactly min_effect": (0.5, bernoulli(0.45), bernoulli(0.55), 0.1),
}


@pytest.mark.parametrize("scenario", list(NULL_SCENARIOS))
def test_no_false_rollback_under_continuous_peeking(scenario: str) -> None:
    """Checking after every feedback (from the first pair) keeps false rollbacks <= alpha."""
    share, canary, production, min_effect = NULL_SCENARIOS[scenario]
    rng = np.random.default_rng(list(NULL_SCENARIOS).index(scenario))
    runs = 400
    is_canary, values = simulate(rng, runs, 2000, share, canary, production)
    rate = (first_rollback(is_canary, values, min_effect=min_effect) > 0).mean()
    print(f"false-rollback rate [{scenario}]: {rate:.4f} over {runs} runs x 2000 feedbacks")
    assert rate <= ALPHA + 0.02  # 0.02 ~ 1.8 binomial sd at alpha over 400 runs


def test_naive_peeking_fails_the_same_check() -> None:
    """The simulation can see invalidity: a z-test peeked after every pair fails it."""
    rng = np.random.default_rng(7)
    is_canary, values = simulate(rng, 400, 2000, 0.5, bernoulli(0.5), bernoulli(0.5))
    d = paired_differences(is_canary, values)
    fired = np.zeros(400, dtype=bool)
    for r in range(400):
        pairs = d[r][~np.isnan(d[r])]
        n = np.arange(1, pairs.size + 1)
        mean = np.cumsum(pairs) / n
        var = np.maximum(np.cumsum(pairs**2) / n - mean**2, 1e-12)
        z = (mean - 0.5) / np.sqrt(var / n)
        fired[r] = bool(np.any((n >= 10) & (z < -1.645)))
    assert fired.mean() > 3 * ALPHA


# ------------------------------------------------------------- (b) power


@pytest.mark.parametrize(
    ("share", "canary_p", "max_median"),
    [(0.5, 0.4, 2500), (0.1, 0.3, 2500)],
)
def test_real_regression_is_detected(share: float, canary_p: float, max_median: int) -> None:
    rng = np.random.default_rng(3)
    is_canary, values = simulate(rng, 100, 6000, share, bernoulli(canary_p), bernoulli(0.5))
    first = first_rollback(is_canary, values, min_pairs=100)
    detected = first > 0
    median = float(np.median(first[detected]))
    print(
        f"detection [share {share}, canary {canary_p} vs production 0.5]: "
        f"{detected.mean():.2f} of runs within 6000 feedbacks, median {median:.0f}, "
        f"90th pct {np.percentile(first[detected], 90):.0f}"
    )
    assert detected.mean() >= 0.95
    assert median <= max_median


def test_vectorised_simulation_agrees_with_guardrail() -> None:
    """The online Guardrail, checked after every feedback, rolls back at the simulated step."""
    rng = np.random.default_rng(11)
    cfg = GuardrailConfig(reward_range=(-1.0, 2.0), min_samples=20, min_effect=0.05)
    is_canary, values = simulate(
        rng,
        8,
        1500,
        0.3,
        lambda r, s: r.normal(0.1, 1.0, s),  # clipped into [-1, 2] on both paths
        lambda r, s: r.normal(0.6, 1.0, s),
    )
    expected = first_rollback(
        is_canary, values, min_pairs=20, min_effect=0.05, reward_range=(-1.0, 2.0)
    )
    assert (expected > 0).sum() >= 4  # the comparison is not vacuous
    for r in range(values.shape[0]):
        guard = Guardrail(cfg)
        got = -1
        for t in range(values.shape[1]):
            guard.observe_reward("canary" if is_canary[r, t] else "production", values[r, t])
            if guard.check().rollback:
                got = t + 1
                break
        assert got == expected[r], f"run {r}"


def test_guardrail_end_to_end_detects_and_explains() -> None:
    rng = np.random.default_rng(5)
    guard = Guardrail(GuardrailConfig(min_samples=100))
    detected_at = 0
    for t in range(1, 20_001):
        arm: GuardedArm = "canary" if rng.random() < 0.2 else "production"
        p = 0.3 if arm == "canary" else 0.5
        guard.observe_reward(arm, float(rng.random() < p))
        verdict = guard.check()
        if verdict.rollback:
            detected_at = t
            break
    assert verdict.rollback, "a 0.2 drop at a 20% canary must be caught within 20000 feedbacks"
    assert detected_at < 8000
    match = re.match(
        r"reward: canary - production upper bound (-\d\.\d{4}) < -0\.0000 \(canary mean "
        r"(\d\.\d{4}) over (\d+), production mean (\d\.\d{4}) over (\d+), (\d+) pairs, "
        r"confidence sequence alpha=0\.05\)",
        verdict.reason,
    )
    assert match, verdict.reason
    assert float(match.group(1)) == pytest.approx(
        verdict.stats["guardrail/reward_diff_upper"], abs=1e-4
    )
    assert float(match.group(2)) == pytest.approx(
        verdict.stats["guardrail/reward_mean_canary"], abs=1e-4
    )
    assert int(match.group(3)) + int(match.group(5)) == detected_at


# ----------------------------------------- (c) rules on hand cases, (d) reasons


def feed_requests(
    guard: Guardrail,
    arm: str,
    n: int,
    latency: float = 10.0,
    error_every: int = 0,
    triggers: int = 0,
) -> None:
    for i in range(n):
        error = bool(error_every) and i % error_every == 0
        guard.observe_request(arm, latency_ms=latency, error=error, safety_triggers=triggers)  # type: ignore[arg-type]


def interleave(
    guard: Guardrail, n: int, canary: dict[str, float], production: dict[str, float]
) -> None:
    for i in range(n):
        for arm, spec in (("canary", canary), ("production", production)):
            every = int(spec.get("error_every", 0))
            guard.observe_request(
                arm,  # type: ignore[arg-type]
                latency_ms=spec.get("latency", 10.0),
                error=bool(every) and i % every == 0,
                safety_triggers=int(spec.get("triggers", 0)),
            )


def test_latency_rule_fires_only_past_factor_and_min_samples() -> None:
    cfg = GuardrailConfig(min_latency_samples=200, latency_factor=1.5, min_requests=10**6)
    guard = Guardrail(cfg)
    interleave(guard, 199, {"latency": 100.0}, {"latency": 50.0})
    verdict = guard.check()
    assert not verdict.rollback
    assert "latency 199/200 canary, 199/200 production requests" in verdict.reason
    interleave(guard, 1, {"latency": 100.0}, {"latency": 50.0})
    verdict = guard.check()
    assert verdict.rollback
    assert verdict.reason == (
        "latency: canary p99 100.0 ms > 1.5 x production p99 50.0 ms = 75.0 ms "
        "(last 200 canary, 200 production requests)"
    )
    quiet = Guardrail(cfg)
    interleave(quiet, 500, {"latency": 70.0}, {"latency": 50.0})  # 70 < 75
    assert not quiet.check().rollback


def test_latency_uses_only_the_recent_window() -> None:
    cfg = GuardrailConfig(min_latency_samples=100, latency_window=100, min_requests=10**6)
    guard = Guardrail(cfg)
    interleave(guard, 100, {"latency": 900.0}, {"latency": 50.0})  # a cold start...
    interleave(guard, 100, {"latency": 55.0}, {"latency": 50.0})  # ...that has passed
    verdict = guard.check()
    assert not verdict.rollback
    assert verdict.stats["guardrail/latency_p99_ms_canary"] == pytest.approx(55.0)


def test_error_rule_fires_on_a_clear_increase_only() -> None:
    cfg = GuardrailConfig(min_requests=100, max_error_rate_increase=0.01)
    bad = Guardrail(cfg)
    interleave(bad, 99, {"error_every": 5}, {})
    assert not bad.check().rollback  # 99 pairs < min_requests
    interleave(bad, 400, {"error_every": 5}, {})
    verdict = bad.check()
    assert verdict.rollback
    assert re.fullmatch(
        r"error_rate: canary - production lower bound 0\.\d{4} > 0\.0100 allowed \(canary "
        r"0\.2\d{3} over 499 requests, production 0\.0000 over 499, 499 pairs, "
        r"confidence sequence alpha=0\.05\)",
        verdict.reason,
    ), verdict.reason
    same = Guardrail(cfg)
    interleave(same, 3000, {"error_every": 50}, {"error_every": 50})
    assert not same.check().rollback


def test_safety_rule_threshold_and_minimum_count() -> None:
    cfg = GuardrailConfig(min_requests=100, max_safety_rate=0.05)
    guard = Guardrail(cfg)
    feed_requests(guard, "canary", 99, triggers=1)
    verdict = guard.check()
    assert not verdict.rollback and "safety 99/100 canary requests" in verdict.reason
    feed_requests(guard, "canary", 1, triggers=1)
    verdict = guard.check()
    assert verdict.rollback
    assert verdict.reason == (
        "safety: canary triggers per request 1.0000 > 0.0500 allowed "
        "(100 triggers over 100 requests, production n/a)"
    )
    quiet = Guardrail(cfg)
    for i in range(1000):
        quiet.observe_request("canary", 5.0, False, safety_triggers=int(i % 25 == 0))  # 0.04
    assert not quiet.check().rollback


def test_reward_rule_waits_for_min_samples() -> None:
    guard = Guardrail(GuardrailConfig(min_samples=100))
    for _ in range(99):
        guard.observe_reward("canary", 0.0)
        guard.observe_reward("production", 1.0)
    verdict = guard.check()
    assert not verdict.rollback
    assert "reward 99/100 pairs" in verdict.reason
    guard.observe_reward("canary", 0.0)
    guard.observe_reward("production", 1.0)
    assert guard.check().rollback


def test_every_tripped_rule_is_named_and_the_verdict_latches() -> None:
    cfg = GuardrailConfig(min_requests=10, min_latency_samples=10, min_samples=10)
    guard = Guardrail(cfg)
    interleave(guard, 50, {"latency": 500.0, "triggers": 1, "error_every": 1}, {"latency": 5.0})
    for _ in range(50):
        guard.observe_reward("canary", 0.0)
        guard.observe_reward("production", 1.0)
    verdict = guard.check()
    assert verdict.rollback
    assert [part.split(":")[0] for part in verdict.reason.split("; ")] == [
        "error_rate",
        "safety",
        "latency",
        "reward",
    ]
    # Good data afterwards does not undo the first crossing...
    interleave(guard, 5000, {"latency": 5.0}, {"latency": 5.0})
    assert guard.check() == (True, verdict.reason, guard.check().stats)
    # ...a reset (new canary) does.
    guard.reset()
    assert not guard.check().rollback


def test_ok_reason_and_namespaced_stats() -> None:
    guard = Guardrail()
    verdict = guard.check()
    assert not verdict.rollback and verdict.reason.startswith("ok (waiting for data: ")
    guard.observe_reward("canary", 5.0)  # clipped into [0, 1]
    guard.observe_request("production", 3.0, error=True, safety_triggers=2)
    stats = guard.check().stats
    assert all(key.startswith("guardrail/") for key in stats)
    assert stats["guardrail/rewards_clipped_canary"] == 1.0
    assert stats["guardrail/reward_mean_canary"] == 1.0
    assert stats["guardrail/error_rate_production"] == 1.0
    assert stats["guardrail/safety_rate_production"] == 2.0
    json.dumps(stats, allow_nan=False)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda g: g.observe_reward("shadow", 1.0), "arm: 'shadow'"),
        (lambda g: g.observe_reward("canary", float("nan")), "reward: must be finite"),
        (lambda g: g.observe_request("canary", -1.0, False), "latency_ms"),
        (lambda g: g.observe_request("canary", 1.0, False, -1), "safety_triggers"),
        (lambda g: g.observe_request("canary", 1.0, False, 1.5), "safety_triggers"),
    ],
)
def test_bad_observations_are_refused(call: Callable[[Guardrail], None], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call(Guardrail())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.5}, "guardrail.alpha"),
        ({"reward_range": (1.0, 0.0)}, "guardrail.reward_range"),
        ({"min_samples": 0}, "guardrail.min_samples"),
        ({"latency_factor": 0.9}, "guardrail.latency_factor"),
        ({"latency_window": 10, "min_latency_samples": 20}, "guardrail.latency_window"),
    ],
)
def test_config_is_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GuardrailConfig(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- state


def test_state_round_trip_continues_identically() -> None:
    cfg = GuardrailConfig(
        min_samples=30, latency_window=50, min_latency_samples=20, min_requests=20
    )
    rng = np.random.default_rng(2)
    a = Guardrail(cfg)

    def step(g: Guardrail, i: int, r: float, lat: float) -> None:
        arm = "canary" if i % 3 == 0 else "production"
        g.observe_reward(arm, r)  # type: ignore[arg-type]
        g.observe_request(arm, lat, error=r < 0.05, safety_triggers=int(r > 0.97))  # type: ignore[arg-type]

    draws = rng.random((400, 2))
    for i in range(201):  # odd count: a reward is left pending, the latency ring has wrapped
        step(a, i, draws[i, 0], 100 * draws[i, 1])
    state = json.loads(json.dumps(a.state_dict(), allow_nan=False))
    b = Guardrail(cfg)
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    assert b.check() == a.check()
    for i in range(201, 400):
        step(a, i, draws[i, 0], 100 * draws[i, 1])
        step(b, i, draws[i, 0], 100 * draws[i, 1])
        assert b.check() == a.check()


def test_state_keeps_the_latch_and_refuses_another_config() -> None:
    guard = Guardrail(GuardrailConfig(min_samples=10))
    for _ in range(50):
        guard.observe_reward("canary", 0.0)
        guard.observe_reward("production", 1.0)
    reason = guard.check().reason
    restored = Guardrail(GuardrailConfig(min_samples=10))
    restored.load_state_dict(guard.state_dict())
    assert restored.check()[:2] == (True, reason)
    with pytest.raises(ConfigError, match="call reset"):
        Guardrail(GuardrailConfig(alpha=0.01)).load_state_dict(guard.state_dict())
    with pytest.raises(ConfigError, match="unknown key"):
        Guardrail(GuardrailConfig(min_samples=10)).load_state_dict({**guard.state_dict(), "x": 1})
    broken = guard.state_dict()
    broken["reward_diff"]["cs"]["n"] = -1
    with pytest.raises(ConfigError, match="n must be finite and >= 0"):
        Guardrail(GuardrailConfig(min_samples=10)).load_state_dict(broken)


def test_concurrent_observers_lose_nothing() -> None:
    guard = Guardrail()

    def worker(arm: str) -> None:
        for _ in range(2000):
            guard.observe_request(arm, 1.0, error=False)  # type: ignore[arg-type]
            guard.observe_reward(arm, 0.5)  # type: ignore[arg-type]
            guard.check()

    threads = [threading.Thread(target=worker, args=(arm,)) for arm in ("canary", "production") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = guard.check().stats
    assert stats["guardrail/requests_canary"] == stats["guardrail/requests_production"] == 4000
    assert stats["guardrail/rewards_canary"] == 4000
