"""The built-in evaluation suites of the business simulators (registered on import).

Every scenario fixes the simulator's parameters and seed; none is used in
training (the shipped configs train on randomized parameters drawn from
ranges, with other seeds). ``*-holdout`` suites hold typical settings,
``*-edge`` suites stress cases (demand shocks, scarce stock, all-sensational
catalogues, load spikes). ``rlops suites`` lists them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlops.envs import VectorEnv
from rlops.evaluation.suites import Act, Scenario, Suite, register_suite

# -- pricing ----------------------------------------------------------------------------
PRICING = "rlops/Pricing-v0"

# Drawn once (seed 20240611) from the training ranges arrival_rate U(1.5, 3),
# wtp_mean U(6, 12); never used as training parameters.
_PRICING_HOLDOUT = (
    (1.784, 12.0),
    (2.380, 11.0),
    (1.899, 6.68),
    (2.679, 9.12),
    (2.904, 9.87),
)


def _pricing_params(scenario: Scenario) -> Any:
    from rlops.envs.business.pricing import PricingParams

    return PricingParams(**scenario.env_kwargs)


def _pricing_table(rule_name: str) -> Any:
    def factory(scenario: Scenario, env: VectorEnv) -> Act:
        from rlops.envs.business import pricing

        rule = getattr(pricing, rule_name)
        table = pricing.TablePolicy(_pricing_params(scenario), rule)
        return lambda obs, mask=None: table(obs)

    return factory


def _pricing_optimum(scenario: Scenario) -> float:
    from rlops.envs.business.pricing import optimal_value

    return float(optimal_value(_pricing_params(scenario)))


_PRICING_BASELINES = {
    "best_fixed_price": _pricing_table("best_fixed_policy"),
    "myopic": _pricing_table("myopic_policy"),
}


def pricing_holdout() -> Suite:
    """Five demand settings from the training ranges, never trained on."""
    scenarios = tuple(
        Scenario(
            name=f"lambda{rate:g}-wtp{wtp:g}",
            env_id=PRICING,
            env_kwargs={"arrival_rate": rate, "wtp_mean": wtp},
            seed=10_000 + i,
            episodes=400,
            description=f"{rate:g} customers/period, mean willingness to pay {wtp:g}",
        )
        for i, (rate, wtp) in enumerate(_PRICING_HOLDOUT)
    )
    return Suite(
        name="pricing-holdout",
        description="Dynamic pricing of 10 perishable units over 20 periods: held-out demand "
        "settings, against the best fixed price, myopic pricing and the DP optimum.",
        scenarios=scenarios,
        baselines=_PRICING_BASELINES,
        optimum=_pricing_optimum,
        num_envs=20,
    )


def pricing_edge() -> Suite:
    """Demand shocks, scarce and abundant stock, a salvage value, a cheap market."""
    cases = [
        ("demand-shock-x3", {"arrival_rate": 6.0, "wtp_mean": 9.0}, "3x the usual customers"),
        ("demand-drought", {"arrival_rate": 0.5, "wtp_mean": 9.0}, "a quarter of the customers"),
        (
            "one-unit-left",
            {"inventory": 1, "arrival_rate": 2.0, "wtp_mean": 9.0},
            "a single unit to sell",
        ),
        (
            "overstock",
            {"inventory": 40, "arrival_rate": 2.0, "wtp_mean": 9.0},
            "4x the usual stock",
        ),
        (
            "bargain-hunters",
            {"arrival_rate": 2.5, "wtp_mean": 4.0},
            "willingness to pay below the training range",
        ),
        (
            "salvage",
            {"arrival_rate": 2.0, "wtp_mean": 9.0, "salvage": 5.0},
            "leftover units sell at 5 at the end",
        ),
    ]
    scenarios = tuple(
        Scenario(
            name,
            PRICING,
            kwargs,
            seed=20_000 + i,
            episodes=400,
            kind="edge",
            description=description,
        )
        for i, (name, kwargs, description) in enumerate(cases)
    )
    return Suite(
        name="pricing-edge",
        description="Dynamic pricing edge cases: demand shocks, scarce or excess stock, "
        "a salvage value and customers outside the training range.",
        scenarios=scenarios,
        baselines=_PRICING_BASELINES,
        optimum=_pricing_optimum,
        num_envs=20,
    )


# -- content feed -----------------------------------------------------------------------
FEED = "rlops/ContentFeed-v0"


def _feed_baseline(name: str) -> Any:
    def factory(scenario: Scenario, env: VectorEnv) -> Act:
        from rlops.envs.business import content_feed as cf

        if name == "popularity":
            params = cf.ContentFeedParams(**scenario.env_kwargs)
            act = cf.popularity_policy(cf.Catalogue.from_params(params))
        else:
            act = cf.random_policy(seed=scenario.seed)

        def call(obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
            assert mask is not None
            return np.asarray(act(obs, mask))

        return call

    return factory


_FEED_BASELINES = {"popularity": _feed_baseline("popularity"), "random": _feed_baseline("random")}
_FEED_INFO = ("constraint_violations", "sensational_shown")


def content_feed_holdout() -> Suite:
    """Fresh user sessions (unseen seeds) with the default catalogue."""
    scenarios = tuple(
        Scenario(
            f"sessions-{i}",
            FEED,
            {},
            seed=30_000 + 97 * i,
            episodes=300,
            description="new users, default catalogue",
        )
        for i in range(3)
    )
    return Suite(
        name="content-feed-holdout",
        description="Session-based content selection: long-run clicks per session on new "
        "users, sensational exposure and constraint violations, against popularity and random.",
        scenarios=scenarios,
        baselines=_FEED_BASELINES,
        info_keys=_FEED_INFO,
        num_envs=20,
    )


def content_feed_edge() -> Suite:
    """Scarce stock, an all-but-sensational slate, fatigue-prone users, no sensational allowed."""
    cases = [
        ("scarce-stock", {"unavailable_prob": 0.7}, "70% of items out of stock per request"),
        (
            "sensational-heavy-slate",
            {"sensational_boost": 0.6},
            "sensational items twice as tempting",
        ),
        ("fatigue-prone", {"fatigue_leave_prob": 0.16}, "users leave twice as fast when tired"),
        ("no-sensational", {"sensational_cap": 0.0}, "sensational items never allowed"),
    ]
    scenarios = tuple(
        Scenario(
            name, FEED, kwargs, seed=40_000 + i, episodes=300, kind="edge", description=description
        )
        for i, (name, kwargs, description) in enumerate(cases)
    )
    return Suite(
        name="content-feed-edge",
        description="Content selection edge cases: scarce stock, tempting sensational items, "
        "fatigue-prone users and a zero sensational cap.",
        scenarios=scenarios,
        baselines=_FEED_BASELINES,
        info_keys=_FEED_INFO,
        num_envs=20,
    )


register_suite("pricing-holdout", pricing_holdout, pricing_holdout.__doc__ or "")
register_suite("pricing-edge", pricing_edge, pricing_edge.__doc__ or "")
register_suite("content-feed-holdout", content_feed_holdout, content_feed_holdout.__doc__ or "")
register_suite("content-feed-edge", content_feed_edge, content_feed_edge.__doc__ or "")


# -- autoscaling ------------------------------------------------------------------------
AUTOSCALING = "rlops/Autoscaling-v0"
_AUTOSCALING_INFO = ("replica_cost", "slo_violations", "dropped_requests")


def _autoscaling_baseline(name: str) -> Any:
    def factory(scenario: Scenario, env: VectorEnv) -> Act:
        from rlops.envs.business import autoscaling as a

        if name == "hpa":
            hpa = a.HPAPolicy(a.AutoscalingParams(**scenario.env_kwargs))
            return lambda obs, mask=None: hpa.act(obs)
        return lambda obs, mask=None: a.hold_policy(obs)

    return factory


_AUTOSCALING_BASELINES = {
    "hpa": _autoscaling_baseline("hpa"),
    "hold": _autoscaling_baseline("hold"),
}


def autoscaling_holdout() -> Suite:
    """Ten held-out days of the default business-hours load (seeds never trained on)."""
    return Suite(
        name="autoscaling-holdout",
        description="Service autoscaling over held-out days: replica cost and SLO-violating "
        "steps against a Kubernetes-HPA-like autoscaler (60% target utilisation) and a static "
        "fleet. Return = -(replica cost + SLO penalty).",
        scenarios=(
            Scenario(
                "held-out-days",
                AUTOSCALING,
                {},
                seed=10_000,
                episodes=10,
                description="default load model, 10 days",
            ),
        ),
        baselines=_AUTOSCALING_BASELINES,
        info_keys=_AUTOSCALING_INFO,
        num_envs=10,
    )


def autoscaling_edge() -> Suite:
    """A x5 load spike, frequent bursts, slow boots, a plain cosine day."""
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("load-spike-x5", {"burst_multiplier": 5.0, "burst_prob": 0.004}, "bursts to 5x the load"),
        ("bursty", {"burst_prob": 0.01}, "five times as many bursts"),
        ("slow-boots", {"provision_delay": 6}, "replicas take 30 minutes to boot"),
        ("cosine-day", {"diurnal_sharpness": 0.0}, "a plain sinusoidal day, no business hours"),
    ]
    return Suite(
        name="autoscaling-edge",
        description="Autoscaling edge cases: load spikes, frequent bursts, slow boots and a "
        "differently shaped day.",
        scenarios=tuple(
            Scenario(
                name,
                AUTOSCALING,
                kwargs,
                seed=50_000 + i,
                episodes=5,
                kind="edge",
                description=description,
            )
            for i, (name, kwargs, description) in enumerate(cases)
        ),
        baselines=_AUTOSCALING_BASELINES,
        info_keys=_AUTOSCALING_INFO,
        num_envs=5,
    )


register_suite("autoscaling-holdout", autoscaling_holdout, autoscaling_holdout.__doc__ or "")
register_suite("autoscaling-edge", autoscaling_edge, autoscaling_edge.__doc__ or "")
