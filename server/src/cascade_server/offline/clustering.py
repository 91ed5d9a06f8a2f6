"""Spherical k-means over item embeddings: the clusters of a ``ClusteredIndex``."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from cascade_server.retrieval.clustered_index import ClusteredIndex

FloatMatrix = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

SAMPLE_PER_CLUSTER = 32
"""Centroids are trained on this many sampled items per cluster, then every item is assigned."""
ITERATIONS = 10
_BLOCK = 16_384
"""Rows scored against the centroids at a time (16,384 x 4,096 clusters is 256 MiB)."""


def default_clusters(items: int) -> int:
    """About 4 x sqrt(items), as a power of two: 4,096 for a million items, 512 for 20,000.
    Fewer, larger clusters need fewer probes but score more items per probe."""
    if items <= 1:
        return 1
    return min(items, 1 << round(math.log2(4 * math.sqrt(items))))


def cluster_items(
    vectors: FloatMatrix, items: IntArray, clusters: int, seed: int
) -> ClusteredIndex:
    """A clustered index of ``vectors`` (unit length), row ``i`` standing for ``items[i]``."""
    rng = np.random.default_rng(seed)
    clusters = max(1, min(clusters, len(vectors)))
    sample_size = min(len(vectors), SAMPLE_PER_CLUSTER * clusters)
    sample = vectors[np.sort(rng.choice(len(vectors), sample_size, replace=False))]
    centroids = sample[rng.choice(len(sample), clusters, replace=False)].copy()
    for _ in range(ITERATIONS):
        assigned = _nearest_centroid(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assigned, sample)
        empty = np.bincount(assigned, minlength=clusters) == 0
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = (sums / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
    assigned = _nearest_centroid(vectors, centroids)
    order = np.argsort(assigned, kind="stable")
    offsets = np.zeros(clusters + 1, dtype=np.int64)
    np.cumsum(np.bincount(assigned, minlength=clusters), out=offsets[1:])
    return ClusteredIndex(
        centroids, offsets, items[order].astype(np.int64), np.ascontiguousarray(vectors[order])
    )


def _nearest_centroid(vectors: FloatMatrix, centroids: FloatMatrix) -> IntArray:
    """Per row, the centroid with the largest dot product."""
    return np.concatenate(
        [
            np.argmax(vectors[start : start + _BLOCK] @ centroids.T, axis=1)
            for start in range(0, len(vectors), _BLOCK)
        ]
        or [np.zeros(0, dtype=np.int64)]
    ).astype(np.int64)
