"""Build the Annoy index over item embeddings and measure its recall against exact search."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex
from threadpoolctl import threadpool_limits

from cascade_server.errors import ConfigurationError
from cascade_server.retrieval.models import top_positions

FloatMatrix = npt.NDArray[np.float32]
METRIC: Final = "angular"
"""Embeddings are L2-normalised, so angular distance orders items exactly like the dot product."""


TUNING_K = 500
"""The k of the recall a tuned ``search_k`` must reach: retrieval's candidate count."""
SEARCH_K_FACTORS = (1, 2, 4, 8, 16)
"""Tried in order: ``search_k = n_trees * TUNING_K * factor`` (1 is Annoy's default)."""


SEARCHES = ("auto", "annoy", "exact")


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
    """How the servers search: ``annoy``, ``exact`` (numpy over every item), or ``auto``:
    whichever answered the recall queries faster at the build (exact search is exact, so
    on a small catalog it is both better and faster than Annoy at a high ``search_k``)."""
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


def build_index(
    embeddings: FloatMatrix,
    include: npt.NDArray[np.bool_],
    path: Path,
    config: IndexConfig,
    *,
    queries: FloatMatrix | None = None,
    recall_ks: tuple[int, ...] = (10, 100, 500),
) -> IndexReport:
    """Index the rows of ``embeddings`` where ``include`` (Annoy id = row), save to ``path``.

    ``queries`` (e.g. user embeddings) measure recall@k of the index against exact
    maximum-inner-product search over the same items.
    """
    if config.search not in SEARCHES:
        raise ConfigurationError(
            f"search must be one of {', '.join(SEARCHES)}, not {config.search!r}"
        )
    started = time.perf_counter()
    dims = embeddings.shape[1]
    index = AnnoyIndex(dims, METRIC)
    index.set_seed(config.seed)
    rows = np.flatnonzero(include)
    for row in rows.tolist():
        index.add_item(row, embeddings[row].tolist())
    index.build(config.n_trees, n_jobs=config.jobs)
    index.save(str(path))
    seconds = time.perf_counter() - started
    if queries is None or not len(rows):
        search = "annoy" if config.search == "auto" else config.search
        return IndexReport(len(rows), dims, config.n_trees, config.search_k, {}, seconds, search)
    exact = exact_top(embeddings[rows], queries, max((*recall_ks, TUNING_K)))
    search_k = config.search_k
    if not search_k:
        for factor in SEARCH_K_FACTORS:
            search_k = config.n_trees * TUNING_K * factor
            tuning = measure_recall(index, rows, queries, exact, (TUNING_K,), search_k)
            if tuning[f"recall@{TUNING_K}"] >= config.target_recall:
                break
    recall = measure_recall(index, rows, queries, exact, recall_ks, search_k)
    annoy_ms, exact_ms = _query_times(index, embeddings[rows], queries[:_TIMED_QUERIES], search_k)
    search = config.search
    if search == "auto":
        search = "exact" if exact_ms < annoy_ms else "annoy"
    return IndexReport(
        len(rows), dims, config.n_trees, search_k, recall, seconds, search, annoy_ms, exact_ms
    )


_TIMED_QUERIES = 50


def _query_times(
    index: AnnoyIndex, candidates: FloatMatrix, queries: FloatMatrix, search_k: int
) -> tuple[float, float]:
    """Median milliseconds of one query for ``TUNING_K`` items: Annoy, then exact numpy,
    on one BLAS thread as the servers run it."""
    k = min(TUNING_K, len(candidates))
    annoy, exact = [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for query in queries:
            started = time.perf_counter()
            index.get_nns_by_vector(query.tolist(), k, search_k=search_k or -1)
            annoy.append(time.perf_counter() - started)
            started = time.perf_counter()
            top_positions(candidates @ query, k)
            exact.append(time.perf_counter() - started)
    return float(np.median(annoy)) * 1000, float(np.median(exact)) * 1000


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
    index: AnnoyIndex,
    rows: npt.NDArray[np.int64],
    queries: FloatMatrix,
    exact: npt.NDArray[np.int64],
    ks: tuple[int, ...],
    search_k: int,
) -> dict[str, float]:
    """Mean recall@k of the index's answers at ``search_k`` (0: Annoy's default) against
    ``exact``, the exact top positions in ``rows`` of each query."""
    recall: dict[str, float] = {}
    for k in ks:
        k_eff = min(k, len(rows))
        hits = 0
        for q, query in enumerate(queries):
            found = index.get_nns_by_vector(query.tolist(), k_eff, search_k=search_k or -1)
            hits += len(set(found) & set(rows[exact[q, :k_eff]].tolist()))
        recall[f"recall@{k}"] = hits / (k_eff * len(queries))
    return recall
