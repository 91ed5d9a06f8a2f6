"""The k best of a score array: what every item search ends with."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def top_positions(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """The positions of the ``k`` largest ``scores``, largest first."""
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order: npt.NDArray[np.int64] = part[np.argsort(-scores[part], kind="stable")]
    return order
