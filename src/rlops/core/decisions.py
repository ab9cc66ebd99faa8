"""The decision record: one served (or simulated) decision, as serving and simulation log it.

The same shape everywhere (``shared/ARCHITECTURE.md``, "Decision record") so
that off-policy evaluation reads simulator recordings and production logs
alike. Records are plain JSON objects, one per line; nothing is pickled.

>>> r = DecisionRecord(decision_id="d1", timestamp=0.0, unit_id="u", step=0,
...                    observation=[0.5], action=1, propensity=0.8, policy_version="sha256:x",
...                    arm="simulation", action_distribution=[0.2, 0.8])
>>> DecisionRecord.from_json(r.to_json()) == r
True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from rlops.core.errors import ConfigError

Arm = Literal["production", "canary", "shadow", "override", "fallback", "simulation"]
ARMS: tuple[str, ...] = ("production", "canary", "shadow", "override", "fallback", "simulation")


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """One decision and, once joined, its feedback.

    Attributes:
        decision_id: unique id (serving returns it; feedback refers to it).
        timestamp: unix seconds when the decision was made.
        unit_id: the user / service / product the decision was for (sticky assignment key).
        episode_id: the episode (session, day, ...) it belongs to, if any.
        step: index of the decision within its episode.
        observation: the observation the policy saw (flattened).
        action_mask: eligible actions (discrete), if constrained.
        action: the action taken (int, or a list of floats for continuous actions).
        action_distribution: the full distribution the action was drawn from (discrete).
        logp: log-density of the action (continuous).
        propensity: probability of the action taken (discrete) or ``exp(logp)``.
        policy_version: content hash of the policy artifact that decided.
        arm: which path decided: production, canary, shadow, override, fallback, simulation.
        split: canary share and assignment at decision time, if any.
        shadow_distribution: the shadow policy's distribution on the same input, if any.
        reward: joined feedback reward.
        outcome: other joined outcome metrics.
        reward_version: version of the reward function that produced ``reward``.
    """

    decision_id: str
    timestamp: float
    unit_id: str
    step: int
    observation: list[float]
    action: int | list[float]
    propensity: float
    policy_version: str
    arm: Arm
    episode_id: str | None = None
    action_mask: list[bool] | None = None
    action_distribution: list[float] | None = None
    logp: float | None = None
    split: dict[str, Any] | None = None
    shadow_distribution: list[float] | None = None
    reward: float | None = None
    outcome: dict[str, Any] | None = None
    reward_version: str | None = None

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ConfigError(f"arm: {self.arm!r} is not one of {', '.join(ARMS)}")
        if not 0.0 <= self.propensity <= 1.0 + 1e-6 and self.logp is None:
            raise ConfigError(f"propensity: must be in [0, 1], got {self.propensity}")

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> DecisionRecord:
        """Parse :meth:`to_json` output.

        Raises:
            ConfigError: unknown or missing fields, naming them.
        """
        data = json.loads(line)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"decision record: unknown field(s) {unknown}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"decision record: {exc}") from None


def episode_key(record: DecisionRecord) -> str:
    """The episode a decision belongs to: ``unit_id`` + ``episode_id`` (else the unit alone).

    Episode ids are only unique per unit (every user may have a session "s1"),
    so the unit is always part of the key.

    >>> r = DecisionRecord(decision_id="d", timestamp=0.0, unit_id="u7", step=0,
    ...                    observation=[0.0], action=0, propensity=1.0, policy_version="v",
    ...                    arm="production", episode_id="s1")
    >>> episode_key(r)
    'u7/s1'
    """
    return record.unit_id if record.episode_id is None else f"{record.unit_id}/{record.episode_id}"


def is_sequential(records: Iterable[DecisionRecord]) -> bool:
    """Whether any episode logs more than one distinct step (else a one-step, bandit log).

    A serving log without episode ids, where each unit's decisions sit at
    step 0, is a contextual bandit, not one long episode per unit.
    """
    steps: dict[str, set[int]] = {}
    for r in records:
        seen = steps.setdefault(episode_key(r), set())
        seen.add(r.step)
        if len(seen) > 1:
            return True
    return False
