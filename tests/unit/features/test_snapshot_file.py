"""The snapshot file: what is saved loads back equal, what does not fit is ignored, and a
holder serves a saved snapshot before its first build from the database."""

import asyncio
import dataclasses
import gc

import numpy as np
import pytest
from support.engagement import make_data

from cascade_server.features.engagement import Csr, SignalConfig, build_snapshot
from cascade_server.features.refresh import SnapshotHolder
from cascade_server.features.snapshot_file import SnapshotCursors, SnapshotFile

ITEMS = [
    ("i1", "c1", "active"),
    ("é-2", "", "active"),
    ("i3", "c1", "hidden"),
    ("x", "c2", "active"),
]
EVENTS = [("a", "i1", "click", 1), ("a", "é-2", "like", 2), ("b", "i1", "impression", 3)]
DATA = dataclasses.replace(
    make_data(ITEMS, ["a", "b", "ü"], EVENTS),
    item_categories=[("Drama",), (), ("Drama", "Noir"), ("Ünïcode",)],
    item_titles=["Storm", "", "Line\nbreak", "  Spaced  Out "],
    item_created=np.array([1.0, 2.0, 3.0, 4.0]),
    items_updated_at="2026-11-26 10:00:00+00",
    last_event_id=3,
)
CURSORS = SnapshotCursors(DATA.fingerprint, DATA.items_updated_at, DATA.last_event_id)


def assert_same(a, b):
    for spec in dataclasses.fields(a):
        x, y = getattr(a, spec.name), getattr(b, spec.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, spec.name
            assert np.array_equal(x, y), spec.name
        elif isinstance(x, Csr):
            for part in ("indptr", "indices", "data"):
                assert np.array_equal(getattr(x, part), getattr(y, part)), spec.name
        elif isinstance(x, dict | str) or x is None:
            assert x == y, spec.name
        else:
            assert list(x) == list(y) if isinstance(x, list | tuple) else x == y, spec.name


def test_a_saved_snapshot_loads_back_equal(tmp_path):
    snapshot = build_snapshot(DATA, SignalConfig())
    file = SnapshotFile(tmp_path / "s" / "db.npz", SignalConfig())
    assert file.load() is None  # none yet
    assert file.save(snapshot, CURSORS)
    saved = file.load()
    assert saved is not None
    loaded, cursors = saved
    assert cursors == CURSORS
    assert_same(snapshot, loaded)
    assert loaded.lookup_items(["x", "é-2", "nope"]).tolist() == [3, 1, -1]


def test_a_recent_file_is_not_rewritten(tmp_path):
    snapshot = build_snapshot(DATA, SignalConfig())
    file = SnapshotFile(tmp_path / "db.npz", SignalConfig(), min_interval_s=3600)
    assert file.save(snapshot, CURSORS)
    assert not file.save(snapshot, CURSORS)
    assert SnapshotFile(tmp_path / "db.npz", SignalConfig(), min_interval_s=0).save(
        snapshot, CURSORS
    )
    assert [p.name for p in tmp_path.iterdir()] == ["db.npz"]  # no partial files left


def test_files_of_other_settings_or_damaged_ones_are_ignored(tmp_path):
    path = tmp_path / "db.npz"
    SnapshotFile(path, SignalConfig()).save(build_snapshot(DATA, SignalConfig()), CURSORS)
    assert SnapshotFile(path, SignalConfig(history_length=7)).load() is None
    path.write_bytes(path.read_bytes()[:-100])  # cut short
    assert SnapshotFile(path, SignalConfig()).load() is None
    path.write_bytes(b"not a snapshot")
    assert SnapshotFile(path, SignalConfig()).load() is None


def test_a_file_whose_id_bytes_do_not_fit_its_ids_is_ignored(tmp_path):
    path = tmp_path / "db.npz"
    snapshot = build_snapshot(DATA, SignalConfig())
    short = dataclasses.replace(snapshot, item_id_bytes=snapshot.item_id_bytes[:-1])
    SnapshotFile(path, SignalConfig()).save(short, CURSORS)
    assert SnapshotFile(path, SignalConfig()).load() is None


def _holder(tmp_path, read_data, fingerprint, read_status_changes=None):
    return SnapshotHolder(
        read_data=read_data,
        read_fingerprint=lambda: fingerprint[0],
        config=SignalConfig(),
        read_status_changes=read_status_changes,
        snapshot_file=SnapshotFile(tmp_path / "db.npz", SignalConfig(), min_interval_s=0),
    )


def test_a_holder_serves_the_saved_snapshot_until_the_database_moves_on(tmp_path):
    reads = []

    def read_data():
        reads.append(True)
        return DATA

    fingerprint = [DATA.fingerprint]
    first = _holder(tmp_path, read_data, fingerprint)
    assert not first.load_saved()
    assert first.refresh()  # built, and saved
    assert len(reads) == 1

    restarted = _holder(tmp_path, read_data, fingerprint)
    assert restarted.load_saved()
    assert_same(first.current(), restarted.current())
    assert not restarted.refresh()  # the database did not change
    assert len(reads) == 1
    fingerprint[0] = "moved on"
    assert restarted.refresh()
    assert len(reads) == 2


@pytest.mark.timeout(30)
def test_keep_fresh_serves_the_file_then_rebuilds_at_its_interval(tmp_path):
    fingerprint = [DATA.fingerprint]
    _holder(tmp_path, lambda: DATA, fingerprint).refresh()  # a file from an earlier run
    fingerprint[0] = "moved on"
    reads = []

    def read_data():
        reads.append(True)
        return DATA

    def status_changes(since):
        # Since the file's cursor, i1 was deleted; nothing after that.
        if since == DATA.items_updated_at:
            return [("i1", "deleted")], "later"
        return [], since

    holder = _holder(tmp_path, read_data, fingerprint, status_changes)

    async def run():
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(holder.keep_fresh(0.5, ready.set, stop, 0.05))
        await asyncio.wait_for(ready.wait(), 5)
        assert not reads  # served from the file, not built
        assert not holder.current().item_active[0]  # caught up before serving
        while not reads:  # rebuilt at the interval, the database having moved on
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(run())


def test_built_and_loaded_snapshots_keep_their_id_lists_out_of_full_collections(tmp_path):
    # A full collection walks every entry of every tracked list; a tuple of strings is
    # untracked after the collector's first look, so it costs nothing afterwards.
    built = build_snapshot(DATA, SignalConfig())
    file = SnapshotFile(tmp_path / "db.npz", SignalConfig())
    file.save(built, CURSORS)
    saved = file.load()
    assert saved is not None
    gc.collect()
    for snapshot in (built, saved[0]):
        for name in ("item_ids", "item_creators", "item_titles"):
            assert not gc.is_tracked(getattr(snapshot, name)), name
