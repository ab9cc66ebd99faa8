"""rlops/Pricing-v0: the DP oracle against brute force, the simulator against the DP,
the vector-env contract, domain randomization, and PPO against the oracle (slow tier).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlops.artifacts import load_policy
from rlops.core.errors import ConfigError, EnvError
from rlops.envs import check_vector_env, make_vec, run_episodes
from rlops.envs.business.pricing import (
    OBS_DIM,
    PricingParams,
    PricingVectorEnv,
    TablePolicy,
    best_fixed_policy,
    best_fixed_price,
    make_pricing_env,
    myopic_policy,
    myopic_price,
    optimal_policy,
    optimal_value,
    policy_value,
    purchase_probability,
)
from rlops.envs.randomization import DomainRandomization
from rlops.runtime import load_config, train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = PricingParams(
    horizon=3, inventory=2, arrival_rate=1.5, wtp_mean=4.0, price_grid=(2.0, 5.0, 9.0), salvage=1.0
)
"""3 periods, 2 units, 3 prices: 3^(3*2) = 729 deterministic Markov policies."""


def _brute_force_value(params: PricingParams, policy: dict[tuple[int, int], int]) -> float:
    """Expected revenue of ``policy[(t, x)]`` by explicit expectation over demand outcomes.

    Independent of the module's DP: buyers ~ Poisson(lambda q(p)) enumerated one
    outcome at a time (pmf from math.factorial) up to a tail mass below 1e-15,
    no lumping of the demand above the stock.
    """

    @cache
    def value(t: int, x: int) -> float:
        if t == params.horizon:
            return params.salvage * x
        if x == 0:
            return 0.0
        price = params.price_grid[policy[(t, x)]]
        mean = params.arrival_rate * math.exp(-price / params.wtp_mean)
        total, mass, d = 0.0, 0.0, 0
        while mass < 1.0 - 1e-15:
            pmf = math.exp(-mean) * mean**d / math.factorial(d)
            sold = min(x, d)
            total += pmf * (price * sold + value(t + 1, x - sold))
            mass += pmf
            d += 1
        return total

    return value(0, params.inventory)


def _all_policies(params: PricingParams) -> list[dict[tuple[int, int], int]]:
    states = [(t, x) for t in range(params.horizon) for x in range(1, params.inventory + 1)]
    choices = itertools.product(range(len(params.price_grid)), repeat=len(states))
    return [dict(zip(states, choice)) for choice in choices]


def _table(params: PricingParams, policy: dict[tuple[int, int], int]) -> np.ndarray:
    table = np.zeros((params.horizon, params.inventory + 1), dtype=np.int64)
    for (t, x), k in policy.items():
        table[t, x] = k
    return table


def _held_out_settings() -> list[PricingParams]:
    """Five fixed scenarios drawn (seed 20240611) from the config's randomization ranges."""
    rng = np.random.default_rng(20240611)
    return [
        PricingParams(
            arrival_rate=round(float(rng.uniform(1.5, 3.0)), 3),
            wtp_mean=round(float(rng.uniform(6.0, 12.0)), 3),
        )
        for _ in range(5)
    ]


# ----------------------------------------------------------------------------- DP oracle


def test_dp_matches_brute_force_over_all_markov_policies() -> None:
    policies = _all_policies(TINY)
    assert len(policies) == 729
    brute = np.array([_brute_force_value(TINY, policy) for policy in policies])
    dp = np.array([policy_value(TINY, _table(TINY, policy)) for policy in policies])
    np.testing.assert_allclose(dp, brute, rtol=1e-12, atol=1e-12)
    assert optimal_value(TINY) == pytest.approx(brute.max(), rel=1e-12)
    # The DP's argmax table is one of the best enumerated policies.
    best = _brute_force_value(
        TINY, {(t, x): int(k) for (t, x), k in np.ndenumerate(optimal_policy(TINY)) if x > 0}
    )
    assert best == pytest.approx(brute.max(), rel=1e-12)


def test_one_period_value_is_price_times_expected_truncated_demand() -> None:
    params = PricingParams(
        horizon=1, inventory=3, arrival_rate=2.0, wtp_mean=5.0, price_grid=(4.0,)
    )
    mean = 2.0 * math.exp(-4.0 / 5.0)
    pmf = [math.exp(-mean) * mean**d / math.factorial(d) for d in range(3)]
    expected_sales = sum(d * pmf[d] for d in range(3)) + 3 * (1 - sum(pmf))
    assert optimal_value(params) == pytest.approx(4.0 * expected_sales, rel=1e-13)


@pytest.mark.parametrize(
    "params",
    [
        PricingParams(),
        PricingParams(horizon=40, inventory=25, arrival_rate=1.1, wtp_mean=11.0, salvage=3.0),
        PricingParams(arrival_rate=0.0),
        TINY,
    ],
    ids=["default", "larger-with-salvage", "no-customers", "tiny"],
)
def test_policy_value_of_optimal_policy_equals_optimal_value(params: PricingParams) -> None:
    assert policy_value(params, optimal_policy(params)) == optimal_value(params)


def test_no_customers_leaves_only_the_salvage() -> None:
    params = PricingParams(arrival_rate=0.0, salvage=2.5)
    assert optimal_value(params) == pytest.approx(2.5 * params.inventory)


def test_optimal_beats_baselines_beats_a_bad_policy() -> None:
    params = PricingParams()
    shape = (params.horizon, params.inventory + 1)
    optimal = optimal_value(params)
    fixed = policy_value(params, best_fixed_policy(params))
    myopic = policy_value(params, myopic_policy(params))
    dumping = policy_value(params, np.zeros(shape, dtype=np.int64))  # always the lowest price
    assert optimal > fixed > dumping
    assert optimal > myopic > dumping
    constants = [policy_value(params, np.full(shape, k)) for k in range(len(params.price_grid))]
    assert fixed == max(constants)
    assert best_fixed_price(params) == int(np.argmax(constants))
    # Scarce stock and plenty of time: the optimal price falls as stock rises and
    # rises as the season gets longer (Gallego & van Ryzin 1994, Thm 1, on the grid).
    table = optimal_policy(params)[:, 1:]
    assert (np.diff(table, axis=1) <= 0).all()
    assert (np.diff(table, axis=0) <= 0).all()


def test_myopic_price_maximises_one_period_revenue() -> None:
    params = PricingParams()
    prices = np.asarray(params.price_grid)
    means = params.arrival_rate * purchase_probability(prices, params.wtp_mean)
    # One unit left: p * P(D >= 1) = p * (1 - exp(-mean)).
    assert int(myopic_price(params, 1)) == int(np.argmax(prices * (1 - np.exp(-means))))
    # Ample stock (P(D >= 10) < 1e-4): close to p * E[D], maximised at p = wtp_mean.
    assert params.price_grid[int(myopic_price(params, 10))] == params.wtp_mean
    assert (myopic_policy(params) == myopic_price(params, np.arange(11))[None, :]).all()


def test_policy_value_rejects_bad_tables() -> None:
    params = PricingParams()
    with pytest.raises(ConfigError, match="policy: must have shape"):
        policy_value(params, np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ConfigError, match="policy: indices must be in"):
        policy_value(params, np.full((20, 11), 10))
    with pytest.raises(ConfigError, match="integer"):
        policy_value(params, np.zeros((20, 11)))


# ----------------------------------------------------------------------------- simulator vs DP


@pytest.mark.parametrize(
    ("rule", "continuous"),
    [(optimal_policy, False), (best_fixed_policy, False), (optimal_policy, True)],
    ids=["optimal", "best-fixed", "optimal-continuous"],
)
def test_monte_carlo_return_matches_dp_value(
    rule: Callable[[PricingParams], np.ndarray], continuous: bool
) -> None:
    params = PricingParams(salvage=1.0)
    env = PricingVectorEnv(100, params=params, continuous=continuous)
    result = run_episodes(env, TablePolicy(params, rule, continuous=continuous), 5000, seed=3)
    standard_error = result.returns.std() / math.sqrt(result.returns.size)
    expected = policy_value(params, rule(params))
    assert abs(result.mean_return - expected) < 3 * standard_error, (
        result.mean_return,
        expected,
        standard_error,
    )


def test_step_invariants_under_random_prices() -> None:
    params = PricingParams(salvage=1.5)
    env = PricingVectorEnv(64, params=params)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        stock = np.rint(obs[:, 0] * params.inventory).astype(np.int64)
        last_period = np.rint(obs[:, 1] * params.horizon) == 1
        obs, rewards, terminated, truncated, info = env.step(rng.integers(0, 10, size=64))
        step = env.last_step
        assert step is not None
        assert (step.sales >= 0).all() and (step.sales <= step.buyers).all()
        assert (step.buyers <= step.arrivals).all()
        assert (step.sales <= stock).all()
        left = stock - step.sales
        final = np.where(terminated[:, None], info.get("final_obs", obs), obs)
        np.testing.assert_array_equal(np.rint(final[:, 0] * params.inventory), left)
        assert (left >= 0).all()
        expected = step.prices * step.sales + np.where(last_period, params.salvage * left, 0.0)
        np.testing.assert_array_equal(rewards, expected)
        np.testing.assert_array_equal(terminated, last_period | (left == 0))
        assert not truncated.any()
        assert rewards.dtype == np.float64 and obs.dtype == np.float32
        assert (obs[:, :2] > 0).all() and (obs[:, :2] <= 1).all()


def test_episode_ends_at_stock_out_and_autoresets_on_the_same_step() -> None:
    params = PricingParams(inventory=1, arrival_rate=50.0, price_grid=(1.0,))
    env = PricingVectorEnv(2, params=params)
    env.reset(seed=0)
    obs, rewards, terminated, _, info = env.step(np.array([0, 0]))
    assert terminated.all() and rewards.tolist() == [1.0, 1.0]
    assert info["_final_obs"].tolist() == [True, True]
    assert info["final_obs"][:, 0].tolist() == [0.0, 0.0]  # sold out
    assert obs[:, :2].tolist() == [[1.0, 1.0], [1.0, 1.0]]  # next episode already started


def test_horizon_end_pays_salvage_on_leftover_stock() -> None:
    params = PricingParams(horizon=2, inventory=5, arrival_rate=0.0, salvage=3.0)
    env = PricingVectorEnv(1, params=params)
    env.reset(seed=0)
    _, rewards, terminated, _, info = env.step(np.array([0]))
    assert rewards.tolist() == [0.0] and not terminated[0] and info == {}
    _, rewards, terminated, _, info = env.step(np.array([0]))
    assert rewards.tolist() == [15.0] and terminated[0]
    assert info["final_obs"][0, :2].tolist() == [1.0, 0.0]


def test_continuous_prices_are_clipped_to_the_grid_range() -> None:
    env = PricingVectorEnv(3, continuous=True)
    env.reset(seed=0)
    env.step(np.array([[-5.0], [13.3], [99.0]], dtype=np.float32))
    assert env.last_step is not None
    np.testing.assert_allclose(env.last_step.prices, [4.0, 13.3, 22.0], rtol=1e-6)


def test_rejects_bad_actions() -> None:
    env = PricingVectorEnv(2)
    with pytest.raises(EnvError, match="before reset"):
        env.step(np.array([0, 0]))
    env.reset(seed=0)
    with pytest.raises(EnvError, match="shape"):
        env.step(np.array([0, 0, 0]))
    with pytest.raises(EnvError, match="integer"):
        env.step(np.array([0.0, 1.0]))
    with pytest.raises(EnvError, match=r"in \[0, 10\), got 10 for env 1"):
        env.step(np.array([0, 10]))
    continuous = PricingVectorEnv(1, continuous=True)
    continuous.reset(seed=0)
    with pytest.raises(EnvError, match="NaN"):
        continuous.step(np.array([[np.nan]]))


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("env_id", ["rlops/Pricing-v0", "rlops/PricingContinuous-v0"])
def test_check_vector_env_passes(env_id: str) -> None:
    check_vector_env(make_vec(env_id, 4), steps=300)
    randomized = make_vec(env_id, 4, randomize={"arrival_rate": [1.5, 3.0], "salvage": [0, 2]})
    check_vector_env(randomized, steps=300)


def test_same_seed_same_trajectory_different_seed_differs() -> None:
    def rollout(seed: int) -> np.ndarray:
        env = make_vec("rlops/Pricing-v0", 8, randomize={"wtp_mean": [6.0, 12.0]})
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for t in range(60):
            obs, rewards, *_ = env.step(np.full(8, t % 10))
            out += [obs, rewards[:, None].astype(np.float32)]
        return np.concatenate(out, axis=1)

    np.testing.assert_array_equal(rollout(1), rollout(1))
    assert not np.array_equal(rollout(1), rollout(2))


def test_randomization_redraws_per_episode_and_fixed_env_does_not() -> None:
    randomization = DomainRandomization.from_config(
        PricingParams, {"arrival_rate": [1.5, 3.0], "wtp_mean": {"choice": [6.0, 9.0, 12.0]}}
    )
    env = PricingVectorEnv(16, params=PricingParams(horizon=5), randomization=randomization)
    fixed = PricingVectorEnv(16, params=PricingParams(horizon=5))
    obs, _ = env.reset(seed=0)
    fixed.reset(seed=0)
    before = env.scenario()
    assert len(np.unique(before.arrival_rate)) == 16
    assert ((before.arrival_rate >= 1.5) & (before.arrival_rate <= 3.0)).all()
    assert set(before.wtp_mean.tolist()) <= {6.0, 9.0, 12.0}
    np.testing.assert_allclose(obs[:, 2], before.arrival_rate * 5 / 10, rtol=1e-6)
    np.testing.assert_allclose(obs[:, 3], before.wtp_mean / 22.0, rtol=1e-6)
    changed = np.zeros(16, dtype=bool)
    for _ in range(12):
        obs, _, terminated, _, _ = env.step(np.full(16, 9))
        fixed.step(np.full(16, 9))
        after = env.scenario()
        # Only sub-envs that ended redraw; the rest keep their episode's draw.
        same = after.arrival_rate == before.arrival_rate
        assert same[~terminated].all()
        changed |= ~same
        np.testing.assert_allclose(obs[:, 2], after.arrival_rate * 5 / 10, rtol=1e-6)
        before = after
    assert changed.all()
    assert (fixed.scenario().arrival_rate == 2.0).all()
    assert (fixed.scenario().wtp_mean == 8.0).all()


def test_state_dict_round_trip_continues_identically() -> None:
    def build() -> PricingVectorEnv:
        return make_pricing_env(6, randomize={"arrival_rate": [1.5, 3.0], "wtp_mean": [6, 12]})

    env = build()
    env.reset(seed=5)
    for t in range(7):
        env.step(np.full(6, t % 10))
    state = env.state_dict()
    other = build()
    other.load_state_dict(state)
    for t in range(40):  # crosses episode ends, so the redraws must match too
        a = env.step(np.full(6, (3 * t) % 10))
        b = other.step(np.full(6, (3 * t) % 10))
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(env.scenario().wtp_mean, other.scenario().wtp_mean)


def test_load_state_dict_rejects_mismatch() -> None:
    env = PricingVectorEnv(2)
    with pytest.raises(EnvError, match="before reset"):
        env.state_dict()
    env.reset(seed=0)
    state = env.state_dict()
    with pytest.raises(EnvError, match="num_envs=2"):
        PricingVectorEnv(3).load_state_dict(state)
    with pytest.raises(EnvError, match="missing keys"):
        env.load_state_dict({k: v for k, v in state.items() if k != "stock"})
    with pytest.raises(EnvError, match="out of range"):
        env.load_state_dict({**state, "stock": np.array([0, 11])})


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"horizon": 0}, "horizon"),
        ({"horizon": 2.5}, "horizon"),
        ({"inventory": -1}, "inventory"),
        ({"arrival_rate": -0.1}, "arrival_rate"),
        ({"arrival_rate": math.nan}, "arrival_rate"),
        ({"wtp_mean": 0.0}, "wtp_mean"),
        ({"salvage": -1.0}, "salvage"),
        ({"price_grid": ()}, "price_grid"),
        ({"price_grid": (5.0, 3.0)}, "price_grid"),
        ({"price_grid": (-1.0, 3.0)}, "price_grid"),
    ],
)
def test_bad_params_raise_config_error_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^PricingParams\.{field}: "):
        PricingParams(**kwargs)


def test_yaml_lists_become_tuples() -> None:
    env = make_vec("rlops/Pricing-v0", 1, price_grid=[1, 2, 3], horizon=4)
    assert env.params.price_grid == (1.0, 2.0, 3.0)  # type: ignore[attr-defined]
    assert env.single_action_space.n == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("randomize", "match"),
    [
        ({"inventory": [5, 10]}, r"env\.kwargs\.randomize\.inventory: .*cannot be randomized"),
        ({"wtp_mean": [-1.0, 5.0]}, r"env\.kwargs\.randomize\.wtp_mean: .*> 0"),
        ({"arrival_rate": {"normal": [2.0, 1.0]}}, r"randomize\.arrival_rate: .*clip"),
        ({"demand": [1, 2]}, r"env\.kwargs\.randomize\.demand: PricingParams has no field"),
        ({"price_grid": [1, 2]}, r"randomize\.price_grid: only numeric fields"),
    ],
)
def test_bad_randomization_raises_config_error(randomize: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_vec("rlops/Pricing-v0", 2, randomize=randomize)


def test_unknown_kwarg_is_an_env_error() -> None:
    with pytest.raises(EnvError, match="unknown PricingParams field"):
        make_vec("rlops/Pricing-v0", 2, horizn=5)


# ----------------------------------------------------------------------------- policies


def test_table_policy_decodes_the_scenario_from_observations() -> None:
    params = PricingParams()
    env = make_pricing_env(32, randomize={"arrival_rate": [1.5, 3.0], "wtp_mean": [6, 12]})
    policy = TablePolicy(params, optimal_policy)
    obs, _ = env.reset(seed=0)
    for t in range(8):
        actions = policy(obs)
        scenario = env.scenario()
        stock = env.state_dict()["stock"]
        elapsed = env.state_dict()["elapsed_steps"]
        for i in range(0, 32, 7):
            truth = dataclasses.replace(
                params,
                arrival_rate=float(scenario.arrival_rate[i]),
                wtp_mean=float(scenario.wtp_mean[i]),
            )
            assert actions[i] == optimal_policy(truth)[elapsed[i], stock[i]], (t, i)
        obs, *_ = env.step(actions)
    assert policy(np.zeros((0, OBS_DIM), np.float32)).shape == (0,)


# ----------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_ppo_config_is_within_3_percent_of_dp_and_beats_baselines(tmp_path: Path) -> None:
    quiet = ["log.tensorboard=false", "log.progress=false", "runtime.checkpoint_every=0"]
    config = load_config(str(CONFIGS / "pricing_ppo.yaml"), quiet)
    result = train(config, out_dir=tmp_path / "run")
    policy = load_policy(str(result.artifact_path))
    ratios: dict[str, list[float]] = {"ppo": [], "fixed": [], "myopic": []}
    for params in _held_out_settings():
        # PPO's deterministic policy is a table over (t, x) for a fixed scenario:
        # read it off the network and value it exactly (no Monte-Carlo noise).
        t, x = np.meshgrid(
            np.arange(params.horizon), np.arange(params.inventory + 1), indexing="ij"
        )
        obs = np.zeros((t.size, OBS_DIM), dtype=np.float32)
        obs[:, 0] = x.ravel() / params.inventory
        obs[:, 1] = (params.horizon - t.ravel()) / params.horizon
        env = PricingVectorEnv(1, params=params)
        obs[:, 2:] = env.reset(seed=0)[0][0, 2:]
        table = np.asarray(policy.act(obs, deterministic=True)[0], dtype=np.int64)
        best = optimal_value(params)
        ratios["ppo"].append(policy_value(params, table.reshape(t.shape)) / best)
        ratios["fixed"].append(policy_value(params, best_fixed_policy(params)) / best)
        ratios["myopic"].append(policy_value(params, myopic_policy(params)) / best)
    mean = {k: float(np.mean(v)) for k, v in ratios.items()}
    assert mean["ppo"] >= 0.97, mean
    assert mean["ppo"] > mean["fixed"] > mean["myopic"], mean
