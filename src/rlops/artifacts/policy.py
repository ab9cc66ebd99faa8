"""The policy artifact: ``model.safetensors`` + ``policy.json``, loaded without pickle.

Layout of an artifact directory::

    model.safetensors   network tensors (float32), see rlops.artifacts.numpy_net
    policy.json         manifest: format and format_version, version (content hash),
                        observation/action spaces, network spec, preprocessing
                        (observation normalisation statistics), training summary

``version`` is ``sha256:<hex>`` over the tensors (names, dtypes, shapes, bytes)
and the manifest without its ``version`` and ``created_at`` fields. It is the
version id everything downstream (serving, decision logs, registry) refers to,
and loading recomputes it: an edited manifest or tensor is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from rlops.artifacts.numpy_net import NetworkSpec, NumpyActorCritic
from rlops.artifacts.spaces import space_from_json, space_to_json
from rlops.core.errors import ArtifactError

FORMAT = "rlops.policy"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
MANIFEST_FILE = "policy.json"
_UNHASHED = ("version", "created_at")


def content_hash(tensors: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> str:
    """Return ``sha256:<hex>`` over tensors and the manifest's hashed fields."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    body = {k: v for k, v in manifest.items() if k not in _UNHASHED}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return "sha256:" + h.hexdigest()


class Policy:
    """A loaded policy: preprocessing + network + action post-processing.

    Use :func:`load_policy` to get one.

    >>> policy = load_policy("runs/demo/artifact")  # doctest: +SKIP
    >>> actions, logp = policy.act(obs, deterministic=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        manifest: Mapping[str, Any],
        tensors: Mapping[str, np.ndarray],
        path: Path | None = None,
        seed: int | None = None,
    ) -> None:
        self.manifest = dict(manifest)
        self.path = path
        self.version: str = str(manifest.get("version", ""))
        self.observation_space = space_from_json(manifest["observation_space"])
        self.action_space = space_from_json(manifest["action_space"])
        self.spec = NetworkSpec.from_json(manifest["network"])
        self.net = NumpyActorCritic(self.spec, tensors)
        self._rng = np.random.default_rng(seed)
        obs_shape = self.observation_space.shape
        assert obs_shape is not None
        self._obs_shape = tuple(obs_shape)
        norm = (manifest.get("preprocessing") or {}).get("obs_norm")
        self._norm: tuple[np.ndarray, np.ndarray, float] | None = None
        if norm is not None:
            mean = np.asarray(norm["mean"], dtype=np.float32).reshape(self._obs_shape)
            std = np.sqrt(np.asarray(norm["var"], dtype=np.float64) + float(norm["epsilon"]))
            self._norm = (
                mean,
                std.astype(np.float32).reshape(self._obs_shape),
                float(norm["clip"]),
            )
        self._discrete = isinstance(self.action_space, spaces.Discrete)

    @property
    def discrete(self) -> bool:
        """True for a ``Discrete`` action space (``action_distribution`` exists)."""
        return self._discrete

    def preprocess(self, obs: np.ndarray) -> np.ndarray:
        """Apply the training-time observation normalisation to ``[B, *obs_shape]``."""
        x = np.asarray(obs, dtype=np.float32)
        if self._norm is not None:
            mean, std, clip = self._norm
            x = np.clip((x - mean) / std, -clip, clip)
        return x.reshape(x.shape[0], -1)

    def _batch(self, obs: Any) -> tuple[np.ndarray, bool]:
        x = np.asarray(obs, dtype=np.float32)
        if x.shape == self._obs_shape:
            return x[None], True
        if x.shape[1:] != self._obs_shape:
            raise ArtifactError(
                f"observation shape {x.shape} does not match the policy's "
                f"{self._obs_shape} (or a batch [B, *{self._obs_shape}])"
            )
        return x, False

    def act(
        self, obs: Any, deterministic: bool = False, mask: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Choose actions for one observation or a batch.

        Args:
            obs: ``obs_shape`` or ``[B, *obs_shape]`` raw observations, as the
                environment returns them (normalisation is applied here).
            deterministic: take the most likely action instead of sampling.
            mask: discrete policies only: ``[n]`` or ``[B, n]`` booleans, True for
                eligible actions. An ineligible action is never returned; the
                log-probability is under the distribution renormalised over the
                eligible actions.

        Returns:
            ``(actions, log_probs)``. Discrete actions are in the space's range
            (``start`` included); continuous actions are clipped to the action
            bounds, and the log-probability is that of the sampled, unclipped
            action. A single observation gives a scalar-batch result.
        """
        x, single = self._batch(obs)
        m = self._mask(mask, x.shape[0])
        actions, logp = self.net.sample(self.preprocess(x), self._rng, deterministic, m)
        space = self.action_space
        if isinstance(space, spaces.Box):
            actions = np.clip(actions, space.low, space.high)
        elif isinstance(space, spaces.Discrete) and space.start != 0:
            actions = actions + int(space.start)
        if single:
            return actions[0], logp[0]
        return actions, logp

    def _mask(self, mask: Any, batch: int) -> np.ndarray | None:
        """Validate an action mask: ``[n]`` or ``[B, n]`` bool with an eligible action per row."""
        if mask is None:
            return None
        if not self._discrete:
            raise ArtifactError("action masks apply to discrete actions only")
        n = self.spec.act_dim
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise ArtifactError(f"action mask must be booleans, got dtype {m.dtype}")
        if m.shape == (n,):
            m = np.broadcast_to(m, (batch, n))
        if m.shape != (batch, n):
            raise ArtifactError(
                f"action mask shape {m.shape} does not match the batch: expected ({n},) "
                f"or ({batch}, {n})"
            )
        empty = np.flatnonzero(~m.any(axis=1))
        if empty.size:
            raise ArtifactError(f"action mask row {int(empty[0])} has no eligible action")
        return m

    def action_distribution(self, obs: Any, mask: Any = None) -> np.ndarray:
        """Return ``[B, n]`` (or ``[n]``) action probabilities of a discrete policy.

        For a Q-learning policy this is the epsilon-greedy distribution with the
        artifact's ``network.epsilon`` (the greedy action has ``1 - eps + eps/n``).

        Raises:
            ArtifactError: for a continuous policy.
        """
        if not self._discrete:
            raise ArtifactError("action_distribution is only defined for discrete actions")
        x, single = self._batch(obs)
        probs = self.net.probs(self.preprocess(x), self._mask(mask, x.shape[0]))
        return probs[0] if single else probs

    def value(self, obs: Any) -> np.ndarray:
        """Return the value estimate of one observation or a batch."""
        x, single = self._batch(obs)
        v = self.net.value(self.preprocess(x))
        return v[0] if single else v

    def __repr__(self) -> str:
        return (
            f"Policy(version={self.version[:19]}..., algo={self.manifest.get('algo')}, "
            f"env={self.manifest.get('env_id')})"
        )


def build_manifest(
    *,
    observation_space: spaces.Space[Any],
    action_space: spaces.Space[Any],
    network: NetworkSpec,
    obs_norm: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the ``policy.json`` content (without ``version``/``created_at``).

    Arguments are those of :func:`save_policy`.
    """
    norm = None
    if obs_norm is not None:
        norm = {
            "mean": np.asarray(obs_norm["mean"], dtype=np.float64).ravel().tolist(),
            "var": np.asarray(obs_norm["var"], dtype=np.float64).ravel().tolist(),
            "epsilon": float(obs_norm["epsilon"]),
            "clip": float(obs_norm["clip"]),
        }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "network": network.to_json(),
        "preprocessing": {"obs_norm": norm},
        **(dict(extra) if extra else {}),
    }
    # Round-trip through JSON so the hash sees exactly what a reader will load.
    result: dict[str, Any] = json.loads(json.dumps(manifest))
    return result


def save_policy(
    path: str | os.PathLike[str],
    *,
    tensors: Mapping[str, np.ndarray],
    observation_space: spaces.Space[Any],
    action_space: spaces.Space[Any],
    network: NetworkSpec,
    obs_norm: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a policy artifact directory atomically and return its version id.

    The directory is built next to ``path`` and renamed into place, so a crash
    never leaves a half-written artifact; an existing artifact at ``path`` is
    replaced only once the new one is complete.

    Args:
        path: artifact directory to create.
        tensors: network tensors (names as in :class:`NumpyActorCritic`).
        observation_space: one env's observation space (raw, before normalisation).
        action_space: one env's action space.
        network: the network spec.
        obs_norm: ``{"mean", "var", "epsilon", "clip"}`` if observations were normalised.
        extra: more manifest fields (``algo``, ``env_id``, ``training`` summary ...).

    Returns:
        The content hash ``sha256:...``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    manifest = build_manifest(
        observation_space=observation_space,
        action_space=action_space,
        network=network,
        obs_norm=obs_norm,
        extra=extra,
    )
    manifest["version"] = content_hash(arrays, manifest)
    manifest["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        save_file(arrays, str(tmp / MODEL_FILE))
        with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.write("\n")
        for name in (MODEL_FILE, MANIFEST_FILE):
            fd = os.open(tmp / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(manifest["version"])


def load_policy(path: str | os.PathLike[str], *, seed: int | None = None) -> Policy:
    """Load and verify a policy artifact; never executes or unpickles anything.

    Args:
        path: the artifact directory (or its ``policy.json``).
        seed: seed of the sampling generator used by :meth:`Policy.act`.

    Returns:
        The :class:`Policy`.

    Raises:
        ArtifactError: if files are missing, the format or format version is
            not supported, or the content hash does not match (tampered).

    >>> policy = rlops.load_policy("runs/cartpole/artifact")  # doctest: +SKIP
    >>> policy.act(obs, deterministic=True)  # doctest: +SKIP
    """
    root = Path(path)
    if root.name == MANIFEST_FILE:
        root = root.parent
    manifest_path, model_path = root / MANIFEST_FILE, root / MODEL_FILE
    if not manifest_path.is_file() or not model_path.is_file():
        raise ArtifactError(
            f"{root}: not a policy artifact (expected {MANIFEST_FILE} and {MODEL_FILE})"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{manifest_path}: not an rlops policy manifest (format != {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r} is not "
            f"supported; this rlops reads format_version {FORMAT_VERSION}"
        )
    try:
        tensors = load_file(str(model_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{model_path}: unreadable safetensors file: {exc}") from None
    expected = content_hash(tensors, manifest)
    if manifest.get("version") != expected:
        raise ArtifactError(
            f"{root}: content hash mismatch (manifest says {manifest.get('version')!r}, "
            f"files hash to {expected!r}); the artifact was modified after it was written"
        )
    return Policy(manifest, tensors, path=root, seed=seed)
