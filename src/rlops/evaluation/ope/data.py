"""Logged decisions as arrays for off-policy evaluation and offline learning.

Reads decision logs in the decision-record shape (``core.decisions``) from any
of the places rlops writes them: the serving log (SQLite), simulation
recordings (JSONL, :func:`rlops.evaluation.recording.record_decisions`) and
Parquet exports (``rlops decisions export``). Then:

* :func:`to_bandit` -> :class:`BanditData` (one decision = one sample, for the
  one-step estimators and contextual-bandit learning);
* :func:`to_episodes` -> :class:`EpisodeData` (decisions grouped by unit and
  ``episode_id`` and ordered by ``step``, padded to ``[E, T]``, for the
  sequential estimators and offline RL).

Validation happens here, once, and refuses by name with counts: missing or
out-of-range propensities, actions outside the space, observations of the
wrong size, masks that exclude the logged action. Decisions without a joined
reward are dropped and counted (``dropped_no_reward``), never silently used.

Actions are 0-based indices: ``Discrete(n, start=s)`` actions are stored as
logged and shifted by ``action_start`` here.

>>> records = load_decisions("decisions.sqlite")  # doctest: +SKIP
>>> data = to_bandit(records)  # doctest: +SKIP
>>> data.n, data.n_actions  # doctest: +SKIP
(10000, 30)
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlops.core.decisions import DecisionRecord, episode_key
from rlops.core.errors import DataError

__all__ = [
    "BanditData",
    "EpisodeData",
    "load_decisions",
    "policy_distributions",
    "split_arms",
    "to_bandit",
    "to_episodes",
]


@dataclass(frozen=True)
class BanditData:
    """``n`` logged one-step decisions over ``K`` discrete actions.

    Attributes:
        observations: ``[n, d]`` float64 contexts.
        actions: ``[n]`` int64 logged action indices in ``[0, K)``.
        rewards: ``[n]`` float64 joined rewards.
        propensities: ``[n]`` float64 behaviour probability of the logged action, in (0, 1].
        n_actions: ``K``.
        masks: ``[n, K]`` bool eligible actions, or None when nothing was masked.
        behaviour: ``[n, K]`` the logged (served) distributions when every
            record has one, else None.
        policy_versions: ``[n]`` the version that decided each record.
        arms: ``[n]`` the arm of each record (production, canary, simulation...).
        unit_ids: ``[n]`` unit ids.
        dropped_no_reward: records skipped because no reward was joined.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    n_actions: int
    masks: np.ndarray | None = None
    behaviour: np.ndarray | None = None
    policy_versions: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    arms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    unit_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    dropped_no_reward: int = 0

    @property
    def n(self) -> int:
        """Number of decisions."""
        return int(self.actions.shape[0])


@dataclass(frozen=True)
class EpisodeData:
    """``E`` logged episodes padded to ``T`` steps (``valid`` marks real steps).

    Attributes:
        observations: ``[E, T, d]`` float64.
        actions: ``[E, T]`` int64 (0 where padded).
        rewards: ``[E, T]`` float64 (0 where padded).
        propensities: ``[E, T]`` float64 (1 where padded).
        valid: ``[E, T]`` bool, True for logged steps (a prefix of each row).
        lengths: ``[E]`` int64 steps per episode.
        n_actions: ``K``.
        masks: ``[E, T, K]`` bool or None.
        behaviour: ``[E, T, K]`` logged distributions when every record has one, else None.
        episode_ids: ``[E]`` ids (``episode_id``, else ``unit_id``).
        dropped_no_reward: records skipped because no reward was joined (their
            episodes are dropped whole: a return with a hole is not a return).
        dropped_incomplete: records of episodes whose steps do not run 0, 1, ...
            without a gap (cut by an export window, or rows missing), dropped whole.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    valid: np.ndarray
    lengths: np.ndarray
    n_actions: int
    masks: np.ndarray | None = None
    behaviour: np.ndarray | None = None
    episode_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    dropped_no_reward: int = 0
    dropped_incomplete: int = 0

    @property
    def n_episodes(self) -> int:
        """Number of episodes."""
        return int(self.lengths.shape[0])

    @property
    def horizon(self) -> int:
        """``T``, the longest episode."""
        return int(self.valid.shape[1])


def load_decisions(path: str | os.PathLike[str]) -> list[DecisionRecord]:
    """Read every decision record from a SQLite log, a JSONL file or a Parquet export.

    Raises:
        DataError: the file is missing, of an unknown kind, or holds malformed records.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"log: {p} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix in (".sqlite", ".sqlite3", ".db"):
            from rlops.serving.decision_log import iter_decisions

            return list(iter_decisions(p))
        if suffix in (".jsonl", ".json", ".ndjson"):
            out = []
            with p.open(encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        out.append(DecisionRecord.from_json(line))
                    except (ValueError, TypeError) as exc:
                        raise DataError(f"log: {p} line {line_no}: {exc}") from None
            return out
        if suffix == ".parquet":
            return _from_parquet(p)
    except DataError:
        raise
    except Exception as exc:  # sqlite3 / pyarrow errors on a file that is not a log
        raise DataError(f"log: cannot read {p} as a decision log ({exc})") from None
    raise DataError(
        f"log: {p} has suffix {suffix!r}; use a .sqlite decision log, a .jsonl recording "
        "or a .parquet export"
    )


def _from_parquet(path: Path) -> list[DecisionRecord]:
    import pyarrow.parquet as pq

    names = set(DecisionRecord.__dataclass_fields__)
    rows = pq.read_table(path).to_pylist()
    out = []
    for row in rows:
        data = {k: v for k, v in row.items() if k in names}
        for key in ("split", "outcome"):
            if isinstance(data.get(key), str):
                data[key] = json.loads(data[key])
        out.append(DecisionRecord(**data))
    return out


def _infer_actions(records: Sequence[DecisionRecord], n_actions: int | None) -> int:
    if n_actions is not None:
        return n_actions
    for r in records:
        if r.action_distribution is not None:
            return len(r.action_distribution)
        if r.action_mask is not None:
            return len(r.action_mask)
    raise DataError(
        "actions: cannot tell the number of actions (no record has an action_distribution "
        "or action_mask); pass n_actions"
    )


def _check(records: Sequence[DecisionRecord], n_actions: int, action_start: int) -> None:
    """Refuse records no estimator can use, naming the field and the count."""
    if not records:
        raise DataError("log: no decision records")
    continuous = sum(not isinstance(r.action, int) for r in records)
    if continuous:
        raise DataError(
            f"action: {continuous} record(s) have continuous actions; off-policy evaluation "
            "here supports discrete actions"
        )
    bad_p = [r.propensity for r in records if not (0.0 < r.propensity <= 1.0 + 1e-9)]
    if bad_p:
        zeros = sum(p == 0 for p in bad_p)
        raise DataError(
            f"propensity: {len(bad_p)} record(s) outside (0, 1] ({zeros} equal to 0); a "
            "decision with propensity 0 cannot have been taken by its logger, and > 1 is "
            "not a probability"
        )
    outside = sum(not 0 <= r.action - action_start < n_actions for r in records)  # type: ignore[operator]
    if outside:
        raise DataError(
            f"action: {outside} record(s) have an action outside the {n_actions} actions "
            f"starting at {action_start}"
        )
    sizes = {len(r.observation) if isinstance(r.observation, list) else -1 for r in records}
    if len(sizes) > 1 or -1 in sizes:
        raise DataError(f"observation: records have different sizes {sorted(sizes)}")
    bad_obs = sum(not all(_finite_number(v) for v in r.observation) for r in records)
    if bad_obs:
        raise DataError(f"observation: {bad_obs} record(s) hold values that are not finite numbers")
    bad_reward = sum(r.reward is not None and not _finite_number(r.reward) for r in records)
    if bad_reward:
        raise DataError(f"reward: {bad_reward} record(s) have a reward that is not a finite number")
    bad_step = sum(isinstance(r.step, bool) or not isinstance(r.step, int) or r.step < 0
                   for r in records)  # fmt: skip
    if bad_step:
        raise DataError(f"step: {bad_step} record(s) have a step that is not an integer >= 0")
    for name in ("action_mask", "action_distribution"):
        wrong = sum(
            getattr(r, name) is not None
            and (not isinstance(getattr(r, name), list) or len(getattr(r, name)) != n_actions)
            for r in records
        )
        if wrong:
            raise DataError(f"{name}: {wrong} record(s) do not have exactly {n_actions} entries")
    masked_out = sum(
        r.action_mask is not None and not r.action_mask[int(r.action) - action_start]  # type: ignore[arg-type]
        for r in records
    )
    if masked_out:
        raise DataError(f"action_mask: {masked_out} record(s) took an action their mask excluded")


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


UNUSABLE_ARMS = ("fallback", "override")
"""Arms whose decisions are left out of evaluation and learning by default: the
fallback action and operator overrides are deterministic (propensity 1, no
support on other actions) and were not chosen by a policy being learned from,
so per-record importance weighting over them is biased."""


def split_arms(
    records: Iterable[DecisionRecord], exclude: Sequence[str] = UNUSABLE_ARMS
) -> tuple[list[DecisionRecord], dict[str, int]]:
    """``(records whose arm is not in exclude, {excluded arm: count})``."""
    kept: list[DecisionRecord] = []
    dropped: dict[str, int] = {}
    for r in records:
        if r.arm in exclude:
            dropped[r.arm] = dropped.get(r.arm, 0) + 1
        else:
            kept.append(r)
    return kept, dict(sorted(dropped.items()))


def to_bandit(
    records: Iterable[DecisionRecord],
    *,
    n_actions: int | None = None,
    action_start: int = 0,
) -> BanditData:
    """One-step arrays from records with a joined reward.

    Raises:
        DataError: no usable record, or invalid propensities/actions/observations.
    """
    all_records = list(records)
    k = _infer_actions(all_records, n_actions)
    rewarded = [r for r in all_records if r.reward is not None]
    dropped = len(all_records) - len(rewarded)
    if not rewarded:
        raise DataError(
            f"reward: none of the {len(all_records)} record(s) has a joined reward; "
            "send feedback (POST /v1/feedback) or record with rewards"
        )
    _check(rewarded, k, action_start)
    masks = None
    if any(r.action_mask is not None for r in rewarded):
        masks = np.array(
            [r.action_mask if r.action_mask is not None else [True] * k for r in rewarded],
            dtype=bool,
        )
    behaviour = None
    if all(r.action_distribution is not None for r in rewarded):
        behaviour = np.array([r.action_distribution for r in rewarded], dtype=np.float64)
    return BanditData(
        observations=np.array([r.observation for r in rewarded], dtype=np.float64),
        actions=np.array([int(r.action) - action_start for r in rewarded], dtype=np.int64),  # type: ignore[arg-type]
        rewards=np.array([r.reward for r in rewarded], dtype=np.float64),
        propensities=np.minimum(np.array([r.propensity for r in rewarded], np.float64), 1.0),
        n_actions=k,
        masks=masks,
        behaviour=behaviour,
        policy_versions=np.array([r.policy_version for r in rewarded], dtype=object),
        arms=np.array([r.arm for r in rewarded], dtype=object),
        unit_ids=np.array([r.unit_id for r in rewarded], dtype=object),
        dropped_no_reward=dropped,
    )


def to_episodes(
    records: Iterable[DecisionRecord],
    *,
    n_actions: int | None = None,
    action_start: int = 0,
) -> EpisodeData:
    """Episodes (by ``episode_id``, else ``unit_id``) ordered by ``step``, padded to ``[E, T]``.

    Raises:
        DataError: no complete episode, duplicate steps, or invalid records.
    """
    all_records = list(records)
    k = _infer_actions(all_records, n_actions)
    groups: dict[str, list[DecisionRecord]] = defaultdict(list)
    for r in all_records:
        groups[episode_key(r)].append(r)
    episodes, dropped, incomplete = [], 0, 0
    for key, group in groups.items():
        if any(r.reward is None for r in group):
            dropped += len(group)
            continue
        try:
            group.sort(key=lambda r: r.step)
        except TypeError:
            raise DataError(f"step: episode {key!r} has a step that is not an integer") from None
        steps = [r.step for r in group]
        if len(set(steps)) != len(steps):
            raise DataError(f"step: episode {key!r} logs the same step twice")
        if steps != list(range(len(steps))):
            # Cut by an export window or missing rows: not an episode from its start.
            incomplete += len(group)
            continue
        episodes.append((key, group))
    if not episodes:
        raise DataError(
            f"reward: no episode of the {len(groups)} is complete (rewards for all its "
            f"decisions, steps 0, 1, ... without gaps); {dropped} decision(s) lack a reward, "
            f"{incomplete} sit in episodes with missing steps"
        )
    flat = [r for _, g in episodes for r in g]
    _check(flat, k, action_start)
    n_ep, horizon, dim = len(episodes), max(len(g) for _, g in episodes), len(flat[0].observation)
    obs = np.zeros((n_ep, horizon, dim))
    actions = np.zeros((n_ep, horizon), dtype=np.int64)
    rewards = np.zeros((n_ep, horizon))
    props = np.ones((n_ep, horizon))
    valid = np.zeros((n_ep, horizon), dtype=bool)
    masked = any(r.action_mask is not None for r in flat)
    masks = np.ones((n_ep, horizon, k), dtype=bool) if masked else None
    with_dist = all(r.action_distribution is not None for r in flat)
    behaviour = np.full((n_ep, horizon, k), 1.0 / k) if with_dist else None
    for e, (_, group) in enumerate(episodes):
        for t, r in enumerate(group):
            obs[e, t] = r.observation
            actions[e, t] = int(r.action) - action_start  # type: ignore[arg-type]
            rewards[e, t] = float(r.reward)  # type: ignore[arg-type]
            props[e, t] = min(1.0, r.propensity)
            valid[e, t] = True
            if masks is not None and r.action_mask is not None:
                masks[e, t] = r.action_mask
            if behaviour is not None:
                behaviour[e, t] = r.action_distribution
    return EpisodeData(
        observations=obs,
        actions=actions,
        rewards=rewards,
        propensities=props,
        valid=valid,
        lengths=valid.sum(axis=1).astype(np.int64),
        n_actions=k,
        masks=masks,
        behaviour=behaviour,
        episode_ids=np.array([key for key, _ in episodes], dtype=object),
        dropped_no_reward=dropped,
        dropped_incomplete=incomplete,
    )


def policy_distributions(
    policy: Any, observations: np.ndarray, masks: np.ndarray | None = None
) -> np.ndarray:
    """A policy artifact's action distribution ``[..., K]`` on logged observations.

    Works on ``[n, d]`` (bandit) and ``[E, T, d]`` (episodes) arrays.

    Raises:
        DataError: the policy is not discrete or its observation size differs.
    """
    if not getattr(policy, "discrete", False):
        raise DataError("policy: off-policy evaluation here needs a discrete-action policy")
    lead = observations.shape[:-1]
    flat = observations.reshape(-1, observations.shape[-1]).astype(np.float32)
    expected = int(np.prod(policy.observation_space.shape))
    if flat.shape[1] != expected:
        raise DataError(
            f"observation: the log has {flat.shape[1]} values per observation; the policy "
            f"expects {expected}"
        )
    flat_masks = None if masks is None else masks.reshape(-1, masks.shape[-1])
    probs = np.asarray(policy.action_distribution(flat, flat_masks), dtype=np.float64)
    return probs.reshape(*lead, probs.shape[-1])
