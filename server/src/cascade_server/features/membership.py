"""Which of a request's items are in a short list of items (seeds, a user's history)."""

from __future__ import annotations

import numpy as np

from cascade_server.features.engagement import BoolArray, IntArray


def is_member(items: IntArray, of: IntArray) -> BoolArray:
    """Whether each of ``items`` is in ``of``: a binary search in ``of`` sorted. For the
    short lists this is for, ``np.isin`` compares every item with every entry of ``of``
    (45-195 µs for 500 items against a list, where this takes 9-30 µs)."""
    if len(of) == 0:
        return np.zeros(len(items), dtype=np.bool_)
    ordered = np.sort(of)
    at = np.minimum(np.searchsorted(ordered, items), len(ordered) - 1)
    member: BoolArray = ordered[at] == items
    return member
