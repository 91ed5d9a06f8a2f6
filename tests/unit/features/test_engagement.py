import dataclasses

import numpy as np
import pytest
from support.engagement import T0, make_data, small_snapshot

from cascade_server.features.engagement import (
    KIND_WEIGHT_BY_NAME,
    Csr,
    SignalConfig,
    build_snapshot,
    with_item_statuses,
    with_seen_events,
)
from cascade_server.features.id_bytes import NO_ID_BYTES


def ids(snapshot, indices):
    return [snapshot.item_ids[i] for i in np.asarray(indices).tolist()]


def test_popular_items_are_active_engaged_items_by_decayed_weight():
    snapshot = small_snapshot()
    popular = ids(snapshot, snapshot.popular_items)
    assert "i4" not in popular
    assert "i8" not in popular
    assert set(popular) == {"i1", "i2", "i3", "i5", "i6", "i7"}
    scores = snapshot.popularity[snapshot.popular_items]
    assert np.all(np.diff(scores) <= 0)


def test_popularity_halves_per_half_life_and_ignores_impressions_and_hides():
    data = make_data(
        [("x", "", "active"), ("y", "", "active")],
        ["u"],
        [("u", "x", "click", 0), ("u", "y", "click", 7), ("u", "x", "impression", 7)],
    )
    snapshot = build_snapshot(data, SignalConfig(popularity_half_life_days=7))
    assert snapshot.popularity[0] == pytest.approx(0.5)
    assert snapshot.popularity[1] == pytest.approx(KIND_WEIGHT_BY_NAME["click"])
    assert snapshot.data_as_of is not None
    assert snapshot.data_as_of.timestamp() == pytest.approx(T0 + 7 * 86_400)


def test_history_is_distinct_recent_positive_items_newest_first_and_capped():
    snapshot = small_snapshot(history_length=2)
    a = snapshot.user_row("a")
    assert ids(snapshot, snapshot.history.row(a)[0]) == ["i3", "i2"]
    e = snapshot.user_row("e")
    assert ids(snapshot, snapshot.history.row(e)[0]) == ["i6", "i5"]  # impression excluded


def test_engaged_and_hidden_sets_per_user():
    snapshot = small_snapshot()
    c = snapshot.user_row("c")
    assert ids(snapshot, snapshot.engaged.row(c)[0]) == ["i2", "i3"]
    assert ids(snapshot, snapshot.hidden.row(c)[0]) == ["i6"]
    assert len(snapshot.engaged.row(snapshot.user_row("f"))[0]) == 0
    assert len(snapshot.engaged.row(-1)[0]) == 0


def test_neighbours_follow_taste_clusters_sorted_by_similarity():
    snapshot = small_snapshot()
    row, sims = snapshot.neighbours.row(snapshot.item_index["i1"])
    assert set(ids(snapshot, row)) <= {"i2", "i3"}
    assert ids(snapshot, row)[0] == "i2"  # a and b both engaged with i1 and i2
    assert np.all(np.diff(sims) <= 0)
    row5, _ = snapshot.neighbours.row(snapshot.item_index["i5"])
    assert "i1" not in ids(snapshot, row5)


def test_neighbours_per_item_caps_rows():
    snapshot = small_snapshot(neighbours_per_item=1)
    counts = np.diff(snapshot.neighbours.indptr)
    assert counts.max() == 1


def test_co_engagement_scores_candidates_against_seeds():
    snapshot = small_snapshot()
    seeds = snapshot.lookup_items(["i1"])
    scores = snapshot.co_engagement(seeds, snapshot.lookup_items(["i2", "i3", "i5"]))
    assert scores[0] > scores[1] > 0
    assert scores[2] == 0


def test_lookup_items_marks_unknown_ids():
    snapshot = small_snapshot()
    assert snapshot.lookup_items(["i2", "nope"]).tolist() == [1, -1]


@pytest.mark.parametrize(
    "hint",
    [
        [0, 1, 2, 3, 4, 5],  # all right
        [1, 0, 99, -1, 4, 0],  # swapped, past the end, negative, one right, unknown id's
        [3, 3, 3, 3, 3, 3],
        [0, 1],  # not one per id: not used
    ],
)
@pytest.mark.parametrize("id_bytes", [True, False], ids=["id bytes", "id tuple"])
def test_lookup_items_keeps_only_the_hinted_rows_that_hold_the_id(hint, id_bytes):
    snapshot = small_snapshot()
    if not id_bytes:  # as for a catalog whose ids do not fit the byte array
        snapshot = dataclasses.replace(snapshot, item_id_bytes=NO_ID_BYTES)
    item_ids = [*snapshot.item_ids[:4], snapshot.item_ids[4] + "\0", "nope"]
    expected = snapshot.lookup_items(item_ids)
    assert expected.tolist() == [0, 1, 2, 3, -1, -1]
    looked_up = snapshot.lookup_items(item_ids, np.array(hint))
    assert looked_up.tolist() == expected.tolist()
    assert looked_up.dtype == np.int64


@pytest.mark.parametrize("id_bytes", [True, False], ids=["id bytes", "id tuple"])
def test_item_ids_of_reads_the_ids_at_indices(id_bytes):
    snapshot = small_snapshot()
    if not id_bytes:
        snapshot = dataclasses.replace(snapshot, item_id_bytes=NO_ID_BYTES)
    items = np.array([3, 0, 3, 7])
    assert snapshot.item_ids_of(items) == [snapshot.item_ids[i] for i in items.tolist()]
    assert snapshot.item_ids_of(np.zeros(0, dtype=np.int64)) == []


def test_empty_database_builds_an_empty_snapshot():
    snapshot = build_snapshot(make_data([], [], []), SignalConfig())
    assert len(snapshot.popular_items) == 0
    assert snapshot.data_as_of is None
    assert snapshot.popularity_head(np.zeros(0, dtype=np.int64)).shape == (0,)


def test_snapshot_id_follows_the_data_fingerprint():
    first = small_snapshot()
    assert first.snapshot_id == small_snapshot().snapshot_id
    other = build_snapshot(make_data([("x", "", "active")], [], []), SignalConfig())
    assert other.snapshot_id != first.snapshot_id


def test_recent_impressions_are_remembered_newest_first_within_ttl_and_cap():
    data = make_data(
        [(f"i{n}", "", "active") for n in range(5)],
        ["u", "v"],
        [
            ("u", "i0", "impression", 0),
            ("u", "i1", "impression", 9),
            ("u", "i2", "impression", 9.5),
            ("u", "i3", "impression", 10),
            ("u", "i3", "impression", 10),
            ("u", "i4", "click", 10),
        ],
    )
    snapshot = build_snapshot(data, SignalConfig(seen_ttl_hours=48, seen_max_items=2))
    assert ids(snapshot, snapshot.impressed.row(snapshot.user_row("u"))[0]) == ["i3", "i2"]
    assert len(snapshot.impressed.row(snapshot.user_row("v"))[0]) == 0
    wide = build_snapshot(data, SignalConfig(seen_ttl_hours=24 * 30))
    assert ids(snapshot, wide.impressed.row(0)[0]) == ["i3", "i2", "i1", "i0"]


def test_trending_items_are_those_whose_recent_engagement_outruns_their_popularity():
    users = [f"u{n}" for n in range(21)]
    steady = [(users[d], "x", "click", d) for d in range(21)]  # one click a day, days 0-20
    burst = [(users[n], "y", "click", 20) for n in range(5)]  # five clicks on day 20
    faded = [(users[d], "z", "click", d) for d in range(6)]  # clicks on days 0-5 only
    data = make_data(
        [("x", "", "active"), ("y", "", "active"), ("z", "", "active")],
        users,
        [*steady, *burst, *faded],
    )
    snapshot = build_snapshot(data, SignalConfig(trending_half_life_hours=24))
    assert ids(snapshot, snapshot.trending_items) == ["y", "x"]
    assert snapshot.trending[2] < 0 < snapshot.trending[0] < snapshot.trending[1]
    assert ids(snapshot, snapshot.popular_items)[0] == "x"  # popularity alone ranks y lower


def test_status_changes_take_items_out_of_every_list_without_a_rebuild():
    snapshot = small_snapshot()
    i1 = snapshot.item_index["i1"]
    assert i1 in snapshot.popular_items
    updated = with_item_statuses(snapshot, [("i1", "hidden"), ("not-in-snapshot", "deleted")])
    assert not updated.item_active[i1]
    assert i1 not in updated.popular_items
    assert i1 not in updated.trending_items
    assert i1 not in updated.category_items.indices
    assert updated.snapshot_id == snapshot.snapshot_id
    assert snapshot.item_active[i1]  # the old snapshot is untouched
    assert with_item_statuses(snapshot, [("i1", "active")]) is snapshot  # nothing changed


def test_new_seen_events_join_the_seen_items_as_a_full_build_would():
    items = [(f"i{n}", "", "active") for n in range(4)]
    before = [("u", "i0", "click", 5), ("u", "i1", "impression", 0), ("u", "i2", "impression", 5)]
    after = [("u", "i3", "impression", 5.5), ("u", "i0", "hide", 5.5)]
    config = SignalConfig(seen_ttl_hours=24)
    snapshot = build_snapshot(make_data(items, ["u"], before), config)
    added = [(user, item, kind, T0 + day * 86_400) for user, item, kind, day in after]
    added.append(("stranger", "i1", "hide", T0 + 5.5 * 86_400))
    updated = with_seen_events(snapshot, added, config)
    rebuilt = build_snapshot(make_data(items, ["u"], before + after), config)
    for field in ("impressed", "hidden"):
        new, full = getattr(updated, field), getattr(rebuilt, field)
        assert ids(updated, new.indices) == ids(rebuilt, full.indices), field
        np.testing.assert_array_equal(new.indptr, full.indptr)
    assert ids(updated, updated.impressed.row(0)[0]) == ["i3", "i2"]  # i1 is older than 24 h
    assert with_seen_events(snapshot, [("stranger", "i1", "hide", T0)], config) is snapshot


def test_csr_entry_rows_where_and_transpose():
    rows = Csr(np.array([0, 2, 2, 3]), np.array([1, 0, 1]), np.array([5.0, 6.0, 7.0]))
    assert rows.n_rows == 3
    assert rows.entry_rows().tolist() == [0, 0, 2]
    kept = rows.where(np.array([False, True, True]))
    assert kept.indptr.tolist() == [0, 1, 1, 2]
    assert kept.indices.tolist() == [0, 1]
    columns = rows.transpose(3)
    assert columns.indptr.tolist() == [0, 1, 3, 3]
    assert columns.indices.tolist() == [0, 0, 2]
    assert columns.data.tolist() == [6.0, 5.0, 7.0]


def test_item_categories_keep_each_items_order_once_and_categories_list_popular_items():
    data = dataclasses.replace(
        make_data(
            [("i1", "c", "active"), ("i2", "c", "active"), ("i3", "c", "active")],
            ["u1", "u2"],
            [("u1", "i1", "click", 0), ("u2", "i1", "click", 0), ("u1", "i3", "click", 0)],
        ),
        item_categories=[("b", "a", "b"), (), ("z", "b")],
    )
    snapshot = build_snapshot(data, SignalConfig())
    assert snapshot.categories == ["a", "b", "z"]
    rows = [snapshot.item_categories.row(i)[0].tolist() for i in range(3)]
    assert rows == [[1, 0], [], [2, 1]]
    assert snapshot.item_primary_category.tolist() == [1, -1, 2]
    by_category = [ids(snapshot, snapshot.category_items.row(c)[0]) for c in range(3)]
    assert by_category == [["i1"], ["i1", "i3"], ["i3"]]  # most popular first
    assert snapshot.category_members(1).tolist() == [True, False, True]
    assert snapshot.category_members(2).tolist() == [False, False, True]
    in_a_or_z = snapshot.in_categories(np.array([2, 1, 0, 2]), np.array([0, 2]))
    assert in_a_or_z.tolist() == [True, False, True, True]
    assert snapshot.in_categories(np.array([0, 1]), np.zeros(0, dtype=np.int64)).tolist() == [
        False,
        False,
    ]
