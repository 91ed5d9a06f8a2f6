"""Reading a release's large arrays: mapped from their files, checked a slice at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def load_mapped(path: Path) -> npt.NDArray[Any]:
    """The ``.npy`` array at ``path``, mapped read-only (not read): a process holds no
    private copy, processes mapping the same file share the page cache's pages, and
    rows are read when used. A plain array view of the map (indexing a ``memmap``
    costs a Python call more each time)."""
    return np.asarray(np.load(path, mmap_mode="r"))


def all_finite(array: npt.NDArray[Any], rows_per_pass: int = 16_384) -> bool:
    """Whether every value is finite, checked a few megabytes at a time: no temporary the
    size of the array, and one pass over a mapped file brings its pages in before
    requests need them."""
    return all(
        bool(np.isfinite(array[start : start + rows_per_pass]).all())
        for start in range(0, len(array), rows_per_pass)
    )
