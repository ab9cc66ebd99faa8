"""What an offline learner returns, and how it becomes a normal rlops policy artifact.

The artifact is the same ``model.safetensors`` + ``policy.json`` every rlops
learner writes (``rlops.load_policy`` loads it, ``rlops serve`` serves it);
its manifest adds where it came from: the log's sha256 and record counts, the
behaviour policy versions, the objective and the hyperparameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from rlops.artifacts import NetworkSpec, save_policy
from rlops.core.decisions import DecisionRecord

MAX_LISTED_VERSIONS = 20
"""Behaviour policy versions listed by name in the lineage (the count is always given)."""


@dataclass(frozen=True)
class OfflineResult:
    """A trained offline policy, ready to save.

    Attributes:
        algo: ``"bandit-ips"``, ``"bandit-dr"`` or ``"cql"``.
        tensors: network weights in the artifact layout (``pi.layers.{i}``).
        network: the artifact's network description.
        obs_norm: observation statistics the network was trained with, or None.
        metrics: final namespaced metrics (``losses/...``, ``charts/...``).
        hyperparameters: the learner's config as JSON-able data.
        seed: the training seed.
        samples: decisions (bandit) or transitions (CQL) trained on.
    """

    algo: str
    tensors: dict[str, np.ndarray]
    network: NetworkSpec
    obs_norm: dict[str, Any] | None
    metrics: dict[str, float]
    hyperparameters: dict[str, Any]
    seed: int
    samples: int


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log_lineage(
    path: str | os.PathLike[str],
    records: Sequence[DecisionRecord],
    *,
    used: int,
    dropped_no_reward: int,
) -> dict[str, Any]:
    """The manifest's ``lineage`` section for a policy trained on the log at ``path``.

    Only content goes in (the file's hash and name, not its directory), so the
    same log and seed give the same artifact version wherever the log lies.
    ``records_sha256`` hashes the records themselves, in the order read: it is
    the same for a SQLite log and its Parquet export, and does not depend on
    SQLite's page layout.

    Args:
        path: the decision log file.
        records: every record read from it.
        used: decisions (or steps) the learner trained on.
        dropped_no_reward: records skipped because no reward was joined.
    """
    content = hashlib.sha256()
    for r in records:
        # NaN is allowed here: a dropped record may hold one, and hashing must not fail on it.
        content.update(json.dumps(dataclasses.asdict(r), separators=(",", ":")).encode() + b"\n")
    versions = Counter(r.policy_version for r in records)
    arms = Counter(str(r.arm) for r in records)
    return {
        "log": {
            "name": Path(path).name,
            "sha256": file_sha256(path),
            "records_sha256": content.hexdigest(),
            "records": len(records),
            "used": int(used),
            "dropped_no_reward": int(dropped_no_reward),
        },
        "behaviour_versions": sorted(versions)[:MAX_LISTED_VERSIONS],
        "behaviour_version_count": len(versions),
        "arms": dict(sorted(arms.items())),
    }


def save_offline_policy(
    path: str | os.PathLike[str],
    result: OfflineResult,
    *,
    action_start: int = 0,
    lineage: Mapping[str, Any] | None = None,
) -> str:
    """Write ``result`` as a policy artifact and return its version (content hash).

    The observation space is an unbounded ``Box`` of the logged observation
    size (a log does not record bounds); actions are ``Discrete(K, start=action_start)``.

    Args:
        path: artifact directory to create (replaced atomically).
        result: the trained policy.
        action_start: first action id as logged (``Discrete(n, start=s)``).
        lineage: where the policy came from (see :func:`log_lineage`).

    Returns:
        ``sha256:...``, the version id serving and decision logs refer to.

    >>> version = save_offline_policy("runs/offline/artifact", result)  # doctest: +SKIP
    """
    obs_dim = result.network.obs_dim
    observation_space = spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
    action_space = spaces.Discrete(result.network.act_dim, start=action_start)
    return save_policy(
        path,
        tensors=result.tensors,
        observation_space=observation_space,
        action_space=action_space,
        network=result.network,
        obs_norm=result.obs_norm,
        extra={
            "algo": result.algo,
            "env_id": None,
            "training": {
                "offline": True,
                "seed": result.seed,
                "samples": result.samples,
                "hyperparameters": result.hyperparameters,
                # Strict JSON: a non-finite metric is left out rather than written as NaN.
                "metrics": {
                    k: float(v) for k, v in sorted(result.metrics.items()) if math.isfinite(v)
                },
            },
            "lineage": dict(lineage) if lineage is not None else None,
        },
    )
