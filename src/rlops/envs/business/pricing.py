"""Dynamic pricing of a perishable inventory (``rlops/Pricing-v0``) with an exact DP oracle.

Model (the discrete-time revenue-management problem of Gallego & van Ryzin 1994,
as set out in Talluri & van Ryzin 2004, ch. 5)
    A seller holds ``inventory = X`` units [units] of a perishable good and has
    ``horizon = T`` periods [periods, e.g. days] to sell them; every unit still
    held after the last period is worth ``salvage = s`` [currency/unit]. At the
    start of period ``t = 0 .. T-1``, with ``x >= 1`` units left, the seller posts
    a price ``p`` [currency/unit] and then::

        A_t ~ Poisson(arrival_rate)                       customers arriving [customers]
        B_t | A_t ~ Binomial(A_t, q(p)),  q(p) = exp(-p / wtp_mean)     buyers [customers]
        S_t = min(x, B_t)                                 units sold [units]
        r_t = p * S_t   (+ s * (x - S_t) in period T-1)   reward: revenue [currency]
        x  <- x - S_t

    Each customer wants one unit and buys it iff ``p <= WTP``, her willingness to
    pay, drawn i.i.d. from the exponential distribution with mean ``wtp_mean``
    [currency], so the purchase probability has the closed form
    ``q(p) = P(WTP >= p) = exp(-p / wtp_mean)``. By Poisson thinning the number of
    buyers is ``B_t ~ Poisson(arrival_rate * q(p))`` (the form the DP uses); the
    simulator draws arrivals and buyers separately so that conversion can be
    observed (:attr:`PricingVectorEnv.last_step`).

    The episode *terminates* after period ``T-1`` or as soon as the stock is sold
    out: with ``x = 0`` every later reward is 0 (and so is the salvage of 0 units),
    so ending early changes no return and spares the learner steps in which no
    action matters. Episodes are never truncated.

Observation (float32 ``[N, 5]``, all dimensionless)
    0. ``x / inventory``: fraction of the initial stock still held, in ``(0, 1]``;
    1. ``(T - t) / T``: fraction of the selling season left, in ``(0, 1]``;
    2. ``arrival_rate * horizon / inventory``: demand pressure, the expected number
       of customers over the season per unit of initial stock;
    3. ``wtp_mean / max(price_grid)``: the customers' mean willingness to pay
       relative to the top price;
    4. ``salvage / max(price_grid)``: salvage value relative to the top price.

    Features 2-4 are the demand context a pricing team knows. They are constant
    within an episode and change between episodes under domain randomization;
    with them one policy can be optimal across scenarios. Given ``horizon``,
    ``inventory`` and ``price_grid`` (fixed per env) they decode to the episode's
    ``(arrival_rate, wtp_mean, salvage)``, which is what :class:`TablePolicy` does.

Action
    ``rlops/Pricing-v0``: ``Discrete(K)``, an index into ``price_grid``.
    ``rlops/PricingContinuous-v0``: ``Box(min(price_grid), max(price_grid), (1,))``
    float32, the price itself [currency/unit]; out-of-range prices are clipped.

Exact DP oracle
    With ``D_k ~ Poisson(arrival_rate * q(p_k))`` the demand at grid price ``p_k``,
    the optimal expected revenue-to-go ``V_t(x)`` [currency] solves::

        V_T(x) = s * x,     V_t(0) = 0,
        V_t(x) = max_k  sum_{d < x} P(D_k = d) * (p_k * d + V_{t+1}(x - d))
                        + P(D_k >= x) * (p_k * x + V_{t+1}(0)).

    Demand beyond the remaining stock is one lumped event of probability
    ``P(D_k >= x) = 1 - sum_{d < x} P(D_k = d)``, so the Poisson distribution is
    never truncated: the recursion is exact up to float64 rounding (below 1e-12
    relative). :func:`optimal_value` is ``V_0(X)``; :func:`optimal_policy` its
    argmax table; :func:`policy_value` evaluates any tabular policy by the same
    recursion with the max replaced by the policy's choice. Cost:
    ``O(T * K * X^2)`` flops, milliseconds for the default instance.

Baselines (:func:`best_fixed_price`, :func:`myopic_price`) and the oracle act on
observations through :class:`TablePolicy`, a callable ``obs [N, 5] -> actions [N]``
that plugs into :func:`rlops.envs.run_episodes`.

Both env ids autoreset on the same step (:mod:`rlops.envs.base`), exactly like
:mod:`rlops.envs.classic`: ``info["final_obs"]`` is a float32 ``[N, 5]`` array
and ``info["_final_obs"]`` the bool ``[N]`` mask of sub-envs that ended, both
present only on steps where one ended. Rewards are float64 ``[N]``. One
``numpy.random.Generator``, seeded by ``reset(seed=...)``, drives demand and
parameter draws; :meth:`PricingVectorEnv.state_dict` captures it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlops.core.config import check
from rlops.core.errors import ConfigError, EnvError
from rlops.envs.classic import _check_no_options, _check_num_envs, _not_reset, _rng_from_state
from rlops.envs.randomization import DomainRandomization

__all__ = [
    "OBS_DIM",
    "RANDOMIZABLE",
    "PricingParams",
    "PricingScenario",
    "PricingStep",
    "PricingVectorEnv",
    "TablePolicy",
    "best_fixed_policy",
    "best_fixed_price",
    "make_pricing_env",
    "myopic_policy",
    "myopic_price",
    "optimal_policy",
    "optimal_value",
    "policy_value",
    "purchase_probability",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
StepResult = tuple[F32, F64, Bools, Bools, dict[str, Any]]

OBS_DIM: Final = 5
"""Observation width: stock fraction, time fraction, demand pressure, WTP, salvage."""

RANDOMIZABLE: Final = ("arrival_rate", "wtp_mean", "salvage")
"""Fields :class:`DomainRandomization` may draw per episode. ``horizon`` and
``inventory`` set the episode length, the DP's state space and the scale of
observation features 0-2, so they stay fixed per env (vary demand pressure with
``arrival_rate`` instead)."""


# --------------------------------------------------------------------------- params


@dataclasses.dataclass(frozen=True, kw_only=True)
class PricingParams:
    """One pricing scenario of :class:`PricingVectorEnv` (see the module docstring).

    The default instance: 10 units, 20 days, 2 customers a day on average
    (4 customers per unit), mean willingness to pay 8, prices 4 to 22 in steps of 2.

    >>> PricingParams(arrival_rate=2.0).price_grid[:3]
    (4.0, 6.0, 8.0)
    >>> PricingParams(horizon=0)
    Traceback (most recent call last):
    ...
    rlops.core.errors.ConfigError: PricingParams.horizon: must be an int >= 1 [periods], got 0
    """

    horizon: int = 20
    """Selling periods ``T`` per episode [periods]."""
    inventory: int = 10
    """Units in stock at the start of each episode ``X`` [units]."""
    arrival_rate: float = 2.0
    """Mean number of customers arriving per period (Poisson) [customers/period]."""
    wtp_mean: float = 8.0
    """Mean of the customers' exponential willingness to pay [currency]."""
    price_grid: tuple[float, ...] = (4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0)
    """Prices the seller may post, strictly increasing, >= 0 [currency/unit]; the
    discrete action is an index into it, the continuous action a price in its range.
    A YAML list is accepted and stored as a tuple of floats."""
    salvage: float = 0.0
    """Value of each unit left after the last period [currency/unit]."""

    def __post_init__(self) -> None:
        for name, unit in (("horizon", "periods"), ("inventory", "units")):
            value = getattr(self, name)
            check(
                _is_real(value) and isinstance(value, int | np.integer) and bool(value >= 1),
                f"PricingParams.{name}",
                f"must be an int >= 1 [{unit}], got {value!r}",
            )
        _check_number(self.arrival_rate, "arrival_rate", 0.0, "customers/period")
        _check_number(self.wtp_mean, "wtp_mean", None, "currency")
        _check_number(self.salvage, "salvage", 0.0, "currency/unit")
        grid = self.price_grid
        check(
            isinstance(grid, Sequence) and not isinstance(grid, str) and len(grid) >= 1,
            "PricingParams.price_grid",
            f"must be a non-empty list of prices, got {grid!r}",
        )
        for price in grid:
            check(
                _is_real(price) and math.isfinite(price) and price >= 0,
                "PricingParams.price_grid",
                f"prices must be finite numbers >= 0 [currency/unit], got {list(grid)!r}",
            )
        check(
            all(bool(a < b) for a, b in zip(grid, grid[1:])),
            "PricingParams.price_grid",
            f"prices must be strictly increasing, got {list(grid)!r}",
        )
        # Frozen dataclass: normalise YAML lists / numpy scalars once, here.
        object.__setattr__(self, "price_grid", tuple(float(p) for p in grid))
        object.__setattr__(self, "horizon", int(self.horizon))
        object.__setattr__(self, "inventory", int(self.inventory))


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_number(value: object, name: str, low: float | None, unit: str) -> None:
    """``value`` finite and ``>= low`` (``> 0`` when ``low`` is None)."""
    ok = _is_real(value) and math.isfinite(float(value))  # type: ignore[arg-type]
    if low is None:
        check(
            ok and float(value) > 0,  # type: ignore[arg-type]
            f"PricingParams.{name}",
            f"must be a finite number > 0 [{unit}], got {value!r}",
        )
    else:
        check(
            ok and float(value) >= low,  # type: ignore[arg-type]
            f"PricingParams.{name}",
            f"must be a finite number >= {low:g} [{unit}], got {value!r}",
        )


def purchase_probability(price: npt.ArrayLike, wtp_mean: npt.ArrayLike) -> F64:
    """``q(p) = P(WTP >= p) = exp(-p / wtp_mean)`` for exponential WTP.

    >>> float(purchase_probability(0.0, 10.0)), round(float(purchase_probability(10.0, 10.0)), 4)
    (1.0, 0.3679)
    """
    return np.exp(-np.asarray(price, dtype=np.float64) / np.asarray(wtp_mean, dtype=np.float64))


# --------------------------------------------------------------------------- DP oracle


class _Model(NamedTuple):
    """Time-independent pieces of the DP for one scenario; ``K`` prices, ``X`` stock."""

    pmf: F64
    """``[K, X]``: ``P(D_k = d)`` for ``d = 0 .. X-1``."""
    below: F64
    """``[X+1, X]`` 0/1: ``d < x`` (rows ``x = 0 .. X``)."""
    tail: F64
    """``[K, X+1]``: ``P(D_k >= x)``."""
    revenue: F64
    """``[K, X+1]``: expected revenue of one period, ``p_k * E[min(x, D_k)]``."""
    shift: I64
    """``[X+1, X]``: ``max(x - d, 0)``, to gather ``V_{t+1}(x - d)``."""


def _model(params: PricingParams) -> _Model:
    prices = np.asarray(params.price_grid)
    stock = params.inventory
    means = params.arrival_rate * purchase_probability(prices, params.wtp_mean)  # [K]
    d = np.arange(stock, dtype=np.float64)
    log_factorial = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1.0, stock)))))
    # A zero mean puts all mass on d = 0: log(0) = -inf, and 0 * -inf (nan) is masked out.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pmf = np.where(d == 0, 0.0, d * np.log(means)[:, None])
    log_pmf -= means[:, None] + log_factorial
    pmf = np.exp(log_pmf)
    x = np.arange(stock + 1)
    below = (d[None, :] < x[:, None]).astype(np.float64)
    tail = np.clip(1.0 - pmf @ below.T, 0.0, 1.0)
    sold = (pmf * d) @ below.T + tail * x  # E[min(x, D_k)]
    shift = np.maximum(x[:, None] - np.arange(stock)[None, :], 0)
    return _Model(pmf, below, tail, prices[:, None] * sold, shift.astype(np.int64))


def _action_values(model: _Model, next_value: F64) -> F64:
    """``Q_t[k, x]`` from ``V_{t+1}`` ``[X+1]``: immediate plus expected future revenue."""
    future: F64 = model.pmf @ (model.below * next_value[model.shift]).T
    future += model.tail * next_value[0]
    future += model.revenue
    return future


def _backward(params: PricingParams, policy: I64 | None) -> tuple[F64, I64]:
    """Run the recursion; returns ``(V_0 [X+1], table [T, X+1])``.

    With ``policy`` None the table is the argmax (ties go to the lowest price);
    otherwise it is ``policy`` and ``V_0`` its value.
    """
    model = _model(params)
    x = np.arange(params.inventory + 1)
    value = params.salvage * x.astype(np.float64)
    table = np.zeros((params.horizon, params.inventory + 1), dtype=np.int64)
    for t in range(params.horizon - 1, -1, -1):
        q = _action_values(model, value)
        table[t] = q.argmax(axis=0) if policy is None else policy[t]
        value = q[table[t], x]
    return value, table


def optimal_value(params: PricingParams) -> float:
    """Expected total revenue [currency] of the optimal policy from the initial state.

    Exact finite-horizon DP over ``(period, stock)`` (module docstring).

    >>> round(optimal_value(PricingParams()), 4)
    101.1109
    """
    return float(_backward(params, None)[0][params.inventory])


def optimal_policy(params: PricingParams) -> I64:
    """The optimal price index per state: ``table[t, x]``, int64 ``[horizon, inventory+1]``.

    ``t`` is the period (0 first) and ``x`` the stock at its start; column 0 is never
    used (the episode ends at stock-out). Ties go to the lowest price.

    >>> table = optimal_policy(PricingParams())
    >>> table.shape, bool((table[:, 1:] >= table[:, 1:].min()).all())
    ((20, 11), True)
    """
    return _backward(params, None)[1]


def policy_value(params: PricingParams, policy: npt.ArrayLike) -> float:
    """Expected total revenue [currency] of a tabular policy from the initial state.

    Args:
        params: the scenario.
        policy: int ``[horizon, inventory+1]`` price indices, ``policy[t, x]``.

    Returns:
        ``V_0(inventory)`` under ``policy``, by the DP recursion without the max.

    Raises:
        ConfigError: if ``policy`` has the wrong shape or an index off the grid.

    >>> p = PricingParams()
    >>> policy_value(p, optimal_policy(p)) == optimal_value(p)
    True
    """
    table = np.asarray(policy)
    shape = (params.horizon, params.inventory + 1)
    check(
        table.shape == shape,
        "policy",
        f"must have shape [horizon, inventory+1] = {shape}, got {table.shape}",
    )
    check(table.dtype.kind in "iu", "policy", f"must hold integer indices, got {table.dtype}")
    k = len(params.price_grid)
    check(
        bool(((table >= 0) & (table < k)).all()),
        "policy",
        f"indices must be in [0, {k}) (the price grid), got min {table.min()} max {table.max()}",
    )
    return float(_backward(params, table.astype(np.int64))[0][params.inventory])


def best_fixed_price(params: PricingParams) -> int:
    """Index of the single grid price with the highest expected revenue over the season.

    Computed exactly: :func:`policy_value` of every constant policy.

    >>> p = PricingParams()
    >>> p.price_grid[best_fixed_price(p)]
    12.0
    """
    shape = (params.horizon, params.inventory + 1)
    values = [policy_value(params, np.full(shape, k)) for k in range(len(params.price_grid))]
    return int(np.argmax(values))


def best_fixed_policy(params: PricingParams) -> I64:
    """:func:`best_fixed_price` as a table ``[horizon, inventory+1]`` (for :class:`TablePolicy`)."""
    shape = (params.horizon, params.inventory + 1)
    return np.full(shape, best_fixed_price(params), dtype=np.int64)


def myopic_price(params: PricingParams, stock: npt.ArrayLike) -> I64:
    """Price index maximising the expected revenue of this period alone, per stock level.

    ``argmax_k p_k * E[min(x, D_k)]``: what a team does that ignores the value of
    keeping units for later periods (and the salvage value). Ties go to the lowest
    price.

    Args:
        params: the scenario.
        stock: units on hand, ints in ``[0, inventory]``, any shape.

    Returns:
        int64 indices, the shape of ``stock``.

    >>> p = PricingParams()
    >>> [p.price_grid[k] for k in myopic_price(p, [1, 10])]
    [10.0, 8.0]
    """
    model = _model(params)
    return np.asarray(model.revenue.argmax(axis=0)[np.asarray(stock)], dtype=np.int64)


def myopic_policy(params: PricingParams) -> I64:
    """:func:`myopic_price` as a table ``[horizon, inventory+1]`` (for :class:`TablePolicy`)."""
    row = myopic_price(params, np.arange(params.inventory + 1))
    return np.repeat(row[None, :], params.horizon, axis=0)


# --------------------------------------------------------------------------- policies


class TablePolicy:
    """A tabular pricing rule that acts on observations: ``actions = policy(obs)``.

    The common shape of the DP oracle and the baselines, usable wherever an
    ``act(obs) -> actions`` callable is (e.g. :func:`rlops.envs.run_episodes`).
    Each call decodes every row of ``obs`` into the period ``t``, the stock ``x``
    and the episode's ``(arrival_rate, wtp_mean, salvage)`` (observation features
    0-4), builds ``rule(scenario)`` once per distinct scenario (cached) and returns
    ``table[t, x]``. Only observable quantities and the env's fixed ``horizon``,
    ``inventory`` and ``price_grid`` are used, so it works on randomized envs.

    Args:
        params: the env's params (``horizon``, ``inventory``, ``price_grid`` are
            read; the demand fields are used when an observation matches them).
        rule: builds the table ``[horizon, inventory+1]`` of price indices for a
            scenario, e.g. :func:`optimal_policy`, :func:`best_fixed_policy` or
            :func:`myopic_policy`.
        continuous: return prices ``[N, 1]`` float32 (for
            ``rlops/PricingContinuous-v0``) instead of indices ``[N]`` int64.

    >>> params = PricingParams()
    >>> env = PricingVectorEnv(4, params=params)
    >>> from rlops.envs import run_episodes
    >>> result = run_episodes(env, TablePolicy(params, optimal_policy), 200, seed=0)
    >>> bool(abs(result.mean_return - optimal_value(params)) < 3 * result.returns.std() / 200**0.5)
    True
    """

    _MAX_CACHE: Final = 4096

    def __init__(
        self,
        params: PricingParams,
        rule: Callable[[PricingParams], I64],
        *,
        continuous: bool = False,
    ) -> None:
        self.params = params
        self.rule = rule
        self.continuous = continuous
        self._prices = np.asarray(params.price_grid, dtype=np.float32)
        self._own_context = _context(params).astype(np.float32)
        self._tables: dict[bytes, I64] = {}

    def table(self, params: PricingParams) -> I64:
        """``rule(params)``, checked to be ``[horizon, inventory+1]``."""
        table = np.asarray(self.rule(params), dtype=np.int64)
        expected = (self.params.horizon, self.params.inventory + 1)
        if table.shape != expected:
            raise EnvError(
                f"TablePolicy: rule returned a table of shape {table.shape}, expected {expected}"
            )
        return table

    def __call__(self, obs: npt.ArrayLike) -> npt.NDArray[Any]:
        """Actions for a batch of observations ``[N, 5]``: int64 ``[N]`` or float32 ``[N, 1]``."""
        o = np.asarray(obs, dtype=np.float32)
        if o.ndim != 2 or o.shape[1] != OBS_DIM:
            raise EnvError(f"TablePolicy expects observations [N, {OBS_DIM}], got {o.shape}")
        p = self.params
        t = p.horizon - np.rint(o[:, 1].astype(np.float64) * p.horizon).astype(np.int64)
        x = np.rint(o[:, 0].astype(np.float64) * p.inventory).astype(np.int64)
        t = np.clip(t, 0, p.horizon - 1)
        x = np.clip(x, 0, p.inventory)
        contexts, inverse = np.unique(o[:, 2:], axis=0, return_inverse=True)
        actions = np.empty(o.shape[0], dtype=np.int64)
        for j, context in enumerate(contexts):
            rows = np.flatnonzero(inverse.reshape(-1) == j)
            actions[rows] = self._table_for(context)[t[rows], x[rows]]
        if self.continuous:
            return self._prices[actions][:, None]
        return actions

    def _table_for(self, context: F32) -> I64:
        key = context.tobytes()
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) >= self._MAX_CACHE:
                self._tables.clear()
            if np.array_equal(context, self._own_context):
                scenario = self.params  # exact values, not float32 round trips
            else:
                scenario = _scenario_from_context(self.params, context.astype(np.float64))
            table = self._tables[key] = self.table(scenario)
        return table


def _context(params: PricingParams) -> F64:
    """Observation features 2-4 of a scenario (same float64 arithmetic as the env)."""
    scale = _price_scale(params)
    return np.array(
        [
            params.arrival_rate * (params.horizon / params.inventory),
            params.wtp_mean / scale,
            params.salvage / scale,
        ]
    )


def _scenario_from_context(params: PricingParams, context: F64) -> PricingParams:
    """Inverse of :func:`_context` for the fixed ``horizon``, ``inventory``, ``price_grid``."""
    scale = _price_scale(params)
    return dataclasses.replace(
        params,
        arrival_rate=max(float(context[0]) * params.inventory / params.horizon, 0.0),
        wtp_mean=max(float(context[1]) * scale, np.finfo(np.float64).tiny),
        salvage=max(float(context[2]) * scale, 0.0),
    )


def _price_scale(params: PricingParams) -> float:
    """The top grid price, which makes WTP and salvage dimensionless (1 for a grid of 0)."""
    top = params.price_grid[-1]
    return top if top > 0 else 1.0


# --------------------------------------------------------------------------- env


class PricingScenario(NamedTuple):
    """The current episode's demand parameters per sub-env (copies, float64 ``[N]``)."""

    arrival_rate: F64
    """Mean customers per period [customers/period]."""
    wtp_mean: F64
    """Mean willingness to pay [currency]."""
    salvage: F64
    """Value per unit left at the end [currency/unit]."""


class PricingStep(NamedTuple):
    """What happened in the last :meth:`PricingVectorEnv.step`, per sub-env ``[N]``."""

    prices: F64
    """Posted price [currency/unit] (grid price, or the clipped continuous action)."""
    arrivals: I64
    """Customers who arrived [customers]."""
    buyers: I64
    """Arrivals whose willingness to pay was >= the price [customers]."""
    sales: I64
    """Units sold, ``min(stock, buyers)`` [units]."""


class PricingVectorEnv(gym.vector.VectorEnv[F32, npt.NDArray[Any], npt.NDArray[Any]]):
    """``N`` perishable-inventory pricing problems stepped together; same-step autoreset.

    Args:
        num_envs: number of sub-envs ``N``.
        params: the scenario; with ``randomization`` its ``arrival_rate``,
            ``wtp_mean`` and ``salvage`` are only defaults for undrawn fields.
        randomization: per-episode draws of fields in :data:`RANDOMIZABLE`; each
            sub-env redraws when it (auto)resets. None: every episode uses ``params``.
        continuous: ``Box`` price actions (``rlops/PricingContinuous-v0``) instead
            of ``Discrete`` price indices.

    Raises:
        EnvError: if ``num_envs < 1``.
        ConfigError: if ``randomization`` draws a field not in :data:`RANDOMIZABLE`
            or can draw values the field does not allow (e.g. ``wtp_mean <= 0``).

    >>> env = PricingVectorEnv(3)
    >>> obs, info = env.reset(seed=0)
    >>> [round(float(v), 4) for v in obs[0]]
    [1.0, 1.0, 4.0, 0.3636, 0.0]
    >>> obs, rewards, terminated, truncated, info = env.step(np.array([0, 4, 9]))
    >>> env.last_step.prices.tolist()
    [4.0, 12.0, 22.0]
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium's class attribute)
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(
        self,
        num_envs: int = 1,
        *,
        params: PricingParams | None = None,
        randomization: DomainRandomization | None = None,
        continuous: bool = False,
    ) -> None:
        self.num_envs = _check_num_envs(num_envs, type(self).__name__)
        self.params = PricingParams() if params is None else params
        self.randomization = randomization if randomization else None
        if self.randomization is not None:
            _check_randomization(self.randomization)
        self.continuous = continuous
        p = self.params
        n = self.num_envs
        high = np.array([1.0, 1.0, np.inf, np.inf, np.inf], dtype=np.float32)
        self.single_observation_space = spaces.Box(np.zeros(OBS_DIM, np.float32), high)
        self._grid = np.asarray(p.price_grid, dtype=np.float64)
        self.single_action_space: spaces.Box | spaces.Discrete
        if continuous:
            self.single_action_space = spaces.Box(
                np.float32(self._grid[0]), np.float32(self._grid[-1]), shape=(1,), dtype=np.float32
            )
        else:
            self.single_action_space = spaces.Discrete(len(p.price_grid))
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)

        self._stock = np.zeros(n, dtype=np.int64)
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._arrival_rate = np.full(n, p.arrival_rate, dtype=np.float64)
        self._wtp_mean = np.full(n, p.wtp_mean, dtype=np.float64)
        self._salvage = np.full(n, p.salvage, dtype=np.float64)
        self._top = _price_scale(p)
        self._needs_reset = True
        self._work = np.empty(n, dtype=np.float64)
        self.last_step: PricingStep | None = None
        """The last step's prices, arrivals, buyers and sales; None before the first step."""

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Start a new episode in every sub-env (full stock, period 0, fresh draws).

        Args:
            seed: reseeds the batch's single generator; ``None`` continues it.
            options: not supported (must be ``None`` or empty).

        Returns:
            ``(obs [N, 5] float32, {})``.

        Raises:
            EnvError: if ``options`` is not empty.
        """
        _check_no_options(options, type(self).__name__, "PricingParams")
        super().reset(seed=seed)
        self._start(np.arange(self.num_envs))
        self._needs_reset = False
        self.last_step = None
        return self._observe(), {}

    def step(self, actions: npt.NDArray[Any]) -> StepResult:
        """Post one price per sub-env and sell for one period.

        Args:
            actions: ``Pricing-v0``: ints ``[N]`` in ``[0, K)``; ``PricingContinuous-v0``:
                floats ``[N, 1]`` (prices, clipped to the grid's range).

        Returns:
            ``(obs [N, 5] float32, rewards [N] float64 (revenue, plus salvage in the
            last period), terminations [N] bool, truncations [N] bool (always
            False), info)``; see :mod:`rlops.envs.base` for ``final_obs``.

        Raises:
            EnvError: if called before :meth:`reset`, or on actions of the wrong
                shape or dtype, off the grid, or NaN.
        """
        if self._needs_reset:
            raise _not_reset(type(self).__name__, "step")
        prices = self._prices(actions)
        rng = self.np_random
        arrivals = rng.poisson(self._arrival_rate).astype(np.int64)
        q = np.divide(prices, self._wtp_mean, out=self._work)
        np.negative(q, out=q)
        np.exp(q, out=q)
        buyers = rng.binomial(arrivals, q).astype(np.int64)
        sales = np.minimum(self._stock, buyers)
        rewards = prices * sales
        self._stock -= sales
        self._elapsed += 1
        last = self._elapsed >= self.params.horizon
        # Salvage is paid on what is left after the last period (0 after a stock-out).
        rewards += np.where(last, self._salvage * self._stock, 0.0)
        terminated = last | (self._stock == 0)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        self.last_step = PricingStep(prices, arrivals, buyers, sales)
        obs = self._observe()
        info: dict[str, Any] = {}
        if terminated.any():
            info = {"final_obs": obs.copy(), "_final_obs": terminated}
            ended = np.flatnonzero(terminated)
            self._start(ended)
            obs[ended] = self._observe()[ended]
        return obs, rewards, terminated, truncated, info

    # ------------------------------------------------------------------ state

    def scenario(self) -> PricingScenario:
        """The demand parameters of each sub-env's current episode (copies).

        >>> env = PricingVectorEnv(2, params=PricingParams(wtp_mean=8.0))
        >>> _ = env.reset(seed=0)
        >>> env.scenario().wtp_mean.tolist()
        [8.0, 8.0]
        """
        return PricingScenario(
            self._arrival_rate.copy(), self._wtp_mean.copy(), self._salvage.copy()
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly mid-episode.

        Returns:
            ``{"num_envs": int, "stock": [N] int64, "elapsed_steps": [N] int64,
            "arrival_rate" / "wtp_mean" / "salvage": [N] float64, "rng": dict}``
            where ``rng`` is ``np_random.bit_generator.state``. Arrays are copies.

        Raises:
            EnvError: if called before :meth:`reset`.

        >>> env = PricingVectorEnv(2)
        >>> _ = env.reset(seed=0)
        >>> other = PricingVectorEnv(2)
        >>> other.load_state_dict(env.state_dict())
        >>> bool((other.step(np.array([1, 2]))[1] == env.step(np.array([1, 2]))[1]).all())
        True
        """
        if self._needs_reset:
            raise _not_reset(type(self).__name__, "state_dict")
        return {
            "num_envs": self.num_envs,
            "stock": self._stock.copy(),
            "elapsed_steps": self._elapsed.copy(),
            "arrival_rate": self._arrival_rate.copy(),
            "wtp_mean": self._wtp_mean.copy(),
            "salvage": self._salvage.copy(),
            "rng": self.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (stock, periods, scenario and generator).

        Args:
            state: a mapping produced by :meth:`state_dict`.

        Raises:
            EnvError: on missing keys, a different ``num_envs``, wrong shapes or
                values, or an unknown bit generator.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        keys = {"num_envs", "stock", "elapsed_steps", "arrival_rate", "wtp_mean", "salvage", "rng"}
        missing = keys - set(state)
        if missing:
            raise EnvError(f"{owner}: missing keys {sorted(missing)}")
        if int(state["num_envs"]) != self.num_envs:
            raise EnvError(
                f"{owner}: state was saved with num_envs={state['num_envs']}, "
                f"this env has num_envs={self.num_envs}"
            )
        n = self.num_envs
        arrays = {}
        for key in ("stock", "elapsed_steps", "arrival_rate", "wtp_mean", "salvage"):
            array = np.asarray(state[key])
            integer = key in ("stock", "elapsed_steps")
            if array.shape != (n,) or array.dtype.kind not in ("iu" if integer else "iuf"):
                kind = "an int" if integer else "a float"
                raise EnvError(
                    f"{owner}: {key!r} must be {kind} array of shape ({n},), "
                    f"got {array.dtype} {array.shape}"
                )
            arrays[key] = array
        p = self.params
        if not (
            ((arrays["stock"] >= 1) & (arrays["stock"] <= p.inventory)).all()
            and ((arrays["elapsed_steps"] >= 0) & (arrays["elapsed_steps"] < p.horizon)).all()
            and (arrays["wtp_mean"] > 0).all()
            and (arrays["arrival_rate"] >= 0).all()
            and (arrays["salvage"] >= 0).all()
        ):
            raise EnvError(
                f"{owner}: values out of range for {p} (stock in [1, inventory], "
                "elapsed_steps in [0, horizon), wtp_mean > 0, rates and salvage >= 0)"
            )
        rng = _rng_from_state(state["rng"], type(self).__name__)
        self._stock[:] = arrays["stock"]
        self._elapsed[:] = arrays["elapsed_steps"]
        self._arrival_rate[:] = arrays["arrival_rate"]
        self._wtp_mean[:] = arrays["wtp_mean"]
        self._salvage[:] = arrays["salvage"]
        self.np_random = rng
        self._needs_reset = False

    # ------------------------------------------------------------------ internals

    def _start(self, ids: I64) -> None:
        """New episodes for sub-envs ``ids``: full stock, period 0, redrawn scenario."""
        self._stock[ids] = self.params.inventory
        self._elapsed[ids] = 0
        if self.randomization is not None:
            columns = {
                "arrival_rate": self._arrival_rate,
                "wtp_mean": self._wtp_mean,
                "salvage": self._salvage,
            }
            for name, draws in self.randomization.sample(self.np_random, ids.size).items():
                columns[name][ids] = draws

    def _observe(self) -> F32:
        p = self.params
        obs = np.empty((self.num_envs, OBS_DIM), dtype=np.float32)
        obs[:, 0] = self._stock / p.inventory
        obs[:, 1] = (p.horizon - self._elapsed) / p.horizon
        obs[:, 2] = self._arrival_rate * (p.horizon / p.inventory)
        obs[:, 3] = self._wtp_mean / self._top
        obs[:, 4] = self._salvage / self._top
        return obs

    def _prices(self, actions: Any) -> F64:
        a = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
        owner = f"{type(self).__name__}.step"
        n = self.num_envs
        if self.continuous:
            if a.shape != (n, 1):
                raise EnvError(
                    f"{owner} expected prices of shape ({n}, 1) (one price per sub-env), "
                    f"got shape {a.shape}"
                )
            if a.dtype.kind not in "fiu":
                raise EnvError(f"{owner} expected float prices, got dtype {a.dtype}")
            prices = np.asarray(a[:, 0], dtype=np.float32).astype(np.float64)
            if np.isnan(prices).any():
                raise EnvError(
                    f"{owner}: price of env {int(np.flatnonzero(np.isnan(prices))[0])} is NaN"
                )
            return np.clip(prices, self._grid[0], self._grid[-1])
        if a.shape != (n,):
            raise EnvError(
                f"{owner} expected actions of shape ({n},) (one price index per sub-env), "
                f"got shape {a.shape}"
            )
        if a.dtype.kind not in "iu":
            raise EnvError(
                f"{owner} expected integer price indices, got dtype {a.dtype}; "
                "cast with actions.astype(np.int64)"
            )
        k = self._grid.size
        bad = np.flatnonzero((a < 0) | (a >= k))
        if bad.size:
            raise EnvError(
                f"{owner}: actions must be price indices in [0, {k}), got {a[bad[0]]} "
                f"for env {bad[0]} ({bad.size} invalid)"
            )
        return self._grid[a]


def _check_randomization(randomization: DomainRandomization) -> None:
    """Only :data:`RANDOMIZABLE` fields, with draws inside each field's domain."""
    lows = {"arrival_rate": (0.0, True), "wtp_mean": (0.0, False), "salvage": (0.0, True)}
    for name, dist in randomization.distributions.items():
        if name not in RANDOMIZABLE:
            raise ConfigError(
                f"randomize.{name}: PricingParams.{name} cannot be randomized per episode; "
                f"randomizable: {', '.join(RANDOMIZABLE)} (vary demand pressure with "
                "arrival_rate instead of inventory or horizon)"
            )
        low, high = dist.bounds()
        floor, inclusive = lows[name]
        ok = (low >= floor if inclusive else low > floor) and math.isfinite(high)
        if not ok:
            relation = ">=" if inclusive else ">"
            raise ConfigError(
                f"randomize.{name}: draws range over [{low}, {high}] but {name} must be "
                f"finite and {relation} {floor:g}; narrow the range or add a clip"
            )


# --------------------------------------------------------------------------- factory


_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(PricingParams))


def make_pricing_env(
    num_envs: int,
    *,
    params: PricingParams | None = None,
    randomize: Mapping[str, Any] | None = None,
    continuous: bool = False,
    **overrides: Any,
) -> PricingVectorEnv:
    """Build :class:`PricingVectorEnv` from config-style kwargs (the registry's factory).

    Args:
        num_envs: number of sub-envs.
        params: base scenario; flat ``overrides`` replace its fields.
        randomize: ``{field: range}`` per :mod:`rlops.envs.randomization`, e.g.
            ``{"arrival_rate": [0.5, 1.5]}``; fields in :data:`RANDOMIZABLE` only.
        continuous: ``Box`` price actions instead of price indices.
        **overrides: :class:`PricingParams` fields, e.g. ``horizon=30``.

    Returns:
        The (not yet reset) env.

    Raises:
        EnvError: on an unknown field or a ``params`` of the wrong type.
        ConfigError: on a bad field value or randomization range.

    >>> env = make_pricing_env(2, horizon=5, randomize={"wtp_mean": [8.0, 12.0]})
    >>> env.params.horizon, sorted(env.randomization.distributions)
    (5, ['wtp_mean'])
    """
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise EnvError(f"unknown PricingParams field(s) {unknown}; known: {sorted(_FIELDS)}")
    if params is not None and not isinstance(params, PricingParams):
        raise EnvError(f"params must be a PricingParams, got {type(params).__name__}")
    base = PricingParams() if params is None else params
    randomization = None
    if randomize:
        prefix = "env.kwargs.randomize"
        randomization = DomainRandomization.from_config(PricingParams, randomize, prefix=prefix)
        try:
            _check_randomization(randomization)
        except ConfigError as e:
            raise ConfigError(f"env.kwargs.{e}") from None
    return PricingVectorEnv(
        num_envs,
        params=dataclasses.replace(base, **overrides),
        randomization=randomization,
        continuous=continuous,
    )
