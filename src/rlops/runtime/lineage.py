"""Run lineage: which code, config, seed, environment and data produced a run.

Every training run writes ``RUN_DIR/lineage.json`` when it starts, so a policy
registry can record where an artifact came from and ``rlops reproduce`` can
train it again::

    lineage = collect_lineage(config_text, seed=0, env_id="CartPole-v1", env_kwargs={},
                              backend="inline", algo="ppo")
    write_lineage(run_dir, lineage)      # atomic: the old file or the new one, never half
    lineage = read_lineage(run_dir)      # validated; a ConfigError names file and field

The file is plain JSON (nothing is ever unpickled) with ``format`` /
``format_version``. ``config`` is the exact text of the run's ``config.yaml``
and ``config_sha256`` the sha256 of its UTF-8 bytes, which is also what the
artifact manifest's ``training.config_sha256`` holds. Collecting lineage
never fails a run for want of git: outside a git checkout (an installed
wheel), with git missing or slow, the git fields are null.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast

from rlops.core.errors import ConfigError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LINEAGE_FILENAME",
    "Lineage",
    "collect_code",
    "collect_lineage",
    "file_digest",
    "read_lineage",
    "record_resume",
    "write_lineage",
]

FORMAT = "rlops.lineage"
"""Value of the file's ``format`` field."""

FORMAT_VERSION = 1
"""Version of the lineage schema; bumped on any incompatible change."""

LINEAGE_FILENAME = "lineage.json"
"""Name of the lineage file in a run directory."""

GIT_TIMEOUT_S = 5.0
"""Per git command; a slower git (a huge or network-mounted tree) records null."""

PACKAGES = ("numpy", "torch", "gymnasium")
"""Distributions whose versions are recorded beside Python's."""

_HASH_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A SHA-1 repository has 40-hex commit ids, a SHA-256 one (git init --object-format) 64.
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
# Variables that would point git at another repository than the one holding rlops.
_GIT_ENV_OVERRIDES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CEILING_DIRECTORIES")


class CodeInfo(TypedDict):
    """The rlops code a run used.

    ``git_commit`` / ``git_dirty`` are null unless the imported rlops package is
    tracked in a git checkout (and git answered within :data:`GIT_TIMEOUT_S`).
    """

    rlops_version: str
    git_commit: str | None
    git_dirty: bool | None
    source: str


class EnvInfo(TypedDict):
    """Training environment: registry id (null for offline runs) and its kwargs."""

    id: str | None
    kwargs: dict[str, Any]


class HostInfo(TypedDict):
    """``platform.platform()``: OS, kernel and architecture; no host or user names."""

    platform: str


class DataFile(TypedDict):
    """One input file (an offline run's decision log), hashed as it was when training started.

    ``records`` / ``records_sha256`` (offline runs) hash the decision records as
    read: stable where the file's bytes are not (a SQLite log in WAL mode).
    """

    path: str
    sha256: str
    bytes: int
    records: NotRequired[int]
    records_sha256: NotRequired[str]


class Resume(TypedDict):
    """One ``--resume`` of the run: when, and with which code."""

    at: str
    code: CodeInfo


class Lineage(TypedDict):
    """The content of ``lineage.json`` (format version 1)."""

    format: str
    format_version: int
    kind: Literal["online", "offline"]
    created_at: str
    config: str
    config_sha256: str
    seed: int
    env: EnvInfo
    algo: str
    backend: str
    num_actors: int
    mode: str | None
    code: CodeInfo
    packages: dict[str, str | None]
    host: HostInfo
    data: list[DataFile]
    resumes: list[Resume]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git(cwd: Path, *args: str) -> str | None:
    """stdout of ``git -C cwd ARGS``, or None if git is missing, fails or is too slow."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_OVERRIDES}
    # A status refresh must not take the index lock another git command may hold.
    env["GIT_OPTIONAL_LOCKS"] = "0"
    try:
        done = subprocess.run(
            ["git", "-C", str(cwd), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def collect_code() -> CodeInfo:
    """Version, source directory and git state of the imported rlops package.

    The git fields describe the checkout only if rlops' own ``__init__.py`` is
    tracked there: a wheel installed into a virtualenv that happens to sit
    inside some other repository records null, not that repository's commit.
    ``git_dirty`` counts modified tracked files and untracked, non-ignored ones
    anywhere in the checkout (an untracked module would also be missing from
    a checkout of ``git_commit``).
    """
    import rlops

    package = Path(rlops.__file__).resolve().parent
    commit: str | None = None
    dirty: bool | None = None
    if _git(package, "ls-files", "--error-unmatch", "--", "__init__.py") is not None:
        head = (_git(package, "rev-parse", "HEAD") or "").strip()
        if _COMMIT.match(head):
            commit = head
            status = _git(package, "status", "--porcelain", "--untracked-files=normal")
            dirty = None if status is None else bool(status.strip())
    return {
        "rlops_version": rlops.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "source": str(package),
    }


def _package_version(name: str) -> str | None:
    module = sys.modules.get(name)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version  # the copy actually imported
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def file_digest(path: str | os.PathLike[str]) -> DataFile:
    """``{path, sha256, bytes}`` of a file, read in 1 MiB chunks.

    ``bytes`` counts what was hashed (a file still being appended to may have
    grown since). ``path`` is absolute, so ``rlops reproduce`` can find it.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return {"path": str(Path(path).resolve()), "sha256": h.hexdigest(), "bytes": size}


def collect_lineage(
    config_yaml_text: str,
    *,
    seed: int,
    env_id: str | None,
    env_kwargs: Mapping[str, Any],
    backend: str,
    algo: str,
    num_actors: int = 1,
    mode: str | None = None,
    kind: Literal["online", "offline"] = "online",
    data: Sequence[str | os.PathLike[str]] | None = None,
) -> Lineage:
    """Describe a run about to start.

    Args:
        config_yaml_text: the run's config exactly as written to ``config.yaml``
            (offline runs: their learner config as YAML).
        seed: the run's seed (every other seed of the run derives from it).
        env_id: registry id of the training env; None for offline runs.
        env_kwargs: its keyword arguments (values JSON cannot hold become strings;
            ``config`` keeps the exact text).
        backend: ``inline``, ``process`` or ``ray``.
        algo: algorithm name (``ppo``, ``cql``, ``bandit-dr``, ...).
        num_actors: actors of the run.
        mode: ``sync`` / ``async``, or None where it does not apply.
        kind: ``online`` (``rlops train``) or ``offline`` (``rlops train-offline``).
        data: input files to hash (an offline run's decision log).

    Returns:
        The lineage, ready for :func:`write_lineage`.

    Raises:
        OSError: a ``data`` file cannot be read.

    >>> lineage = collect_lineage("seed: 0\\n", seed=0, env_id="CartPole-v1", env_kwargs={},
    ...                           backend="inline", algo="ppo")
    >>> lineage["config_sha256"] == hashlib.sha256(b"seed: 0\\n").hexdigest()
    True
    """
    kwargs = json.loads(json.dumps(dict(env_kwargs), default=str))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created_at": _now(),
        "config": config_yaml_text,
        "config_sha256": hashlib.sha256(config_yaml_text.encode()).hexdigest(),
        "seed": int(seed),
        "env": {"id": env_id, "kwargs": kwargs},
        "algo": algo,
        "backend": backend,
        "num_actors": int(num_actors),
        "mode": mode,
        "code": collect_code(),
        "packages": {
            "python": platform.python_version(),
            **{name: _package_version(name) for name in PACKAGES},
        },
        "host": {"platform": platform.platform()},
        "data": [file_digest(p) for p in data or ()],
        "resumes": [],
    }


def write_lineage(run_dir: str | os.PathLike[str], lineage: Lineage) -> Path:
    """Write ``RUN_DIR/lineage.json`` atomically (temp file, fsync, rename).

    Returns:
        The file's path.

    Raises:
        OSError: writing failed; an existing file is then unchanged.
    """
    # Imported here: the checkpoint module loads torch, and readers of lineage need not.
    from rlops.runtime.checkpoint import atomic_write_bytes

    path = Path(run_dir) / LINEAGE_FILENAME
    atomic_write_bytes(path, (json.dumps(lineage, indent=2) + "\n").encode())
    return path


def record_resume(run_dir: str | os.PathLike[str]) -> None:
    """Append a ``resumes`` entry (time, current code) to a run's lineage.

    Everything else in the file stays as the run's start wrote it. A run
    directory from before lineage files has none, and gets none: the code of
    its first part is unknown. A malformed file is left alone with a warning
    rather than stopping the resume.
    """
    if not (Path(run_dir) / LINEAGE_FILENAME).is_file():
        return
    try:
        lineage = read_lineage(run_dir)
    except ConfigError as exc:
        warnings.warn(f"not recording this resume in the lineage: {exc}", stacklevel=2)
        return
    lineage["resumes"].append({"at": _now(), "code": collect_code()})
    write_lineage(run_dir, lineage)


# -- reading and validation ------------------------------------------------------------------
def _fail(path: Path, where: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: field {where!r} {message}")


def _field(path: Path, obj: Mapping[str, Any], key: str, types: Any, where: str = "") -> Any:
    """``obj[key]`` checked against ``types`` (bool is not accepted as an int)."""
    name = f"{where}{key}"
    if key not in obj:
        raise _fail(path, name, "is missing")
    value = obj[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise _fail(path, name, f"must be {names}, got {type(value).__name__} {value!r:.80}")
    return value


def _hex(path: Path, value: str, name: str, pattern: re.Pattern[str], what: str) -> None:
    if not pattern.match(value):
        raise _fail(path, name, f"must be {what}, got {value!r:.80}")


def _check_code(path: Path, code: Any, where: str) -> None:
    if not isinstance(code, dict):
        raise _fail(path, where.rstrip("."), "must be an object")
    _field(path, code, "rlops_version", str, where)
    commit = _field(path, code, "git_commit", (str, type(None)), where)
    if commit is not None:
        _hex(path, commit, f"{where}git_commit", _COMMIT, "a 40- or 64-hex commit id or null")
    _field(path, code, "git_dirty", (bool, type(None)), where)
    _field(path, code, "source", str, where)


def _validate(path: Path, raw: Any) -> Lineage:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must hold a JSON object, got {type(raw).__name__}")
    fmt = _field(path, raw, "format", str)
    if fmt != FORMAT:
        raise _fail(path, "format", f"must be {FORMAT!r}, got {fmt!r}: not an rlops lineage file")
    version = _field(path, raw, "format_version", int)
    if version != FORMAT_VERSION:
        raise _fail(
            path,
            "format_version",
            f"is {version}; this rlops reads version {FORMAT_VERSION} (a newer rlops wrote it)",
        )
    kind = _field(path, raw, "kind", str)
    if kind not in ("online", "offline"):
        raise _fail(path, "kind", f"must be 'online' or 'offline', got {kind!r}")
    _field(path, raw, "created_at", str)
    config = _field(path, raw, "config", str)
    digest = _field(path, raw, "config_sha256", str)
    _hex(path, digest, "config_sha256", _SHA256, "64 lowercase hex digits")
    if hashlib.sha256(config.encode()).hexdigest() != digest:
        raise _fail(path, "config_sha256", "does not match the sha256 of 'config' (edited?)")
    _field(path, raw, "seed", int)
    env = _field(path, raw, "env", dict)
    _field(path, env, "id", (str, type(None)), "env.")
    _field(path, env, "kwargs", dict, "env.")
    _field(path, raw, "algo", str)
    _field(path, raw, "backend", str)
    _field(path, raw, "num_actors", int)
    _field(path, raw, "mode", (str, type(None)))
    _check_code(path, _field(path, raw, "code", dict), "code.")
    packages = _field(path, raw, "packages", dict)
    for name in ("python", *PACKAGES):
        _field(path, packages, name, (str, type(None)), "packages.")
    _field(path, _field(path, raw, "host", dict), "platform", str, "host.")
    for i, entry in enumerate(_field(path, raw, "data", list)):
        where = f"data[{i}]."
        if not isinstance(entry, dict):
            raise _fail(path, where.rstrip("."), "must be an object")
        _field(path, entry, "path", str, where)
        sha = _field(path, entry, "sha256", str, where)
        _hex(path, sha, f"{where}sha256", _SHA256, "64 lowercase hex digits")
        _field(path, entry, "bytes", int, where)
    for i, entry in enumerate(_field(path, raw, "resumes", list)):
        where = f"resumes[{i}]."
        if not isinstance(entry, dict):
            raise _fail(path, where.rstrip("."), "must be an object")
        _field(path, entry, "at", str, where)
        _check_code(path, entry.get("code"), f"{where}code.")
    return cast(Lineage, raw)  # checked field by field above


def read_lineage(run_dir: str | os.PathLike[str]) -> Lineage:
    """Read and validate ``RUN_DIR/lineage.json`` (JSON only; nothing is unpickled).

    Args:
        run_dir: the run directory.

    Returns:
        The lineage. Fields beyond the schema are kept as they are.

    Raises:
        ConfigError: the file is missing, not JSON, or a field is missing or
            malformed; the message names the file and the field.

    >>> lineage = read_lineage("runs/cartpole-20250101-120000")  # doctest: +SKIP
    >>> lineage["code"]["git_commit"], lineage["config_sha256"]  # doctest: +SKIP
    """
    path = Path(run_dir) / LINEAGE_FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no lineage file; runs trained before lineage was recorded have none"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the lineage file ({exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    return _validate(path, raw)
