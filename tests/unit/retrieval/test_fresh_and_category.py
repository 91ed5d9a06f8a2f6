"""The fresh side index and source, and category-restricted retrieval (category feeds)."""

import dataclasses

import numpy as np
import pytest
from support.engagement import T0, FixedHolder, make_data

from cascade_server.errors import NotFoundError
from cascade_server.features.engagement import SignalConfig, build_snapshot
from cascade_server.pipeline.components import RetrievalQuery
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import RequestContext, SourceKind
from cascade_server.retrieval.fresh import FreshCandidateSource, FreshItemIndex
from cascade_server.retrieval.sources import (
    CoEngagementCandidateSource,
    PopularCandidateSource,
    TrendingCandidateSource,
)
from cascade_server.retrieval.stage import RetrievalRequest, RetrievalStage

# old* items have engagement; new* items have none and were created later, newest last.
# Categories: A for old1, old2, new1, new3; B for old3, new2; new4 is hidden.
ITEMS = [
    ("old1", "A", 0), ("old2", "A", 1), ("old3", "B", 2),
    ("new1", "A", 10), ("new2", "B", 11), ("new3", "A", 12), ("new4", "A", 13),
]  # fmt: skip
EVENTS = [
    ("u", "old1", "click", 1), ("v", "old1", "click", 1), ("v", "old2", "click", 2),
    ("w", "old3", "click", 3), ("w", "old2", "like", 20), ("x", "old3", "click", 20),
    ("x", "old2", "click", 20),
]  # fmt: skip
DATA = dataclasses.replace(
    make_data(
        [(i, "", "hidden" if i == "new4" else "active") for i, _, _ in ITEMS],
        ["u", "v", "w", "x"],
        EVENTS,
    ),
    item_categories=[(c,) for _, c, _ in ITEMS],
    item_created=np.array([T0 + day * 86_400 for _, _, day in ITEMS]),
)
SNAPSHOT = build_snapshot(DATA, SignalConfig(trending_half_life_hours=24.0))


def ids(items):
    return [SNAPSHOT.item_ids[i] for i in items.tolist()]


def query(user="", category=""):
    return RetrievalQuery(
        RequestContext(user_id=user),
        SNAPSHOT.user_row(user),
        np.zeros(0, np.int64),
        SNAPSHOT.category_of(category) if category else -1,
    )


class FakeModels:
    """The one thing the side index asks of the release: which items it knows."""

    def __init__(self, known, release_id="r1"):
        self.release_id = release_id
        self._known = known

    def maps(self, snapshot):
        release = {item: k for k, item in enumerate(self._known)}
        to_release = np.array([release.get(i, -1) for i in snapshot.item_ids], np.int64)
        return type("Maps", (), {"to_release": to_release})


def test_without_a_release_fresh_items_are_active_items_no_one_engaged_with_newest_first():
    assert ids(FreshItemIndex().items(SNAPSHOT, None)) == ["new3", "new2", "new1"]


def test_with_a_release_fresh_items_are_those_it_does_not_know():
    models = FakeModels(["old1", "old2", "old3", "new1"])
    assert ids(FreshItemIndex().items(SNAPSHOT, models)) == ["new3", "new2"]  # type: ignore[arg-type]


def test_the_side_index_is_built_once_per_snapshot_and_release_and_bounded():
    index = FreshItemIndex(max_items=2)
    first = index.items(SNAPSHOT, None)
    assert index.items(SNAPSHOT, None) is first
    assert ids(first) == ["new3", "new2"]
    other = FakeModels(["old1"], "r2")
    assert index.items(SNAPSHOT, other) is not first  # type: ignore[arg-type]


def test_the_fresh_source_puts_the_users_categories_first():
    source = FreshCandidateSource(FreshItemIndex().items(SNAPSHOT, None))
    assert ids(source.fetch(SNAPSHOT, query(), 10).items) == ["new3", "new2", "new1"]
    # w engaged with old3 (B) and old2 (A): both categories; x with B and A too; u with A.
    assert ids(source.fetch(SNAPSHOT, query("u"), 10).items) == ["new3", "new1", "new2"]
    found = source.fetch(SNAPSHOT, query("u"), 1)
    assert ids(found.items) == ["new3"]
    assert found.scores.tolist() == [SNAPSHOT.item_created[SNAPSHOT.item_index["new3"]]]


def test_a_category_restricts_the_fresh_popular_and_trending_sources():
    fresh = FreshCandidateSource(FreshItemIndex().items(SNAPSHOT, None))
    assert ids(fresh.fetch(SNAPSHOT, query(category="B"), 10).items) == ["new2"]
    popular = PopularCandidateSource().fetch(SNAPSHOT, query(category="A"), 10)
    assert set(ids(popular.items)) == {"old1", "old2"}
    trending_all = ids(TrendingCandidateSource().fetch(SNAPSHOT, query(), 10).items)
    trending_b = ids(TrendingCandidateSource().fetch(SNAPSHOT, query(category="B"), 10).items)
    assert trending_b == [i for i in trending_all if i in {"old3", "new2"}]
    assert trending_b, "old3 has recent engagement"


def stage():
    return RetrievalStage(
        FixedHolder(SNAPSHOT),
        [CoEngagementCandidateSource(), PopularCandidateSource()],
        {SourceKind.CO_ENGAGEMENT: 10, SourceKind.POPULAR: 10, SourceKind.FRESH: 10},
        fresh=FreshItemIndex(),
    )


def test_the_stage_runs_the_fresh_source_last_and_cuts_every_source_to_the_category():
    everything = stage().retrieve(RetrievalRequest(RequestContext(user_id="u")), Deadline.after(1))
    fresh = [c.item_id for c in everything.candidates if c.sources[0].source is SourceKind.FRESH]
    assert fresh == ["new3", "new1", "new2"]
    assert [r.name for r in everything.components][-1] == "fresh"
    only_b = stage().retrieve(
        RetrievalRequest(RequestContext(user_id="u"), category_id="B"), Deadline.after(1)
    )
    assert {c.item_id for c in only_b.candidates} == {"old3", "new2"}


def test_an_unknown_category_is_not_found():
    with pytest.raises(NotFoundError):
        stage().retrieve(RetrievalRequest(RequestContext(), category_id="Z"), Deadline.after(1))
