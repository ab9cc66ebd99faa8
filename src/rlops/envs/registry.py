"""Build vector envs by id: rlops' own simulators and any Gymnasium env.

Two kinds of id reach :func:`make_vec`:

* ``rlops/<Name>-v<N>``: an env registered here with :func:`register` (the
  built-ins are ``rlops/CartPole-v1``, ``rlops/Pendulum-v1`` and, for
  fault-tolerance tests, ``rlops/CartPoleCrashing-v0``);
* ``gym:<id>``: any Gymnasium id, built with ``gymnasium.make_vec`` as a
  ``SyncVectorEnv`` in same-step autoreset mode. Gymnasium's ``module:EnvId``
  syntax works inside, e.g. ``gym:rlops.testing:NaNCartPole-v0`` imports
  ``rlops.testing`` (which registers ``NaNCartPole-v0``) first.

Either way the result is a ``gymnasium.vector.VectorEnv`` with
``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``. :func:`make_vec` never
resets the env: the caller resets it with a seed.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from rlops.core.errors import EnvError
from rlops.envs.classic import (
    CartPoleParams,
    CartPoleVectorEnv,
    PendulumParams,
    PendulumVectorEnv,
)

__all__ = ["GYM_PREFIX", "EnvFactory", "EnvInfo", "list_envs", "make_vec", "register"]

AnyVectorEnv = gym.vector.VectorEnv[Any, Any, Any]
EnvFactory = Callable[..., AnyVectorEnv]
"""Builds a vector env: called as ``factory(num_envs, **kwargs)``."""

GYM_PREFIX = "gym:"
"""Prefix that routes an id to ``gymnasium.make_vec``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvInfo:
    """One registered env, as :func:`list_envs` reports it.

    >>> info = EnvInfo(id="rlops/CartPole-v1", description="cart-pole")
    >>> info.observation_space is None
    True
    """

    id: str
    """The id to pass to :func:`make_vec`."""
    description: str
    """One line saying what the env simulates."""
    observation_space: str | None = None
    """``repr`` of the single-env observation space (filled by ``list_envs(with_spaces=True)``)."""
    action_space: str | None = None
    """``repr`` of the single-env action space (filled by ``list_envs(with_spaces=True)``)."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    factory: EnvFactory
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register(
    env_id: str, factory: EnvFactory, description: str, *, overwrite: bool = False
) -> None:
    """Make ``factory`` buildable as ``make_vec(env_id, num_envs, **kwargs)``.

    Args:
        env_id: the id, conventionally ``"<namespace>/<Name>-v<N>"``; must not
            start with ``"gym:"`` (that prefix is routed to Gymnasium).
        factory: called as ``factory(num_envs, **kwargs)``; must return a
            ``gymnasium.vector.VectorEnv`` with same-step autoreset.
        description: one line shown by :func:`list_envs` and the CLI.
        overwrite: replace an existing registration instead of failing.

    Raises:
        EnvError: if the id is empty, starts with ``"gym:"``, or is already
            registered and ``overwrite`` is False.

    >>> register("demo/Pole-v0", CartPoleVectorEnv, "demo cart-pole", overwrite=True)
    >>> make_vec("demo/Pole-v0", 2).num_envs
    2
    """
    if not env_id or env_id.startswith(GYM_PREFIX):
        raise EnvError(f"invalid env id {env_id!r}: must be non-empty and not start with 'gym:'")
    if env_id in _REGISTRY and not overwrite:
        raise EnvError(
            f"env id {env_id!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[env_id] = _Entry(factory=factory, description=description)


def list_envs(*, with_spaces: bool = False) -> list[EnvInfo]:
    """The registered envs, sorted by id (``gym:<id>`` ids are not listed).

    Args:
        with_spaces: also build each env once with ``num_envs=1`` to describe its
            observation and action spaces.

    Returns:
        One :class:`EnvInfo` per registered id.

    >>> "rlops/CartPole-v1" in [info.id for info in list_envs()]
    True
    """
    infos = []
    for env_id in sorted(_REGISTRY):
        entry = _REGISTRY[env_id]
        observation_space = action_space = None
        if with_spaces:
            try:
                env = entry.factory(1)
            except EnvError:  # needs kwargs (a trace file, a URL): no spaces to show
                env = None
            if env is not None:
                try:
                    observation_space = repr(env.single_observation_space)
                    action_space = repr(env.single_action_space)
                finally:
                    env.close()
        infos.append(
            EnvInfo(
                id=env_id,
                description=entry.description,
                observation_space=observation_space,
                action_space=action_space,
            )
        )
    return infos


def make_vec(
    env_id: str, num_envs: int = 1, *, seed: int | None = None, **kwargs: Any
) -> AnyVectorEnv:
    """Build ``num_envs`` copies of an env as one same-step-autoreset vector env.

    The env is *not* reset: call ``env.reset(seed=...)`` before stepping.

    Args:
        env_id: a registered id (see :func:`list_envs`) or ``"gym:<gymnasium id>"``.
        num_envs: number of sub-envs, at least 1.
        seed: if given, seeds ``action_space`` / ``single_action_space`` /
            ``observation_space`` so their ``sample()`` is reproducible. It does
            not seed the dynamics; ``reset(seed=...)`` does.
        **kwargs: passed to the env's factory. For ``rlops/CartPole-v1`` and
            ``rlops/Pendulum-v1`` these are fields of :class:`CartPoleParams` /
            :class:`PendulumParams` (e.g. ``gravity=9.81``) or ``params=``; for
            ``gym:`` ids they go to the Gymnasium env's constructor.

    Returns:
        A ``gymnasium.vector.VectorEnv`` whose ``metadata["autoreset_mode"]`` is
        ``AutoresetMode.SAME_STEP``.

    Raises:
        EnvError: if ``num_envs < 1``, the id is unknown (to rlops or to
            Gymnasium), or the env cannot be built with ``kwargs``.

    >>> env = make_vec("rlops/CartPole-v1", 4)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape
    (4, 4)
    >>> make_vec("gym:CartPole-v1", 2).metadata["autoreset_mode"]
    <AutoresetMode.SAME_STEP: 'SameStep'>
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise EnvError(f"num_envs must be an int >= 1, got {num_envs!r}")
    if env_id.startswith(GYM_PREFIX):
        env = _make_gym(env_id[len(GYM_PREFIX) :], num_envs, kwargs)
    else:
        entry = _REGISTRY.get(env_id)
        if entry is None:
            raise EnvError(_unknown_id_message(env_id))
        env = entry.factory(num_envs, **kwargs)
    if seed is not None:
        env.action_space.seed(seed)
        env.single_action_space.seed(seed)
        env.observation_space.seed(seed)
    return env


def _make_gym(gym_id: str, num_envs: int, kwargs: dict[str, Any]) -> AnyVectorEnv:
    if not gym_id:
        raise EnvError("empty Gymnasium id after 'gym:'; use e.g. 'gym:CartPole-v1'")
    try:
        env: AnyVectorEnv = gym.make_vec(
            gym_id,
            num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
            **kwargs,
        )
    except gym.error.Error as e:
        raise EnvError(f"Gymnasium could not make {gym_id!r}: {e}") from e
    except ImportError as e:
        raise EnvError(
            f"Gymnasium could not import the module of {gym_id!r} "
            f"(for 'module:EnvId' ids the module must be importable): {e}"
        ) from e
    except TypeError as e:
        raise EnvError(
            f"Gymnasium could not build {gym_id!r} with kwargs {sorted(kwargs)}: {e}"
        ) from e
    return env


def _unknown_id_message(env_id: str) -> str:
    known = sorted(_REGISTRY)
    message = f"unknown env id {env_id!r}."
    if env_id in gym.registry:
        message += f" Did you mean 'gym:{env_id}'?"
    else:
        close = difflib.get_close_matches(env_id, known, n=1)
        if not close:
            # "CartPole-v1" most likely meant "rlops/CartPole-v1".
            names = {k.split("/", 1)[-1]: k for k in known}
            close = [names[n] for n in difflib.get_close_matches(env_id, list(names), n=1)]
        if close:
            message += f" Did you mean {close[0]!r}?"
    return (
        f"{message} Known ids: {', '.join(known)}. Any Gymnasium id works with the "
        "'gym:' prefix, e.g. 'gym:CartPole-v1' or 'gym:my_module:MyEnv-v0'."
    )


def _params_factory(env_cls: Callable[..., AnyVectorEnv], params_cls: type[Any]) -> EnvFactory:
    """A factory accepting ``params=`` or the params' fields as flat kwargs."""
    fields = {f.name for f in dataclasses.fields(params_cls)}

    def factory(num_envs: int, *, params: Any = None, **overrides: Any) -> AnyVectorEnv:
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise EnvError(
                f"unknown {params_cls.__name__} field(s) {unknown}; known: {sorted(fields)}"
            )
        if params is not None and not isinstance(params, params_cls):
            raise EnvError(f"params must be a {params_cls.__name__}, got {type(params).__name__}")
        base = params_cls() if params is None else params
        return env_cls(num_envs, params=dataclasses.replace(base, **overrides))

    return factory


register(
    "rlops/CartPole-v1",
    _params_factory(CartPoleVectorEnv, CartPoleParams),
    "Cart-pole balancing, numpy-batched; same dynamics as Gymnasium CartPole-v1 "
    "(Discrete(2), 500-step limit)",
)
register(
    "rlops/Pendulum-v1",
    _params_factory(PendulumVectorEnv, PendulumParams),
    "Torque-limited pendulum swing-up, numpy-batched; same dynamics as Gymnasium "
    "Pendulum-v1 (Box(-2, 2, (1,)), 200-step limit)",
)


def _crashing_cartpole(num_envs: int, **kwargs: Any) -> AnyVectorEnv:
    """``rlops.testing.make_crashing_cartpole``, imported on first use.

    ``rlops.testing`` is test-only code (it imports this package itself), so
    ``import rlops.envs`` must not import it.
    """
    from rlops.testing import make_crashing_cartpole

    return make_crashing_cartpole(num_envs, **kwargs)


register(
    "rlops/CartPoleCrashing-v0",
    _crashing_cartpole,
    "rlops/CartPole-v1 that raises or hangs on purpose, for fault-tolerance tests "
    "(kwargs: rlops.testing.CrashConfig fields, e.g. p_crash_step=0.0005)",
)


def _content_feed(num_envs: int, **kwargs: Any) -> AnyVectorEnv:
    """``rlops.envs.business.content_feed.make_content_feed``, imported on first use.

    kwargs: :class:`~rlops.envs.business.content_feed.ContentFeedParams` fields,
    ``params=`` and ``randomize={field: range}`` (drawn per episode).
    """
    from rlops.envs.business.content_feed import make_content_feed

    return make_content_feed(num_envs, **kwargs)


register(
    "rlops/ContentFeed-v0",
    _content_feed,
    "Session-based content selection: Discrete(num_items) items, delayed engagement "
    "reward, churn, per-step eligibility masks (env.action_masks()) and a sensational cap",
)


def _pricing(num_envs: int, **kwargs: Any) -> AnyVectorEnv:
    """``rlops.envs.business.pricing.make_pricing_env``, imported on first use.

    kwargs: :class:`~rlops.envs.business.pricing.PricingParams` fields (or
    ``params=``) and ``randomize={field: range}`` (see
    :mod:`rlops.envs.randomization`; fields ``arrival_rate``, ``wtp_mean``, ``salvage``).
    """
    from rlops.envs.business.pricing import make_pricing_env

    return make_pricing_env(num_envs, **kwargs)


def _pricing_continuous(num_envs: int, **kwargs: Any) -> AnyVectorEnv:
    """:func:`_pricing` with a ``Box`` price action instead of a price index."""
    from rlops.envs.business.pricing import make_pricing_env

    return make_pricing_env(num_envs, continuous=True, **kwargs)


register(
    "rlops/Pricing-v0",
    _pricing,
    "Perishable-inventory dynamic pricing (Poisson customers, exponential willingness "
    "to pay), exact DP oracle; Discrete(price grid), episode = selling season "
    "(kwargs: PricingParams fields, randomize={field: range})",
)
register(
    "rlops/PricingContinuous-v0",
    _pricing_continuous,
    "rlops/Pricing-v0 with the price itself as a Box action in the grid's range",
)


def _autoscaling(num_envs: int, **kwargs: Any) -> AnyVectorEnv:
    """``rlops.envs.business.autoscaling.make_autoscaling_env``, imported on first use.

    kwargs: :class:`~rlops.envs.business.autoscaling.AutoscalingParams` fields,
    ``trace_csv=PATH`` (replay a recorded ``timestamp,requests_per_s`` trace)
    and ``randomize={field: range}`` (drawn per episode).
    """
    from rlops.envs.business.autoscaling import make_autoscaling_env

    return make_autoscaling_env(num_envs, **kwargs)


register(
    "rlops/Autoscaling-v0",
    _autoscaling,
    "Service autoscaling: scale replicas down/hold/up against a diurnal, bursty or "
    "recorded load with a provisioning delay; cost = replicas + SLO violations (Discrete(3))",
)


def _trace_replay(num_envs: int, **kwargs: Any) -> AnyVectorEnv:
    """``rlops.envs.adapters.make_trace_replay_env``, imported on first use.

    kwargs: ``path`` (required: a JSONL or CSV trace of logged transitions),
    ``observation_space``, ``action_space``, ``file_format``.
    """
    from rlops.envs.adapters import make_trace_replay_env

    return make_trace_replay_env(num_envs, **kwargs)


def _http(num_envs: int, **kwargs: Any) -> AnyVectorEnv:
    """``rlops.envs.adapters.make_http_env``, imported on first use.

    kwargs: ``url`` (required), ``timeout_s``, ``headers``.
    """
    from rlops.envs.adapters import make_http_env

    return make_http_env(num_envs, **kwargs)


register(
    "rlops/TraceReplay-v0",
    _trace_replay,
    "Replays logged episodes from a JSONL/CSV trace whatever the agent does; info has "
    "logged_action, propensity, action_matches for off-policy evaluation (kwargs: path=...)",
)
register(
    "rlops/HTTP-v0",
    _http,
    "A live system behind HTTP (POST /reset, POST /step, GET /spaces; see "
    "rlops.envs.adapters) (kwargs: url=..., timeout_s=10.0, headers={...})",
)
