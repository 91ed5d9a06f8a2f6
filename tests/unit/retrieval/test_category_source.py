import dataclasses

import numpy as np
from support.engagement import make_data

from cascade_server.features.engagement import SignalConfig, build_snapshot, with_item_statuses
from cascade_server.pipeline.components import RetrievalQuery
from cascade_server.pipeline.types import RequestContext
from cascade_server.retrieval.sources import CategoryPopularCandidateSource

ITEMS = [
    ("a1", "", "active"),
    ("a2", "", "active"),
    ("a3", "", "active"),
    ("a4", "", "hidden"),
    ("d1", "", "active"),
    ("d2", "", "active"),
    ("x", "", "active"),
]
CATEGORIES = [
    ("action",),
    ("action",),
    ("action", "drama"),
    ("action",),
    ("drama",),
    ("drama",),
    ("docs",),
]
EVENTS = [
    ("u", "a1", "click", 1), ("u", "d1", "click", 1), ("u", "a2", "click", 2),
    ("v", "a3", "click", 1), ("w", "a3", "click", 1), ("v", "a2", "click", 1),
    ("v", "a4", "click", 1), ("w", "d2", "click", 1), ("v", "x", "click", 1),
    ("w", "x", "click", 1), ("v", "d1", "click", 1),
]  # fmt: skip


def snapshot():
    data = make_data(ITEMS, ["u", "v", "w", "new"], EVENTS)
    return build_snapshot(dataclasses.replace(data, item_categories=CATEGORIES), SignalConfig())


def fetch(user_id="", seeds=(), limit=10, **settings):
    snap = snapshot()
    query = RetrievalQuery(
        RequestContext(user_id=user_id), snap.user_row(user_id), snap.lookup_items(list(seeds))
    )
    found = CategoryPopularCandidateSource(**settings).fetch(snap, query, limit)
    return [snap.item_ids[i] for i in found.items], found.scores


def test_snapshot_lists_each_categorys_active_items_by_popularity():
    snap = snapshot()
    assert list(snap.categories) == ["action", "docs", "drama"]
    action = [snap.item_ids[i] for i in snap.category_items.row(0)[0]]
    assert action == ["a2", "a3", "a1"]  # a2 was clicked most recently; a4 is hidden
    assert [snap.item_ids[i] for i in snap.category_items.row(2)[0]] == ["a3", "d1", "d2"]


def test_the_users_main_categories_share_the_limit_by_weight():
    items, scores = fetch("u")
    # u's items: a1, a2 (action) and d1 (drama): action weighs 2/3, drama 1/3.
    assert items == ["a3", "d2"]  # a3 is action's best unseen; d2 drama's (a3 already taken)
    np.testing.assert_allclose(scores, [2 / 3, 1 / 3])


def test_the_main_categories_can_be_capped():
    items, _ = fetch("u", max_categories=1)
    assert items == ["a3"]


def test_seeds_drive_the_categories_and_are_never_returned():
    items, _ = fetch(seeds=["x"])
    assert items == []  # the only docs item is the seed
    items, _ = fetch(seeds=["d1"])
    assert items == ["a3", "d2"]


def test_a_user_without_history_or_a_catalog_without_categories_gets_nothing():
    assert fetch("new")[0] == []
    plain = build_snapshot(make_data(ITEMS, ["u", "v", "w"], EVENTS), SignalConfig())
    query = RetrievalQuery(RequestContext(user_id="u"), plain.user_row("u"), np.zeros(0, np.int64))
    assert len(CategoryPopularCandidateSource().fetch(plain, query, 10).items) == 0


def test_a_deleted_item_leaves_its_categories_at_once():
    snap = with_item_statuses(snapshot(), [("a3", "deleted")])
    rows = [[snap.item_ids[i] for i in snap.category_items.row(c)[0]] for c in range(3)]
    assert rows == [["a2", "a1"], ["x"], ["d1", "d2"]]
