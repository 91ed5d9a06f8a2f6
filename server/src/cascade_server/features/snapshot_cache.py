"""A value built once per engagement snapshot and shared by the requests that use it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from cascade_server.features.engagement import EngagementSnapshot

T = TypeVar("T")


class SnapshotCache(Generic[T]):
    """The value ``build(snapshot)`` gives, kept for the last snapshot asked about.

    The first thread to ask about a new snapshot builds it; threads asking meanwhile wait
    for that build and share it (at a million items an id map takes tens of ms, and
    requests that each built their own after a swap queued behind one another). ``build``
    is passed on each call, not kept, so a cache holds no reference back to its owner.
    """

    def __init__(self) -> None:
        self._cached: tuple[str, T] | None = None
        self._lock = threading.Lock()

    def get(self, snapshot: EngagementSnapshot, build: Callable[[EngagementSnapshot], T]) -> T:
        """The value for ``snapshot``, built now if it is not the cached one's."""
        cached = self._cached
        if cached is not None and cached[0] == snapshot.snapshot_id:
            return cached[1]
        with self._lock:
            cached = self._cached
            if cached is None or cached[0] != snapshot.snapshot_id:
                cached = self._cached = (snapshot.snapshot_id, build(snapshot))
            return cached[1]
