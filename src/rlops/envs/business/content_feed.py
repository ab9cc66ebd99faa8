"""Content feed: pick one item per request for a user session, with delayed engagement.

``rlops/ContentFeed-v0`` is a numpy-batched, same-step-autoreset vector env
(:mod:`rlops.envs.base`) of ``N`` independent user sessions. Every step the
policy shows one item of a fixed catalogue; the user clicks or not, grows tired,
and may leave. Clickbait ("sensational") items pay off now and cost later, and a
per-session exposure cap keeps them rare.

Catalogue (fixed, drawn once from ``params.catalogue_seed``)
    ``num_items`` items. Item ``i`` has a topic ``topic[i]`` in
    ``0..num_topics-1`` (topics dealt round-robin, then shuffled, so every topic
    has items), a quality ``quality[i] ~ U(0.2, 1)``, halved for sensational
    items (clickbait is thin), and a flag ``sensational[i]``
    (``round(sensational_fraction * num_items)`` items, at least one item is not
    sensational). The catalogue is the same in every episode and every sub-env,
    so an item index always means the same item (as a day's catalogue does);
    what changes per episode is the user, and per step the eligibility mask.
    :class:`Catalogue` holds it; ``env.catalogue`` is the env's.

User session (one episode)
    At reset the user draws a topic interest ``g_k ~ Gamma(alpha)`` (i.e. a
    ``Dirichlet(alpha)`` share, ``alpha = interest_concentration``) and keeps the
    affinity ``aff_k = g_k / max_k g_k`` in ``[0, 1]`` (1 for the favourite
    topic); fatigue ``f = 0``. The user is latent: the policy sees only what
    it showed and what was clicked. Showing item ``i`` (topic ``k``, quality
    ``q``, sensational ``s`` in {0, 1}) at step ``t``::

        p_click = clip(aff_k * (0.2 + 0.8 q) + sensational_boost * s
                       - fatigue_click_penalty * f, 0, 1)
        click   ~ Bernoulli(p_click)                 engagement e_t = click (0 or 1)
        f      <- fatigue_decay * f + sensational_fatigue * s
                  + repeat_fatigue * [k == topic shown at t - 1]
        p_leave = clip(base_leave_prob + fatigue_leave_prob * f
                       + boredom_leave_prob * (1 - click), 0, 1)

    and the user leaves (``terminated``) with probability ``p_leave``. A session
    that reaches ``max_steps`` shown items is ``truncated`` (only when the user
    did not leave on that step: the two flags never both hold). Sensational
    items raise ``p_click`` now but add fatigue, which lowers later click
    probabilities and raises the chance of leaving, so always showing them loses
    to a balanced feed over a whole session (``tests/test_envs_content_feed.py``
    checks this with the cap lifted). Showing the same topic twice in a row
    also tires the user.

Reward (delayed by ``delay`` steps, flushed at session end)
    Engagement is credited ``delay`` steps after it happens, as dwell time and
    return visits are in production logs. With ``t = 1, 2, ...`` the step index
    in the session::

        reward_t = e_{t - delay}            (0 when t <= delay)
        reward_T = e_{T - delay} + sum(e_{T - delay + 1} .. e_T)   at the last step T

    i.e. at the step a session ends (left or truncated) all engagement not yet
    credited is paid at once, so the undiscounted return of a session is exactly
    its number of clicks. ``delay = 0`` gives ``reward_t = e_t``. The engagement
    generated this step is in ``info["engagement"]`` (it is not yet reward).

Eligibility (a new request every step)
    Each item is out of stock for the current request with probability
    ``unavailable_prob``, independently per item, sub-env and step; if that
    leaves no non-sensational item, one non-sensational item (uniform) is put
    back, so a non-sensational item is always eligible. Sensational items are
    further capped: with ``n`` items shown so far in the session and ``z`` of
    them sensational, a sensational item is eligible only if
    ``z + 1 <= sensational_cap * (n + 1)``, so the sensational share of shown
    items never exceeds the cap at any point of the session (none are eligible
    on the first step unless the cap is 1). :meth:`ContentFeedVectorEnv.action_masks`
    returns ``[N, num_items]`` bool for the *current* observations (after an
    autoreset: the new episode's); the same mask is the first ``num_items``
    entries of the observation as 0/1.

Constraint handling
    An ineligible chosen item is never shown. The env shows the fallback instead,
    the eligible item of highest quality (ties: lowest index), and counts an
    attempted violation: ``info["constraint_violations"]`` is ``[N]`` int64 (0 or
    1 this step) and ``env.constraint_violations_total`` ``[N]`` int64 counts them
    since the last :meth:`~ContentFeedVectorEnv.reset`. ``info["shown"]`` is the
    item actually shown and ``info["sensational_shown"]`` ``[N]`` bool whether it
    was sensational. A shown item is eligible by construction.

Observation: float32 ``[N, num_items + 3 * num_topics + 3]``, all in ``[0, 1]``
    ``[0, A)`` eligibility mask (1 = eligible); ``[A, A+K)`` items shown per
    topic this session / ``max_steps``; ``[A+K, A+2K)`` smoothed click rate per
    topic ``(clicks_k + 1) / (shown_k + 2)``; ``[A+2K, A+3K)`` one-hot topic of
    the previous item (zeros at the first step); then ``elapsed / max_steps``,
    sensational share so far ``z / max(n, 1)`` and whether the previous item was
    clicked. (``A = num_items``, ``K = num_topics``.)

Action: ``Discrete(num_items)``, the item to show. Rewards float64 ``[N]``,
terminations and truncations bool ``[N]``.

Randomization: the float fields listed in :data:`EPISODE_FIELDS` are kept as
per-sub-env arrays ``[N]`` and redrawn by a
:class:`~rlops.envs.randomization.DomainRandomization` whenever a sub-env
(auto)resets; the integer fields and ``sensational_fraction`` shape the spaces
or the catalogue and stay fixed. ``env.episode_params()`` shows the current
values.

Baselines: :func:`popularity_policy` (the eligible item with the highest
``catalogue.base_engagement``, blind to the user) and :func:`random_policy`
(uniform over eligible items); both are ``(obs [N, D], masks [N, A]) -> actions
[N]`` callables.

One ``numpy.random.Generator`` (seeded by ``reset(seed=...)``) drives users,
clicks, departures, stock-outs and parameter draws; :meth:`state_dict` captures
it with the whole session state, so a run resumes exactly mid-episode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Final, Protocol

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlops.core.config import check
from rlops.core.errors import ConfigError, EnvError
from rlops.envs.classic import _rng_from_state
from rlops.envs.randomization import DomainRandomization

__all__ = [
    "EPISODE_FIELDS",
    "BaselinePolicy",
    "Catalogue",
    "ContentFeedParams",
    "ContentFeedVectorEnv",
    "make_content_feed",
    "masks_from_obs",
    "popularity_policy",
    "random_policy",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
StepResult = tuple[F32, F64, Bools, Bools, dict[str, Any]]

EPISODE_FIELDS: Final = (
    "sensational_cap",
    "unavailable_prob",
    "interest_concentration",
    "sensational_boost",
    "sensational_fatigue",
    "repeat_fatigue",
    "fatigue_decay",
    "fatigue_click_penalty",
    "base_leave_prob",
    "fatigue_leave_prob",
    "boredom_leave_prob",
)
"""Fields kept per sub-env and redrawn per episode under randomization."""

NEUTRAL_AFFINITY: Final = 0.5
"""Affinity of the "average user" that defines ``Catalogue.base_engagement``."""

_CAP_SLACK: Final = 1e-9  # z + 1 <= cap * (n + 1) up to float rounding (cap = 0.2 is inexact)


# --------------------------------------------------------------------------- params


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContentFeedParams:
    """Catalogue, session and user-behaviour constants of :class:`ContentFeedVectorEnv`.

    Probabilities are per step; fatigue is unitless (0 = fresh user).

    >>> ContentFeedParams(sensational_cap=0.1).num_items
    16

    Raises:
        ConfigError: naming the field, when a value is out of range.
    """

    num_items: int = 16
    """Catalogue size ``A``; the action space is ``Discrete(num_items)``."""
    num_topics: int = 4
    """Number of topics ``K`` (``1 <= K <= num_items``)."""
    sensational_fraction: float = 0.25
    """Share of catalogue items that are sensational (rounded; at least one item is not)."""
    catalogue_seed: int = 0
    """Seed of the catalogue draw (topics, qualities, sensational flags)."""
    max_steps: int = 50
    """Items shown before the session is truncated."""
    delay: int = 3
    """Steps between an item's engagement and its reward (``0 <= delay <= max_steps``)."""
    sensational_cap: float = 0.2
    """Largest share of the items shown so far in a session that may be sensational, in [0, 1]."""
    unavailable_prob: float = 0.25
    """Probability that an item is out of stock for one request, in [0, 1)."""
    interest_concentration: float = 0.5
    """Dirichlet concentration of the user's topic interest (small = one strong favourite)."""
    sensational_boost: float = 0.3
    """Click probability a sensational item adds (the short-term gain)."""
    sensational_fatigue: float = 0.4
    """Fatigue a sensational item adds (the long-term cost)."""
    repeat_fatigue: float = 0.1
    """Fatigue added when the item's topic repeats the previous item's topic."""
    fatigue_decay: float = 0.8
    """Per-step fatigue retention factor, in [0, 1]."""
    fatigue_click_penalty: float = 0.2
    """Click probability lost per unit of fatigue."""
    base_leave_prob: float = 0.01
    """Probability of leaving after any step, in [0, 1]."""
    fatigue_leave_prob: float = 0.08
    """Leave probability added per unit of fatigue."""
    boredom_leave_prob: float = 0.04
    """Leave probability added after a step without a click."""

    def __post_init__(self) -> None:
        key = type(self).__name__
        for name in ("num_items", "num_topics", "catalogue_seed", "max_steps", "delay"):
            value = getattr(self, name)
            check(
                isinstance(value, int | np.integer) and not isinstance(value, bool),
                f"{key}.{name}",
                f"must be an int, got {value!r}",
            )
        check(
            2 <= self.num_items <= 1024,
            f"{key}.num_items",
            f"must be in [2, 1024], got {self.num_items}",
        )
        check(
            1 <= self.num_topics <= self.num_items,
            f"{key}.num_topics",
            f"must be in [1, num_items={self.num_items}], got {self.num_topics}",
        )
        check(
            self.catalogue_seed >= 0,
            f"{key}.catalogue_seed",
            f"must be >= 0, got {self.catalogue_seed}",
        )
        check(self.max_steps >= 1, f"{key}.max_steps", f"must be >= 1, got {self.max_steps}")
        check(
            0 <= self.delay <= self.max_steps,
            f"{key}.delay",
            f"must be in [0, max_steps={self.max_steps}], got {self.delay}",
        )
        _check_unit(self, "sensational_fraction", upper_open=True)
        check(
            _num_sensational(self.sensational_fraction, self.num_items) < self.num_items,
            f"{key}.sensational_fraction",
            f"{self.sensational_fraction} of {self.num_items} items rounds to all of them; "
            "at least one item must not be sensational (the fallback)",
        )
        for name in ("sensational_cap", "fatigue_decay", "base_leave_prob"):
            _check_unit(self, name)
        _check_unit(self, "unavailable_prob", upper_open=True)
        for name in (
            "sensational_boost",
            "sensational_fatigue",
            "repeat_fatigue",
            "fatigue_click_penalty",
            "fatigue_leave_prob",
            "boredom_leave_prob",
        ):
            value = getattr(self, name)
            check(
                _is_real(value) and math.isfinite(value) and value >= 0,
                f"{key}.{name}",
                f"must be a finite number >= 0, got {value!r}",
            )
        value = self.interest_concentration
        check(
            _is_real(value) and math.isfinite(value) and value >= 0.01,
            f"{key}.interest_concentration",
            f"must be a finite number >= 0.01, got {value!r}",
        )


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)


def _check_unit(params: ContentFeedParams, name: str, *, upper_open: bool = False) -> None:
    value = getattr(params, name)
    ok = _is_real(value) and value >= 0 and (value < 1 if upper_open else value <= 1)
    interval = "[0, 1)" if upper_open else "[0, 1]"
    check(ok, f"{type(params).__name__}.{name}", f"must be in {interval}, got {value!r}")


def _num_sensational(fraction: float, num_items: int) -> int:
    return math.floor(fraction * num_items + 0.5)


# --------------------------------------------------------------------------- catalogue


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """The items an env can show; every array is ``[num_items]``.

    >>> cat = Catalogue.from_params(ContentFeedParams(num_items=8, num_topics=2))
    >>> cat.quality.shape, int(cat.sensational.sum())
    ((8,), 2)
    """

    topic: I64
    """Topic of each item, in ``0..num_topics-1``."""
    quality: F64
    """Quality of each item, in [0.1, 1] (sensational items at most 0.5)."""
    sensational: Bools
    """Whether each item is sensational (clickbait)."""
    base_engagement: F64
    """Click probability for a fresh user with affinity 0.5 on every topic (the
    popularity score a user-blind ranker sees)."""

    @classmethod
    def from_params(cls, params: ContentFeedParams) -> Catalogue:
        """Draw the catalogue from ``params.catalogue_seed`` (see the module docstring)."""
        rng = np.random.default_rng(params.catalogue_seed)
        a = params.num_items
        topic = rng.permutation(np.arange(a, dtype=np.int64) % params.num_topics)
        quality = rng.uniform(0.2, 1.0, size=a)
        sensational = np.zeros(a, dtype=np.bool_)
        count = _num_sensational(params.sensational_fraction, a)
        sensational[rng.choice(a, size=count, replace=False)] = True
        quality[sensational] *= 0.5
        base = NEUTRAL_AFFINITY * (0.2 + 0.8 * quality) + params.sensational_boost * sensational
        for array in (topic, quality, sensational, base):
            array.setflags(write=False)
        return cls(
            topic=topic,
            quality=quality,
            sensational=sensational,
            base_engagement=np.clip(base, 0.0, 1.0),
        )


# --------------------------------------------------------------------------- env


class ContentFeedVectorEnv(gym.vector.VectorEnv[F32, I64, npt.NDArray[Any]]):
    """``N`` user sessions of a content feed; delayed engagement reward, same-step autoreset.

    Args:
        num_envs: number of sub-envs ``N``.
        params: catalogue and behaviour constants; defaults to :class:`ContentFeedParams`.
        randomization: per-episode draws of fields in :data:`EPISODE_FIELDS`
            (``None``: every episode uses ``params``).

    Raises:
        EnvError: if ``num_envs < 1``.
        ConfigError: if ``randomization`` names a field outside
            :data:`EPISODE_FIELDS` or can draw an invalid value.

    >>> env = ContentFeedVectorEnv(2)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.action_masks().shape
    ((2, 31), (2, 16))
    >>> actions = popularity_policy(env.catalogue)(obs, env.action_masks())
    >>> obs, rewards, terminated, truncated, info = env.step(actions)
    >>> info["constraint_violations"].tolist()
    [0, 0]
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium's class attribute)
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(
        self,
        num_envs: int = 1,
        *,
        params: ContentFeedParams | None = None,
        randomization: DomainRandomization | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise EnvError(f"ContentFeedVectorEnv: num_envs must be an int >= 1, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.params = ContentFeedParams() if params is None else params
        self.randomization = randomization
        self.catalogue = Catalogue.from_params(self.params)
        _check_randomization(self.params, randomization)
        p, n = self.params, self.num_envs
        a, k = p.num_items, p.num_topics
        self.obs_dim = a + 3 * k + 3
        self.single_observation_space = spaces.Box(
            0.0, 1.0, shape=(self.obs_dim,), dtype=np.float32
        )
        self.single_action_space = spaces.Discrete(a)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)

        self._rows = np.arange(n)
        self._non_sensational = np.flatnonzero(~self.catalogue.sensational)
        # Per-sub-env copies of the episode-level params (redrawn under randomization).
        self._ep: dict[str, F64] = {
            name: np.full(n, float(getattr(p, name))) for name in EPISODE_FIELDS
        }
        self._affinity = np.zeros((n, k), dtype=np.float64)
        self._fatigue = np.zeros(n, dtype=np.float64)
        self._shown = np.zeros((n, k), dtype=np.int64)
        self._clicks = np.zeros((n, k), dtype=np.int64)
        self._sensational_count = np.zeros(n, dtype=np.int64)
        self._last_topic = np.full(n, -1, dtype=np.int64)
        self._last_click = np.zeros(n, dtype=np.bool_)
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._pending = np.zeros((n, p.delay), dtype=np.float64)
        self._available = np.ones((n, a), dtype=np.bool_)
        self.constraint_violations_total: I64 = np.zeros(n, dtype=np.int64)
        """Attempted violations per sub-env since the last :meth:`reset`."""
        self._needs_reset = True

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Start a new session in every sub-env and clear the violation counters.

        Args:
            seed: reseeds the batch's single generator; ``None`` continues it.
            options: not supported (must be ``None`` or empty).

        Returns:
            ``(obs [N, obs_dim] float32, {})``.

        Raises:
            EnvError: if ``options`` is not empty.
        """
        if options:
            raise EnvError(
                f"ContentFeedVectorEnv.reset does not take options (got keys {sorted(options)}); "
                "set session behaviour through ContentFeedParams"
            )
        super().reset(seed=seed)
        self._begin_sessions(self._rows)
        self._draw_availability()
        self.constraint_violations_total[:] = 0
        self._needs_reset = False
        return self._observe(), {}

    def step(self, actions: npt.ArrayLike) -> StepResult:
        """Show one item per sub-env (the fallback if the chosen one is ineligible).

        Args:
            actions: int array ``[N]`` of item indices in ``[0, num_items)``.

        Returns:
            ``(obs [N, obs_dim] float32, rewards [N] float64, terminations [N] bool,
            truncations [N] bool, info)``. ``info`` always holds ``[N]`` arrays
            ``constraint_violations`` (int64), ``shown`` (int64, the item shown),
            ``sensational_shown`` (bool) and ``engagement`` (float64, not yet
            credited as reward); plus ``final_obs`` / ``_final_obs`` on steps where
            a session ended.

        Raises:
            EnvError: if called before :meth:`reset` or on malformed actions.
        """
        if self._needs_reset:
            raise EnvError(
                "ContentFeedVectorEnv.step called before reset(); call env.reset(seed=...)"
            )
        chosen = self._check_actions(actions)
        cat, ep, rows = self.catalogue, self._ep, self._rows
        masks = self._masks()
        allowed = masks[rows, chosen]
        shown = np.where(allowed, chosen, _best_quality(masks, cat.quality))
        violations = (~allowed).astype(np.int64)
        self.constraint_violations_total += violations

        topic = cat.topic[shown]
        sensational = cat.sensational[shown]
        p_click = self._affinity[rows, topic] * (0.2 + 0.8 * cat.quality[shown])
        p_click += ep["sensational_boost"] * sensational
        p_click -= ep["fatigue_click_penalty"] * self._fatigue
        np.clip(p_click, 0.0, 1.0, out=p_click)
        draws = self.np_random.random((2, self.num_envs))
        clicked = draws[0] < p_click

        self._fatigue *= ep["fatigue_decay"]
        self._fatigue += ep["sensational_fatigue"] * sensational
        self._fatigue += ep["repeat_fatigue"] * (topic == self._last_topic)
        p_leave = ep["base_leave_prob"] + ep["fatigue_leave_prob"] * self._fatigue
        p_leave += ep["boredom_leave_prob"] * ~clicked
        terminated = draws[1] < p_leave  # p_leave >= 1 always leaves: clip is implicit

        self._shown[rows, topic] += 1
        self._clicks[rows, topic] += clicked
        self._sensational_count += sensational
        self._last_topic[:] = topic
        self._last_click[:] = clicked
        self._elapsed += 1
        truncated = (self._elapsed >= self.params.max_steps) & ~terminated
        done = terminated | truncated

        engagement = clicked.astype(np.float64)
        rewards = self._credit(engagement, done)
        self._draw_availability()
        obs = self._observe()
        info: dict[str, Any] = {
            "constraint_violations": violations,
            "shown": shown.astype(np.int64),
            "sensational_shown": sensational.copy(),
            "engagement": engagement,
        }
        if done.any():
            info["final_obs"] = obs.copy()
            info["_final_obs"] = done
            ended = np.flatnonzero(done)
            self._begin_sessions(ended)
            obs[ended] = self._observe()[ended]
        return obs, rewards, terminated, truncated, info

    def action_masks(self) -> Bools:
        """Eligible items for each sub-env's current observation, ``[N, num_items]`` bool.

        After an autoreset the row is the new session's mask. Always at least one
        True per row (a non-sensational item). Equal to ``obs[:, :num_items] > 0.5``.

        Raises:
            EnvError: if called before :meth:`reset`.
        """
        if self._needs_reset:
            raise EnvError("ContentFeedVectorEnv.action_masks called before reset()")
        return self._masks()

    def episode_params(self) -> dict[str, F64]:
        """Current per-sub-env values of :data:`EPISODE_FIELDS`: ``{field: [N] float64}`` copies."""
        return {name: values.copy() for name, values in self._ep.items()}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly mid-session.

        Returns:
            ``{"num_envs": int, "arrays": {name: array copy}, "rng": dict}``;
            ``rng`` is ``np_random.bit_generator.state``. The catalogue is not
            included (it is rebuilt from ``params``).

        Raises:
            EnvError: if called before :meth:`reset`.
        """
        if self._needs_reset:
            raise EnvError("ContentFeedVectorEnv.state_dict called before reset()")
        return {
            "num_envs": self.num_envs,
            "arrays": {name: array.copy() for name, array in self._arrays().items()},
            "rng": self.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from an env with the same ``num_envs`` and params.

        Raises:
            EnvError: on missing keys, a different ``num_envs``, wrong shapes or
                dtypes, or an unknown bit generator.
        """
        owner = "ContentFeedVectorEnv.load_state_dict"
        missing = {"num_envs", "arrays", "rng"} - set(state)
        if missing:
            raise EnvError(f"{owner}: missing keys {sorted(missing)}")
        if int(state["num_envs"]) != self.num_envs:
            raise EnvError(
                f"{owner}: state was saved with num_envs={state['num_envs']}, "
                f"this env has num_envs={self.num_envs}"
            )
        targets = self._arrays()
        arrays = state["arrays"]
        if set(arrays) != set(targets):
            raise EnvError(
                f"{owner}: 'arrays' must have keys {sorted(targets)}, got {sorted(arrays)}"
            )
        loaded = {}
        for name, target in targets.items():
            value = np.asarray(arrays[name])
            if value.shape != target.shape or not np.can_cast(
                value.dtype, target.dtype, "same_kind"
            ):
                raise EnvError(
                    f"{owner}: '{name}' must be {target.dtype} {target.shape}, "
                    f"got {value.dtype} {value.shape}"
                )
            loaded[name] = value
        self.np_random = _rng_from_state(state["rng"], "ContentFeedVectorEnv")
        for name, target in targets.items():
            target[...] = loaded[name]
        self._needs_reset = False

    # ------------------------------------------------------------------ internals

    def _arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The mutable session state, by name (views, written in place on load)."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "affinity": self._affinity,
            "fatigue": self._fatigue,
            "shown": self._shown,
            "clicks": self._clicks,
            "sensational_count": self._sensational_count,
            "last_topic": self._last_topic,
            "last_click": self._last_click,
            "elapsed": self._elapsed,
            "pending": self._pending,
            "available": self._available,
            "constraint_violations_total": self.constraint_violations_total,
        }
        arrays.update({f"param.{name}": values for name, values in self._ep.items()})
        return arrays

    def _masks(self) -> Bools:
        cap_ok = (self._sensational_count + 1) <= self._ep["sensational_cap"] * (
            self._elapsed + 1
        ) + _CAP_SLACK
        return self._available & (~self.catalogue.sensational | cap_ok[:, None])

    def _credit(self, engagement: F64, done: Bools) -> F64:
        """Delay engagement by ``params.delay`` steps; flush what is pending when a session ends."""
        pending = self._pending
        if pending.shape[1] == 0:
            return engagement.copy()
        rewards = pending[:, 0].copy()
        pending[:, :-1] = pending[:, 1:]
        pending[:, -1] = engagement
        if done.any():
            rewards[done] += pending[done].sum(axis=1)
            pending[done] = 0.0
        return rewards

    def _begin_sessions(self, ids: npt.NDArray[np.intp]) -> None:
        """Draw episode params (if randomized) and a fresh user for sub-envs ``ids``."""
        rng = self.np_random
        if self.randomization:
            for name, column in self.randomization.sample(rng, ids.size).items():
                self._ep[name][ids] = column
        alpha = self._ep["interest_concentration"][ids, None]
        interest = rng.gamma(np.broadcast_to(alpha, (ids.size, self.params.num_topics)))
        top = interest.max(axis=1, keepdims=True)
        # A tiny alpha can underflow every draw to 0: such a user likes all topics alike.
        self._affinity[ids] = np.where(top > 0, interest / np.where(top > 0, top, 1.0), 1.0)
        self._fatigue[ids] = 0.0
        self._shown[ids] = 0
        self._clicks[ids] = 0
        self._sensational_count[ids] = 0
        self._last_topic[ids] = -1
        self._last_click[ids] = False
        self._elapsed[ids] = 0
        self._pending[ids] = 0.0

    def _draw_availability(self) -> None:
        """A new request in every sub-env: per-item stock-outs, one non-sensational item kept."""
        rng = self.np_random
        available = rng.random(self._available.shape) >= self._ep["unavailable_prob"][:, None]
        empty = np.flatnonzero(~available[:, self._non_sensational].any(axis=1))
        if empty.size:
            keep = self._non_sensational[rng.integers(self._non_sensational.size, size=empty.size)]
            available[empty, keep] = True
        self._available[...] = available

    def _observe(self) -> F32:
        p = self.params
        a, k = p.num_items, p.num_topics
        obs = np.zeros((self.num_envs, self.obs_dim), dtype=np.float32)
        obs[:, :a] = self._masks()
        obs[:, a : a + k] = self._shown / p.max_steps
        obs[:, a + k : a + 2 * k] = (self._clicks + 1) / (self._shown + 2)
        seen = np.flatnonzero(self._last_topic >= 0)
        obs[seen, a + 2 * k + self._last_topic[seen]] = 1.0
        obs[:, -3] = self._elapsed / p.max_steps
        obs[:, -2] = self._sensational_count / np.maximum(self._elapsed, 1)
        obs[:, -1] = self._last_click
        return obs

    def _check_actions(self, actions: npt.ArrayLike) -> I64:
        a = np.asarray(actions)
        if a.shape != (self.num_envs,):
            raise EnvError(
                f"ContentFeedVectorEnv.step expected actions of shape ({self.num_envs},) "
                f"(one item index per sub-env), got shape {a.shape}"
            )
        if a.dtype.kind not in "iu":
            raise EnvError(
                f"ContentFeedVectorEnv.step expected integer item indices, got dtype {a.dtype}; "
                "cast with actions.astype(np.int64)"
            )
        bad = np.flatnonzero((a < 0) | (a >= self.params.num_items))
        if bad.size:
            raise EnvError(
                f"ContentFeedVectorEnv.step: actions must be in [0, {self.params.num_items}), "
                f"got {a[bad[0]]} for env {bad[0]} ({bad.size} invalid)"
            )
        return a.astype(np.int64)


def _best_quality(masks: Bools, quality: F64) -> I64:
    """The fallback: per row, the eligible item of highest quality (lowest index on ties)."""
    best: I64 = np.where(masks, quality, -np.inf).argmax(axis=1).astype(np.int64)
    return best


def _check_randomization(
    params: ContentFeedParams, randomization: DomainRandomization | None
) -> None:
    if not randomization:
        return
    for name, dist in randomization.distributions.items():
        if name not in EPISODE_FIELDS:
            raise ConfigError(
                f"randomize.{name}: only per-episode fields can be randomized "
                f"({', '.join(EPISODE_FIELDS)}); {name} shapes the spaces or the catalogue"
            )
        for bound in dist.bounds():
            try:
                changes: dict[str, Any] = {name: bound}
                dataclasses.replace(params, **changes)
            except ConfigError as e:
                raise ConfigError(
                    f"randomize.{name}: the range {list(dist.bounds())} can draw invalid "
                    f"values ({e}); narrow it or add a clip"
                ) from None


# --------------------------------------------------------------------------- factory


def make_content_feed(
    num_envs: int = 1,
    *,
    params: ContentFeedParams | None = None,
    randomize: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> ContentFeedVectorEnv:
    """Build the env from flat params kwargs (the ``rlops/ContentFeed-v0`` factory).

    Args:
        num_envs: number of sub-envs.
        params: a base :class:`ContentFeedParams` (default: the defaults).
        randomize: ``{field: range}`` as in
            :meth:`DomainRandomization.from_config` (e.g. ``{"sensational_boost":
            [0.2, 0.4]}``), drawn per episode.
        **overrides: :class:`ContentFeedParams` fields, e.g. ``sensational_cap=0.1``.

    Raises:
        ConfigError: on an unknown field or an invalid value or range (the key
            names it, e.g. ``env.kwargs.randomize.delay``).

    >>> env = make_content_feed(2, sensational_cap=0.1, randomize={"base_leave_prob": [0, 0.05]})
    >>> env.num_envs
    2
    """
    fields = {f.name for f in dataclasses.fields(ContentFeedParams)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"env.kwargs.{unknown[0]}: unknown ContentFeedParams field; known: "
            f"{', '.join(sorted(fields))}, params, randomize"
        )
    if params is not None and not isinstance(params, ContentFeedParams):
        raise ConfigError(
            f"env.kwargs.params: must be a ContentFeedParams, got {type(params).__name__}"
        )
    merged = dataclasses.replace(params or ContentFeedParams(), **overrides)
    randomization = None
    if randomize:
        randomization = DomainRandomization.from_config(
            ContentFeedParams, randomize, prefix="env.kwargs.randomize"
        )
        for name in randomization.distributions:
            if name not in EPISODE_FIELDS:
                raise ConfigError(
                    f"env.kwargs.randomize.{name}: only per-episode fields can be randomized "
                    f"({', '.join(EPISODE_FIELDS)})"
                )
    return ContentFeedVectorEnv(num_envs, params=merged, randomization=randomization)


# --------------------------------------------------------------------------- baselines


class BaselinePolicy(Protocol):
    """A policy for :class:`ContentFeedVectorEnv`: ``(obs [N, D], masks [N, A]) -> actions [N]``.

    ``masks`` is ``env.action_masks()`` (or :func:`masks_from_obs`); the baselines
    only ever return eligible items.
    """

    def __call__(self, obs: F32, masks: Bools) -> I64: ...


def masks_from_obs(obs: npt.NDArray[Any], num_items: int) -> Bools:
    """The eligibility masks ``[N, num_items]`` carried in observations ``[N, D]``.

    >>> env = ContentFeedVectorEnv(3)
    >>> obs, _ = env.reset(seed=1)
    >>> bool((masks_from_obs(obs, 16) == env.action_masks()).all())
    True
    """
    return np.asarray(obs)[:, :num_items] > 0.5


def popularity_policy(catalogue: Catalogue) -> BaselinePolicy:
    """Always the eligible item with the highest ``catalogue.base_engagement``.

    Blind to the user: what a global "most clicked" ranking does. It favours
    sensational items whenever the cap allows them.

    >>> env = ContentFeedVectorEnv(1)
    >>> obs, _ = env.reset(seed=0)
    >>> int(popularity_policy(env.catalogue)(obs, env.action_masks())[0]) in range(16)
    True
    """
    scores = np.asarray(catalogue.base_engagement, dtype=np.float64)

    def act(obs: F32, masks: Bools) -> I64:
        best: I64 = np.where(masks, scores, -np.inf).argmax(axis=1).astype(np.int64)
        return best

    return act


def random_policy(seed: int | None = None) -> BaselinePolicy:
    """Uniform over each row's eligible items, from its own generator seeded with ``seed``.

    >>> env = ContentFeedVectorEnv(2)
    >>> obs, _ = env.reset(seed=0)
    >>> actions = random_policy(0)(obs, env.action_masks())
    >>> bool(env.action_masks()[[0, 1], actions].all())
    True
    """
    rng = np.random.default_rng(seed)

    def act(obs: F32, masks: Bools) -> I64:
        keys = rng.random(masks.shape)
        keys[~masks] = -1.0
        picks: I64 = keys.argmax(axis=1).astype(np.int64)
        return picks

    return act
