"""Numpy-batched classic-control simulators: CartPole and Pendulum.

Both classes step all ``N`` sub-envs with a handful of in-place numpy ufuncs (no
Python loop over sub-envs) and reproduce Gymnasium's ``CartPole-v1`` and
``Pendulum-v1``: the physical state is kept in float64 exactly as Gymnasium
keeps it, every expression is evaluated in the same order and precision, and
observations are cast to float32 at the end, so observations, terminations,
truncations and CartPole rewards are bit-identical to Gymnasium's from the same
state and actions (``tests/test_envs_classic.py`` checks this step by step).
One exception: Gymnasium squares the Pendulum cost terms with scalar ``x**2``
(libm ``pow``/``powf``, not always correctly rounded) where rlops uses the exact
``x * x``, so Pendulum rewards can differ in the last bits (below 1e-9).

CartPole (Barto, Sutton & Anderson 1983; equations from Florian 2007,
https://coneural.org/florian/papers/05_cart_pole.pdf)
    State ``(x, x_dot, theta, theta_dot)``: cart position [m], cart velocity
    [m/s], pole angle from upright [rad], pole angular velocity [rad/s].
    Action ``a`` in ``{0, 1}`` pushes the cart with force ``F = -force_mag`` or
    ``+force_mag`` [N]. With ``M = masscart + masspole`` [kg] and ``l`` the
    *half* pole length [m]::

        temp      = (F + masspole * l * theta_dot**2 * sin(theta)) / M
        theta_acc = (g * sin(theta) - cos(theta) * temp)
                    / (l * (4/3 - masspole * cos(theta)**2 / M))        [rad/s^2]
        x_acc     = temp - masspole * l * theta_acc * cos(theta) / M    [m/s^2]

    followed by one explicit Euler step of ``tau = 0.02`` s (positions use the
    old velocities). The episode terminates when ``|x| > 2.4`` m or
    ``|theta| > 12 deg`` (0.2095 rad) and is truncated after 500 steps. The
    reward is ``+1`` on every step, the terminating one included. Reset draws
    all four state variables from ``U(-0.05, 0.05)``. Observation: the state as
    float32, shape ``[N, 4]``.

Pendulum (Gymnasium ``Pendulum-v1``)
    State ``(theta, theta_dot)``: angle [rad] (0 is upright) and angular
    velocity [rad/s]. Action: torque ``u`` [N m], shape ``[N, 1]``, clipped to
    ``[-2, 2]``. With ``g = 10`` m/s^2, mass ``m = 1`` kg, length ``l = 1`` m
    and ``dt = 0.05`` s::

        reward         = -(angle_normalize(theta)**2 + 0.1 * theta_dot**2 + 0.001 * u**2)
        theta_dot_next = clip(theta_dot + (3 g / (2 l) * sin(theta) + 3 / (m l^2) * u) * dt,
                              -8, 8)                                    [rad/s]
        theta_next     = theta + theta_dot_next * dt                    [rad]

    where the reward uses the state *before* the step and ``angle_normalize``
    wraps to ``[-pi, pi)``. Episodes never terminate; they are truncated after
    200 steps. Reset draws ``theta ~ U(-pi, pi)`` and ``theta_dot ~ U(-1, 1)``.
    Observation: ``(cos theta, sin theta, theta_dot)`` as float32, shape
    ``[N, 3]``. As in Gymnasium the torque is applied in float32 (the action
    space's dtype), so ``3 / (m l^2) * u`` and ``0.001 * u**2`` are float32
    products added to float64 terms.

Both envs autoreset on the same step (:mod:`rlops.envs.base`): when sub-env
``i`` ends, the returned ``obs[i]`` is already the first observation of its next
episode, ``info["final_obs"]`` is a float32 ``[N, obs_dim]`` array whose row ``i``
is the last observation of the finished episode, and ``info["_final_obs"]`` is
the boolean ``[N]`` mask of sub-envs that ended. Rows of ``final_obs`` where the
mask is False hold that step's pre-reset observation (equal to the returned
one) and carry no extra meaning. The two keys are present only on steps where
at least one sub-env ended; otherwise ``info`` is ``{}``. Unlike Gymnasium's
``SyncVectorEnv`` there is no ``final_info`` key (the sims have no per-step info).

Rewards are float64 ``[N]`` (as from ``SyncVectorEnv``), terminations and
truncations bool ``[N]``. Every array returned by ``reset``/``step`` is freshly
allocated, so callers may keep references; internal scratch buffers are
preallocated and written in place.

One ``numpy.random.Generator`` drives all resets of the batch. It is seeded by
``reset(seed=...)``; :meth:`CartPoleVectorEnv.state_dict` captures it together
with the physical state and step counters so a run resumes exactly mid-episode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Final, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlops.core.errors import EnvError

__all__ = [
    "CartPoleParams",
    "CartPoleVectorEnv",
    "PendulumParams",
    "PendulumVectorEnv",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
StepResult = tuple[F32, F64, Bools, Bools, dict[str, Any]]

_BIT_GENERATORS: Final = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")
"""Bit generators :func:`_rng_from_state` may rebuild (by name, never by import path)."""


# --------------------------------------------------------------------------- params


@dataclasses.dataclass(frozen=True, kw_only=True)
class CartPoleParams:
    """Physical constants of :class:`CartPoleVectorEnv` (defaults: Gymnasium CartPole-v1).

    Domain randomisation samples new instances of this dataclass; every field
    keeps Gymnasium's meaning and unit.

    >>> CartPoleParams(gravity=9.81).force_mag
    10.0
    """

    gravity: float = 9.8
    """Gravitational acceleration [m/s^2]."""
    masscart: float = 1.0
    """Mass of the cart [kg]."""
    masspole: float = 0.1
    """Mass of the pole [kg]."""
    length: float = 0.5
    """Half the pole's length [m] (Gymnasium's ``length`` is the half-length)."""
    force_mag: float = 10.0
    """Magnitude of the push applied by either action [N]."""
    tau: float = 0.02
    """Integration time step [s]."""
    integrator: Literal["euler", "semi_implicit_euler"] = "euler"
    """``"euler"`` (CartPole-v1) or ``"semi_implicit_euler"`` (velocities first)."""
    theta_threshold_radians: float = 12 * 2 * math.pi / 360
    """The episode terminates when ``|theta|`` exceeds this angle [rad] (12 degrees)."""
    x_threshold: float = 2.4
    """The episode terminates when ``|x|`` exceeds this position [m]."""
    max_episode_steps: int = 500
    """Steps after which an episode is truncated."""
    reset_low: float = -0.05
    """Lower bound of the uniform draw of every state variable at reset."""
    reset_high: float = 0.05
    """Upper bound of the uniform draw of every state variable at reset."""

    def __post_init__(self) -> None:
        positive = ("gravity", "masscart", "masspole", "length", "force_mag", "tau")
        _require_positive(self, positive, "CartPoleParams")
        _require_positive(self, ("theta_threshold_radians", "x_threshold"), "CartPoleParams")
        if self.integrator not in ("euler", "semi_implicit_euler"):
            raise EnvError(
                f"CartPoleParams.integrator must be 'euler' or 'semi_implicit_euler', "
                f"got {self.integrator!r}"
            )
        _require_steps(self.max_episode_steps, "CartPoleParams")
        if not self.reset_low < self.reset_high:
            raise EnvError(
                f"CartPoleParams.reset_low ({self.reset_low}) must be below "
                f"reset_high ({self.reset_high})"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class PendulumParams:
    """Physical constants of :class:`PendulumVectorEnv` (defaults: Gymnasium Pendulum-v1).

    >>> PendulumParams(g=9.81).max_torque
    2.0
    """

    g: float = 10.0
    """Gravitational acceleration [m/s^2]."""
    m: float = 1.0
    """Mass of the pendulum [kg]."""
    l: float = 1.0  # noqa: E741 (Gymnasium's name)
    """Length of the pendulum [m]."""
    dt: float = 0.05
    """Integration time step [s]."""
    max_speed: float = 8.0
    """Angular velocity is clipped to ``[-max_speed, max_speed]`` [rad/s]."""
    max_torque: float = 2.0
    """Actions are clipped to ``[-max_torque, max_torque]`` [N m]."""
    max_episode_steps: int = 200
    """Steps after which an episode is truncated (Pendulum never terminates)."""
    init_theta_high: float = math.pi
    """Reset draws ``theta ~ U(-init_theta_high, init_theta_high)`` [rad]."""
    init_theta_dot_high: float = 1.0
    """Reset draws ``theta_dot ~ U(-init_theta_dot_high, init_theta_dot_high)`` [rad/s]."""

    def __post_init__(self) -> None:
        names = ("g", "m", "l", "dt", "max_speed", "max_torque")
        _require_positive(self, names, "PendulumParams")
        _require_positive(self, ("init_theta_high", "init_theta_dot_high"), "PendulumParams")
        _require_steps(self.max_episode_steps, "PendulumParams")


def _require_positive(params: object, names: tuple[str, ...], owner: str) -> None:
    for name in names:
        value = getattr(params, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise EnvError(f"{owner}.{name} must be a finite number > 0, got {value!r}")


def _require_steps(value: object, owner: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise EnvError(f"{owner}.max_episode_steps must be an int >= 1, got {value!r}")


# --------------------------------------------------------------------------- helpers


def _check_num_envs(num_envs: object, owner: str) -> int:
    if not isinstance(num_envs, int | np.integer) or isinstance(num_envs, bool) or num_envs < 1:
        raise EnvError(f"{owner}: num_envs must be an int >= 1, got {num_envs!r}")
    return int(num_envs)


def _check_no_options(options: dict[str, Any] | None, owner: str, params_name: str) -> None:
    if options:
        raise EnvError(
            f"{owner}.reset does not take options (got keys {sorted(options)}); "
            f"set reset bounds through {params_name}"
        )


def _rng_from_state(rng_state: Mapping[str, Any], owner: str) -> np.random.Generator:
    name = rng_state.get("bit_generator") if isinstance(rng_state, Mapping) else None
    if name not in _BIT_GENERATORS:
        raise EnvError(
            f"{owner}.load_state_dict: 'rng' must be a numpy bit_generator.state dict with "
            f"'bit_generator' in {list(_BIT_GENERATORS)}, got {name!r}"
        )
    bit_generator = getattr(np.random, str(name))()
    bit_generator.state = dict(rng_state)
    return np.random.Generator(bit_generator)


def _load_common(
    state: Mapping[str, Any], num_envs: int, state_dim: int, owner: str
) -> tuple[F64, npt.NDArray[np.int64], np.random.Generator]:
    """Validate a state dict; returns ``(state [N, D] float64, elapsed [N], rng)``."""
    missing = {"num_envs", "state", "elapsed_steps", "rng"} - set(state)
    if missing:
        raise EnvError(f"{owner}.load_state_dict: missing keys {sorted(missing)}")
    if int(state["num_envs"]) != num_envs:
        raise EnvError(
            f"{owner}.load_state_dict: state was saved with num_envs={state['num_envs']}, "
            f"this env has num_envs={num_envs}"
        )
    physical = np.asarray(state["state"], dtype=np.float64)
    elapsed = np.asarray(state["elapsed_steps"])
    if physical.shape != (num_envs, state_dim):
        raise EnvError(
            f"{owner}.load_state_dict: 'state' must have shape {(num_envs, state_dim)}, "
            f"got {physical.shape}"
        )
    if elapsed.shape != (num_envs,) or elapsed.dtype.kind not in "iu":
        raise EnvError(
            f"{owner}.load_state_dict: 'elapsed_steps' must be an int array of shape "
            f"({num_envs},), got {elapsed.dtype} {elapsed.shape}"
        )
    return physical, elapsed.astype(np.int64), _rng_from_state(state["rng"], owner)


def _check_set_state(states: npt.ArrayLike, num_envs: int, state_dim: int, owner: str) -> F64:
    array = np.asarray(states, dtype=np.float64)
    if array.shape != (num_envs, state_dim):
        raise EnvError(
            f"{owner}.set_state expects shape ({num_envs}, {state_dim}) "
            f"[num_envs, state_dim], got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise EnvError(f"{owner}.set_state: states must be finite")
    return array


def _not_reset(owner: str, method: str) -> EnvError:
    return EnvError(f"{owner}.{method} called before reset(); call env.reset(seed=...) first")


# --------------------------------------------------------------------------- CartPole


class CartPoleVectorEnv(gym.vector.VectorEnv[F32, npt.NDArray[np.integer[Any]], npt.NDArray[Any]]):
    """``N`` cart-poles stepped together; Gymnasium CartPole-v1 dynamics, same-step autoreset.

    Args:
        num_envs: number of sub-envs ``N``.
        params: physical constants; defaults to Gymnasium CartPole-v1.

    Raises:
        EnvError: if ``num_envs < 1``.

    >>> env = CartPoleVectorEnv(4)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((4, 4), dtype('float32'))
    >>> obs, rewards, terminated, truncated, info = env.step(np.array([0, 1, 1, 0]))
    >>> rewards.tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium's class attribute)
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(self, num_envs: int = 1, *, params: CartPoleParams | None = None) -> None:
        self.num_envs = _check_num_envs(num_envs, type(self).__name__)
        self.params = CartPoleParams() if params is None else params
        p = self.params
        n = self.num_envs
        high = np.array(
            [p.x_threshold * 2, np.inf, p.theta_threshold_radians * 2, np.inf], dtype=np.float32
        )
        self.single_observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)

        # Derived constants, computed exactly as Gymnasium computes them.
        self._total_mass = p.masspole + p.masscart
        self._polemass_length = p.masspole * p.length
        self._force_table = np.array([-p.force_mag, p.force_mag], dtype=np.float64)
        self._thresholds = np.array([[p.x_threshold], [p.theta_threshold_radians]])

        # Rows: x, x_dot, theta, theta_dot; one contiguous row per variable.
        self._state: F64 = np.zeros((4, n), dtype=np.float64)
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._needs_reset = True
        # Scratch buffers for the hot path.
        self._cos = np.empty(n, dtype=np.float64)
        self._sin = np.empty(n, dtype=np.float64)
        self._temp = np.empty(n, dtype=np.float64)
        self._work = np.empty(n, dtype=np.float64)
        self._acc = np.empty((2, n), dtype=np.float64)  # x_acc, theta_acc
        self._pair = np.empty((2, n), dtype=np.float64)
        self._beyond = np.empty((2, n), dtype=np.bool_)

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Reset every sub-env; state variables are drawn from ``U(reset_low, reset_high)``.

        Args:
            seed: reseeds the batch's single generator; ``None`` continues it.
            options: not supported (must be ``None`` or empty); reset bounds
                live in :class:`CartPoleParams`.

        Returns:
            ``(obs [N, 4] float32, {})``.

        Raises:
            EnvError: if ``options`` is not empty.
        """
        _check_no_options(options, type(self).__name__, "CartPoleParams")
        super().reset(seed=seed)
        draws = self.np_random.uniform(
            self.params.reset_low, self.params.reset_high, size=(self.num_envs, 4)
        )
        self._state[...] = draws.T
        self._elapsed[:] = 0
        self._needs_reset = False
        return self._observe(), {}

    def step(self, actions: npt.NDArray[np.integer[Any]]) -> StepResult:
        """Push every cart left (0) or right (1) for one ``tau`` step.

        Args:
            actions: int or bool array of shape ``[N]`` with values in ``{0, 1}``.

        Returns:
            ``(obs [N, 4] float32, rewards [N] float64, terminations [N] bool,
            truncations [N] bool, info)``; see the module docstring for
            ``info["final_obs"]`` / ``info["_final_obs"]``.

        Raises:
            EnvError: if called before :meth:`reset`, or ``actions`` has the wrong
                shape, a non-integer dtype or a value outside ``{0, 1}``.
        """
        if self._needs_reset:
            raise _not_reset(type(self).__name__, "step")
        index = self._check_actions(actions)
        p = self.params
        s = self._state
        theta, theta_dot = s[2], s[3]
        force = self._force_table[index]  # fancy indexing beats np.take(..., out=) here
        cos = np.cos(theta, out=self._cos)
        sin = np.sin(theta, out=self._sin)
        acc, work = self._acc, self._work
        # The operand order below mirrors Gymnasium's expressions (a*b == b*a is exact
        # in IEEE arithmetic, (a*b)*c is not a*(b*c)), so results are bit-identical.
        temp = np.square(theta_dot, out=self._temp)
        temp *= self._polemass_length
        temp *= sin
        temp += force
        temp /= self._total_mass
        theta_acc = np.multiply(sin, p.gravity, out=acc[1])
        theta_acc -= np.multiply(cos, temp, out=work)
        np.square(cos, out=work)
        work *= p.masspole
        work /= self._total_mass
        np.subtract(4.0 / 3.0, work, out=work)
        work *= p.length
        theta_acc /= work
        np.multiply(theta_acc, self._polemass_length, out=work)
        work *= cos
        work /= self._total_mass
        np.subtract(temp, work, out=acc[0])

        positions, velocities, pair = s[0::2], s[1::2], self._pair
        if p.integrator == "euler":
            positions += np.multiply(velocities, p.tau, out=pair)
            velocities += np.multiply(acc, p.tau, out=pair)
        else:
            velocities += np.multiply(acc, p.tau, out=pair)
            positions += np.multiply(velocities, p.tau, out=pair)

        # |x| > x_threshold  <=>  x < -x_threshold or x > x_threshold (negation is exact).
        np.greater(np.abs(positions, out=pair), self._thresholds, out=self._beyond)
        terminated = np.logical_or(self._beyond[0], self._beyond[1])
        self._elapsed += 1
        truncated = self._elapsed >= p.max_episode_steps
        rewards = np.ones(self.num_envs, dtype=np.float64)
        obs = self._observe()
        done = terminated | truncated
        info: dict[str, Any] = self._autoreset(done, obs) if done.any() else {}
        return obs, rewards, terminated, truncated, info

    # ------------------------------------------------------------------ state

    def get_state(self) -> F64:
        """Return a copy of the physical state, ``[N, 4]`` float64 ``(x, x_dot, theta, theta_dot)``.

        >>> env = CartPoleVectorEnv(2)
        >>> _ = env.reset(seed=0)
        >>> env.get_state().shape
        (2, 4)
        """
        return np.ascontiguousarray(self._state.T)

    def set_state(self, states: npt.ArrayLike) -> None:
        """Set the physical state of every sub-env and restart their step counters at 0.

        The reset generator is left as it is (seed it with ``reset(seed=...)`` first
        when later autoresets must be reproducible).

        Args:
            states: ``[N, 4]`` array of ``(x, x_dot, theta, theta_dot)``; cast to float64.

        Raises:
            EnvError: on a wrong shape or non-finite values.

        >>> env = CartPoleVectorEnv(1)
        >>> env.set_state([[0.0, 0.0, 0.1, 0.0]])
        >>> float(env.step(np.array([1]))[0][0, 2])
        0.10000000149011612
        """
        array = _check_set_state(states, self.num_envs, 4, type(self).__name__)
        self._state[...] = array.T
        self._elapsed[:] = 0
        self._needs_reset = False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly mid-episode.

        Returns:
            ``{"num_envs": int, "state": [N, 4] float64, "elapsed_steps": [N] int64,
            "rng": dict}`` where ``rng`` is ``np_random.bit_generator.state``
            (JSON-serialisable). Arrays are copies.

        Raises:
            EnvError: if called before :meth:`reset`.

        >>> env = CartPoleVectorEnv(2)
        >>> _ = env.reset(seed=0)
        >>> other = CartPoleVectorEnv(2)
        >>> other.load_state_dict(env.state_dict())
        >>> bool((other.get_state() == env.get_state()).all())
        True
        """
        if self._needs_reset:
            raise _not_reset(type(self).__name__, "state_dict")
        return {
            "num_envs": self.num_envs,
            "state": self.get_state(),
            "elapsed_steps": self._elapsed.copy(),
            "rng": self.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (physical state, step counters and generator).

        Args:
            state: a mapping produced by :meth:`state_dict`.

        Raises:
            EnvError: on missing keys, a different ``num_envs``, wrong shapes or an
                unknown bit generator.
        """
        physical, elapsed, rng = _load_common(state, self.num_envs, 4, type(self).__name__)
        self._state[...] = physical.T
        self._elapsed[:] = elapsed
        self.np_random = rng
        self._needs_reset = False

    # ------------------------------------------------------------------ internals

    def _observe(self) -> F32:
        obs = np.empty((self.num_envs, 4), dtype=np.float32)
        obs[...] = self._state.T
        return obs

    def _check_actions(self, actions: Any) -> npt.NDArray[np.integer[Any]]:
        a = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
        if a.shape != (self.num_envs,):
            raise EnvError(
                f"{type(self).__name__}.step expected actions of shape ({self.num_envs},) "
                f"(one action in {{0, 1}} per sub-env), got shape {a.shape}"
            )
        kind = a.dtype.kind
        if kind == "b":
            return a.view(np.uint8)
        if kind not in "iu":
            raise EnvError(
                f"{type(self).__name__}.step expected integer actions in {{0, 1}}, got dtype "
                f"{a.dtype}; cast with actions.astype(np.int64)"
            )
        # The bitwise OR of all actions is 0 or 1 iff every action is; a negative
        # action sets the sign bit, anything >= 2 a higher bit. One cheap reduction.
        if np.bitwise_or.reduce(a) >> 1:
            bad = np.flatnonzero((a < 0) | (a > 1))
            raise EnvError(
                f"{type(self).__name__}.step: actions must be 0 or 1, got {a[bad[0]]} "
                f"for env {bad[0]} ({bad.size} invalid)"
            )
        return a

    def _autoreset(self, done: Bools, obs: F32) -> dict[str, Any]:
        final_obs = obs.copy()
        ended = np.flatnonzero(done)
        draws = self.np_random.uniform(
            self.params.reset_low, self.params.reset_high, size=(ended.size, 4)
        )
        self._state[:, ended] = draws.T
        self._elapsed[ended] = 0
        obs[ended] = draws
        return {"final_obs": final_obs, "_final_obs": done}


# --------------------------------------------------------------------------- Pendulum


class PendulumVectorEnv(gym.vector.VectorEnv[F32, F32, npt.NDArray[Any]]):
    """``N`` torque-limited pendulums stepped together; Gymnasium Pendulum-v1 dynamics.

    Args:
        num_envs: number of sub-envs ``N``.
        params: physical constants; defaults to Gymnasium Pendulum-v1.

    Raises:
        EnvError: if ``num_envs < 1``.

    >>> env = PendulumVectorEnv(2)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape
    (2, 3)
    >>> obs, rewards, terminated, truncated, info = env.step(np.zeros((2, 1), np.float32))
    >>> bool((rewards <= 0).all())
    True
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium's class attribute)
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(self, num_envs: int = 1, *, params: PendulumParams | None = None) -> None:
        self.num_envs = _check_num_envs(num_envs, type(self).__name__)
        self.params = PendulumParams() if params is None else params
        p = self.params
        n = self.num_envs
        high = np.array([1.0, 1.0, p.max_speed], dtype=np.float32)
        self.single_observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.single_action_space = spaces.Box(
            -p.max_torque, p.max_torque, shape=(1,), dtype=np.float32
        )
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)

        # Derived constants, computed exactly as Gymnasium computes them. The torque
        # coefficient multiplies a float32 torque; Gymnasium's Python-float scalar is
        # cast to float32 by numpy's promotion rules (NEP 50), so cast it here too.
        self._gravity_coef = 3 * p.g / (2 * p.l)
        self._torque_coef = np.float32(3.0 / (p.m * p.l**2))
        self._reset_high = np.array([p.init_theta_high, p.init_theta_dot_high])

        self._state: F64 = np.zeros((2, n), dtype=np.float64)  # rows: theta, theta_dot
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._needs_reset = True
        self._u = np.empty(n, dtype=np.float32)
        self._u_term = np.empty(n, dtype=np.float32)
        self._work = np.empty(n, dtype=np.float64)
        self._work2 = np.empty(n, dtype=np.float64)

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Reset every sub-env: ``theta ~ U(-pi, pi)``, ``theta_dot ~ U(-1, 1)``.

        Args:
            seed: reseeds the batch's single generator; ``None`` continues it.
            options: not supported (must be ``None`` or empty); reset bounds
                live in :class:`PendulumParams`.

        Returns:
            ``(obs [N, 3] float32, {})``.

        Raises:
            EnvError: if ``options`` is not empty.
        """
        _check_no_options(options, type(self).__name__, "PendulumParams")
        super().reset(seed=seed)
        draws = self.np_random.uniform(-self._reset_high, self._reset_high, size=(self.num_envs, 2))
        self._state[...] = draws.T
        self._elapsed[:] = 0
        self._needs_reset = False
        return self._observe(self._state), {}

    def step(self, actions: F32) -> StepResult:
        """Apply one torque per pendulum for ``dt`` seconds.

        Args:
            actions: float array of shape ``[N, 1]``; cast to float32 (the action
                space dtype) and clipped to ``[-max_torque, max_torque]``.

        Returns:
            ``(obs [N, 3] float32, rewards [N] float64, terminations [N] bool (always
            False), truncations [N] bool, info)``.

        Raises:
            EnvError: if called before :meth:`reset`, or ``actions`` has the wrong
                shape, a non-numeric dtype or contains NaN.
        """
        if self._needs_reset:
            raise _not_reset(type(self).__name__, "step")
        u = self._check_actions(actions)
        p = self.params
        theta, theta_dot = self._state[0], self._state[1]
        work, work2, u_term = self._work, self._work2, self._u_term

        # Cost of the state *before* the step (Gymnasium order of evaluation).
        np.add(theta, np.pi, out=work)
        np.remainder(work, 2 * np.pi, out=work)
        work -= np.pi
        np.square(work, out=work)
        np.square(theta_dot, out=work2)
        work2 *= 0.1
        work += work2
        np.square(u, out=u_term)
        u_term *= np.float32(0.001)
        rewards = np.add(work, u_term)
        np.negative(rewards, out=rewards)

        np.sin(theta, out=work)
        work *= self._gravity_coef
        work += np.multiply(u, self._torque_coef, out=u_term)
        work *= p.dt
        theta_dot += work
        np.clip(theta_dot, -p.max_speed, p.max_speed, out=theta_dot)
        theta += np.multiply(theta_dot, p.dt, out=work)

        self._elapsed += 1
        truncated = self._elapsed >= p.max_episode_steps
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        obs = self._observe(self._state)
        info: dict[str, Any] = self._autoreset(truncated, obs) if truncated.any() else {}
        return obs, rewards, terminated, truncated, info

    # ------------------------------------------------------------------ state

    def get_state(self) -> F64:
        """Return a copy of the physical state, ``[N, 2]`` float64 ``(theta, theta_dot)``.

        >>> env = PendulumVectorEnv(3)
        >>> _ = env.reset(seed=0)
        >>> env.get_state().shape
        (3, 2)
        """
        return np.ascontiguousarray(self._state.T)

    def set_state(self, states: npt.ArrayLike) -> None:
        """Set the physical state of every sub-env and restart their step counters at 0.

        Args:
            states: ``[N, 2]`` array of ``(theta, theta_dot)``; cast to float64.

        Raises:
            EnvError: on a wrong shape or non-finite values.

        >>> env = PendulumVectorEnv(1)
        >>> env.set_state([[0.0, 0.0]])
        >>> env.step(np.zeros((1, 1), np.float32))[1].tolist()
        [-0.0]
        """
        array = _check_set_state(states, self.num_envs, 2, type(self).__name__)
        self._state[...] = array.T
        self._elapsed[:] = 0
        self._needs_reset = False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly mid-episode.

        Returns:
            ``{"num_envs": int, "state": [N, 2] float64, "elapsed_steps": [N] int64,
            "rng": dict}``; ``rng`` is ``np_random.bit_generator.state``.

        Raises:
            EnvError: if called before :meth:`reset`.
        """
        if self._needs_reset:
            raise _not_reset(type(self).__name__, "state_dict")
        return {
            "num_envs": self.num_envs,
            "state": self.get_state(),
            "elapsed_steps": self._elapsed.copy(),
            "rng": self.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (physical state, step counters and generator).

        Args:
            state: a mapping produced by :meth:`state_dict`.

        Raises:
            EnvError: on missing keys, a different ``num_envs``, wrong shapes or an
                unknown bit generator.
        """
        physical, elapsed, rng = _load_common(state, self.num_envs, 2, type(self).__name__)
        self._state[...] = physical.T
        self._elapsed[:] = elapsed
        self.np_random = rng
        self._needs_reset = False

    # ------------------------------------------------------------------ internals

    def _observe(self, state: F64) -> F32:
        """Observations ``[n, 3]`` float32 of a ``[2, n]`` float64 state block."""
        obs = np.empty((state.shape[1], 3), dtype=np.float32)
        obs[:, 0] = np.cos(state[0])
        obs[:, 1] = np.sin(state[0])
        obs[:, 2] = state[1]
        return obs

    def _check_actions(self, actions: Any) -> F32:
        a = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
        if a.shape != (self.num_envs, 1):
            raise EnvError(
                f"{type(self).__name__}.step expected actions of shape ({self.num_envs}, 1) "
                f"(one torque per sub-env), got shape {a.shape}"
            )
        if a.dtype.kind not in "fiu":
            raise EnvError(
                f"{type(self).__name__}.step expected float actions, got dtype {a.dtype}"
            )
        u = self._u
        np.copyto(u, a[:, 0], casting="unsafe")
        np.clip(u, -self.params.max_torque, self.params.max_torque, out=u)
        if np.isnan(u).any():
            bad = int(np.flatnonzero(np.isnan(u))[0])
            raise EnvError(f"{type(self).__name__}.step: action of env {bad} is NaN")
        return u

    def _autoreset(self, done: Bools, obs: F32) -> dict[str, Any]:
        final_obs = obs.copy()
        ended = np.flatnonzero(done)
        draws = self.np_random.uniform(-self._reset_high, self._reset_high, size=(ended.size, 2))
        self._state[:, ended] = draws.T
        self._elapsed[ended] = 0
        obs[ended] = self._observe(self._state[:, ended])
        return {"final_obs": final_obs, "_final_obs": done}
