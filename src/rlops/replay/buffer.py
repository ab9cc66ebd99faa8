"""The replay buffer: a Storage, a Sampler and an optional RateLimiter, composed.

The loop (an off-policy learner, e.g. DQN)::

    writer = NStepWriter(n=3, gamma=0.99, num_envs=N)
    buffer = ReplayBuffer(RingStorage(spec, capacity), PrioritizedSampler(capacity, seed=0))
    buffer.add(writer.add(obs, action, reward, next_obs, terminated, truncated))
    batch, indices, weights = buffer.sample(256)
    buffer.update_priorities(indices, np.abs(td_errors))

Every part has ``state_dict`` / ``load_state_dict``; :meth:`ReplayBuffer.state_dict`
nests them, so one checkpoint restores the contents (or verifies them, for a
:class:`~rlops.replay.MemmapStorage`), the priorities, the sampler's random
state and the limiter's counters, and the next sample after a restore is the
one the original buffer would have drawn.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rlops.core.errors import ConfigError, ReplayError
from rlops.replay.rate_limiter import RateLimiter
from rlops.replay.samplers import PrioritizedSampler, Sampler, UniformSampler
from rlops.replay.spec import Batch, TransitionSpec
from rlops.replay.storage import RingStorage, Storage
from rlops.replay.sum_tree import _as_indices
from rlops.replay.writers import NStepWriter

__all__ = ["ReplayBuffer", "Sample", "make_replay"]


class Sample(NamedTuple):
    """One sampled batch (unpacks as ``batch, indices, weights``).

    Attributes:
        batch: field -> ``[B, *field.shape]`` copies of the items.
        indices: ``[B]`` int64 slots, for :meth:`ReplayBuffer.update_priorities`.
        weights: ``[B]`` float32 importance-sampling weights (ones when uniform).
    """

    batch: Batch
    indices: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32]


class ReplayBuffer:
    """Storage x Sampler (x RateLimiter), with one lock around the data.

    Safe for one inserting thread and one sampling thread at a time: storage
    and sampler change under a lock, and rate-limiter waits happen outside it
    (so a blocked sampler never stops an inserter from making progress).

    Args:
        storage: where items live (:class:`RingStorage`, :class:`MemmapStorage`).
        sampler: which items a batch draws (:class:`UniformSampler`,
            :class:`PrioritizedSampler`).
        limiter: optional :class:`RateLimiter`; ``add`` and ``sample`` wait on it.

    Raises:
        ConfigError: If the sampler's capacity differs from the storage's, or the
            limiter's ``min_size`` exceeds the capacity.

    >>> spec = TransitionSpec({"x": ((), np.float32)})
    >>> buffer = ReplayBuffer(RingStorage(spec, 8), UniformSampler(seed=0))
    >>> buffer.add({"x": np.arange(4, dtype=np.float32)}).tolist()
    [0, 1, 2, 3]
    >>> batch, indices, weights = buffer.sample(2)
    >>> len(buffer), batch["x"].shape, weights.dtype.name
    (4, (2,), 'float32')
    """

    def __init__(
        self, storage: Storage, sampler: Sampler, limiter: RateLimiter | None = None
    ) -> None:
        sampler_capacity = getattr(sampler, "capacity", None)
        if sampler_capacity is not None and sampler_capacity != storage.capacity:
            raise ConfigError(
                f"sampler capacity {sampler_capacity} != storage capacity {storage.capacity}"
            )
        if limiter is not None and limiter.min_size > storage.capacity:
            raise ConfigError(
                f"limiter min_size {limiter.min_size} exceeds the storage capacity "
                f"{storage.capacity}: sampling could never start"
            )
        self.storage = storage
        self.sampler = sampler
        self.limiter = limiter
        self._lock = threading.Lock()

    @property
    def spec(self) -> TransitionSpec:
        """The item fields."""
        return self.storage.spec

    @property
    def capacity(self) -> int:
        """Slots in the storage."""
        return self.storage.capacity

    def __len__(self) -> int:
        return self.storage.size

    def add(self, batch: Mapping[str, np.ndarray]) -> npt.NDArray[np.int64]:
        """Store a batch of ``B`` items (each field ``[B, *shape]``); return their slots.

        New items get the sampler's initial priority (the running max for
        :class:`PrioritizedSampler`). With a limiter, waits until ``B`` inserts
        are allowed.

        Raises:
            ReplayError: If the batch does not match the spec (naming the field,
                the expected and the found shape/dtype) or is larger than the
                capacity (nothing is stored then), or the limiter timed out.
        """
        limiter = self.limiter
        if limiter is None:
            with self._lock:
                indices = self.storage.add(batch)
                self.sampler.on_add(indices)
            return indices
        count = self.spec.validate(batch)
        limiter.await_can_insert(count)
        with self._lock:
            before = self.storage.size
            indices = self.storage.add(batch)
            self.sampler.on_add(indices)
            overwritten = before + count - self.storage.size
        limiter.on_insert(count)
        if overwritten:
            limiter.on_delete(overwritten)
        return indices

    def sample(self, batch_size: int) -> Sample:
        """Draw ``batch_size`` items (with replacement).

        Returns:
            :class:`Sample` ``(batch, indices, weights)``.

        Raises:
            ReplayError: If the buffer holds fewer than ``batch_size`` items
                (naming both sizes), or the limiter timed out (stating its state).
        """
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ReplayError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        batch_size = int(batch_size)
        if self.limiter is not None:
            self.limiter.await_can_sample(batch_size)
        with self._lock:
            size = self.storage.size
            if size < batch_size:
                raise ReplayError(
                    f"cannot sample {batch_size} items: the buffer holds {size} "
                    f"(capacity {self.storage.capacity}); add at least {batch_size - size} more "
                    "or lower batch_size"
                )
            indices, weights = self.sampler.sample(size, batch_size)
            batch = self.storage.get(indices)
        if self.limiter is not None:
            self.limiter.on_sample(batch_size)
        return Sample(batch, indices, weights)

    def update_priorities(self, indices: npt.ArrayLike, priorities: npt.ArrayLike) -> None:
        """Give stored items new priorities (e.g. ``|TD error|``).

        Validated the same way for every sampler; a :class:`UniformSampler`
        then ignores them, so the learner code does not depend on the sampler.

        Args:
            indices: ``[B]`` slots from :meth:`sample`, within ``[0, len(self))``.
            priorities: ``[B]`` finite, non-negative priorities.

        Raises:
            ReplayError: Naming ``indices`` or ``priorities`` and the offending
                position and value; no priority changes then.
        """
        with self._lock:
            idx = _as_indices(indices, self.storage.size, "indices")
            self.sampler.update_priorities(idx, priorities)

    def state_dict(self) -> dict[str, Any]:
        """``{"storage": ..., "sampler": ..., "limiter": ... or None}``."""
        with self._lock:
            return {
                "storage": self.storage.state_dict(),
                "sampler": self.sampler.state_dict(),
                "limiter": None if self.limiter is None else self.limiter.state_dict(),
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output into every part.

        Raises:
            ReplayError: If a part's state does not fit it (kind, spec,
                capacity or settings differ), naming the difference.
        """
        if (state.get("limiter") is None) != (self.limiter is None):
            raise ReplayError("replay state and this buffer disagree on having a rate limiter")
        with self._lock:
            self.storage.load_state_dict(state["storage"])
            self.sampler.load_state_dict(state["sampler"])
            if self.limiter is not None:
                self.limiter.load_state_dict(state["limiter"])


def make_replay(
    *,
    obs_dim: int,
    capacity: int,
    num_envs: int,
    action_shape: tuple[int, ...] = (),
    action_dtype: npt.DTypeLike = np.int64,
    n_step: int = 1,
    gamma: float = 0.99,
    prioritized: bool = False,
    alpha: float = 0.6,
    beta: float = 0.4,
    seed: int | None = None,
) -> tuple[ReplayBuffer, NStepWriter]:
    """The usual in-memory replay for vector observations, plus its n-step writer.

    Items have the fields of ``TransitionSpec.transitions((obs_dim,), ...,
    n_step=True)`` (``discount`` is always there, ``gamma`` when ``n_step=1``).

    Args:
        obs_dim: float32 observation size.
        capacity: replay slots.
        num_envs: sub-envs feeding the writer.
        action_shape: per-item action shape (``()`` for discrete).
        action_dtype: action dtype.
        n_step: steps per transition.
        gamma: discount.
        prioritized: proportional PER instead of uniform sampling.
        alpha: PER priority exponent.
        beta: PER importance-sampling exponent.
        seed: sampler seed.

    Returns:
        ``(buffer, writer)``.

    >>> buffer, writer = make_replay(obs_dim=4, capacity=100, num_envs=2, n_step=3)
    >>> list(buffer.spec), writer.n
    (['obs', 'action', 'reward', 'next_obs', 'terminated', 'discount'], 3)
    """
    spec = TransitionSpec.transitions(
        (obs_dim,), action_shape=action_shape, action_dtype=action_dtype, n_step=True
    )
    sampler: Sampler = (
        PrioritizedSampler(capacity, alpha=alpha, beta=beta, seed=seed)
        if prioritized
        else UniformSampler(seed)
    )
    return ReplayBuffer(RingStorage(spec, capacity), sampler), NStepWriter(n_step, gamma, num_envs)
