"""The clustered index: k-means clusters at the build, exact search within the probed clusters."""

import numpy as np
import numpy.typing as npt
import pytest

from cascade_server.artifacts.manifest import CorruptReleaseError
from cascade_server.offline.clustering import cluster_items, default_clusters
from cascade_server.retrieval.clustered_index import ClusteredIndex
from cascade_server.retrieval.top_k import top_positions


def _vectors(n: int, seed: int = 3, dims: int = 16) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dims))
    vectors = centres[rng.integers(0, 12, n)] + 0.5 * rng.normal(size=(n, dims))
    normalised: npt.NDArray[np.float32] = (
        vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    ).astype(np.float32)
    return normalised


@pytest.fixture(scope="module")
def indexed() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], ClusteredIndex]:
    vectors = _vectors(2000)
    items = np.arange(2000, dtype=np.int64) * 3 + 1  # ids that are not the rows
    return vectors, items, cluster_items(vectors, items, 32, seed=5)


def test_every_item_is_in_the_cluster_of_its_nearest_centroid(indexed):
    vectors, items, index = indexed
    assert index.clusters == 32
    assert sorted(index.items.tolist()) == items.tolist()
    assert index.offsets[0] == 0
    assert index.offsets[-1] == len(items)
    assert (np.diff(index.offsets) >= 0).all()
    assert np.allclose(np.linalg.norm(index.centroids, axis=1), 1.0, atol=1e-5)
    for cluster in range(index.clusters):
        rows = slice(index.offsets[cluster], index.offsets[cluster + 1])
        nearest = np.argmax(index.vectors[rows] @ index.centroids.T, axis=1)
        assert (nearest == cluster).all()
        assert np.array_equal(index.vectors[rows], vectors[(index.items[rows] - 1) // 3])


def test_probing_every_cluster_is_exact_search(indexed):
    vectors, items, index = indexed
    query = _vectors(1, seed=9)[0]
    found, scores = index.nearest(query, 50, probes=index.clusters)
    exact = top_positions(vectors @ query, 50)
    assert found.tolist() == items[exact].tolist()
    assert np.allclose(scores, (vectors @ query)[exact])
    assert (np.diff(scores) <= 0).all()


def test_recall_grows_with_the_probes(indexed):
    vectors, items, index = indexed
    queries = _vectors(30, seed=11)
    recalls = []
    for probes in (1, 4, 16, 32):
        hits = 0
        for query in queries:
            found, _ = index.nearest(query, 100, probes)
            hits += len(np.intersect1d(found, items[top_positions(vectors @ query, 100)]))
        recalls.append(hits / (100 * len(queries)))
    assert recalls == sorted(recalls)
    assert recalls[0] < 0.9
    assert recalls[-1] == 1.0


def test_asking_for_more_than_the_probed_clusters_hold_returns_what_they_hold(indexed):
    _, _, index = indexed
    query = _vectors(1, seed=2)[0]
    found, scores = index.nearest(query, 10_000, probes=1)
    best = int(np.argmax(index.centroids @ query))
    held = index.items[index.offsets[best] : index.offsets[best + 1]]
    assert sorted(found.tolist()) == sorted(held.tolist())
    assert len(scores) == len(found)


def test_the_clusters_are_the_same_for_the_same_seed(indexed):
    vectors, items, index = indexed
    again = cluster_items(vectors, items, 32, seed=5)
    assert np.array_equal(again.items, index.items)
    assert np.array_equal(again.centroids, index.centroids)


def test_a_saved_index_loads_and_a_damaged_one_is_refused(indexed, tmp_path):
    _, _, index = indexed
    path = tmp_path / "items.clusters.npz"
    index.save(path)
    loaded = ClusteredIndex.load(path, n_items=6001, dimensions=16)
    assert np.array_equal(loaded.items, index.items)
    assert np.array_equal(loaded.vectors, index.vectors)
    with pytest.raises(CorruptReleaseError, match="does not list"):
        ClusteredIndex.load(path, n_items=100, dimensions=16)
    with pytest.raises(CorruptReleaseError, match="do not fit"):
        ClusteredIndex.load(path, n_items=6001, dimensions=8)
    broken = ClusteredIndex(index.centroids, index.offsets[::-1].copy(), index.items, index.vectors)
    broken.save(path)
    with pytest.raises(CorruptReleaseError, match="do not fit"):
        ClusteredIndex.load(path, n_items=6001, dimensions=16)
    path.write_bytes(b"not an npz file")
    with pytest.raises(CorruptReleaseError, match="could not be read"):
        ClusteredIndex.load(path, n_items=6001, dimensions=16)


def test_a_probed_search_is_exact_search_over_the_probed_clusters():
    vectors = _vectors(3000, seed=4)
    items = np.arange(3000, dtype=np.int64) * 7 + 2
    index = cluster_items(vectors, items, 40, seed=1)
    # Empty clusters between the probed ones: each probed score must still map to its row.
    empty = index.offsets[:1].repeat(3)
    offsets = np.concatenate([empty, index.offsets])
    centroids = np.concatenate([np.repeat(index.centroids[:1], 3, axis=0), index.centroids])
    index = ClusteredIndex(centroids, offsets, index.items, index.vectors)
    for seed in range(20):
        query = _vectors(1, seed=100 + seed)[0]
        probes = 1 + seed % 12
        found, scores = index.nearest(query, 60, probes)
        best = np.argsort(-(index.centroids @ query), kind="stable")[:probes]
        rows = np.concatenate([np.arange(index.offsets[c], index.offsets[c + 1]) for c in best])
        in_probed = index.vectors[rows] @ query
        exact = rows[np.lexsort((rows, -in_probed))][:60]
        assert found.tolist() == index.items[exact].tolist()
        assert np.allclose(scores, index.vectors[exact] @ query)


@pytest.mark.parametrize(
    ("items", "clusters"), [(0, 1), (1, 1), (3, 3), (20_000, 512), (1_000_000, 4096)]
)
def test_default_clusters_grow_with_the_square_root_of_the_items(items, clusters):
    assert default_clusters(items) == clusters


def test_fewer_items_than_clusters_makes_one_cluster_per_item():
    vectors = _vectors(5)
    index = cluster_items(vectors, np.arange(5, dtype=np.int64), 64, seed=1)
    assert index.clusters == 5
    assert sorted(index.items.tolist()) == [0, 1, 2, 3, 4]
