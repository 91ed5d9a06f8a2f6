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

SNAPSHOT = small_snapshot()


def run(component, item_ids, snapshot=SNAPSHOT):
    """The ids ``component`` keeps, and the (id, reason) of those it removes, in order."""
    item_ids = list(item_ids)
    found = component.removals(item_ids, snapshot.lookup_items(item_ids))
    assert all(0 <= position < len(item_ids) and why for position, why in found.items())
    kept = [item for position, item in enumerate(item_ids) if position not in found]
    return kept, [(item_ids[position], found[position]) for position in sorted(found)]


def test_duplicate_filter_keeps_the_first_occurrence():
    kept, removed = run(DuplicateFilter(SNAPSHOT), ["i3", "i1", "i3", "i2", "i1", "i3"])
    assert kept == ["i3", "i1", "i2"]
    assert removed == [
        ("i3", "duplicate of a higher-ranked entry"),
        ("i1", "duplicate of a higher-ranked entry"),
        ("i3", "duplicate of a higher-ranked entry"),
    ]
    assert DuplicateFilter.name == "duplicates"


def test_duplicate_filter_without_repeats_removes_nothing():
    assert run(DuplicateFilter(SNAPSHOT), ["i1", "i2", "x"]) == (["i1", "i2", "x"], [])


def test_unavailable_filter_removes_unknown_hidden_and_deleted_items():
    kept, removed = run(UnavailableItemFilter(SNAPSHOT), ["i4", "i1", "nope", "i8", "i7", ""])
    assert kept == ["i1", "i7"]
    assert removed == [
        ("i4", "hidden or deleted in the catalog"),
        ("nope", "not in the catalog"),
        ("i8", "hidden or deleted in the catalog"),
        ("", "not in the catalog"),
    ]
    assert UnavailableItemFilter.name == "unavailable_items"


def test_seen_filter_removes_engaged_and_hidden_items_and_says_which():
    # c engaged with i2 and i3 and hid i6.
    kept, removed = run(SeenItemsFilter(SNAPSHOT, "c"), ["i6", "i1", "i2", "i5", "i3", "i7"])
    assert kept == ["i1", "i5", "i7"]
    assert removed == [
        ("i6", "the user hid this item"),
        ("i2", "the user already engaged with it"),
        ("i3", "the user already engaged with it"),
    ]
    assert SeenItemsFilter.name == "seen_items"


def test_seen_filter_removes_items_shown_within_the_ttl():
    # e was shown i1 on the newest day of the data; e engaged with i5 and i6.
    kept, removed = run(SeenItemsFilter(SNAPSHOT, "e"), ["i1", "i5", "i6", "i7"])
    assert kept == ["i7"]
    assert removed == [
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
    assert run(SeenItemsFilter(day, "u"), ["x", "y"], day)[0] == ["x"]
    off = build_snapshot(data, SignalConfig(seen_ttl_hours=0))
    assert run(SeenItemsFilter(off, "u"), ["x", "y"], off)[0] == ["x", "y"]


def test_hiding_wins_over_engagement_in_the_reason():
    data = make_data(
        [("x", "c", "active"), ("y", "c", "active")],
        ["u"],
        [("u", "x", "click", 0), ("u", "x", "hide", 1), ("u", "y", "like", 1)],
    )
    snapshot = build_snapshot(data, SignalConfig())
    assert run(SeenItemsFilter(snapshot, "u"), ["y", "x"], snapshot)[1] == [
        ("y", "the user already engaged with it"),
        ("x", "the user hid this item"),
    ]


@pytest.mark.parametrize("user_id", ["", "never-seen", "f"])
def test_seen_filter_keeps_everything_for_users_without_history(user_id):
    candidates = ["i1", "i2", "i6", "unknown"]
    assert run(SeenItemsFilter(SNAPSHOT, user_id), candidates) == (candidates, [])


def test_seen_filter_keeps_unknown_ids_for_a_user_with_history():
    assert run(SeenItemsFilter(SNAPSHOT, "c"), ["unknown", "i2", "i1"])[0] == ["unknown", "i1"]


def test_seen_filter_on_no_candidates():
    assert run(SeenItemsFilter(SNAPSHOT, "a"), []) == ([], [])


def test_served_filter_removes_items_of_earlier_pages():
    served = frozenset({item_key("i2"), item_key("i5"), item_key("zzz"), item_key("not-here")})
    kept, removed = run(ServedItemsFilter(served), ["i1", "i2", "i3", "i5", "zzz"])
    assert kept == ["i1", "i3"]
    assert removed == [
        ("i2", "shown on an earlier page"),
        ("i5", "shown on an earlier page"),
        ("zzz", "shown on an earlier page"),
    ]
    assert ServedItemsFilter.name == "earlier_pages"


def test_served_filter_with_nothing_served_keeps_everything():
    assert run(ServedItemsFilter(frozenset()), ["i1", "i1", "x"]) == (["i1", "i1", "x"], [])


def test_seen_filter_finds_every_recent_impression_whatever_their_order():
    # Shown newest first: z, x, w, y (index order w, x, y, z): every one is removed.
    items = [(name, "c", "active") for name in ("w", "x", "y", "z", "v")]
    shown = [("u", "y", "impression", 0), ("u", "w", "impression", 1)]
    shown += [("u", "x", "impression", 2), ("u", "z", "impression", 3)]
    snapshot = build_snapshot(make_data(items, ["u"], shown), SignalConfig(seen_ttl_hours=1000))
    assert [snapshot.item_ids[i] for i in snapshot.impressed.row(0)[0]] == ["z", "x", "w", "y"]
    kept, removed = run(SeenItemsFilter(snapshot, "u"), ["v", "z", "w", "y", "x"], snapshot)
    assert kept == ["v"]
    assert [item for item, _ in removed] == ["z", "w", "y", "x"]
