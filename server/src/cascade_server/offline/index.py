"""Build the item indexes (Annoy, and a clustered index) and measure them against exact search."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex
from threadpoolctl import threadpool_limits

from cascade_server.errors import ConfigurationError
from cascade_server.offline.clustering import cluster_items, default_clusters
from cascade_server.retrieval.top_k import top_positions

FloatMatrix = npt.NDArray[np.float32]
METRIC: Final = "angular"
"""Embeddings are L2-normalised, so angular distance orders items exactly like the dot product."""


TUNING_K = 500
"""The k of the recall a tuned ``search_k`` must reach: retrieval's candidate count."""
SEARCH_K_FACTORS = (1, 2, 4, 8, 16)
"""Tried in order: ``search_k = n_trees * TUNING_K * factor`` (1 is Annoy's default)."""


PROBE_STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
"""Probes tried in order for the clustered index (then every cluster, which is exact)."""

SEARCHES = ("auto", "annoy", "clustered", "exact")


@dataclass(frozen=True)
class IndexConfig:
    """Annoy knobs: more trees and a larger ``search_k`` trade speed and size for recall."""

    n_trees: int = 50
    search_k: int = 0
    """Nodes inspected per query. 0: tuned at build time, the smallest of
    ``n_trees * 500 * (1, 2, 4, 8, 16)`` whose recall@500 against exact search reaches
    ``target_recall`` on the recall queries (the largest when none does; Annoy's
    default, ``n_trees * k``, when there are no queries)."""
    target_recall: float = 0.95
    search: str = "auto"
    """How the servers search: ``annoy``, ``clustered`` (the items of the clusters nearest
    the query, scored exactly), ``exact`` (numpy over every item), or ``auto``: of those
    whose recall@500 reaches ``target_recall`` (exact always does), the one that answered
    the recall queries fastest at the build."""
    clusters: int = 0
    """Clusters of the clustered index; 0: about 4 x sqrt(items), a power of two."""
    probes: int = 0
    """Clusters searched per query; 0: tuned at build time, the smallest of
    ``PROBE_STEPS`` (then all) whose recall@500 reaches ``target_recall`` (all clusters,
    which is exact, when there are no queries)."""
    seed: int = 42
    jobs: int = 1
    """Threads building trees. Only one thread builds the same index every time (Annoy's
    threads share out the trees nondeterministically); more build faster."""


@dataclass(frozen=True)
class IndexReport:
    """What was built and how well it finds the exact nearest neighbours."""

    items: int
    dimensions: int
    n_trees: int
    search_k: int
    recall_at_k: dict[str, float]
    build_seconds: float
    search: str = "annoy"
    """How the servers search this index (see ``IndexConfig.search``)."""
    annoy_ms: float = 0.0
    """Median time of one Annoy query for 500 items at ``search_k`` (0: not measured)."""
    exact_ms: float = 0.0
    """Median time of one exact numpy query for 500 items (0: not measured)."""
    clusters: int = 0
    """Clusters of the clustered index (0: none built)."""
    probes: int = 0
    """Clusters the clustered index searches per query."""
    clustered_recall_at_k: dict[str, float] = field(default_factory=dict)
    clustered_ms: float = 0.0
    """Median time of one clustered query for 500 items at ``probes`` (0: not measured)."""


def build_index(
    embeddings: FloatMatrix,
    include: npt.NDArray[np.bool_],
    path: Path,
    config: IndexConfig,
    *,
    clusters_path: Path | None = None,
    queries: FloatMatrix | None = None,
    recall_ks: tuple[int, ...] = (10, 100, 500),
) -> IndexReport:
    """Index the rows of ``embeddings`` where ``include`` (Annoy id = row) with Annoy, saved
    to ``path``, and, given ``clusters_path``, in a clustered index saved there.

    ``queries`` (e.g. user embeddings) measure recall@k of each index against exact
    maximum-inner-product search over the same items, tune ``search_k`` and ``probes``
    and choose how the servers search.
    """
    if config.search not in SEARCHES:
        raise ConfigurationError(
            f"search must be one of {', '.join(SEARCHES)}, not {config.search!r}"
        )
    if config.search == "clustered" and clusters_path is None:
        raise ConfigurationError("search 'clustered' needs the clustered index to be built")
    started = time.perf_counter()
    dims = embeddings.shape[1]
    index = AnnoyIndex(dims, METRIC)
    index.set_seed(config.seed)
    rows = np.flatnonzero(include)
    for row in rows.tolist():
        index.add_item(row, embeddings[row].tolist())
    index.build(config.n_trees, n_jobs=config.jobs)
    index.save(str(path))
    clustered = None
    if clusters_path is not None:
        clustered = cluster_items(
            embeddings[rows], rows, config.clusters or default_clusters(len(rows)), config.seed
        )
        clustered.save(clusters_path)
    n_clusters = clustered.clusters if clustered is not None else 0
    seconds = time.perf_counter() - started
    if queries is None or not len(rows):
        search = "annoy" if config.search == "auto" else config.search
        probes = config.probes or n_clusters
        return IndexReport(
            len(rows),
            dims,
            config.n_trees,
            config.search_k,
            {},
            seconds,
            search,
            clusters=n_clusters,
            probes=probes,
        )
    candidates = embeddings[rows]
    exact = exact_top(candidates, queries, max((*recall_ks, TUNING_K)))

    def annoy(search_k: int) -> Search:
        return lambda query, k: index.get_nns_by_vector(query.tolist(), k, search_k=search_k or -1)

    search_k = config.search_k or _tuned(
        [config.n_trees * TUNING_K * factor for factor in SEARCH_K_FACTORS],
        lambda tried: measure_recall(annoy(tried), rows, queries, exact, (TUNING_K,)),
        config.target_recall,
    )
    recall = measure_recall(annoy(search_k), rows, queries, exact, recall_ks)
    timed = queries[:_TIMED_QUERIES]
    times = {
        "annoy": _median_ms(annoy(search_k), timed),
        "exact": _median_ms(lambda query, k: top_positions(candidates @ query, k), timed),
    }
    reached = {"annoy": recall[f"recall@{TUNING_K}"] >= config.target_recall, "exact": True}
    probes, clustered_recall = 0, {}
    if clustered is not None:

        def in_clusters(probes: int) -> Search:
            return lambda query, k: clustered.nearest(query, k, probes)[0]

        probes = config.probes or _tuned(
            [p for p in PROBE_STEPS if p < n_clusters] + [n_clusters],
            lambda tried: measure_recall(in_clusters(tried), rows, queries, exact, (TUNING_K,)),
            config.target_recall,
        )
        clustered_recall = measure_recall(in_clusters(probes), rows, queries, exact, recall_ks)
        times["clustered"] = _median_ms(in_clusters(probes), timed)
        reached["clustered"] = clustered_recall[f"recall@{TUNING_K}"] >= config.target_recall
    search = config.search
    if search == "auto":
        search = min((method for method in times if reached[method]), key=times.__getitem__)
    return IndexReport(
        len(rows),
        dims,
        config.n_trees,
        search_k,
        recall,
        seconds,
        search,
        times["annoy"],
        times["exact"],
        n_clusters,
        probes,
        clustered_recall,
        times.get("clustered", 0.0),
    )


Search = Callable[[npt.NDArray[np.float32], int], Sequence[int] | npt.NDArray[np.int64]]
"""A search method: (query, k) -> the ids of the k items it finds."""

_TIMED_QUERIES = 50


def _tuned(tried: list[int], recall: Callable[[int], dict[str, float]], target: float) -> int:
    """The first of ``tried`` whose recall@TUNING_K reaches ``target`` (the last if none)."""
    for value in tried:
        if recall(value)[f"recall@{TUNING_K}"] >= target:
            return value
    return tried[-1]


def _median_ms(search: Search, queries: FloatMatrix) -> float:
    """Median milliseconds of one ``search`` for ``TUNING_K`` items, on one BLAS thread as
    the servers run it."""
    times = []
    with threadpool_limits(limits=1, user_api="blas"):
        for query in queries:
            started = time.perf_counter()
            search(query, TUNING_K)
            times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000


def exact_top(candidates: FloatMatrix, queries: FloatMatrix, k: int) -> npt.NDArray[np.int64]:
    """Per query, the positions in ``candidates`` of its ``k`` largest dot products, best
    first (in blocks of queries: a million candidates * 500 queries is 2 GB at once)."""
    k = min(k, len(candidates))
    top = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 32):
        scores = queries[start : start + 32] @ candidates.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        top[start : start + 32] = np.take_along_axis(part, order, axis=1)
    return top


def measure_recall(
    search: Search,
    rows: npt.NDArray[np.int64],
    queries: FloatMatrix,
    exact: npt.NDArray[np.int64],
    ks: tuple[int, ...],
) -> dict[str, float]:
    """Mean recall@k of ``search``'s answers against ``exact``, the exact top positions in
    ``rows`` of each query."""
    recall: dict[str, float] = {}
    for k in ks:
        k_eff = min(k, len(rows))
        hits = 0
        for q, query in enumerate(queries):
            found = np.asarray(search(query, k_eff), dtype=np.int64)
            hits += len(np.intersect1d(found, rows[exact[q, :k_eff]]))
        recall[f"recall@{k}"] = hits / (k_eff * len(queries))
    return recall
