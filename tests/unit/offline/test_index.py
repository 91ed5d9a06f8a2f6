"""The index build: exact top-k, a search_k and probes tuned to reach the recall asked for,
and the fastest search that reaches it chosen."""

import numpy as np
import numpy.typing as npt
import pytest

from cascade_server.errors import ConfigurationError
from cascade_server.offline.index import (
    PROBE_STEPS,
    SEARCH_K_FACTORS,
    TUNING_K,
    IndexConfig,
    build_index,
    exact_top,
)
from cascade_server.retrieval.clustered_index import ClusteredIndex
from cascade_server.retrieval.top_k import top_positions


def _vectors(n: int, seed: int = 7) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, 16))
    vectors = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, 16))
    normalised: npt.NDArray[np.float32] = (
        vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    ).astype(np.float32)
    return normalised


def test_exact_top_is_the_full_sort_cut_at_k():
    candidates, queries = _vectors(3000), _vectors(70, seed=8)
    expected = np.argsort(-(queries @ candidates.T), axis=1, kind="stable")[:, :50]
    assert (exact_top(candidates, queries, 50) == expected).all()


@pytest.mark.parametrize("target", [0.5, 0.999])
def test_search_k_is_the_smallest_tried_that_reaches_the_target(tmp_path, target):
    vectors, queries = _vectors(4000), _vectors(40, seed=9)
    config = IndexConfig(n_trees=4, target_recall=target)
    report = build_index(vectors, np.ones(4000, bool), tmp_path / "i.ann", config, queries=queries)
    tried = [config.n_trees * TUNING_K * f for f in SEARCH_K_FACTORS]
    assert report.search_k in tried
    if report.search_k != tried[-1]:
        assert report.recall_at_k[f"recall@{TUNING_K}"] >= target
    if report.search_k != tried[0]:
        # One step less would not have done.
        smaller = build_index(
            vectors,
            np.ones(4000, bool),
            tmp_path / "j.ann",
            IndexConfig(n_trees=4, search_k=tried[tried.index(report.search_k) - 1]),
            queries=queries,
        )
        assert smaller.recall_at_k[f"recall@{TUNING_K}"] < target
    # A loose target is met by Annoy's default; a strict one needs more.
    assert (report.search_k == tried[0]) == (target == 0.5)


def test_a_given_search_k_is_kept(tmp_path):
    vectors = _vectors(1000)
    config = IndexConfig(n_trees=2, search_k=1234)
    report = build_index(
        vectors, np.ones(1000, bool), tmp_path / "i.ann", config, queries=vectors[:5]
    )
    assert report.search_k == 1234


def test_the_faster_search_at_the_target_is_chosen_and_both_are_timed(tmp_path):
    vectors, queries = _vectors(3000), _vectors(20, seed=11)
    report = build_index(
        vectors, np.ones(3000, bool), tmp_path / "i.ann", IndexConfig(n_trees=4), queries=queries
    )
    assert report.annoy_ms > 0
    assert report.exact_ms > 0
    assert report.search == ("exact" if report.exact_ms < report.annoy_ms else "annoy")
    forced = build_index(
        vectors,
        np.ones(3000, bool),
        tmp_path / "j.ann",
        IndexConfig(n_trees=4, search="annoy"),
        queries=queries,
    )
    assert forced.search == "annoy"


@pytest.mark.parametrize("target", [0.5, 0.97])
def test_probes_are_the_fewest_tried_that_reach_the_target(tmp_path, target):
    vectors, queries = _vectors(4000), _vectors(40, seed=9)
    config = IndexConfig(n_trees=2, clusters=64, target_recall=target)
    report = build_index(
        vectors,
        np.ones(4000, bool),
        tmp_path / "i.ann",
        config,
        clusters_path=tmp_path / "c.npz",
        queries=queries,
    )
    assert report.clusters == 64
    tried = [p for p in PROBE_STEPS if p < 64] + [64]
    assert report.probes in tried
    assert report.clustered_recall_at_k[f"recall@{TUNING_K}"] >= target
    index = ClusteredIndex.load(tmp_path / "c.npz", n_items=4000, dimensions=16)
    if report.probes != tried[0]:
        fewer = tried[tried.index(report.probes) - 1]
        exact = exact_top(vectors, queries, TUNING_K)
        hits = sum(
            len(np.intersect1d(index.nearest(query, TUNING_K, fewer)[0], exact[q]))
            for q, query in enumerate(queries)
        )
        assert hits / (TUNING_K * len(queries)) < target


def test_auto_serves_by_the_fastest_search_that_reaches_the_target(tmp_path):
    vectors, queries = _vectors(3000), _vectors(20, seed=11)
    report = build_index(
        vectors,
        np.ones(3000, bool),
        tmp_path / "i.ann",
        IndexConfig(n_trees=4),
        clusters_path=tmp_path / "c.npz",
        queries=queries,
    )
    times = {"annoy": report.annoy_ms, "clustered": report.clustered_ms, "exact": report.exact_ms}
    recall = {
        "annoy": report.recall_at_k[f"recall@{TUNING_K}"],
        "clustered": report.clustered_recall_at_k[f"recall@{TUNING_K}"],
        "exact": 1.0,
    }
    assert all(ms > 0 for ms in times.values())
    eligible = [method for method in times if recall[method] >= 0.95]
    assert report.search == min(eligible, key=times.__getitem__)
    forced = build_index(
        vectors,
        np.ones(3000, bool),
        tmp_path / "j.ann",
        IndexConfig(n_trees=4, search="clustered", probes=3),
        clusters_path=tmp_path / "d.npz",
        queries=queries,
    )
    assert (forced.search, forced.probes) == ("clustered", 3)


def test_clustered_search_needs_the_clustered_index(tmp_path):
    with pytest.raises(ConfigurationError, match="clustered"):
        build_index(
            _vectors(100), np.ones(100, bool), tmp_path / "i.ann", IndexConfig(search="clustered")
        )


def test_top_positions_are_the_largest_scores_largest_first():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3], dtype=np.float32)
    assert top_positions(scores, 3).tolist() == [1, 3, 2]
    assert top_positions(scores, 10).tolist() == [1, 3, 2, 4, 0]
