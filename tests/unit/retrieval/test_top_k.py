"""The k best positions of a score array."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from cascade_server.retrieval.top_k import top_positions


def test_top_positions_is_the_head_of_a_full_sort_with_ties_by_position() -> None:
    rng = np.random.default_rng(7)
    for case in range(300):
        n = int(rng.integers(0, 400))
        # Few distinct values, so most cases have ties, at the k-th largest too.
        scores = rng.integers(0, 1 + case % 12, n).astype(np.float64 if case % 2 else np.int64)
        k = int(rng.integers(0, n + 3))
        expected = np.lexsort((np.arange(n), -scores))[:k]
        np.testing.assert_array_equal(top_positions(scores, k), expected)


def test_top_positions_of_nothing_is_empty() -> None:
    assert len(top_positions(np.zeros(0), 5)) == 0
    assert len(top_positions(np.ones(3), 0)) == 0


def test_long_arrays_take_the_sampled_threshold_and_its_fallback_alike() -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    cases: dict[str, npt.NDArray[np.number[Any]]] = {
        "random": rng.random(n),
        "ascending": np.sort(rng.random(n)),  # the sample's threshold is exact
        "descending": np.sort(rng.random(n))[::-1].copy(),
        "few values": rng.integers(0, 4, n).astype(np.float32),
        # The best scores all fall between the sampled positions (every ninth) ...
        "between": np.where(np.arange(n) % 9 == 4, 10.0 + rng.random(n), rng.random(n)),
        # ... or on them: then the sample's threshold lets too few through, and the
        # full partition decides.
        "on": np.where(np.arange(n) % 9 == 0, 10.0 + rng.random(n), rng.random(n)),
        "counts": rng.integers(0, 50, n),
    }
    for name, scores in cases.items():
        for k in (1, 7, 500, 2_500):
            expected = np.lexsort((np.arange(n), -scores))[:k]
            np.testing.assert_array_equal(top_positions(scores, k), expected, err_msg=name)
