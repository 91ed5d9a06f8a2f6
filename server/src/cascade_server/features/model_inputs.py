"""Model inputs shared by training and serving: vocabularies and padded id matrices.

Ids are 1-based everywhere in model inputs; 0 means unknown or padding. Item ``i`` of
a release (its position in the release's item list) is model id ``i + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Vocabulary:
    """String values → ids 1..n (0 is unknown)."""

    values: tuple[str, ...]

    def ids(self, values: Sequence[str]) -> IntArray:
        """Ids of ``values``; 0 for values not in the vocabulary."""
        index = {value: i + 1 for i, value in enumerate(self.values)}
        return np.fromiter((index.get(v, 0) for v in values), np.int64, len(values))

    @property
    def size(self) -> int:
        """Number of ids, the unknown id 0 included."""
        return len(self.values) + 1


def history_matrix(histories: Sequence[IntArray], length: int) -> IntArray:
    """[len(histories), length]: each history's items (release indices, oldest first) as
    model ids, newest first, right-padded with 0."""
    matrix = np.zeros((len(histories), length), dtype=np.int64)
    for row, history in enumerate(histories):
        recent = np.asarray(history[::-1][:length], dtype=np.int64)
        matrix[row, : len(recent)] = recent + 1
    return matrix


def padded(rows: Sequence[IntArray], width: int) -> IntArray:
    """[len(rows), width] with each row's first ``width`` values, right-padded with 0."""
    matrix = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        matrix[i, : min(width, len(row))] = row[:width]
    return matrix
