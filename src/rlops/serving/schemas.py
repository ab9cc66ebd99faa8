"""Request validation at the HTTP boundary: JSON in, typed rows out, or an :class:`ApiError`.

Every rejection names the offending field (``requests[3].action_mask``) and a
machine-readable code, and becomes ``{"error": {"code", "message", "field"}}``
with a 4xx status; nothing a client sends can reach the policy malformed.

>>> spec = InputSpec(obs_shape=(2,), n_actions=3)
>>> row = parse_act_row({"observation": [0.1, 0.2], "unit_id": "u1"}, spec, "")
>>> row.obs.tolist(), row.step
([0.10000000149011612, 0.20000000298023224], 0)
>>> parse_act_row({"observation": [0.1], "unit_id": "u1"}, spec, "").obs
Traceback (most recent call last):
...
rlops.serving.schemas.ApiError: observation: shape (1,) does not match the policy's (2,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlops.core.errors import RlopsError

MAX_ID_CHARS = 256
"""Longest accepted ``unit_id`` / ``episode_id`` / ``decision_id``."""
MAX_STEP = 2**63 - 1
"""Largest accepted ``step``: SQLite's INTEGER range, so every served decision can be logged."""
MAX_OBJECT_DEPTH = 64
"""Deepest nesting accepted in ``context`` / ``metrics``: the log serialises them with
orjson, which refuses more than 254 levels."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ACT_FIELDS = ("observation", "unit_id", "episode_id", "step", "action_mask", "context")
_FEEDBACK_FIELDS = ("decision_id", "reward", "metrics", "reward_version")


class ApiError(RlopsError):
    """A request the server refuses, with its HTTP status and error code.

    Args:
        status: HTTP status (4xx, or 503 for back-pressure).
        code: machine-readable code, e.g. ``invalid_shape``.
        message: what is wrong and what to send instead.
        field: the offending request field (dotted/indexed), if any.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


def invalid(code: str, message: str, field: str) -> ApiError:
    """A 422 for a well-formed JSON body whose content is wrong."""
    return ApiError(422, code, message, field)


@dataclass(frozen=True)
class InputSpec:
    """What the served policy accepts.

    Attributes:
        obs_shape: one observation's shape.
        n_actions: number of discrete actions, or None for a continuous policy
            (which takes no mask).
    """

    obs_shape: tuple[int, ...]
    n_actions: int | None


@dataclass(frozen=True)
class ActRow:
    """One validated decision request.

    Attributes:
        obs: ``obs_shape`` float32, finite.
        unit_id: the unit decided for.
        episode_id: its episode, if given.
        step: index in the episode (0 if not given).
        mask: ``[n]`` bool with at least one True, or None.
        context: the request's free-form context object, logged as is.
    """

    obs: np.ndarray
    unit_id: str
    episode_id: str | None
    step: int
    mask: np.ndarray | None
    context: dict[str, Any] | None


@dataclass(frozen=True)
class FeedbackRequest:
    """A validated ``POST /v1/feedback`` body."""

    decision_id: str
    reward: float
    metrics: dict[str, Any] | None
    reward_version: str | None


def _check_fields(data: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise invalid("invalid_type", "expected a JSON object", where or "body")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise invalid(
            "unknown_field",
            f"unknown field(s) {unknown}; allowed: {', '.join(allowed)}",
            _join(where, unknown[0]),
        )
    return data


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _numbers(value: Any, field: str) -> None:
    """Reject anything but (nested lists of) JSON numbers; bools are not numbers here.

    Iterative: JSON nests up to 1024 levels, deeper than Python's recursion limit.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, int | float):
            raise invalid(
                "invalid_dtype",
                f"observation entries must be numbers, got {type(item).__name__} {item!r:.40}",
                field,
            )


def _string(data: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise invalid("missing_field", f"{key} is required (a string)", _join(where, key))
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise invalid(
            "invalid_type",
            f"{key} must be a non-empty string of at most {MAX_ID_CHARS} characters",
            _join(where, key),
        )
    return value


def _object(data: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
    """An optional free-form JSON object, at most :data:`MAX_OBJECT_DEPTH` levels deep.

    Iterative, like :func:`_numbers`. Refusing here keeps a value the log writer
    could not serialise from being served (and from stopping the writer).
    """
    value = data.get(key)
    field = _join(where, key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("invalid_type", f"{key} must be a JSON object", field)
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_OBJECT_DEPTH:
            raise invalid(
                "invalid_type",
                f"{key} nests deeper than {MAX_OBJECT_DEPTH} levels; flatten it",
                field,
            )
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return value


def parse_act_row(data: Any, spec: InputSpec, where: str) -> ActRow:
    """Validate one act request object (``where`` prefixes field names, e.g. ``requests[2]``).

    Raises:
        ApiError: 422 naming the field (missing/unknown field, wrong type, shape
            or dtype, NaN/Inf, bad mask, no eligible action).
    """
    data = _check_fields(data, _ACT_FIELDS, where)
    field = _join(where, "observation")
    if "observation" not in data:
        raise invalid("missing_field", "observation is required", field)
    raw = data["observation"]
    if not isinstance(raw, list):
        raise invalid("invalid_type", "observation must be a JSON array of numbers", field)
    if len(spec.obs_shape) == 1 and _flat_finite(raw, spec.obs_shape[0]):
        obs = np.array(raw, dtype=np.float32)  # the common case, about 3x cheaper
    else:
        obs = _observation(raw, spec, field)
    unit_id = _string(data, "unit_id", where, required=True)
    assert unit_id is not None
    episode_id = _string(data, "episode_id", where, required=False)
    step = data.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise invalid(
            "invalid_type", f"step must be an integer in [0, {MAX_STEP}]", _join(where, "step")
        )
    context = _object(data, "context", where)
    mask = _mask(data.get("action_mask"), spec, _join(where, "action_mask"))
    return ActRow(obs, unit_id, episode_id, step, mask, context)


def _flat_finite(raw: list[Any], size: int) -> bool:
    """True when ``raw`` is ``size`` plain JSON numbers within float32 range."""
    if len(raw) != size:
        return False
    for v in raw:
        t = type(v)
        if (t is not float and t is not int) or not -_FLOAT32_MAX <= v <= _FLOAT32_MAX:
            return False  # NaN fails the comparison; the full path names the problem
    return True


def _observation(raw: list[Any], spec: InputSpec, field: str) -> np.ndarray:
    """The general path: any nesting, flattened input, each refusal named."""
    _numbers(raw, field)
    try:
        obs64 = np.array(raw, dtype=np.float64)
    except (ValueError, OverflowError) as exc:
        raise invalid(
            "invalid_shape", f"observation is not a regular array: {exc}", field
        ) from None
    if obs64.shape != spec.obs_shape:
        if obs64.ndim == 1 and obs64.size == math.prod(spec.obs_shape):
            obs64 = obs64.reshape(spec.obs_shape)  # a flattened observation is accepted
        else:
            raise invalid(
                "invalid_shape",
                f"shape {obs64.shape} does not match the policy's {spec.obs_shape}",
                field,
            )
    # NaN, Inf, and finite values that would overflow float32 are refused.
    if not (np.abs(obs64) <= _FLOAT32_MAX).all():
        raise invalid(
            "non_finite", "observation must be finite (no NaN/Inf, within float32 range)", field
        )
    obs = obs64.astype(np.float32)
    return obs


def _mask(value: Any, spec: InputSpec, field: str) -> np.ndarray | None:
    if value is None:
        return None
    if spec.n_actions is None:
        raise invalid("invalid_mask", "action masks apply to discrete policies only", field)
    if not isinstance(value, list) or not all(isinstance(v, bool) for v in value):
        raise invalid("invalid_mask", "action_mask must be an array of booleans", field)
    if len(value) != spec.n_actions:
        raise invalid(
            "invalid_mask",
            f"action_mask has {len(value)} entries; the policy has {spec.n_actions} actions",
            field,
        )
    if not any(value):
        raise invalid("no_eligible_action", "action_mask must allow at least one action", field)
    return np.array(value, dtype=bool)


def parse_act(data: Any, spec: InputSpec, max_rows: int) -> tuple[list[ActRow], bool]:
    """Validate an act body: one request object, or ``{"requests": [...]}``.

    Returns:
        ``(rows, batched)``.

    Raises:
        ApiError: 422 on any invalid row (the whole body is refused).
    """
    if isinstance(data, dict) and "requests" in data:
        _check_fields(data, ("requests",), "")
        items = data["requests"]
        if not isinstance(items, list) or not items:
            raise invalid("invalid_type", "requests must be a non-empty array", "requests")
        if len(items) > max_rows:
            raise invalid(
                "too_many_rows",
                f"{len(items)} requests in one body; at most {max_rows}",
                "requests",
            )
        return [parse_act_row(item, spec, f"requests[{i}]") for i, item in enumerate(items)], True
    return [parse_act_row(data, spec, "")], False


def parse_feedback(data: Any) -> FeedbackRequest:
    """Validate a feedback body ``{decision_id, reward, metrics?, reward_version?}``.

    Raises:
        ApiError: 422 naming the field.
    """
    data = _check_fields(data, _FEEDBACK_FIELDS, "")
    decision_id = _string(data, "decision_id", "", required=True)
    assert decision_id is not None
    reward = data.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, int | float):
        raise invalid("invalid_type", "reward is required: a number", "reward")
    if not math.isfinite(reward):
        raise invalid("non_finite", "reward must be finite", "reward")
    metrics = _object(data, "metrics", "")
    reward_version = _string(data, "reward_version", "", required=False)
    return FeedbackRequest(decision_id, float(reward), metrics, reward_version)
