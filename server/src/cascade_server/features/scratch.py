"""Per-thread scratch arrays: catalog-sized work arrays allocated once per thread, not
once per request.

At a million items a fresh array per request costs its allocation, the writes that fill
it and the cache lines it evicts. A ``ScratchArray`` hands each thread one array, filled
with its fill value, that grows only when a larger size is asked for. The caller changes
only the entries it needs and puts them back before it returns (in a ``finally``), so
the next caller on the thread finds the array filled again.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T", bound=np.generic)


class ScratchArray(Generic[T]):
    """One array per thread, of ``dtype``, every entry ``fill`` between uses."""

    def __init__(self, dtype: type[T], fill: object) -> None:
        self._dtype = dtype
        self._fill = fill
        self._local = threading.local()

    def get(self, size: int) -> npt.NDArray[T]:
        """This thread's array, at least ``size`` long, every entry the fill value."""
        array: npt.NDArray[T] | None = getattr(self._local, "array", None)
        if array is None or len(array) < size:
            array = np.full(size, self._fill, dtype=self._dtype)
            self._local.array = array
        return array
