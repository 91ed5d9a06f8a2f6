import math
from collections import Counter

import numpy as np
import pytest

from cascade_server.blending.release import ItemVectors
from cascade_server.offline.list_metrics import coverage, intra_list_diversity, novelty, share

VECTORS = ItemVectors(
    ["x1", "x2", "y1", "z1"],
    np.array([[1, 0, 0], [2, 0, 0], [0, 1, 0], [-1, 0, 0]], dtype=np.float32),
)


def test_intra_list_diversity_is_mean_pairwise_cosine_distance():
    assert intra_list_diversity([["x1", "x2"]], VECTORS) == pytest.approx(0.0)
    assert intra_list_diversity([["x1", "y1"]], VECTORS) == pytest.approx(1.0)
    assert intra_list_diversity([["x1", "z1"]], VECTORS) == pytest.approx(2.0)
    # x1·x2 = 1, x1·y1 = 0, x2·y1 = 0: mean similarity 1/3
    assert intra_list_diversity([["x1", "x2", "y1"]], VECTORS) == pytest.approx(2 / 3)
    assert intra_list_diversity([["x1", "x2"], ["x1", "y1"]], VECTORS) == pytest.approx(0.5)


def test_items_without_embeddings_and_short_lists_are_left_out():
    assert intra_list_diversity([["x1", "new", "y1"], ["x1"], []], VECTORS) == pytest.approx(1.0)
    assert intra_list_diversity([["new"]], VECTORS) == 0.0


def test_coverage_counts_distinct_labels_shown():
    labels = {"a": ["c1", "c2"], "b": ["c2"], "c": [""], "d": ["c3"]}
    assert coverage([["a"], ["b", "c", "unknown"]], labels, 4) == pytest.approx(0.5)
    assert coverage([], labels, 4) == 0.0
    assert coverage([["a"]], labels, 0) == 0.0


def test_novelty_is_the_mean_self_information_with_add_one_smoothing():
    counts = Counter({"hit": 6, "niche": 0})
    # total 6, items 2 + 1 unseen slot: p(hit) = 7/9, p(niche) = p(new) = 1/9
    assert novelty([["hit"]], counts) == pytest.approx(-math.log2(7 / 9))
    assert novelty([["new"]], counts) == pytest.approx(math.log2(9))
    assert novelty([["hit"], ["new"]], counts) == pytest.approx(
        (-math.log2(7 / 9) + math.log2(9)) / 2
    )
    assert novelty([], counts) == 0.0


def test_share_is_the_fraction_of_served_items_that_match():
    assert share([["f1", "a"], ["b", "f2"]], lambda item: item.startswith("f")) == 0.5
    assert share([], bool) == 0.0
