"""The vectorized sum tree against brute force, and prioritized sampling statistics."""

from __future__ import annotations

import numpy as np
import pytest

from rlops.core.errors import ConfigError, ReplayError
from rlops.replay import PrioritizedSampler, SumTree


class Reference:
    """Plain numpy leaves with Python-loop semantics (last write wins)."""

    def __init__(self, capacity: int) -> None:
        self.leaves = np.zeros(capacity)
        self.written = np.zeros(capacity, dtype=bool)

    def update(self, indices: np.ndarray, values: np.ndarray) -> None:
        for i, v in zip(indices.tolist(), values.tolist()):
            self.leaves[i] = v
            self.written[i] = True

    def find(self, values: np.ndarray) -> np.ndarray:
        found = np.searchsorted(np.cumsum(self.leaves), values, side="right")
        return np.minimum(found, len(self.leaves) - 1)

    @property
    def min(self) -> float:
        return float(self.leaves[self.written].min()) if self.written.any() else np.inf


@pytest.mark.parametrize("capacity", [1, 2, 3, 7, 16, 33, 100])
@pytest.mark.parametrize("top_level", [0, 1, 3, 12])
def test_sum_tree_matches_brute_force(capacity: int, top_level: int) -> None:
    """Integer-valued leaves make every sum exact, so comparisons are exact."""
    rng = np.random.default_rng(capacity * 100 + top_level)
    tree = SumTree(capacity, track_min=True, top_level=top_level)
    ref = Reference(capacity)
    for step in range(30):
        if step % 4 == 0:
            start = int(rng.integers(0, capacity))
            values = rng.integers(0, 6, int(rng.integers(0, capacity - start + 1))).astype(float)
            tree.update_range(start, values)
            ref.update(np.arange(start, start + len(values)), values)
        else:
            count = int(rng.integers(1, 2 * capacity + 2))  # duplicates guaranteed
            indices = rng.integers(0, capacity, count)
            values = rng.integers(0, 6, count).astype(float)
            tree.update(indices, values)
            ref.update(indices, values)
        assert tree.total == ref.leaves.sum()
        assert tree.min == ref.min
        np.testing.assert_array_equal(tree.get(np.arange(capacity)), ref.leaves)
        total = int(ref.leaves.sum())
        if total:
            # Every boundary and every half-way point of [0, total), plus beyond.
            queries = np.concatenate([np.arange(0, total, 0.5), [total, total + 3.0]])
            np.testing.assert_array_equal(tree.find_prefix_sum(queries), ref.find(queries))


def test_sum_tree_large_random_float_values() -> None:
    capacity = (1 << 17) + 5  # deeper than the default top level and the min-tree levels
    rng = np.random.default_rng(7)
    tree = SumTree(capacity, track_min=True)
    ref = Reference(capacity)
    values = rng.random(capacity) + 0.01
    tree.update_range(0, values)
    ref.update(np.arange(capacity), values)
    for _ in range(5):
        indices = rng.integers(0, capacity, 512)
        new = rng.random(512) * 3
        tree.update(indices, new)
        ref.update(indices, new)
        np.testing.assert_allclose(tree.total, ref.leaves.sum(), rtol=1e-12)
        assert tree.min == ref.min
        cumsum = np.cumsum(ref.leaves)
        queries = rng.random(2000) * cumsum[-1]
        # Away from leaf boundaries the answer does not depend on summation order.
        gap = np.abs(queries[:, None] - cumsum[ref.find(queries)][:, None]).min(axis=1)
        safe = gap > 1e-6
        found = tree.find_prefix_sum(queries)
        np.testing.assert_array_equal(found[safe], ref.find(queries)[safe])
        assert safe.mean() > 0.99


def test_sum_tree_duplicates_last_write_wins() -> None:
    tree = SumTree(8, top_level=0)
    tree.update(np.array([3, 3, 5, 3]), np.array([1.0, 9.0, 2.0, 4.0]))
    assert tree.get([3, 5]).tolist() == [4.0, 2.0]
    assert tree.total == 6.0
    tree.update(np.array([5, 5]), np.array([7.0, 7.0]))  # agreeing duplicates
    assert tree.total == 11.0


def test_sum_tree_rejects_bad_input_without_changes() -> None:
    tree = SumTree(8, track_min=True, top_level=1)
    tree.update(np.arange(8), np.arange(8.0))
    before = tree.state_dict()
    for indices, values, needle in (
        (np.array([1, 2]), np.array([1.0, -1.0]), "values[1] = -1.0"),
        (np.array([1, 2]), np.array([np.nan, 1.0]), "values[0] = nan"),
        (np.array([1, 2]), np.array([1.0, np.inf]), "values[1] = inf"),
        (np.array([1, 8]), np.array([1.0, 1.0]), "indices[1] = 8"),
        (np.array([-1, 2]), np.array([1.0, 1.0]), "indices[0] = -1"),
        (np.array([1, 2]), np.array([1.0]), "shape"),
    ):
        with pytest.raises(ReplayError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            tree.update(indices, values)
    with pytest.raises(ReplayError, match="range"):
        tree.update_range(6, np.ones(3))
    after = tree.state_dict()
    np.testing.assert_array_equal(after["leaves"], before["leaves"])
    np.testing.assert_array_equal(after["min_leaves"], before["min_leaves"])
    assert tree.total == 28.0
    with pytest.raises(ReplayError):
        tree.find_prefix_sum(np.array([-1.0]))
    with pytest.raises(ReplayError, match="track_min"):
        _ = SumTree(4).min
    with pytest.raises(ConfigError):
        SumTree(0)


def test_sum_tree_state_roundtrip() -> None:
    rng = np.random.default_rng(1)
    tree = SumTree(50, track_min=True, top_level=2)
    tree.update(rng.integers(0, 50, 40), rng.random(40))
    other = SumTree(50, track_min=True, top_level=2)
    other.load_state_dict(tree.state_dict())
    queries = rng.random(100) * tree.total
    np.testing.assert_array_equal(other.find_prefix_sum(queries), tree.find_prefix_sum(queries))
    assert (other.total, other.min) == (tree.total, tree.min)
    with pytest.raises(ReplayError, match="capacity"):
        SumTree(51, track_min=True).load_state_dict(tree.state_dict())


# -- prioritized sampling ------------------------------------------------------------
PRIORITIES = np.array([0.5, 1.0, 2.0, 3.0, 0.1, 4.0, 1.5, 2.5])


def make_sampler(**kwargs: object) -> PrioritizedSampler:
    sampler = PrioritizedSampler(len(PRIORITIES), seed=11, **kwargs)  # type: ignore[arg-type]
    sampler.on_add(np.arange(len(PRIORITIES)))
    sampler.update_priorities(np.arange(len(PRIORITIES)), PRIORITIES)
    return sampler


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_sampling_frequencies_match_p_alpha(batch_size: int) -> None:
    alpha = 0.6
    sampler = make_sampler(alpha=alpha)
    expected = (PRIORITIES + sampler.eps) ** alpha
    expected /= expected.sum()
    np.testing.assert_allclose(sampler.probabilities(np.arange(8)), expected, rtol=1e-12)
    draws = 24_000
    counts = np.zeros(len(PRIORITIES))
    for _ in range(draws // batch_size):
        indices, _ = sampler.sample(len(PRIORITIES), batch_size)
        counts += np.bincount(indices, minlength=len(PRIORITIES))
    n = counts.sum()
    chi2 = float((((counts - n * expected) ** 2) / (n * expected)).sum())
    assert chi2 < 24.32, (chi2, counts / n, expected)  # chi-square, 7 dof, p = 0.001
    np.testing.assert_allclose(counts / n, expected, atol=0.015)


@pytest.mark.parametrize("normalization", ["batch", "buffer"])
def test_importance_weights_follow_the_formula(normalization: str) -> None:
    beta = 0.7
    sampler = make_sampler(alpha=0.8, beta=beta, weight_normalization=normalization)
    probs = (PRIORITIES + sampler.eps) ** 0.8
    probs /= probs.sum()
    n = len(PRIORITIES)
    for batch_size in (3, 16):
        indices, weights = sampler.sample(n, batch_size)
        assert np.all(np.diff(indices) >= 0)  # stratified: one value per segment, in order
        raw = (n * probs[indices]) ** -beta
        if normalization == "batch":
            expected = raw / raw.max()
            assert weights.max() == 1.0
        else:
            expected = raw / ((n * probs.min()) ** -beta)  # largest weight in the buffer
        np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_new_items_get_the_running_max_priority() -> None:
    sampler = PrioritizedSampler(6, alpha=0.5, seed=0)
    sampler.on_add(np.array([0, 1]))
    np.testing.assert_allclose(sampler.tree.get([0, 1]), [1.0, 1.0])  # initial max is 1
    sampler.update_priorities(np.array([0, 1]), np.array([9.0, 0.2]))
    sampler.on_add(np.array([2, 3]))  # contiguous: range path
    sampler.on_add(np.array([5, 4]))  # scattered: index path
    np.testing.assert_allclose(sampler.tree.get([2, 3, 4, 5]), (9.0 + 1e-6) ** 0.5)
    sampler.update_priorities(np.array([0]), np.array([0.0]))
    assert sampler.max_priority == pytest.approx(9.0 + 1e-6)  # never decreases
    sampler.update_priorities(np.array([1, 1, 1]), np.array([2.0, 3.0, 5.0]))
    np.testing.assert_allclose(sampler.tree.get([1]), (5.0 + 1e-6) ** 0.5)  # last one wins


def test_alpha_zero_is_uniform_with_unit_weights() -> None:
    sampler = make_sampler(alpha=0.0, beta=1.0)
    np.testing.assert_allclose(sampler.probabilities(np.arange(8)), 1 / 8)
    _, weights = sampler.sample(8, 32)
    np.testing.assert_allclose(weights, 1.0)


def test_sampling_stays_within_the_stored_prefix() -> None:
    sampler = PrioritizedSampler(1000, seed=0)
    sampler.on_add(np.arange(10))
    indices, _ = sampler.sample(10, 500)
    assert indices.min() >= 0 and indices.max() <= 9


def test_sampler_config_errors() -> None:
    for kwargs in ({"alpha": -0.1}, {"beta": -1.0}, {"eps": 0.0}, {"weight_normalization": "x"}):
        with pytest.raises(ConfigError):
            PrioritizedSampler(8, **kwargs)
    with pytest.raises(ConfigError):
        PrioritizedSampler(0)
