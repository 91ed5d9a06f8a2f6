"""Base recommenders fitted on the user-item matrix; each becomes a ranking feature.

All take ``X``, the binary users x items matrix of positive engagement (scipy CSR),
and return a feature from ``ranking.features`` holding only bounded-size arrays:
item-to-item models keep their top ``k`` weights per item, factor models keep the
item factors. References: item-kNN with shrinkage (Sarwar et al. 2001), RP3β
(Paudel et al. 2017), EASE (Steck 2019), iALS (Hu et al. 2008; the
frequency-scaled regularisation of Rendle et al. 2022).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
from scipy import sparse
from threadpoolctl import threadpool_limits

from cascade_server.features.engagement import Csr
from cascade_server.ranking.features import FactorFeature, NeighbourFeature

FloatMatrix = npt.NDArray[np.float64]
DENSE_MAX_ITEMS = 8_000
"""Up to this many items, item x item matrices are computed densely (faster, 0.5 GB at most)."""
Matrix: TypeAlias = Any
"""A ``scipy.sparse.csr_matrix`` (scipy ships no type information)."""


def interaction_matrix(
    users: npt.NDArray[np.int64], items: npt.NDArray[np.int64], n_users: int, n_items: int
) -> Matrix:
    """The binary users x items matrix of the given pairs."""
    data = np.ones(len(users), dtype=np.float32)
    matrix = sparse.csr_matrix((data, (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0
    return matrix


def cooccurrence(x: Matrix, user_weights: npt.NDArray[np.float64] | None = None) -> Any:
    """``Xᵀ diag(w) X``: dense for catalogs up to ``DENSE_MAX_ITEMS`` items, else sparse."""
    weighted = x if user_weights is None else sparse.diags(user_weights) @ x
    if x.shape[1] <= DENSE_MAX_ITEMS:
        return np.asarray((x.T @ weighted.toarray()), dtype=np.float64)
    return (x.T @ weighted).tocsr().astype(np.float64)


def item_knn(
    x: Matrix, *, shrink: float, k: int, gram: Any = None, name: str = "item_knn"
) -> NeighbourFeature:
    """Cosine similarity of items' user sets, shrunk toward 0 for small overlaps."""
    co = cooccurrence(x) if gram is None else gram
    counts = np.asarray(x.sum(axis=0)).ravel().astype(np.float64)
    norms = np.sqrt(counts)
    if isinstance(co, np.ndarray):
        similarity = co / (np.outer(norms, norms) + shrink)
        np.fill_diagonal(similarity, 0.0)
        return NeighbourFeature(name, top_k_dense(similarity, k))
    co = co.copy()
    co.setdiag(0)
    co.eliminate_zeros()
    rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
    co.data = co.data / (norms[rows] * norms[co.indices] + shrink)
    return NeighbourFeature(name, top_k_rows(co, k))


def rp3beta(
    x: Matrix, *, alpha: float, beta: float, k: int, name: str = "rp3beta"
) -> NeighbourFeature:
    """Random-walk item → user → item transition probabilities, divided by popularity^β."""
    user_degree = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1).astype(np.float64)
    item_degree = np.maximum(np.asarray(x.sum(axis=0)).ravel(), 1).astype(np.float64)
    walk = cooccurrence(x, 1 / user_degree)
    scale = np.power(item_degree, -beta)
    if isinstance(walk, np.ndarray):
        walk = walk / item_degree[:, None]
        if alpha != 1.0:
            walk = np.power(walk, alpha)
        walk = walk * scale[None, :]
        np.fill_diagonal(walk, 0.0)
        return NeighbourFeature(name, top_k_dense(walk, k))
    walk = sparse.diags(1 / item_degree) @ walk
    if alpha != 1.0:
        walk.data = np.power(walk.data, alpha)
    walk = (walk @ sparse.diags(scale)).tocsr()
    walk.setdiag(0)
    walk.eliminate_zeros()
    return NeighbourFeature(name, top_k_rows(walk, k))


def ease(
    x: Matrix, *, lam: float, k: int, gram: Any = None, name: str = "ease"
) -> NeighbourFeature:
    """EASE's closed-form item-item weights, keeping the k largest |weights| of each column.

    Needs a dense items x items inverse: only for catalogs up to ``DENSE_MAX_ITEMS``.
    """
    matrix = np.array(cooccurrence(x) if gram is None else gram, dtype=np.float64)
    matrix[np.diag_indices_from(matrix)] += lam
    inverse = np.linalg.inv(matrix)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    # Keep, for every target item (column), its k strongest source items.
    keep = np.argpartition(-np.abs(weights), min(k, weights.shape[0] - 1), axis=0)[:k]
    cols = np.broadcast_to(np.arange(weights.shape[1]), keep.shape)
    sparse_weights = sparse.csr_matrix(
        (weights[keep, cols].ravel(), (keep.ravel(), cols.ravel())), shape=weights.shape
    )
    sparse_weights.eliminate_zeros()
    return NeighbourFeature(name, _csr(sparse_weights))


def ials(
    x: Matrix,
    *,
    factors: int,
    alpha0: float,
    lam: float,
    nu: float = 1.0,
    iterations: int,
    seed: int,
    name: str = "ials",
) -> FactorFeature:
    """Implicit ALS: fit user and item factors; keep the item side for fold-in at serving."""
    rng = np.random.default_rng(seed)
    x = x.tocsr().astype(np.float32)
    xt = x.T.tocsr()
    n_users, n_items = x.shape
    scale = 0.1 / np.sqrt(factors)
    user_f = (rng.standard_normal((n_users, factors)) * scale).astype(np.float32)
    item_f = (rng.standard_normal((n_items, factors)) * scale).astype(np.float32)
    # Thousands of tiny k-by-k products: BLAS threads only add overhead here.
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(iterations):
            user_f = _als_step(x, item_f, alpha0, lam, nu, n_items)
            item_f = _als_step(xt, user_f, alpha0, lam, nu, n_users)
    # Kept as float32 (half the memory a server maps); the Gram matrix is summed in float64.
    item64 = item_f.astype(np.float64)
    return FactorFeature(name, item_f, alpha0 * (item64.T @ item64), lam, nu, alpha0 * n_items)


def _als_step(
    rows: Matrix,
    other: npt.NDArray[np.float32],
    alpha0: float,
    lam: float,
    nu: float,
    n_other: int,
    batch: int = 1024,
) -> npt.NDArray[np.float32]:
    """Solve every row's factors exactly, given the other side's factors."""
    k = other.shape[1]
    gram = alpha0 * (other.T @ other)
    counts = np.diff(rows.indptr)
    reg = lam * np.power(counts + alpha0 * n_other, nu)
    out = np.zeros((rows.shape[0], k), dtype=np.float32)
    eye = np.eye(k, dtype=np.float32)
    for start in range(0, rows.shape[0], batch):
        end = min(rows.shape[0], start + batch)
        systems = np.broadcast_to(gram, (end - start, k, k)).copy()
        targets = np.zeros((end - start, k), dtype=np.float32)
        for r in range(start, end):
            ids = rows.indices[rows.indptr[r] : rows.indptr[r + 1]]
            if len(ids):
                chosen = other[ids]
                systems[r - start] += chosen.T @ chosen
                targets[r - start] = chosen.sum(axis=0)
        systems += reg[start:end, None, None].astype(np.float32) * eye
        out[start:end] = np.linalg.solve(systems, targets[..., None])[..., 0]
    return out


def top_k_dense(matrix: FloatMatrix, k: int) -> Csr:
    """The k largest positive values of every row of a dense matrix, as a ``Csr``."""
    k = min(k, matrix.shape[1])
    keep = np.argpartition(-matrix, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(matrix, keep, axis=1)
    rows = np.broadcast_to(np.arange(matrix.shape[0])[:, None], keep.shape)
    positive = values > 0
    kept = sparse.csr_matrix(
        (values[positive], (rows[positive], keep[positive])), shape=matrix.shape
    )
    return _csr(kept)


def top_k_rows(matrix: Matrix, k: int) -> Csr:
    """The k largest values of every row, sorted descending, as a ``Csr``."""
    matrix = matrix.tocsr()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    rows, cols, vals = rows[order], matrix.indices[order], matrix.data[order]
    starts = np.searchsorted(rows, rows, side="left")
    keep = (np.arange(len(rows)) - starts) < k
    kept = sparse.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=matrix.shape)
    return _csr(kept)


def _csr(matrix: Matrix) -> Csr:
    matrix = matrix.tocsr()
    matrix.sort_indices()
    return Csr(
        matrix.indptr.astype(np.int64),
        matrix.indices.astype(np.int64),
        matrix.data.astype(np.float64),
    )
