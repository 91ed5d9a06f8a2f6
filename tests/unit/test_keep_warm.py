"""Stages warm their caches before serving and again when their data or release changes."""

import asyncio
from pathlib import Path

from support.engagement import FixedHolder, small_snapshot

from cascade_server.artifacts.manifest import DataSnapshot, Manifest
from cascade_server.artifacts.watcher import ReleaseWatcher
from cascade_server.errors import NotReadyError
from cascade_server.pipeline.types import SourceKind
from cascade_server.ranking.scorers import BaselineScorer
from cascade_server.ranking.stage import RankingStage
from cascade_server.retrieval.sources import CoEngagementCandidateSource, PopularCandidateSource
from cascade_server.retrieval.stage import RetrievalStage
from cascade_server.rpc.bindings import keep_warm, prepared, serving_state


def test_keep_warm_warms_once_per_change_after_the_first_state():
    keys: list[str | Exception] = [NotReadyError("loading"), "a", "a", "b", "b", "b"]
    pending = iter(keys)
    warmed: list[str] = []
    current: list[str] = []

    def key():
        value = next(pending, "b")
        if isinstance(value, Exception):
            raise value
        current.append(value)
        return value

    async def scenario():
        stop = asyncio.Event()
        ready: list[bool] = []
        task = asyncio.create_task(
            keep_warm(key, lambda: warmed.append(current[-1]), 0.01)(
                stop, lambda: ready.append(True)
            )
        )
        await asyncio.sleep(0.15)
        stop.set()
        await task
        return ready

    assert asyncio.run(scenario()) == [True]
    # "a" is the state the server warms itself before SERVING; "b" is a change.
    assert warmed == ["b"]


def test_stages_warm_without_error():
    snapshot = small_snapshot()
    retrieval = RetrievalStage(
        FixedHolder(snapshot),
        [CoEngagementCandidateSource(), PopularCandidateSource()],
        {SourceKind.CO_ENGAGEMENT: 10, SourceKind.POPULAR: 10},
    )
    retrieval.warm()
    retrieval.close()
    ranking = RankingStage(FixedHolder(snapshot), BaselineScorer())
    ranking.warm()


def test_the_serving_state_names_the_snapshot_and_the_release():
    snapshot = small_snapshot()
    watcher = ReleaseWatcher(read_active=lambda: None, load=lambda _: 1, baseline=0, name="t")
    assert serving_state(FixedHolder(snapshot), watcher)() == (snapshot.snapshot_id, None)


MANIFEST = Manifest("r1", "now", DataSnapshot("f", 0, 0, 0, None), {})


class _Loaded:
    def __init__(self):
        self.prepared_for = []

    def prepare(self, snapshot):
        self.prepared_for.append(snapshot)


def test_a_loaded_release_is_prepared_for_the_serving_snapshot_before_it_is_swapped_in():
    snapshot = small_snapshot()
    load = prepared(lambda path, manifest: _Loaded(), _Loaded.prepare, FixedHolder(snapshot))
    loaded = load(Path("release"), MANIFEST)
    assert loaded.prepared_for == [snapshot]


def test_before_the_first_snapshot_a_release_loads_unprepared():
    class Loading:
        def current(self):
            raise NotReadyError("loading")

    loaded = prepared(lambda path, manifest: _Loaded(), _Loaded.prepare, Loading())(
        Path("release"), MANIFEST
    )
    assert loaded.prepared_for == []
