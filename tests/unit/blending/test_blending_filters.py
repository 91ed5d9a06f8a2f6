from collections import Counter

import pytest
from support.engagement import make_data, small_snapshot

from cascade_server.blending.filters import (
    DuplicateFilter,
    SeenItemsFilter,
    ServedItemsFilter,
    UnavailableItemFilter,
)
from cascade_server.blending.paging import item_key
from cascade_server.features.engagement import SignalConfig, build_snapshot
from cascade_server.pipeline.types import ScoredCandidate

SNAPSHOT = small_snapshot()


def scored(*item_ids):
    n = len(item_ids)
    return [ScoredCandidate(item_id, float(n - i)) for i, item_id in enumerate(item_ids)]


def ids(candidates):
    return [c.item_id for c in candidates]


def removals(result):
    return [(r.candidate.item_id, r.reason) for r in result.removed]


def assert_partition(result, candidates):
    """Kept and removed together are the input; kept keeps the input order."""
    removed = [r.candidate for r in result.removed]
    assert Counter(map(id, result.kept + removed)) == Counter(map(id, candidates))
    kept = iter(result.kept)
    expected = next(kept, None)
    for candidate in candidates:
        if candidate is expected:
            expected = next(kept, None)
    assert expected is None, "kept is not a subsequence of the input"


def test_duplicate_filter_keeps_the_first_occurrence():
    candidates = scored("i3", "i1", "i3", "i2", "i1", "i3")
    result = DuplicateFilter(SNAPSHOT).apply(candidates)
    assert ids(result.kept) == ["i3", "i1", "i2"]
    assert result.kept[0] is candidates[0]
    assert result.kept[1] is candidates[1]
    assert removals(result) == [
        ("i3", "duplicate of a higher-ranked entry"),
        ("i1", "duplicate of a higher-ranked entry"),
        ("i3", "duplicate of a higher-ranked entry"),
    ]
    assert [r.candidate for r in result.removed] == [candidates[2], candidates[4], candidates[5]]
    assert_partition(result, candidates)


def test_duplicate_filter_treats_a_repeated_object_like_any_repeat():
    [candidate] = scored("i1")
    result = DuplicateFilter(SNAPSHOT).apply([candidate, candidate, candidate])
    assert result.kept == [candidate]
    assert len(result.removed) == 2
    assert DuplicateFilter.name == "duplicates"


def test_unavailable_filter_removes_unknown_hidden_and_deleted_items():
    candidates = scored("i4", "i1", "nope", "i8", "i7", "")
    result = UnavailableItemFilter(SNAPSHOT).apply(candidates)
    assert ids(result.kept) == ["i1", "i7"]
    assert removals(result) == [
        ("i4", "hidden or deleted in the catalog"),
        ("nope", "not in the catalog"),
        ("i8", "hidden or deleted in the catalog"),
        ("", "not in the catalog"),
    ]
    assert UnavailableItemFilter.name == "unavailable_items"
    assert_partition(result, candidates)


def test_seen_filter_removes_engaged_and_hidden_items_and_says_which():
    # c engaged with i2 and i3 and hid i6.
    candidates = scored("i6", "i1", "i2", "i5", "i3", "i7")
    result = SeenItemsFilter(SNAPSHOT, "c").apply(candidates)
    assert ids(result.kept) == ["i1", "i5", "i7"]
    assert removals(result) == [
        ("i6", "the user hid this item"),
        ("i2", "the user already engaged with it"),
        ("i3", "the user already engaged with it"),
    ]
    assert SeenItemsFilter.name == "seen_items"
    assert_partition(result, candidates)


def test_seen_filter_removes_items_shown_within_the_ttl():
    # e was shown i1 on the newest day of the data; e engaged with i5 and i6.
    result = SeenItemsFilter(SNAPSHOT, "e").apply(scored("i1", "i5", "i6", "i7"))
    assert ids(result.kept) == ["i7"]
    assert removals(result) == [
        ("i1", "the user was shown it recently"),
        ("i5", "the user already engaged with it"),
        ("i6", "the user already engaged with it"),
    ]


def test_seen_filter_keeps_items_shown_before_the_ttl_or_with_the_ttl_off():
    data = make_data(
        [("x", "c", "active"), ("y", "c", "active"), ("z", "c", "active")],
        ["u"],
        [("u", "x", "impression", 0), ("u", "y", "impression", 3), ("u", "z", "click", 3)],
    )
    day = build_snapshot(data, SignalConfig(seen_ttl_hours=24))
    assert ids(SeenItemsFilter(day, "u").apply(scored("x", "y")).kept) == ["x"]
    off = build_snapshot(data, SignalConfig(seen_ttl_hours=0))
    assert ids(SeenItemsFilter(off, "u").apply(scored("x", "y")).kept) == ["x", "y"]


def test_hiding_wins_over_engagement_in_the_reason():
    data = make_data(
        [("x", "c", "active"), ("y", "c", "active")],
        ["u"],
        [("u", "x", "click", 0), ("u", "x", "hide", 1), ("u", "y", "like", 1)],
    )
    snapshot = build_snapshot(data, SignalConfig())
    result = SeenItemsFilter(snapshot, "u").apply(scored("y", "x"))
    assert removals(result) == [
        ("y", "the user already engaged with it"),
        ("x", "the user hid this item"),
    ]


@pytest.mark.parametrize("user_id", ["", "never-seen", "f"])
def test_seen_filter_keeps_everything_for_users_without_history(user_id):
    candidates = scored("i1", "i2", "i6", "unknown")
    result = SeenItemsFilter(SNAPSHOT, user_id).apply(candidates)
    assert result.kept == candidates
    assert result.removed == []


def test_seen_filter_keeps_unknown_ids_for_a_user_with_history():
    candidates = scored("unknown", "i2", "i1")
    result = SeenItemsFilter(SNAPSHOT, "c").apply(candidates)
    assert ids(result.kept) == ["unknown", "i1"]
    assert_partition(result, candidates)


def test_seen_filter_on_no_candidates():
    result = SeenItemsFilter(SNAPSHOT, "a").apply([])
    assert result.kept == []
    assert result.removed == []


def test_served_filter_removes_items_of_earlier_pages():
    candidates = scored("i1", "i2", "i3", "i5", "zzz")
    served = frozenset({item_key("i2"), item_key("i5"), item_key("zzz"), item_key("not-here")})
    result = ServedItemsFilter(served).apply(candidates)
    assert ids(result.kept) == ["i1", "i3"]
    assert removals(result) == [
        ("i2", "shown on an earlier page"),
        ("i5", "shown on an earlier page"),
        ("zzz", "shown on an earlier page"),
    ]
    assert ServedItemsFilter.name == "earlier_pages"
    assert_partition(result, candidates)


def test_served_filter_with_nothing_served_keeps_everything():
    candidates = scored("i1", "i1", "x")
    result = ServedItemsFilter(frozenset()).apply(candidates)
    assert result.kept == candidates
    assert result.removed == []


@pytest.mark.parametrize(
    "make_filter",
    [
        lambda: DuplicateFilter(SNAPSHOT, ("item_id", "title")),
        lambda: UnavailableItemFilter(SNAPSHOT),
        lambda: SeenItemsFilter(SNAPSHOT, "c"),
        lambda: SeenItemsFilter(SNAPSHOT, "d"),
        lambda: ServedItemsFilter({item_key("i1"), item_key("i7")}),
    ],
)
def test_every_filter_partitions_its_input_in_order(make_filter):
    candidates = scored("i1", "i4", "i6", "x", "i1", "i2", "i8", "i7", "i6", "i3", "i5", "")
    result = make_filter().apply(candidates)
    assert_partition(result, candidates)
    assert all(r.reason for r in result.removed)
