"""Simulator replacements: replay recorded traces, or drive a live system over HTTP.

Digital operations rarely come with a simulator. This module gives two vector
envs that stand in for one, both honouring the rlops contract
(:mod:`rlops.envs.base`: same-step autoreset with ``info["final_obs"]`` /
``info["_final_obs"]``, float32 observations ``[N, obs_dim]``, float64 rewards
``[N]``, bool terminations / truncations ``[N]``):

* :class:`TraceReplayEnv` (``rlops/TraceReplay-v0``) replays logged episodes;
* :class:`HTTPEnv` (``rlops/HTTP-v0``) calls a live system's HTTP endpoint.

Trace files (:func:`load_logged_episodes`)
    One row per logged transition, as JSON Lines (``.jsonl`` / ``.ndjson``: one
    JSON object per line, blank lines skipped) or CSV (``.csv``: a header line,
    then one row per transition)::

        key / column        JSONL                          CSV
        episode_id          string or integer              text
        step                integer                        integer
        observation         list of numbers                columns obs_0 .. obs_{k-1}
        action              integer, number or list        column action, or action_0 .. _{d-1}
        reward              number                         number
        terminated          true / false (or 1 / 0)        true / false / 1 / 0
        truncated           true / false (or 1 / 0)        true / false / 1 / 0
        propensity          optional: number in (0, 1]     optional column; empty = unknown
        next_observation    optional: list of numbers      optional columns next_obs_0 ..

    Row ``t`` of an episode is: the system was in ``observation``, the logging
    policy chose ``action`` with probability ``propensity``, then ``reward`` was
    paid and the episode ``terminated`` / was ``truncated`` (or not). Other keys
    and columns are ignored. Rows of different episodes may interleave (e.g. a
    decision log of concurrent users), but within an episode rows must come in
    file order with ``step`` increasing by exactly 1 (any first step), and no row
    may follow one whose ``terminated`` or ``truncated`` is true. The observation
    after an episode's last row is that row's ``next_observation`` if given,
    otherwise its own ``observation`` repeated (a placeholder: log
    ``next_observation`` if truncation bootstrapping matters). An episode whose
    last row has neither flag set (the log was cut off) is reported as truncated
    on that row. Integer actions (JSON integers, CSV cells without a decimal
    point) give ``Discrete(max_action + 1)``; any non-integer gives a float
    ``Box`` (a scalar action becomes shape ``(1,)``). Observations must be finite;
    their space is ``Box(-inf, inf, (k,), float32)`` unless given. Every problem
    raises :class:`~rlops.core.errors.EnvError` as ``"<file>, line <n>: <what>"``.

Replay semantics
    The env replays what was logged **whatever the agent does**: the logged
    outcome is what happened, and a counterfactual action cannot change it. Use
    it to evaluate logged decisions (off-policy evaluation) and to feed offline
    learners, never to learn a new policy online (a policy trained on it learns
    nothing about its own actions). Per step ``info`` carries, for the row just
    replayed: ``logged_action`` (``[N]`` int64 or ``[N, d]`` float32),
    ``propensity`` (``[N]`` float64, NaN where not logged), ``action_matches``
    (``[N]`` bool: the agent chose the logged action; float actions compare with
    ``np.isclose``), ``episode_id`` (``[N]`` object array of str) and
    ``logged_step`` (``[N]`` int64). Sub-env ``i`` of ``N`` plays episodes ``i,
    i + N, i + 2N, ...`` and wraps around modulo the number of episodes ``E``:
    its ``k``-th episode since reset is ``(i + k N) mod E`` (so with ``N > E``,
    or after a wrap with ``E mod N != 0``, sub-envs replay episodes another
    sub-env also plays). For exactly one pass over the log, stop sub-env ``i``
    after its episodes with ``i + k N < E``. ``reset`` restarts every sub-env
    at its first episode; ``seed`` only seeds ``np_random`` (replay is
    deterministic).

HTTP protocol (:class:`HTTPEnv`)
    All bodies are JSON (``Content-Type: application/json``); ``{url}`` is the
    base URL given to the env, and every request goes to that host and port
    only (no redirects are followed, proxy environment variables are ignored)::

        GET  {url}/spaces -> {"observation": {"shape": [k], "low": L, "high": H},
                              "action": {"n": int}
                                     or {"shape": [d], "low": L, "high": H}}
        POST {url}/reset  {"seed": int | null, "env_index": i}
                          -> {"observation": [k numbers]}
        POST {url}/step   {"env_index": i, "action": int | [d numbers]}
                          -> {"observation": [k numbers], "reward": number,
                              "terminated": bool, "truncated": bool}

    ``L`` / ``H`` are a number (broadcast), a nested list of the space's shape,
    or ``null`` (unbounded); ``null`` entries inside a list are unbounded too
    (JSON has no infinity). ``/spaces`` is fetched once when the env is built.
    ``env_index`` is the sub-env ``0 .. N-1``: the service keeps one independent
    episode per index. ``reset(seed=s)`` sends ``seed = s + i`` to sub-env ``i``
    (``null`` for ``seed=None``); when ``/step`` reports ``terminated`` or
    ``truncated`` the client resets that sub-env at once with ``seed: null``
    (same-step autoreset, done client side). Any 2xx status is success; keys
    beyond those listed are ignored. The ``N`` sub-envs' requests of one call
    run concurrently on a thread pool, each on a fresh connection.

    Every failure raises :class:`~rlops.core.errors.EnvError` naming the method,
    the full endpoint URL, the sub-env and what was wrong: connection refused,
    no complete response within ``timeout_s`` (a watchdog closes the socket at
    the deadline, so a request never blocks longer than about ``timeout_s``,
    even when a server trickles bytes), a non-2xx status (with the start of the
    body), malformed JSON, missing keys, a wrong type, an observation of the
    wrong shape, or a NaN / Inf value (Python's ``json`` accepts the non-standard
    ``NaN`` token). After a failed call the env must be ``reset`` again.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import http.client
import io
import json
import math
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, TypeVar
from urllib.parse import urlsplit

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlops.core.errors import EnvError

__all__ = [
    "HTTPEnv",
    "LoggedEpisodes",
    "TraceReplayEnv",
    "load_logged_episodes",
    "make_http_env",
    "make_trace_replay_env",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
StepResult = tuple[F32, F64, Bools, Bools, dict[str, Any]]
FileFormat = Literal["jsonl", "csv"]
ActionSpace = spaces.Discrete | spaces.Box

_SUFFIXES: Final[dict[str, FileFormat]] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}
_REQUIRED: Final = ("episode_id", "step", "observation", "action", "reward", "terminated")
_REQUIRED_KEYS: Final = (*_REQUIRED, "truncated")
_TRUE: Final = frozenset({"true", "1", "t", "yes"})
_FALSE: Final = frozenset({"false", "0", "f", "no"})
_MAX_RESPONSE_BYTES: Final = 16 * 2**20
_MAX_WORKERS: Final = 32
_T = TypeVar("_T")


# --------------------------------------------------------------------------- trace files


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class LoggedEpisodes:
    """Logged transitions, grouped by episode, as :func:`load_logged_episodes` reads them.

    ``R`` is the number of rows (transitions), ``E`` the number of episodes;
    rows are stored episode after episode, each episode's rows in step order.

    >>> import json, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "log.jsonl")
    >>> rows = [dict(episode_id="a", step=t, observation=[x], action=1, reward=1.0,
    ...              terminated=t == 1, truncated=False) for t, x in enumerate([0.5, 0.25])]
    >>> _ = open(f, "w").write("\\n".join(json.dumps(row) for row in rows))
    >>> log = load_logged_episodes(f)
    >>> log.observations.tolist(), log.episode_ids, log.num_episodes
    ([[0.5], [0.25]], ('a',), 1)
    """

    source: str
    """The file the rows came from (or a description)."""
    episode_ids: tuple[str, ...]
    """``[E]`` episode ids, in order of first appearance in the file."""
    episode_starts: I64
    """``[E]`` row index of each episode's first row."""
    episode_lengths: I64
    """``[E]`` number of rows of each episode (>= 1)."""
    steps: I64
    """``[R]`` logged step numbers."""
    observations: F32
    """``[R, obs_dim]`` observation before each action."""
    actions: npt.NDArray[Any]
    """``[R]`` int64 (all actions integers) or ``[R, act_dim]`` float64."""
    rewards: F64
    """``[R]`` reward paid after each action."""
    terminated: Bools
    """``[R]`` logged termination flags."""
    truncated: Bools
    """``[R]`` logged truncation flags (as logged; see :attr:`cut_off`)."""
    propensities: F64
    """``[R]`` probability the logging policy gave its action; NaN where not logged."""
    final_observations: F32
    """``[E, obs_dim]`` observation after each episode's last row."""
    lines: I64
    """``[R]`` 1-based line number of each row in :attr:`source`."""

    @property
    def num_episodes(self) -> int:
        """``E``."""
        return len(self.episode_ids)

    @property
    def discrete_actions(self) -> bool:
        """Whether every logged action is an integer."""
        return self.actions.ndim == 1

    @property
    def cut_off(self) -> Bools:
        """``[R]``: last row of an episode with neither flag set (replayed as truncated)."""
        last = np.zeros(len(self.rewards), dtype=np.bool_)
        last[self.episode_starts + self.episode_lengths - 1] = True
        return last & ~self.terminated & ~self.truncated


class _Row(NamedTuple):
    episode_id: str
    step: int
    observation: list[float]
    action: list[float]
    action_is_int: bool
    action_is_scalar: bool
    reward: float
    terminated: bool
    truncated: bool
    propensity: float
    next_observation: list[float] | None


class _BadField(ValueError):
    """A value in one row is invalid; the reader adds the file and line."""


def load_logged_episodes(
    path: str | Path, *, file_format: FileFormat | None = None
) -> LoggedEpisodes:
    """Read and validate a trace file of logged transitions (format: module docstring).

    Args:
        path: a ``.jsonl`` / ``.ndjson`` / ``.json`` (JSON Lines) or ``.csv`` file.
        file_format: ``"jsonl"`` or ``"csv"``; inferred from the suffix if None.

    Returns:
        The episodes, rows grouped by episode in step order.

    Raises:
        EnvError: ``"<file>, line <n>: <what>"`` if the file is missing, empty or
            unreadable, a key or column is missing, a value is not a number (or
            flag), not finite or out of range, steps of an episode are not
            consecutive, an episode continues after it ended, or observation /
            action lengths differ between rows.
    """
    where = str(path)
    if file_format is None:
        file_format = _SUFFIXES.get(Path(path).suffix.lower())
        if file_format is None:
            raise EnvError(
                f"{where}: cannot tell the trace format from the suffix "
                f"{Path(path).suffix!r}; use .jsonl or .csv, or pass file_format='jsonl'|'csv'"
            )
    elif file_format not in ("jsonl", "csv"):
        raise EnvError(f"{where}: file_format must be 'jsonl' or 'csv', got {file_format!r}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EnvError(f"{where}: trace file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvError(f"{where}: cannot read the trace file: {exc}") from None
    rows = _jsonl_rows(text, where) if file_format == "jsonl" else _csv_rows(text, where)
    return _group(rows, where, header_lines=0 if file_format == "jsonl" else 1)


def _jsonl_rows(text: str, where: str) -> Iterator[tuple[int, _Row]]:
    for line, raw in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EnvError(
                f"{where}, line {line}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise EnvError(
                f"{where}, line {line}: expected a JSON object, got {type(record).__name__}"
            )
        missing = [key for key in _REQUIRED_KEYS if key not in record]
        if missing:
            raise EnvError(
                f"{where}, line {line}: missing key(s) {missing}; every row needs "
                f"{list(_REQUIRED_KEYS)} (propensity and next_observation are optional)"
            )
        try:
            action, is_int, is_scalar = _json_action(record["action"])
            propensity = record.get("propensity")
            next_obs = record.get("next_observation")
            yield (
                line,
                _Row(
                    episode_id=_json_episode_id(record["episode_id"]),
                    step=_json_int(record["step"], "step"),
                    observation=_json_numbers(record["observation"], "observation"),
                    action=action,
                    action_is_int=is_int,
                    action_is_scalar=is_scalar,
                    reward=_json_number(record["reward"], "reward"),
                    terminated=_json_flag(record["terminated"], "terminated"),
                    truncated=_json_flag(record["truncated"], "truncated"),
                    propensity=math.nan
                    if propensity is None
                    else _json_number(propensity, "propensity"),
                    next_observation=None
                    if next_obs is None
                    else _json_numbers(next_obs, "next_observation"),
                ),
            )
        except _BadField as exc:
            raise EnvError(f"{where}, line {line}: {exc}") from None


def _json_episode_id(value: object) -> str:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise _BadField(f"episode_id must be a string or an integer, got {value!r}")


def _json_int(value: object, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _BadField(f"{name} must be an integer, got {value!r}")


def _json_number(value: object, name: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _BadField(f"{name} must be a number, got {value!r}")


def _json_numbers(value: object, name: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise _BadField(f"{name} must be a non-empty list of numbers, got {value!r}")
    return [_json_number(v, f"{name}[{i}]") for i, v in enumerate(value)]


def _json_flag(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _BadField(f"{name} must be true or false, got {value!r}")


def _json_action(value: object) -> tuple[list[float], bool, bool]:
    """``(components, all integers, scalar)``."""
    if isinstance(value, list):
        return _json_numbers(value, "action"), False, False
    number = _json_number(value, "action")
    return [number], isinstance(value, int), True


def _csv_rows(text: str, where: str) -> Iterator[tuple[int, _Row]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise EnvError(f"{where}, line 1: empty file; expected a header line and one row per step")
    names = [cell.strip() for cell in header]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise EnvError(f"{where}, line 1: duplicated column(s) {duplicated}")
    obs_cols = _indexed_columns(names, "obs", where)
    next_cols = _indexed_columns(names, "next_obs", where)
    action_cols = _indexed_columns(names, "action", where)
    if "action" in names:
        if action_cols:
            raise EnvError(f"{where}, line 1: use either column 'action' or action_0.., not both")
        action_cols = [names.index("action")]
    scalar_action = "action" in names
    missing = [c for c in _REQUIRED if c not in ("observation", "action") and c not in names]
    missing += [] if "truncated" in names else ["truncated"]
    missing += [] if obs_cols else ["obs_0"]
    missing += [] if action_cols else ["action"]
    if missing:
        raise EnvError(
            f"{where}, line 1: missing column(s) {missing} in header {names}; expected "
            "episode_id, step, obs_0..obs_{k-1}, action (or action_0..), reward, terminated, "
            "truncated and optionally propensity, next_obs_0.."
        )
    col = {name: i for i, name in enumerate(names)}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank lines carry no transition
        if len(cells) != len(names):
            raise EnvError(
                f"{where}, line {line}: {len(cells)} fields, the header has {len(names)}"
            )
        cell = [c.strip() for c in cells]
        try:
            action = [_csv_number(cell[i], names[i]) for i in action_cols]
            raw_propensity = cell[col["propensity"]] if "propensity" in col else ""
            yield (
                line,
                _Row(
                    episode_id=cell[col["episode_id"]],
                    step=_csv_int(cell[col["step"]], "step"),
                    observation=[_csv_number(cell[i], names[i]) for i in obs_cols],
                    action=action,
                    action_is_int=scalar_action and _is_int_literal(cell[action_cols[0]]),
                    action_is_scalar=scalar_action,
                    reward=_csv_number(cell[col["reward"]], "reward"),
                    terminated=_csv_flag(cell[col["terminated"]], "terminated"),
                    truncated=_csv_flag(cell[col["truncated"]], "truncated"),
                    propensity=_csv_number(raw_propensity, "propensity")
                    if raw_propensity
                    else math.nan,
                    next_observation=[_csv_number(cell[i], names[i]) for i in next_cols]
                    if any(cell[i] for i in next_cols)
                    else None,
                ),
            )
        except _BadField as exc:
            raise EnvError(f"{where}, line {line}: {exc}") from None


def _indexed_columns(names: Sequence[str], prefix: str, where: str) -> list[int]:
    """Positions of columns ``{prefix}_0 .. {prefix}_{k-1}`` (checked to be complete)."""
    pattern = re.compile(rf"{prefix}_(\d+)")
    found = {int(m.group(1)): i for i, n in enumerate(names) if (m := pattern.fullmatch(n))}
    if sorted(found) != list(range(len(found))):
        raise EnvError(
            f"{where}, line 1: columns {prefix}_* must be {prefix}_0 .. {prefix}_{{k-1}} with "
            f"no gap, got {[f'{prefix}_{k}' for k in sorted(found)]}"
        )
    return [found[k] for k in range(len(found))]


def _is_int_literal(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", text) is not None


def _csv_int(text: str, name: str) -> int:
    if not _is_int_literal(text):
        raise _BadField(f"{name} must be an integer, got {text!r}")
    return int(text)


def _csv_number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _BadField(f"{name} must be a number, got {text!r}") from None


def _csv_flag(text: str, name: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise _BadField(f"{name} must be true/false or 1/0, got {text!r}")


@dataclasses.dataclass
class _Episode:
    rows: list[int]
    last_step: int
    last_line: int
    ended: bool


def _group(rows: Iterator[tuple[int, _Row]], where: str, header_lines: int) -> LoggedEpisodes:
    """Validate rows across lines and lay them out episode after episode."""
    episodes: dict[str, _Episode] = {}
    table: list[_Row] = []
    lines: list[int] = []
    first: tuple[int, _Row] | None = None
    for line, row in rows:
        if first is None:
            first = (line, row)
        _check_row(row, line, first, where)
        episode = episodes.get(row.episode_id)
        if episode is None:
            episode = episodes[row.episode_id] = _Episode([], row.step - 1, line, False)
        elif episode.ended:
            raise EnvError(
                f"{where}, line {line}: episode {row.episode_id!r} continues after it ended "
                f"(terminated or truncated) at line {episode.last_line}"
            )
        elif row.step != episode.last_step + 1:
            raise EnvError(
                f"{where}, line {line}: step {row.step} of episode {row.episode_id!r} does not "
                f"follow step {episode.last_step} (line {episode.last_line}); steps within an "
                "episode must be consecutive and in file order"
            )
        episode.rows.append(len(table))
        episode.last_step, episode.last_line = row.step, line
        episode.ended = row.terminated or row.truncated
        table.append(row)
        lines.append(line)
    if first is None:
        raise EnvError(
            f"{where}, line {header_lines + 1}: no transitions in the file; expected one row "
            "per logged step"
        )
    order = np.asarray([i for e in episodes.values() for i in e.rows], dtype=np.int64)
    lengths = np.asarray([len(e.rows) for e in episodes.values()], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    ordered = [table[i] for i in order]
    finals = [
        table[e.rows[-1]].next_observation or table[e.rows[-1]].observation
        for e in episodes.values()
    ]
    discrete = all(r.action_is_int for r in table)
    actions: npt.NDArray[Any]
    if discrete:
        actions = np.asarray([int(r.action[0]) for r in ordered], dtype=np.int64)
        negative = [line for line, r in zip(lines, table) if r.action[0] < 0]
        if negative:
            raise EnvError(
                f"{where}, line {negative[0]}: integer action is negative; inferred Discrete "
                "actions are 0..n-1 (pass action_space=spaces.Discrete(n, start=...))"
            )
    else:
        actions = np.asarray([r.action for r in ordered], dtype=np.float64)
    return LoggedEpisodes(
        source=where,
        episode_ids=tuple(episodes),
        episode_starts=starts,
        episode_lengths=lengths,
        steps=np.asarray([r.step for r in ordered], dtype=np.int64),
        observations=np.asarray([r.observation for r in ordered], dtype=np.float32),
        actions=actions,
        rewards=np.asarray([r.reward for r in ordered], dtype=np.float64),
        terminated=np.asarray([r.terminated for r in ordered], dtype=np.bool_),
        truncated=np.asarray([r.truncated for r in ordered], dtype=np.bool_),
        propensities=np.asarray([r.propensity for r in ordered], dtype=np.float64),
        final_observations=np.asarray(finals, dtype=np.float32),
        lines=np.asarray(lines, dtype=np.int64)[order],
    )


def _check_row(row: _Row, line: int, first: tuple[int, _Row], where: str) -> None:
    def fail(what: str) -> EnvError:
        return EnvError(f"{where}, line {line}: {what}")

    first_line, ref = first
    for name, values in (
        ("observation", row.observation),
        ("next_observation", row.next_observation),
    ):
        if values is None:
            continue
        if len(values) != len(ref.observation):
            raise fail(
                f"{name} has {len(values)} values, line {first_line} has "
                f"{len(ref.observation)}; every observation must have the same length"
            )
        if not all(math.isfinite(v) for v in values):
            raise fail(f"{name} contains NaN or Inf: {values}")
    if row.action_is_scalar != ref.action_is_scalar or len(row.action) != len(ref.action):
        raise fail(
            f"action {row.action if not row.action_is_scalar else row.action[0]} has not the "
            f"shape of line {first_line}'s; every action must have the same length"
        )
    if not all(math.isfinite(v) for v in row.action):
        raise fail(f"action contains NaN or Inf: {row.action}")
    if not math.isfinite(row.reward):
        raise fail(f"reward is {row.reward}; rewards must be finite")
    if not math.isnan(row.propensity) and not 0.0 < row.propensity <= 1.0:
        raise fail(f"propensity {row.propensity} is not in (0, 1]")


# --------------------------------------------------------------------------- trace replay


class TraceReplayEnv(gym.vector.VectorEnv[F32, npt.NDArray[Any], npt.NDArray[Any]]):
    """Replay logged episodes as a vector env (semantics: module docstring).

    The agent's action never changes what happens next: each step returns the
    logged reward, flags and next observation, and ``info`` says which action
    was logged, with what propensity, and whether the agent matched it.

    Args:
        source: a trace file (see :func:`load_logged_episodes`) or loaded episodes.
        num_envs: sub-envs ``N``; sub-env ``i`` plays episodes ``i, i + N, ...``.
        observation_space: a float32 ``Box`` of shape ``(obs_dim,)``; default
            ``Box(-inf, inf, (obs_dim,))``. Every logged observation must lie in it.
        action_space: ``Discrete`` (logged actions must be integers in it) or
            ``Box`` (logged actions must have its shape and lie in it); default
            ``Discrete(max_action + 1)`` for integer actions, else an unbounded
            float32 ``Box``.
        file_format: ``"jsonl"`` or ``"csv"`` when ``source`` is a path with
            another suffix.

    Raises:
        EnvError: if the file is invalid (see :func:`load_logged_episodes`),
            ``num_envs < 1``, or the given spaces do not fit the data (naming
            the file and the line of the first row that does not fit).

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "log.csv")
    >>> rows = ["episode_id,step,obs_0,action,reward,terminated,truncated,propensity",
    ...         "u1,0,0.5,1,0.0,false,false,0.5", "u1,1,0.7,0,2.0,true,false,0.25"]
    >>> _ = open(f, "w").write("\\n".join(rows))
    >>> env = TraceReplayEnv(f)
    >>> env.reset(seed=0)[0].tolist()
    [[0.5]]
    >>> obs, reward, terminated, truncated, info = env.step(np.array([0]))  # logged: 1
    >>> obs.tolist(), reward.tolist(), info["action_matches"].tolist()
    ([[0.699999988079071]], [0.0], [False])
    >>> obs, reward, terminated, truncated, info = env.step(np.array([0]))  # logged: 0
    >>> obs.tolist(), reward.tolist(), terminated.tolist(), info["propensity"].tolist()
    ([[0.5]], [2.0], [True], [0.25])
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium's class attribute)
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(
        self,
        source: str | Path | LoggedEpisodes,
        num_envs: int = 1,
        *,
        observation_space: spaces.Box | None = None,
        action_space: ActionSpace | None = None,
        file_format: FileFormat | None = None,
    ) -> None:
        self.num_envs = _check_num_envs(num_envs, "TraceReplayEnv")
        log = (
            source
            if isinstance(source, LoggedEpisodes)
            else load_logged_episodes(source, file_format=file_format)
        )
        self.episodes = log
        obs_space = _trace_observation_space(log, observation_space)
        act_space = _trace_action_space(log, action_space)
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        self.observation_space = batch_space(obs_space, self.num_envs)
        self.action_space = batch_space(act_space, self.num_envs)

        self._obs = log.observations
        self._final_obs = log.final_observations
        self._actions: npt.NDArray[Any] = (
            log.actions.astype(np.int64)
            if isinstance(act_space, spaces.Discrete)
            else log.actions.reshape(len(log.rewards), *(act_space.shape or ())).astype(
                act_space.dtype
            )
        )
        self._truncated = log.truncated | log.cut_off
        self._last_row = np.zeros(len(log.rewards), dtype=np.bool_)
        self._last_row[log.episode_starts + log.episode_lengths - 1] = True
        self._episode_ids = np.asarray(log.episode_ids, dtype=object)
        self._env_index = np.arange(self.num_envs, dtype=np.int64)
        self._episode = np.zeros(self.num_envs, dtype=np.int64)  # episode each sub-env plays
        self._count = np.zeros(self.num_envs, dtype=np.int64)  # episodes started since reset
        self._row = np.zeros(self.num_envs, dtype=np.int64)  # row the next step replays
        self._needs_reset = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Restart sub-env ``i`` at its first episode, ``i mod E``.

        Args:
            seed: seeds ``np_random`` only; the replay itself is deterministic.
            options: not supported (must be None or empty).

        Returns:
            ``(obs [N, obs_dim] float32, {})``: each episode's first observation.

        Raises:
            EnvError: if ``options`` is not empty.
        """
        if options:
            raise EnvError(f"TraceReplayEnv.reset takes no options, got keys {sorted(options)}")
        super().reset(seed=seed)
        self._count[:] = 0
        self._episode[:] = self._env_index % self.episodes.num_episodes
        self._row[:] = self.episodes.episode_starts[self._episode]
        self._needs_reset = False
        return self._obs[self._row], {}

    def step(self, actions: npt.NDArray[Any]) -> StepResult:
        """Replay one logged row per sub-env; ``actions`` only decide ``action_matches``.

        Args:
            actions: ``[N]`` integers for a ``Discrete`` action space, or
                ``[N, *shape]`` for a ``Box``.

        Returns:
            ``(obs, rewards, terminations, truncations, info)``; ``info`` holds
            ``logged_action``, ``propensity``, ``action_matches``, ``episode_id``
            and ``logged_step`` of the replayed rows (module docstring), plus
            ``final_obs`` / ``_final_obs`` when an episode ended.

        Raises:
            EnvError: if called before :meth:`reset` or ``actions`` do not fit
                the action space.
        """
        if self._needs_reset:
            raise EnvError("TraceReplayEnv.step called before reset(); call env.reset() first")
        chosen = self._check_actions(actions)
        rows = self._row
        logged = self._actions[rows]
        if isinstance(self.single_action_space, spaces.Discrete):
            matches = chosen == logged
        else:
            close = np.isclose(chosen, logged, rtol=1e-5, atol=1e-6)
            matches = close.reshape(self.num_envs, -1).all(axis=1)
        rewards = self.episodes.rewards[rows]
        terminated = self.episodes.terminated[rows]
        truncated = self._truncated[rows]
        info: dict[str, Any] = {
            "logged_action": logged,
            "propensity": self.episodes.propensities[rows],
            "action_matches": matches,
            "episode_id": self._episode_ids[self._episode],
            "logged_step": self.episodes.steps[rows],
        }
        done = self._last_row[rows]
        ended = np.flatnonzero(done)
        finished = self._episode[ended]
        self._row = np.where(done, rows, rows + 1)
        if len(ended):
            self._count[ended] += 1
            self._episode[ended] = (ended + self._count[ended] * self.num_envs) % len(
                self._episode_ids
            )
            self._row[ended] = self.episodes.episode_starts[self._episode[ended]]
        obs = self._obs[self._row]
        if len(ended):
            final = obs.copy()
            final[ended] = self._final_obs[finished]
            info["final_obs"] = final
            info["_final_obs"] = done
        return obs, rewards, terminated, truncated, info

    def _check_actions(self, actions: Any) -> npt.NDArray[Any]:
        a = np.asarray(actions)
        space = self.single_action_space
        if isinstance(space, spaces.Discrete):
            ok = a.shape == (self.num_envs,) and a.dtype.kind in "iub"
            if ok and not ((a >= space.start) & (a < space.start + space.n)).all():
                ok = False
            if not ok:
                raise EnvError(
                    f"TraceReplayEnv.step expected [{self.num_envs}] integer actions in "
                    f"{space}, got {a.dtype} {a.shape}: {a.tolist()}"
                )
            return a.astype(np.int64)
        expected = (self.num_envs, *(space.shape or ()))
        if a.shape != expected or a.dtype.kind not in "iuf":
            raise EnvError(
                f"TraceReplayEnv.step expected actions of shape {expected} for {space}, "
                f"got {a.dtype} {a.shape}"
            )
        return a


def _check_num_envs(num_envs: object, owner: str) -> int:
    if not isinstance(num_envs, int | np.integer) or isinstance(num_envs, bool) or num_envs < 1:
        raise EnvError(f"{owner}: num_envs must be an int >= 1, got {num_envs!r}")
    return int(num_envs)


def _trace_observation_space(log: LoggedEpisodes, given: spaces.Box | None) -> spaces.Box:
    dim = log.observations.shape[1]
    if given is None:
        return spaces.Box(-np.inf, np.inf, (dim,), np.float32)
    where = log.source
    if not isinstance(given, spaces.Box) or given.dtype != np.float32 or given.shape != (dim,):
        raise EnvError(
            f"{where}: observation_space must be a float32 Box of shape ({dim},) to match the "
            f"logged observations (line {log.lines.min()}), got {given}"
        )
    outside = ~_rows_within(log.observations, given.low, given.high)
    # A final observation belongs to its episode's last row.
    last_rows = log.episode_starts + log.episode_lengths - 1
    outside[last_rows] |= ~_rows_within(log.final_observations, given.low, given.high)
    if outside.any():
        line = int(log.lines[outside].min())
        raise EnvError(f"{where}, line {line}: observation outside observation_space {given}")
    return given


def _rows_within(rows: npt.NDArray[Any], low: npt.NDArray[Any], high: npt.NDArray[Any]) -> Bools:
    """``[R]``: whether every value of each row lies in ``[low, high]``."""
    inside: Bools = np.asarray(np.logical_and(rows >= low, rows <= high).all(axis=1))
    return inside


def _trace_action_space(log: LoggedEpisodes, given: ActionSpace | None) -> ActionSpace:
    where = log.source
    if given is None:
        if log.discrete_actions:
            return spaces.Discrete(int(log.actions.max()) + 1)
        return spaces.Box(-np.inf, np.inf, (log.actions.shape[1],), np.float32)
    if isinstance(given, spaces.Discrete):
        if not log.discrete_actions:
            raise EnvError(
                f"{where}, line {int(log.lines.min())}: action_space is {given} but the logged "
                "actions are not all integers"
            )
        bad = (log.actions < given.start) | (log.actions >= given.start + given.n)
        if bad.any():
            line = int(log.lines[bad].min())
            raise EnvError(f"{where}, line {line}: logged action outside action_space {given}")
        return given
    if isinstance(given, spaces.Box):
        actions = log.actions.reshape(len(log.actions), -1).astype(np.float64)
        if actions.shape[1] != math.prod(given.shape):
            raise EnvError(
                f"{where}, line {int(log.lines.min())}: logged actions have "
                f"{actions.shape[1]} values, action_space {given} has shape {given.shape}"
            )
        low = given.low.reshape(-1).astype(np.float64)
        high = given.high.reshape(-1).astype(np.float64)
        bad = ~_rows_within(actions, low, high)
        if bad.any():
            line = int(log.lines[bad].min())
            raise EnvError(f"{where}, line {line}: logged action outside action_space {given}")
        return given
    raise EnvError(f"{where}: action_space must be a Discrete or a Box, got {given}")


def make_trace_replay_env(num_envs: int = 1, **kwargs: Any) -> TraceReplayEnv:
    """The ``rlops/TraceReplay-v0`` factory: ``make_vec("rlops/TraceReplay-v0", N, path=...)``.

    Args:
        num_envs: sub-envs ``N``.
        **kwargs: ``path`` (required) and the keyword arguments of
            :class:`TraceReplayEnv` (``observation_space``, ``action_space``,
            ``file_format``).

    Raises:
        EnvError: if ``path`` is missing or another keyword is unknown.
    """
    allowed = {"path", "observation_space", "action_space", "file_format"}
    _check_kwargs("rlops/TraceReplay-v0", kwargs, allowed, required={"path"})
    path = kwargs.pop("path")
    return TraceReplayEnv(path, num_envs, **kwargs)


def _check_kwargs(
    env_id: str, kwargs: Mapping[str, Any], allowed: set[str], required: set[str]
) -> None:
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise EnvError(f"{env_id}: unknown kwarg(s) {unknown}; known: {sorted(allowed)}")
    missing = sorted(required - set(kwargs))
    if missing:
        raise EnvError(
            f"{env_id} needs kwarg(s) {missing}, e.g. make_vec({env_id!r}, 4, {missing[0]}=...)"
        )


# --------------------------------------------------------------------------- HTTP adapter


class HTTPEnv(gym.vector.VectorEnv[F32, npt.NDArray[Any], npt.NDArray[Any]]):
    """Drive ``N`` episodes of a live system through its HTTP endpoint (protocol: module docstring).

    Args:
        url: the service's base URL, ``http://host:port/prefix`` (or ``https``).
        num_envs: sub-envs ``N``; sub-env ``i`` is ``env_index = i`` on the service.
        timeout_s: the most one request may take, connection included [s].
        headers: extra HTTP headers sent with every request (e.g. an
            ``Authorization`` token); their values never appear in errors.

    Raises:
        EnvError: if the URL is not ``http(s)://host...``, ``timeout_s`` is not a
            positive number, or ``GET {url}/spaces`` fails or is malformed.

    >>> from rlops.testing import FakeHTTPEnvServer
    >>> with FakeHTTPEnvServer() as server:
    ...     env = HTTPEnv(server.url, num_envs=2, timeout_s=5.0)
    ...     obs, _ = env.reset(seed=0)
    ...     obs, rewards, terminated, truncated, info = env.step(np.array([0, 1]))
    ...     env.close()
    >>> obs.shape, rewards.tolist()
    ((2, 4), [1.0, 1.0])
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium's class attribute)
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(
        self,
        url: str,
        num_envs: int = 1,
        *,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.num_envs = _check_num_envs(num_envs, "HTTPEnv")
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not math.isfinite(timeout_s)
            or timeout_s <= 0
        ):
            raise EnvError(f"HTTPEnv: timeout_s must be a finite number > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        if not isinstance(url, str):
            raise EnvError(f"HTTPEnv: url must be a string, got {url!r}")
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EnvError(
                f"HTTPEnv: url must look like 'http://host:port' or 'https://host/prefix', "
                f"got {url!r}"
            )
        if parts.query or parts.fragment:
            raise EnvError(f"HTTPEnv: url must not have a query or fragment, got {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise EnvError(f"HTTPEnv: url {url!r} has an invalid port") from None
        self._host = parts.hostname
        self._port = port
        self._path = parts.path
        self._https = parts.scheme == "https"
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Connection": "close",
            "User-Agent": "rlops-HTTPEnv",
        }
        for key, value in (headers or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise EnvError(f"HTTPEnv: headers must map str to str, got key {key!r}")
            self._headers[key] = value
        self._pool = (
            ThreadPoolExecutor(min(self.num_envs, _MAX_WORKERS), thread_name_prefix="rlops-http")
            if self.num_envs > 1
            else None
        )
        try:
            obs_space, act_space = self._fetch_spaces()
        except BaseException:
            self.close()
            raise
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        self.observation_space = batch_space(obs_space, self.num_envs)
        self.action_space = batch_space(act_space, self.num_envs)
        self._needs_reset = True

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """``POST {url}/reset`` for every sub-env (``seed + i`` to sub-env ``i``).

        Args:
            seed: base seed; ``None`` sends ``null`` (the service picks).
            options: not supported (must be None or empty).

        Returns:
            ``(obs [N, *obs_shape] float32, {})``.

        Raises:
            EnvError: on ``options`` or any failed request (module docstring).
        """
        if options:
            raise EnvError(f"HTTPEnv.reset takes no options, got keys {sorted(options)}")
        super().reset(seed=seed)
        self._needs_reset = True
        seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        rows = self._map(lambda i: self._reset_one(i, seeds[i]), range(self.num_envs))
        self._needs_reset = False
        return np.stack(rows), {}

    def step(self, actions: npt.NDArray[Any]) -> StepResult:
        """``POST {url}/step`` for every sub-env, then ``/reset`` for those that ended.

        Args:
            actions: ``[N]`` integers for a ``Discrete`` action space, or
                ``[N, *shape]`` finite numbers for a ``Box``.

        Returns:
            ``(obs, rewards, terminations, truncations, info)`` with same-step
            autoreset (``info["final_obs"]`` / ``info["_final_obs"]``).

        Raises:
            EnvError: if called before :meth:`reset`, on invalid ``actions``, or
                on any failed request (module docstring).
        """
        if self._needs_reset:
            raise EnvError(
                f"HTTPEnv({self.url}).step called before reset() or after a failed request; "
                "call env.reset() first"
            )
        payloads = self._action_payloads(actions)
        self._needs_reset = True  # until this step completes
        results = self._map(lambda i: self._step_one(i, payloads[i]), range(self.num_envs))
        obs = np.stack([r[0] for r in results])
        rewards = np.asarray([r[1] for r in results], dtype=np.float64)
        terminated = np.asarray([r[2] for r in results], dtype=np.bool_)
        truncated = np.asarray([r[3] for r in results], dtype=np.bool_)
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            ended = [int(i) for i in np.flatnonzero(done)]
            final = obs.copy()
            first = self._map(lambda i: self._reset_one(i, None), ended)
            obs[ended] = np.stack(first)
            info = {"final_obs": final, "_final_obs": done}
        self._needs_reset = False
        return obs, rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the request thread pool (requests in flight end within ``timeout_s``)."""
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ protocol

    def _fetch_spaces(self) -> tuple[spaces.Box, ActionSpace]:
        body = self._request("GET", "spaces", None, None)
        where = f"HTTPEnv GET {self.url}/spaces"
        _require_keys(body, ("observation", "action"), where)
        obs_spec, act_spec = body["observation"], body["action"]
        if not isinstance(obs_spec, dict) or "shape" not in obs_spec:
            raise EnvError(
                f"{where}: 'observation' must be an object with 'shape', got {obs_spec!r}"
            )
        obs_space = _box_from_spec(obs_spec, where, "observation")
        if not isinstance(act_spec, dict) or not ("n" in act_spec or "shape" in act_spec):
            raise EnvError(
                f"{where}: 'action' must be an object with 'n' (Discrete) or 'shape' (Box), "
                f"got {act_spec!r}"
            )
        if "n" in act_spec:
            n = act_spec["n"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise EnvError(f"{where}: action 'n' must be an integer >= 1, got {n!r}")
            return obs_space, spaces.Discrete(n)
        return obs_space, _box_from_spec(act_spec, where, "action")

    def _reset_one(self, index: int, seed: int | None) -> F32:
        body = self._request("POST", "reset", {"seed": seed, "env_index": index}, index)
        where = f"HTTPEnv POST {self.url}/reset (env {index})"
        _require_keys(body, ("observation",), where)
        return self._observation(body["observation"], where)

    def _step_one(self, index: int, action: Any) -> tuple[F32, float, bool, bool]:
        body = self._request("POST", "step", {"env_index": index, "action": action}, index)
        where = f"HTTPEnv POST {self.url}/step (env {index})"
        _require_keys(body, ("observation", "reward", "terminated", "truncated"), where)
        obs = self._observation(body["observation"], where)
        reward = body["reward"]
        if isinstance(reward, bool) or not isinstance(reward, int | float):
            raise EnvError(f"{where}: 'reward' must be a number, got {reward!r}")
        if not math.isfinite(reward):
            raise EnvError(f"{where}: 'reward' is {reward}; rewards must be finite")
        flags = []
        for key in ("terminated", "truncated"):
            if not isinstance(body[key], bool):
                raise EnvError(f"{where}: {key!r} must be true or false, got {body[key]!r}")
            flags.append(body[key])
        return obs, float(reward), flags[0], flags[1]

    def _observation(self, value: object, where: str) -> F32:
        space = self.single_observation_space
        try:
            array = np.asarray(value)
        except ValueError:  # ragged nested lists
            array = np.asarray(None)
        if array.dtype.kind not in "iuf":
            raise EnvError(
                f"{where}: 'observation' must be a list of numbers of shape {space.shape}, "
                f"got {_excerpt(repr(value))}"
            )
        if array.shape != space.shape:
            raise EnvError(
                f"{where}: 'observation' has shape {array.shape}, expected {space.shape} "
                f"(from {self.url}/spaces)"
            )
        if not np.isfinite(array).all():
            what = "NaN" if np.isnan(array).any() else "Inf"
            raise EnvError(f"{where}: 'observation' contains {what}: {array.tolist()}")
        return array.astype(np.float32)

    def _action_payloads(self, actions: Any) -> list[Any]:
        a = np.asarray(actions)
        space = self.single_action_space
        if isinstance(space, spaces.Discrete):
            ok = a.shape == (self.num_envs,) and a.dtype.kind in "iub"
            if not ok or not ((a >= space.start) & (a < space.start + space.n)).all():
                raise EnvError(
                    f"HTTPEnv.step expected [{self.num_envs}] integer actions in {space}, "
                    f"got {a.dtype} {a.shape}: {_excerpt(str(a.tolist()))}"
                )
            return [int(v) for v in a]
        expected = (self.num_envs, *(space.shape or ()))
        if a.shape != expected or a.dtype.kind not in "iuf" or not np.isfinite(a).all():
            raise EnvError(
                f"HTTPEnv.step expected finite actions of shape {expected} for {space}, "
                f"got {a.dtype} {a.shape}"
            )
        return [row.tolist() for row in a.astype(np.float64)]

    def _map(self, fn: Callable[[int], _T], indices: Sequence[int] | range) -> list[_T]:
        """``[fn(i) for i in indices]``, concurrently; the lowest failing index raises."""
        if self._pool is None or len(indices) == 1:
            return [fn(i) for i in indices]
        return list(self._pool.map(fn, indices))

    # ------------------------------------------------------------------ transport

    def _request(
        self, method: str, endpoint: str, payload: Mapping[str, Any] | None, index: int | None
    ) -> dict[str, Any]:
        """One request on a fresh connection, bounded by a watchdog; returns the JSON object."""
        where = f"HTTPEnv {method} {self.url}/{endpoint}"
        if index is not None:
            where += f" (env {index})"
        body = None if payload is None else json.dumps(payload, allow_nan=False).encode()
        status, reason, data = self._exchange(method, f"{self._path}/{endpoint}", body, where)
        if not 200 <= status < 300:
            text = data.decode("utf-8", errors="replace")
            raise EnvError(f"{where}: HTTP {status} {reason}: {_excerpt(text)}")
        try:
            decoded = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            text = data.decode("utf-8", errors="replace")
            raise EnvError(
                f"{where}: malformed JSON in the response ({exc}): {_excerpt(text)}"
            ) from None
        if not isinstance(decoded, dict):
            raise EnvError(
                f"{where}: the response must be a JSON object, got {type(decoded).__name__}"
            )
        return decoded

    def _exchange(
        self, method: str, path: str, body: bytes | None, where: str
    ) -> tuple[int, str, bytes]:
        connection_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = connection_cls(self._host, self._port, timeout=self.timeout_s)
        fired = threading.Event()

        def abort() -> None:
            # Socket timeouts bound each blocking call, not the whole request: a
            # server trickling one byte at a time would never trip them. Shutting
            # the socket down wakes the blocked call at the deadline.
            fired.set()
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(self.timeout_s, abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.connect()
            if fired.is_set():
                raise TimeoutError
            conn.request(method, path, body=body, headers=self._headers)
            response = conn.getresponse()
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read(65536):
                size += len(chunk)
                if size > _MAX_RESPONSE_BYTES:
                    raise EnvError(f"{where}: response larger than {_MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
            if fired.is_set():
                raise TimeoutError
            if response.length:  # the server closed before sending its Content-Length
                raise http.client.IncompleteRead(b"".join(chunks), response.length)
            return response.status, response.reason, b"".join(chunks)
        except ConnectionRefusedError:
            raise EnvError(
                f"{where}: connection refused; is the service running and listening there?"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            if fired.is_set() or isinstance(exc, TimeoutError):
                raise EnvError(
                    f"{where}: no complete response within timeout_s={self.timeout_s:g} s"
                ) from None
            raise EnvError(f"{where}: request failed: {type(exc).__name__}: {exc}") from None
        finally:
            watchdog.cancel()
            conn.close()


def _require_keys(body: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    missing = [key for key in keys if key not in body]
    if missing:
        raise EnvError(
            f"{where}: the response has no key(s) {missing} (got keys {sorted(body)}); "
            "see rlops.envs.adapters for the protocol"
        )


def _box_from_spec(spec: Mapping[str, Any], where: str, name: str) -> spaces.Box:
    shape = spec["shape"]
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    ):
        raise EnvError(
            f"{where}: {name} 'shape' must be a non-empty list of ints >= 1, got {shape!r}"
        )
    bounds = []
    for key, unbounded in (("low", -np.inf), ("high", np.inf)):
        value = spec.get(key)
        try:
            array = np.asarray(
                unbounded if value is None else _nulls_to(value, unbounded), dtype=np.float64
            )
            bound = np.broadcast_to(array, tuple(shape))
        except (TypeError, ValueError):
            raise EnvError(
                f"{where}: {name} {key!r} must be a number, null or a list of shape {shape}, "
                f"got {_excerpt(repr(value))}"
            ) from None
        if np.isnan(bound).any():
            raise EnvError(f"{where}: {name} {key!r} contains NaN")
        bounds.append(bound)
    low, high = bounds
    if (low > high).any():
        raise EnvError(f"{where}: {name} 'low' must not exceed 'high'")
    return spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)


def _nulls_to(value: Any, fill: float) -> Any:
    """Replace ``None`` (JSON ``null``) in a nested list with ``fill``."""
    if isinstance(value, list):
        return [_nulls_to(v, fill) for v in value]
    return fill if value is None else value


def _excerpt(text: str, limit: int = 200) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def make_http_env(num_envs: int = 1, **kwargs: Any) -> HTTPEnv:
    """The ``rlops/HTTP-v0`` factory: ``make_vec("rlops/HTTP-v0", N, url=..., timeout_s=...)``.

    Args:
        num_envs: sub-envs ``N``.
        **kwargs: ``url`` (required), ``timeout_s`` and ``headers`` of :class:`HTTPEnv`.

    Raises:
        EnvError: if ``url`` is missing, another keyword is unknown, or the
            service cannot be reached (see :class:`HTTPEnv`).
    """
    _check_kwargs("rlops/HTTP-v0", kwargs, {"url", "timeout_s", "headers"}, required={"url"})
    url = kwargs.pop("url")
    return HTTPEnv(url, num_envs, **kwargs)
