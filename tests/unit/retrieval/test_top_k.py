"""The k best positions of a score array."""

from __future__ import annotations

import numpy as np

from cascade_server.retrieval.top_k import top_first_positions


def test_top_first_positions_is_the_head_of_a_full_sort_with_ties_by_position() -> None:
    rng = np.random.default_rng(7)
    for case in range(300):
        n = int(rng.integers(0, 400))
        # Few distinct values, so most cases have ties, at the k-th largest too.
        scores = rng.integers(0, 1 + case % 12, n).astype(np.float64 if case % 2 else np.int64)
        k = int(rng.integers(0, n + 3))
        expected = np.lexsort((np.arange(n), -scores))[:k]
        np.testing.assert_array_equal(top_first_positions(scores, k), expected)


def test_top_first_positions_of_nothing_is_empty() -> None:
    assert len(top_first_positions(np.zeros(0), 5)) == 0
    assert len(top_first_positions(np.ones(3), 0)) == 0
