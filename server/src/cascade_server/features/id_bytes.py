"""A catalog's ids as one fixed-width byte array, for reading and checking ids at rows.

Reading a few hundred ids at random rows of a million-entry tuple of strings costs
several cache misses per id (the tuple's slot, the string object, its reference count);
the same rows of a fixed-width UTF-8 array are one short entry each. For 500 rows of a
million ids with cold caches (``bench/id_reads.py``): 0.38 ms through the tuple, 0.10 ms
through the array (ids as strings again); checking 500 ids against their rows 0.49
against 0.23 ms.

Numpy's fixed-width byte strings drop trailing NUL bytes, so a catalog with an id
ending in one (or an id so long that every entry would be wide) gets no array, and its
readers take the tuple.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IdBytes = npt.NDArray[np.bytes_]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MAX_WIDTH = 64
"""Longest id (in UTF-8 bytes) the array holds: a million items at most 64 MB."""

NO_ID_BYTES: IdBytes = np.zeros(0, dtype="S1")
"""The array of a catalog whose ids do not fit one."""

_IDS_PER_SLICE = 65_536
"""Ids copied into the array at once: a copy holds the interpreter lock throughout, so
a server's request threads wait at most one slice's (a few ms) while a snapshot builds."""


def id_bytes(ids: Sequence[str]) -> IdBytes:
    """``ids`` as UTF-8 in one fixed-width array, or ``NO_ID_BYTES`` when one of them is
    longer than ``MAX_WIDTH`` bytes or ends in a NUL byte."""
    encoded, lengths = _encoded(ids)
    if not encoded:
        return NO_ID_BYTES
    width = int(lengths.max())
    if width > MAX_WIDTH:
        return NO_ID_BYTES
    column = np.empty(len(encoded), dtype=f"S{max(width, 1)}")
    for start in range(0, len(encoded), _IDS_PER_SLICE):
        column[start : start + _IDS_PER_SLICE] = encoded[start : start + _IDS_PER_SLICE]
    if not (np.char.str_len(column) == lengths).all():  # a trailing NUL was dropped
        return NO_ID_BYTES
    return column


def ids_at(column: IdBytes, rows: IntArray) -> list[str]:
    """The ids at ``rows`` (valid rows of a non-empty ``column``)."""
    return [item.decode() for item in column[rows].tolist()]


def matches(column: IdBytes, rows: IntArray, ids: Sequence[str]) -> BoolArray:
    """Whether each of ``ids`` is the id at its row (valid rows of a non-empty
    ``column``): the same bytes and the same length, so an id that differs from the
    catalog's only by trailing NUL bytes does not match."""
    encoded, lengths = _encoded(ids)
    if not encoded:
        return np.zeros(0, dtype=np.bool_)
    found = column[rows]
    same: BoolArray = (found == np.array(encoded)) & (np.char.str_len(found) == lengths)
    return same


def _encoded(ids: Sequence[str]) -> tuple[list[bytes], IntArray]:
    """Each id as UTF-8, and each one's length in bytes."""
    encoded = [item.encode() for item in ids]
    return encoded, np.fromiter(map(len, encoded), np.int64, len(encoded))
