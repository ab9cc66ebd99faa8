"""Samplers: which stored items a batch draws, and with what importance weights.

A sampler never touches the data; it sees slot indices. The loop
(:class:`~rlops.replay.ReplayBuffer` runs exactly this)::

    indices = storage.add(batch)                 # slots just written
    sampler.on_add(indices)                      # new items become sampleable
    indices, weights = sampler.sample(storage.size, batch_size)
    batch = storage.get(indices)
    sampler.update_priorities(indices, new_priorities)   # e.g. |TD error|

:class:`UniformSampler` draws slots uniformly with replacement (weights all
one). :class:`PrioritizedSampler` is proportional prioritized experience replay
(Schaul et al. 2016, "Prioritized Experience Replay", ICLR): slot ``i`` is
drawn with probability ``P(i) = p_i^alpha / sum_k p_k^alpha`` using stratified
sampling over a :class:`~rlops.replay.SumTree`, and comes with the
importance-sampling weight ``w_i = (N * P(i))^-beta / max_j w_j``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from rlops.core.errors import ConfigError, ReplayError
from rlops.replay.sum_tree import DEFAULT_TOP_LEVEL, SumTree, _as_indices

__all__ = ["PrioritizedSampler", "Sampler", "UniformSampler", "check_priorities"]

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def check_priorities(indices: npt.ArrayLike, priorities: npt.ArrayLike) -> F64:
    """Validate new priorities for ``indices``; return them as float64.

    Args:
        indices: ``[B]`` slot indices (only the length is checked here).
        priorities: ``[B]`` new priorities, finite and ``>= 0``.

    Returns:
        ``priorities`` as a ``[B]`` float64 array.

    Raises:
        ReplayError: Naming ``priorities`` and the first offending index and value.
    """
    count = np.shape(indices)[0] if np.ndim(indices) == 1 else -1
    p = np.asarray(priorities, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] != count:
        raise ReplayError(
            f"priorities must be a 1-D array matching indices ({count} items), got shape {p.shape}"
        )
    if count and not (p.min() >= 0.0 and p.max() < np.inf):  # NaN fails `>= 0`
        bad = int(np.flatnonzero(~(np.isfinite(p) & (p >= 0)))[0])
        raise ReplayError(
            f"priorities[{bad}] = {float(p[bad])} (for index {np.asarray(indices)[bad]}) must be "
            "finite and >= 0; no priority was changed"
        )
    return p


def _check_sample_args(size: int, batch_size: int) -> None:
    if batch_size < 1:
        raise ReplayError(f"batch_size must be >= 1, got {batch_size}")
    if size < 1:
        raise ReplayError(f"cannot sample {batch_size} items: nothing is stored (size 0)")


@runtime_checkable
class Sampler(Protocol):
    """Chooses slots to replay (see the module docstring for the loop)."""

    def on_add(self, indices: I64) -> None:
        """Slots ``indices`` were (over)written with new items."""
        ...

    def sample(self, size: int, batch_size: int) -> tuple[I64, F32]:
        """Draw ``batch_size`` slots among ``[0, size)``; return ``(indices, weights)``."""
        ...

    def update_priorities(self, indices: npt.ArrayLike, priorities: npt.ArrayLike) -> None:
        """Give slots ``indices`` new ``priorities`` (ignored by uniform sampling)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue with the same draws."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        ...


class UniformSampler:
    """Uniform sampling with replacement; importance weights are all one.

    :meth:`update_priorities` validates its arguments exactly as
    :class:`PrioritizedSampler` does and then ignores them, so a learner that
    always reports priorities works unchanged with either sampler.

    Args:
        seed: seed of the sampler's own ``numpy.random.Generator``.

    >>> sampler = UniformSampler(seed=0)
    >>> indices, weights = sampler.sample(size=10, batch_size=4)
    >>> indices.shape, weights.tolist()
    ((4,), [1.0, 1.0, 1.0, 1.0])
    """

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def on_add(self, indices: I64) -> None:
        """Nothing to do: every stored slot is equally likely."""

    def sample(self, size: int, batch_size: int) -> tuple[I64, F32]:
        """``batch_size`` slots uniform over ``[0, size)``, weights ones (float32).

        Raises:
            ReplayError: If ``size < 1`` or ``batch_size < 1``.
        """
        _check_sample_args(size, batch_size)
        indices = self.rng.integers(0, size, batch_size, dtype=np.int64)
        return indices, np.ones(batch_size, dtype=np.float32)

    def update_priorities(self, indices: npt.ArrayLike, priorities: npt.ArrayLike) -> None:
        """Validate (same errors as :class:`PrioritizedSampler`), then ignore."""
        check_priorities(indices, priorities)

    def state_dict(self) -> dict[str, Any]:
        """The generator state."""
        return {"kind": "uniform", "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ReplayError: If ``state`` came from another kind of sampler.
        """
        if state.get("kind") != "uniform":
            raise ReplayError(f"expected a uniform sampler state, got kind {state.get('kind')!r}")
        self.rng.bit_generator.state = dict(state["rng"])


class PrioritizedSampler:
    """Proportional prioritized replay (Schaul et al. 2016) over a vectorized sum tree.

    * Priorities: the tree stores ``(p_i + eps)^alpha``; ``eps > 0`` keeps every
      item sampleable. New items get the largest priority seen so far (initially
      1), so each is likely replayed at least once (the paper's Algorithm 1;
      the running max never decreases, as in the paper and cpprb).
    * Sampling is stratified: ``[0, total)`` is cut into ``batch_size`` equal
      segments and one value is drawn uniformly in each (paper, Appendix
      B.2.1), so a batch covers the priority mass evenly; indices come out
      sorted.
    * Importance weights ``w_i = (N * P(i))^-beta / max_j w_j`` with
      ``N`` = stored items. ``weight_normalization`` picks the ``max``:
      ``"batch"`` (default, as in DeepMind's Acme and Dopamine) divides by the
      largest weight in the batch, so every batch has a weight of exactly 1;
      ``"buffer"`` (as in cpprb, OpenAI Baselines and TorchRL) divides by the
      largest weight any stored item could get, i.e. the one of the smallest
      priority, which needs a min tree (a little slower to update) and makes
      weights comparable across batches. Both only ever scale updates down.
      ``N`` cancels either way: ``w_i = (P(i) / P_min)^-beta``.

    Args:
        capacity: number of slots (the storage's capacity).
        alpha: priority exponent; 0 is uniform sampling.
        beta: importance-sampling exponent; anneal it towards 1 by assigning
            :attr:`beta` during training.
        eps: added to every priority before the exponent.
        seed: seed of the sampler's ``numpy.random.Generator``.
        weight_normalization: ``"batch"`` or ``"buffer"`` (see above).

    Raises:
        ConfigError: If a parameter is out of range.

    >>> sampler = PrioritizedSampler(capacity=4, alpha=1.0, beta=1.0, seed=0)
    >>> sampler.on_add(np.arange(4))
    >>> sampler.update_priorities(np.arange(4), np.array([1.0, 1.0, 1.0, 5.0]))
    >>> indices, weights = sampler.sample(size=4, batch_size=8)
    >>> int((indices == 3).sum())  # slot 3 holds 5/8 of the mass: 5 of 8 strata
    5
    """

    def __init__(
        self,
        capacity: int,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        seed: int | None = None,
        weight_normalization: Literal["batch", "buffer"] = "batch",
    ) -> None:
        if capacity < 1:
            raise ConfigError(f"PrioritizedSampler capacity must be >= 1, got {capacity}")
        if not alpha >= 0:
            raise ConfigError(f"alpha must be >= 0 (0 = uniform), got {alpha}")
        if not beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        if not (eps > 0 and np.isfinite(eps)):
            raise ConfigError(f"eps must be > 0 so every item stays sampleable, got {eps}")
        if weight_normalization not in ("batch", "buffer"):
            raise ConfigError(
                f"weight_normalization must be 'batch' or 'buffer', got {weight_normalization!r}"
            )
        self.capacity = int(capacity)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.eps = float(eps)
        self.weight_normalization = weight_normalization
        self.max_priority = 1.0
        self.rng = np.random.default_rng(seed)
        self.tree = SumTree(
            self.capacity, track_min=weight_normalization == "buffer", top_level=DEFAULT_TOP_LEVEL
        )
        self._offsets = np.arange(0, dtype=np.float64)

    def on_add(self, indices: I64) -> None:
        """New items at ``indices`` get the current maximum priority."""
        count = indices.shape[0]
        if count == 0:
            return
        value = self.max_priority**self.alpha
        start = int(indices[0])
        # Ring storage writes a contiguous run of slots; one slice per tree level.
        if int(indices[-1]) - start == count - 1 and (
            count < 3 or np.array_equal(indices, np.arange(start, start + count))
        ):
            if start < 0 or start + count > self.capacity:
                raise ReplayError(f"on_add: slots [{start}, {start + count}) exceed capacity")
            self.tree._update_range(start, value, count)
        else:
            idx = _as_indices(indices, self.capacity, "indices")
            self.tree._update(idx, np.full(count, value))

    def sample(self, size: int, batch_size: int) -> tuple[I64, F32]:
        """Draw ``batch_size`` slots among ``[0, size)`` by priority.

        Returns:
            ``(indices [B] int64 sorted, weights [B] float32)``.

        Raises:
            ReplayError: If ``size < 1`` or ``batch_size < 1``.
        """
        _check_sample_args(size, batch_size)
        tree = self.tree
        if self._offsets.shape[0] < batch_size:
            self._offsets = np.arange(batch_size, dtype=np.float64)
        values = self.rng.random(batch_size)
        values += self._offsets[:batch_size]
        values *= tree.total / batch_size
        indices = tree._find(values)
        np.minimum(indices, size - 1, out=indices)  # rounding at the very top
        leaf = tree._sum[indices + tree._leaves]
        lowest = leaf.min() if self.weight_normalization == "batch" else tree.min
        # w_i / max_j w_j = (P(i) / P_min)^-beta; N and the total cancel.
        leaf /= lowest
        np.power(leaf, -self.beta, out=leaf)
        return indices, leaf.astype(np.float32)

    def update_priorities(self, indices: npt.ArrayLike, priorities: npt.ArrayLike) -> None:
        """Set new priorities (e.g. ``|TD error|``) for ``indices``.

        All arguments are validated before anything changes. Duplicate indices:
        the last one wins.

        Args:
            indices: ``[B]`` slots in ``[0, capacity)``.
            priorities: ``[B]`` finite, non-negative priorities.

        Raises:
            ReplayError: Naming ``indices`` or ``priorities`` and the offending
                position and value.
        """
        p = check_priorities(indices, priorities)
        idx = _as_indices(indices, self.capacity, "indices")
        if p.shape[0] == 0:
            return
        p = p + self.eps  # a new array: never modify the caller's
        self.max_priority = max(self.max_priority, float(p.max()))
        self.tree._update(idx, np.power(p, self.alpha, out=p))

    def probabilities(self, indices: npt.ArrayLike) -> F64:
        """``P(i)`` of each slot in ``indices`` (for tests and diagnostics)."""
        return self.tree.get(indices) / self.tree.total

    def state_dict(self) -> dict[str, Any]:
        """Priorities (tree leaves), running max, beta and the generator state."""
        return {
            "kind": "prioritized",
            "capacity": self.capacity,
            "alpha": self.alpha,
            "beta": self.beta,
            "eps": self.eps,
            "weight_normalization": self.weight_normalization,
            "max_priority": self.max_priority,
            "tree": self.tree.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; ``beta`` comes from the state (it anneals).

        Raises:
            ReplayError: If the state is of another kind, or its capacity,
                ``alpha``, ``eps`` or ``weight_normalization`` differ from this
                sampler's (stored priorities are ``(p + eps)^alpha``).
        """
        if state.get("kind") != "prioritized":
            raise ReplayError(
                f"expected a prioritized sampler state, got kind {state.get('kind')!r}"
            )
        for key in ("capacity", "alpha", "eps", "weight_normalization"):
            if state[key] != getattr(self, key):
                raise ReplayError(
                    f"prioritized sampler state has {key}={state[key]!r}, this sampler "
                    f"{getattr(self, key)!r}; build the sampler with the checkpoint's settings"
                )
        self.tree.load_state_dict(state["tree"])
        self.beta = float(state["beta"])
        self.max_priority = float(state["max_priority"])
        self.rng.bit_generator.state = dict(state["rng"])
