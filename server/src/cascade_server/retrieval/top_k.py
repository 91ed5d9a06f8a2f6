"""The k best of a score array: what every item search and candidate source ends with."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def top_positions(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """The positions of the ``k`` largest ``scores``, largest first."""
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order: npt.NDArray[np.int64] = part[np.argsort(-scores[part], kind="stable")]
    return order


def top_first_positions(scores: npt.NDArray[np.number[Any]], k: int) -> npt.NDArray[np.int64]:
    """The positions of the ``k`` largest ``scores``, largest first and ties in position
    order: the first ``k`` of ``np.lexsort((np.arange(n), -scores))``, sorting only the
    scores that reach the ``k``-th largest rather than all of them."""
    n = len(scores)
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        reaching = np.flatnonzero(scores >= kth)  # in position order: the stable sort keeps it
    else:
        reaching = np.arange(n)
    order: npt.NDArray[np.int64] = reaching[np.argsort(-scores[reaching], kind="stable")[:k]]
    return order
