"""Build the Annoy index over item embeddings and measure its recall against exact search."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

FloatMatrix = npt.NDArray[np.float32]
METRIC: Final = "angular"
"""Embeddings are L2-normalised, so angular distance orders items exactly like the dot product."""


@dataclass(frozen=True)
class IndexConfig:
    """Annoy knobs: more trees and a larger ``search_k`` trade speed and size for recall."""

    n_trees: int = 50
    search_k: int = 0
    """Nodes inspected per query; 0 means Annoy's default (n_trees * k)."""
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
    recall = (
        measure_recall(index, embeddings, rows, queries, recall_ks, config.search_k)
        if queries is not None and len(rows)
        else {}
    )
    return IndexReport(len(rows), dims, config.n_trees, config.search_k, recall, seconds)


def measure_recall(
    index: AnnoyIndex,
    embeddings: FloatMatrix,
    rows: npt.NDArray[np.int64],
    queries: FloatMatrix,
    ks: tuple[int, ...],
    search_k: int,
) -> dict[str, float]:
    """Mean recall@k of the index's answers against exact top-k by dot product."""
    candidates = embeddings[rows]
    exact = np.argsort(-(queries @ candidates.T), axis=1)
    recall: dict[str, float] = {}
    for k in ks:
        k_eff = min(k, len(rows))
        hits = 0
        for q, query in enumerate(queries):
            found = index.get_nns_by_vector(query.tolist(), k_eff, search_k=search_k or -1)
            hits += len(set(found) & set(rows[exact[q, :k_eff]].tolist()))
        recall[f"recall@{k}"] = hits / (k_eff * len(queries))
    return recall
