"""Keep an ``EngagementSnapshot`` current: rebuild it off the request path when data changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

import sqlalchemy as sa

from cascade_server import heap
from cascade_server.errors import NotReadyError
from cascade_server.features.engagement import (
    EngagementSnapshot,
    SignalConfig,
    build_snapshot,
    with_item_statuses,
    with_seen_events,
)
from cascade_server.features.snapshot_file import SnapshotCursors, SnapshotFile
from cascade_server.logs import get_logger
from cascade_server.metrics import SNAPSHOT_BUILDS, SNAPSHOT_SECONDS
from cascade_server.storage.engagement_reader import EngagementData

_log = get_logger(__name__)


class SnapshotSource(Protocol):
    """Anything that hands out the snapshot to serve a request from."""

    def current(self) -> EngagementSnapshot:
        """The snapshot to use for one whole request."""
        ...


class SnapshotHolder:
    """Holds the current snapshot and swaps in a new one when the database changes.

    Readers call ``current()`` once per request and use that object throughout, so a
    request never sees two snapshots. A failed refresh keeps the previous snapshot.
    """

    def __init__(
        self,
        *,
        read_data: Callable[[], EngagementData],
        read_fingerprint: Callable[[], str],
        config: SignalConfig,
        read_status_changes: Callable[[str], tuple[list[tuple[str, str]], str]] | None = None,
        read_seen_events: Callable[[int], tuple[list[tuple[str, str, str, float]], int]]
        | None = None,
        snapshot_file: SnapshotFile | None = None,
    ) -> None:
        self._read_data = read_data
        self._read_fingerprint = read_fingerprint
        self._read_status_changes = read_status_changes
        self._config = config
        self._snapshot: EngagementSnapshot | None = None
        self._fingerprint: str | None = None
        self._items_since = ""
        self._read_seen_events = read_seen_events
        self._events_after = 0
        self._file = snapshot_file

    @property
    def ready(self) -> bool:
        """Whether a snapshot has been loaded."""
        return self._snapshot is not None

    def current(self) -> EngagementSnapshot:
        """The snapshot to serve from; NOT_READY until the first one is built."""
        snapshot = self._snapshot
        if snapshot is None:
            raise NotReadyError("engagement data is still loading; retry in a few seconds")
        return snapshot

    def refresh(self) -> bool:
        """Rebuild the snapshot if the data changed since the last build. Blocking."""
        fingerprint = self._read_fingerprint()
        if fingerprint == self._fingerprint:
            return False
        started = time.perf_counter()
        try:
            data = self._read_data()
            read_s = time.perf_counter() - started
            snapshot = build_snapshot(data, self._config)
        except Exception:
            SNAPSHOT_BUILDS.labels("failed").inc()
            raise
        SNAPSHOT_BUILDS.labels("built").inc()
        SNAPSHOT_SECONDS.set(time.perf_counter() - started)
        self._snapshot, self._fingerprint = snapshot, data.fingerprint
        heap.freeze()  # snapshots hold no reference cycles: refcounts free the old one
        self._items_since = data.items_updated_at
        self._events_after = data.last_event_id
        _log.info(
            "snapshot built",
            snapshot_id=snapshot.snapshot_id,
            read_s=round(read_s, 3),
            total_s=round(time.perf_counter() - started, 3),
            **snapshot.stats,
        )
        if self._file is not None:
            cursors = SnapshotCursors(data.fingerprint, data.items_updated_at, data.last_event_id)
            try:
                self._file.save(snapshot, cursors)
            except OSError as error:  # serving goes on; the next restart builds
                _log.warning("snapshot file not written", error=str(error))
        return True

    def load_saved(self) -> bool:
        """Serve the snapshot file's snapshot, if there is one that fits (see
        ``features.snapshot_file``); the next ``refresh`` catches up with the database.
        Blocking."""
        if self._file is None:
            return False
        started = time.perf_counter()
        loaded = self._file.load()
        if loaded is None:
            return False
        SNAPSHOT_BUILDS.labels("loaded").inc()
        snapshot, cursors = loaded
        self._snapshot, self._fingerprint = snapshot, cursors.fingerprint
        self._items_since, self._events_after = cursors.items_updated_at, cursors.last_event_id
        heap.freeze()
        _log.info(
            "snapshot loaded from file",
            snapshot_id=snapshot.snapshot_id,
            total_s=round(time.perf_counter() - started, 3),
            **snapshot.stats,
        )
        return True

    def apply_changes(self) -> bool:
        """Apply what changed since the last read without a rebuild (cheap): items
        hidden or deleted in the catalog leave the snapshot's lists, and new impression
        and hide events join the users' seen items. Blocking."""
        snapshot = self._snapshot
        if snapshot is None:
            return False
        updated = snapshot
        if self._read_status_changes is not None and self._items_since:
            changes, self._items_since = self._read_status_changes(self._items_since)
            updated = with_item_statuses(updated, changes)
        if self._read_seen_events is not None:
            events, self._events_after = self._read_seen_events(self._events_after)
            updated = with_seen_events(updated, events, self._config)
        if updated is snapshot:
            return False
        self._snapshot = updated
        _log.debug("snapshot changes applied", snapshot_id=updated.snapshot_id)
        return True

    async def keep_fresh(
        self,
        interval_s: float,
        on_ready: Callable[[], None],
        stop: asyncio.Event,
        status_interval_s: float | None = None,
    ) -> None:
        """Refresh every ``interval_s`` seconds until ``stop`` is set, and apply item status
        changes and new seen events every ``status_interval_s`` in between; call
        ``on_ready`` once the first snapshot is built.

        Errors are logged and retried at the next interval; the current snapshot stays.
        A refresh in progress when ``stop`` is set finishes first, so no database
        connection is left behind in a worker thread. Both run in this one task, so
        they never race each other.
        """
        announced = False
        if not self.ready and self._file is not None:
            try:
                announced = await asyncio.to_thread(self.load_saved)
                if announced:  # items hidden or deleted since the file leave it at once
                    await asyncio.to_thread(self.apply_changes)
            except Exception:
                _log.exception("snapshot file not loaded or not caught up; going on")
            if announced:
                on_ready()
        tick_s = min(interval_s, status_interval_s or interval_s)
        # A snapshot from the file is rebuilt at the regular interval, like any other
        # (changes in between are applied as usual), not at once: a rebuild right after
        # SERVING would take the cores from the first requests (8 s at a million items).
        next_full = time.monotonic() + interval_s if announced else 0.0
        while not stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_full or not self.ready:
                    await asyncio.to_thread(self.refresh)
                    next_full = now + interval_s
                else:
                    await asyncio.to_thread(self.apply_changes)
            except sa.exc.OperationalError as error:
                # The database is away (restarting, unreachable): expected, no stack trace.
                _log.warning(
                    "database unreachable; keeping the current snapshot and retrying",
                    error=str(error.orig or error).splitlines()[0],
                    retry_s=tick_s,
                )
            except Exception:
                _log.exception("snapshot refresh failed; keeping the current snapshot")
            if self.ready and not announced:
                announced = True
                on_ready()
            wait_s = tick_s if self.ready else min(tick_s, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
