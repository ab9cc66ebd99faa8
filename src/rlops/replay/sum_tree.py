"""A vectorized sum tree (with optional min) for proportional prioritized replay.

Proportional prioritized experience replay (Schaul et al. 2016, "Prioritized
Experience Replay", ICLR, Appendix B.2.1) samples item ``i`` with probability
``p_i / sum_k p_k``. A sum tree makes that ``O(log N)`` per query: every
internal node holds the sum of its children, so a uniform value in
``[0, total)`` descends to the leaf whose prefix-sum interval contains it.

This tree does the work a whole batch at a time in numpy, never a Python loop
per item:

* Layout: a binary heap in one float64 array of ``2 * L`` slots (``L`` = the
  capacity rounded up to a power of two; node ``a`` has children ``2a`` and
  ``2a + 1``; leaf ``i`` is node ``L + i``). Viewing that array as complex128
  makes ``pairs[a]`` the ``(left, right)`` children of node ``a`` in a single
  gather, so recomputing a batch of parents is one gather, one add and one
  scatter per level.
* :meth:`SumTree.update` writes the leaves, then walks all ``B`` of them up
  together, one level per iteration; each parent is *recomputed from its
  children* (never patched with deltas), so duplicate indices are harmless
  and floating-point error cannot accumulate.
* The top ``top_level`` levels are replaced by one prefix-sum array over the
  ``2**top_level`` nodes of that level, rebuilt lazily (once, on the first
  query after a change). A query then costs one ``searchsorted`` plus a
  binary descent over the remaining ``depth - top_level`` levels, and an update
  stops ``top_level`` levels below the root. With the default ``top_level=12``
  and a million leaves that is 8 levels instead of 20, in exchange for a
  4096-element cumulative sum per batch of queries.
* The optional min tree (for normalising importance weights by the largest
  weight in the buffer) is updated the same way for its lowest
  ``MIN_TREE_LEVELS`` levels; the minimum over that level is taken lazily.

float64 throughout: with a million leaves, float32 prefix sums would lose the
resolution that separates neighbouring leaves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from rlops.core.errors import ConfigError, ReplayError

__all__ = ["DEFAULT_TOP_LEVEL", "MIN_TREE_LEVELS", "SumTree"]

DEFAULT_TOP_LEVEL = 12
"""Tree levels above this one are replaced by a prefix-sum array (see module doc)."""

MIN_TREE_LEVELS = 4
"""Levels of the min tree kept up to date eagerly; the rest is a lazy ``min``."""

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def _as_indices(indices: npt.ArrayLike, capacity: int, what: str) -> I64:
    """Check ``indices`` is a 1-D integer array within ``[0, capacity)``."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise ReplayError(
            f"{what} must be a 1-D integer array, got shape {idx.shape} of {idx.dtype}"
        )
    idx = idx.astype(np.int64, copy=False)
    # One reduction catches both ends: negative values wrap to huge unsigned ones.
    if idx.size and int(idx.view(np.uint64).max()) >= capacity:
        bad = int(np.flatnonzero((idx < 0) | (idx >= capacity))[0])
        raise ReplayError(f"{what}[{bad}] = {int(idx[bad])} is outside [0, {capacity})")
    return idx


def _as_values(values: npt.ArrayLike, count: int, what: str) -> F64:
    """Check ``values`` is ``count`` finite, non-negative numbers; return float64."""
    val = np.asarray(values, dtype=np.float64)
    if val.shape != (count,):
        raise ReplayError(f"{what} must have shape ({count},), got {val.shape}")
    if count and not (val.min() >= 0.0 and val.max() < np.inf):  # NaN fails `>= 0`
        bad = int(np.flatnonzero(~(np.isfinite(val) & (val >= 0)))[0])
        raise ReplayError(
            f"{what}[{bad}] = {float(val[bad])}: must be finite and >= 0 (nothing was updated)"
        )
    return val


class SumTree:
    """Sum (and optionally min) over ``capacity`` non-negative leaves, batch-updated.

    Args:
        capacity: number of leaves.
        track_min: also maintain the minimum over *written* leaves (leaves never
            written count as ``+inf``), see :attr:`min`.
        top_level: levels above this depth are replaced by a lazily rebuilt
            prefix-sum array (0 keeps the whole binary tree; see module doc).

    Raises:
        ConfigError: If ``capacity < 1`` or ``top_level < 0``.

    >>> tree = SumTree(4)
    >>> tree.update(np.array([0, 1, 2, 3]), np.array([1.0, 2.0, 3.0, 4.0]))
    >>> tree.total
    10.0
    >>> tree.find_prefix_sum(np.array([0.5, 1.0, 2.9, 9.99])).tolist()
    [0, 1, 1, 3]
    """

    def __init__(
        self, capacity: int, *, track_min: bool = False, top_level: int = DEFAULT_TOP_LEVEL
    ) -> None:
        if capacity < 1:
            raise ConfigError(f"SumTree capacity must be >= 1, got {capacity}")
        if top_level < 0:
            raise ConfigError(f"SumTree top_level must be >= 0, got {top_level}")
        self.capacity = int(capacity)
        self.track_min = track_min
        depth = (self.capacity - 1).bit_length()
        self._depth = depth
        self._leaves = 1 << depth
        self._top = min(depth, top_level)
        self._min_top = max(self._top, depth - MIN_TREE_LEVELS)
        self._sum = np.zeros(2 * self._leaves, dtype=np.float64)
        self._pairs = self._sum.view(np.complex128)
        # Row i of `node >> _shifts` is the ancestor i + 1 levels above a leaf.
        self._shifts = np.arange(1, depth - self._top + 1, dtype=np.int64)[:, None]
        self._prefix = np.zeros((1 << self._top) + 1, dtype=np.float64)
        self._min = np.full(2 * self._leaves if track_min else 2, np.inf, dtype=np.float64)
        self._min_pairs = self._min.view(np.complex128)
        self._min_value = np.inf
        self._dirty = True

    # -- queries -----------------------------------------------------------------
    @property
    def total(self) -> float:
        """Sum of all leaves."""
        if self._dirty:
            self._refresh()
        return float(self._prefix[-1])

    @property
    def min(self) -> float:
        """Minimum over leaves ever written (``inf`` before the first write).

        Raises:
            ReplayError: If the tree was built without ``track_min``.
        """
        if not self.track_min:
            raise ReplayError("this SumTree was built with track_min=False")
        if self._dirty:
            self._refresh()
        return float(self._min_value)

    def get(self, indices: npt.ArrayLike) -> F64:
        """Leaf values at ``indices`` (``[B]`` float64)."""
        idx = _as_indices(indices, self.capacity, "indices")
        return self._sum[idx + self._leaves]

    def find_prefix_sum(self, values: npt.ArrayLike) -> I64:
        """For each ``v``, the smallest leaf ``i`` with ``sum(leaves[: i + 1]) > v``.

        That is ``np.searchsorted(np.cumsum(leaves), v, side="right")``: leaf
        ``i`` owns the half-open interval ``[prefix_i, prefix_i + leaf_i)``, so
        zero-valued leaves are never returned for ``v`` in ``[0, total)``. All
        queries descend together, one tree level per step. Values at or past
        ``total`` return the last leaf (``capacity - 1``).

        Args:
            values: ``[B]`` non-negative query values.

        Returns:
            ``[B]`` int64 leaf indices.

        Raises:
            ReplayError: If ``values`` is not 1-D, finite and non-negative.
        """
        val = np.array(values, dtype=np.float64, copy=True)
        if val.ndim != 1:
            raise ReplayError(f"values must be 1-D, got shape {val.shape}")
        _as_values(val, val.shape[0], "values")
        leaves = self._find(val)
        np.minimum(leaves, self.capacity - 1, out=leaves)
        return leaves

    # -- updates -----------------------------------------------------------------
    def update(self, indices: npt.ArrayLike, values: npt.ArrayLike) -> None:
        """Set ``leaves[indices] = values`` and recompute their ancestors.

        Duplicate indices: the last occurrence wins, as in a Python loop.
        Everything is validated before anything is written.

        Args:
            indices: ``[B]`` leaf indices in ``[0, capacity)``.
            values: ``[B]`` finite, non-negative values.

        Raises:
            ReplayError: Naming the offending index or value.
        """
        idx = _as_indices(indices, self.capacity, "indices")
        self._update(idx, _as_values(values, idx.shape[0], "values"))

    def update_range(self, start: int, values: npt.ArrayLike) -> None:
        """Set the contiguous leaves ``[start, start + len(values))`` (no wraparound).

        Cheaper than :meth:`update`: each level is one slice operation.

        Raises:
            ReplayError: If the range leaves ``[0, capacity)`` or a value is invalid.
        """
        val = np.asarray(values, dtype=np.float64)
        count = val.shape[0] if val.ndim == 1 else -1
        if count < 0 or start < 0 or start + count > self.capacity:
            raise ReplayError(
                f"update_range: [start, start + len(values)) = [{start}, {start + count}) must "
                f"be a 1-D range inside [0, {self.capacity})"
            )
        self._update_range(int(start), _as_values(val, count, "values"))

    def _update(self, idx: I64, val: F64) -> None:
        """:meth:`update` without validation (callers validated ``idx`` and ``val``)."""
        if idx.shape[0] == 0:
            return
        tree = self._sum
        pos = idx + self._leaves
        tree[pos] = val
        # numpy does not promise which of several writes to one slot lands; detect
        # duplicates that disagree and redo those leaves with the last one.
        if (tree[pos] != val).any():
            reverse_unique, reverse_first = np.unique(pos[::-1], return_index=True)
            val = val[pos.shape[0] - 1 - reverse_first]
            pos = reverse_unique
            tree[pos] = val
        if self.track_min:
            self._min[pos] = val
        if self._shifts.shape[0]:
            ancestors = pos >> self._shifts
            pairs = self._pairs
            for node in ancestors:
                children = pairs[node]
                tree[node] = children.real + children.imag
            if self.track_min:
                minimum = np.minimum
                min_pairs = self._min_pairs
                min_tree = self._min
                for node in ancestors[: self._depth - self._min_top]:
                    children = min_pairs[node]
                    min_tree[node] = minimum(children.real, children.imag)
        self._dirty = True

    def _update_range(self, start: int, val: F64 | float, count: int | None = None) -> None:
        """:meth:`update_range` without validation; a scalar ``val`` needs ``count``."""
        count = np.shape(val)[0] if count is None else count
        if count == 0:
            return
        lo = self._leaves + start
        hi = lo + count
        self._sum[lo:hi] = val
        if self.track_min:
            self._min[lo:hi] = val
        self._rebuild_span(lo, hi)

    def _rebuild_span(self, lo: int, hi: int) -> None:
        """Recompute the ancestors of heap nodes ``[lo, hi)`` of the leaf level."""
        tree, pairs = self._sum, self._pairs
        min_levels = self._depth - self._min_top if self.track_min else 0
        for level in range(self._depth - self._top):
            lo >>= 1
            hi = ((hi - 1) >> 1) + 1
            children = pairs[lo:hi]
            np.add(children.real, children.imag, out=tree[lo:hi])
            if level < min_levels:
                children = self._min_pairs[lo:hi]
                np.minimum(children.real, children.imag, out=self._min[lo:hi])
        self._dirty = True

    # -- internals ---------------------------------------------------------------
    def _refresh(self) -> None:
        """Rebuild the top prefix sums (and the minimum) after updates."""
        width = 1 << self._top
        np.cumsum(self._sum[width : 2 * width], out=self._prefix[1:])
        if self.track_min:
            width = 1 << self._min_top
            self._min_value = float(self._min[width : 2 * width].min())
        self._dirty = False

    def _find(self, values: F64) -> I64:
        """Leaf index per value; ``values`` is consumed (overwritten) as scratch."""
        if self._dirty:
            self._refresh()
        width = 1 << self._top
        node = self._prefix.searchsorted(values, side="right")
        node -= 1
        np.minimum(node, width - 1, out=node)  # v >= total: the last top node
        values -= self._prefix[node]
        node += width
        tree = self._sum
        right = np.empty(values.shape[0], dtype=np.bool_)
        for _ in range(self._depth - self._top):
            node <<= 1
            left_sum = tree[node]
            np.greater_equal(values, left_sum, out=right)
            np.subtract(values, left_sum, out=values, where=right)
            node += right
        node -= self._leaves
        return node

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Leaf values (and min-tree leaves); internal nodes are rebuilt on load."""
        leaves = slice(self._leaves, self._leaves + self.capacity)
        state: dict[str, Any] = {"capacity": self.capacity, "leaves": self._sum[leaves].copy()}
        if self.track_min:
            state["min_leaves"] = self._min[leaves].copy()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (same capacity and ``track_min``).

        Raises:
            ReplayError: If the capacity, ``track_min`` or leaf arrays do not match.
        """
        if int(state["capacity"]) != self.capacity:
            raise ReplayError(
                f"SumTree state has capacity {state['capacity']}, this tree {self.capacity}"
            )
        if ("min_leaves" in state) != self.track_min:
            raise ReplayError(f"SumTree state and this tree disagree on track_min={self.track_min}")
        leaves = slice(self._leaves, self._leaves + self.capacity)
        new = np.asarray(state["leaves"], dtype=np.float64)
        _as_values(new, self.capacity, "state['leaves']")
        if self.track_min:
            new_min = np.asarray(state["min_leaves"], dtype=np.float64)
            if new_min.shape != (self.capacity,) or np.isnan(new_min).any():
                raise ReplayError(f"state['min_leaves'] must be ({self.capacity},) without NaN")
            self._min[leaves] = new_min
        self._sum[leaves] = new
        self._rebuild_span(self._leaves, 2 * self._leaves)
