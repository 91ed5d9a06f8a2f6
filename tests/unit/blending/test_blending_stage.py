import pytest
from support.engagement import make_data, small_snapshot

from cascade_server.blending.paging import item_key
from cascade_server.blending.policy import SurfacePolicy
from cascade_server.blending.stage import BlendingStage, BlendRequest
from cascade_server.features.engagement import SignalConfig, build_snapshot
from cascade_server.pipeline.types import BlendAction, ScoredCandidate

# Creator "ca" has five items, "cb" two, and three items have no creator. x1 is hidden in
# the catalog; user u liked b2 and hid a5.
ITEMS = [
    ("a1", "ca", "active"),
    ("a2", "ca", "active"),
    ("a3", "ca", "active"),
    ("a4", "ca", "active"),
    ("a5", "ca", "active"),
    ("b1", "cb", "active"),
    ("b2", "cb", "active"),
    ("n1", "", "active"),
    ("n2", "", "active"),
    ("n3", "", "active"),
    ("x1", "cb", "hidden"),
]
SNAPSHOT = build_snapshot(
    make_data(ITEMS, ["u"], [("u", "b2", "like", 0), ("u", "a5", "hide", 1)]), SignalConfig()
)


def scored(*item_ids):
    n = len(item_ids)
    return [ScoredCandidate(item_id, float(n - i)) for i, item_id in enumerate(item_ids)]


def blend(
    candidates,
    *,
    user_id="",
    page_size=10,
    cap=2,
    served=frozenset(),
    snapshot=SNAPSHOT,
    vectors=None,
    random_key="",
    **policy,
):
    request = BlendRequest(
        SurfacePolicy(max_items_per_creator=cap, **policy),
        page_size,
        user_id=user_id,
        served=served,
        random_key=random_key,
    )
    return BlendingStage().blend(snapshot, candidates, request, vectors)


def placed(result):
    return [item.candidate.item_id for item in result.items]


def actions(result):
    return [(o.candidate.item_id, o.action) for o in result.outcomes]


def assert_outcomes_follow_input(result, candidates):
    assert [o.candidate for o in result.outcomes] == list(candidates)
    assert [id(o.candidate) for o in result.outcomes] == [id(c) for c in candidates]


def test_the_page_size_is_respected_and_the_rest_is_below_the_page():
    candidates = scored("n1", "a1", "b1", "n2", "n3")
    result = blend(candidates, page_size=3)
    assert placed(result) == ["n1", "a1", "b1"]
    assert result.has_more
    assert actions(result)[3:] == [("n2", BlendAction.BELOW_PAGE), ("n3", BlendAction.BELOW_PAGE)]
    assert_outcomes_follow_input(result, candidates)


def test_a_page_that_takes_every_candidate_has_no_more():
    result = blend(scored("n1", "a1", "b1"), page_size=3)
    assert placed(result) == ["n1", "a1", "b1"]
    assert not result.has_more
    assert not blend(scored("n1"), page_size=3).has_more


def test_items_of_a_creator_beyond_the_cap_are_capped():
    candidates = scored("a1", "a2", "a3", "b1", "a4", "n1")
    result = blend(candidates, cap=2)
    assert placed(result) == ["a1", "a2", "b1", "n1"]
    assert result.has_more
    capped = [o for o in result.outcomes if o.action is BlendAction.CAPPED]
    assert [o.candidate.item_id for o in capped] == ["a3", "a4"]
    for outcome in capped:
        assert outcome.removed_by == "creator_cap"
        assert outcome.reason == "creator ca already has 2 items on the page"
        assert outcome.position == -1
    assert [item.creator_id for item in result.items] == ["ca", "ca", "cb", ""]
    assert_outcomes_follow_input(result, candidates)


def test_a_capped_item_alone_sets_has_more():
    result = blend(scored("a1", "a2"), cap=1, page_size=10)
    assert placed(result) == ["a1"]
    assert actions(result)[1] == ("a2", BlendAction.CAPPED)
    assert result.has_more


@pytest.mark.parametrize("cap", [1, 2])
def test_items_without_a_creator_are_never_capped(cap):
    candidates = scored("n1", "n2", "n3", "a1")
    result = blend(candidates, cap=cap)
    assert placed(result)[:3] == ["n1", "n2", "n3"]
    assert all(o.action is not BlendAction.CAPPED for o in result.outcomes[:3])


def test_below_page_comes_after_a_full_page_even_for_capped_creators():
    candidates = scored("a1", "a2", "b1", "a3", "n1")
    result = blend(candidates, page_size=2, cap=1)
    assert actions(result) == [
        ("a1", BlendAction.PLACED),
        ("a2", BlendAction.CAPPED),
        ("b1", BlendAction.PLACED),
        ("a3", BlendAction.BELOW_PAGE),
        ("n1", BlendAction.BELOW_PAGE),
    ]
    assert result.has_more


def test_placed_positions_are_page_positions():
    candidates = scored("x1", "a1", "a2", "a3", "b1", "zzz", "n1", "a1")
    result = blend(candidates, cap=2)
    positions = [o.position for o in result.outcomes if o.action is BlendAction.PLACED]
    assert positions == list(range(len(result.items)))
    by_position = {o.position: o.candidate.item_id for o in result.outcomes if o.position >= 0}
    assert [by_position[i] for i in range(len(result.items))] == placed(result)
    assert all(o.position == -1 for o in result.outcomes if o.action is not BlendAction.PLACED)


def test_every_filter_runs_and_outcomes_say_who_removed_what():
    candidates = scored("a5", "a1", "zzz", "x1", "b2", "a1", "n1", "b1", "n2")
    served = frozenset({item_key("n1")})
    result = blend(candidates, user_id="u", served=served)
    assert placed(result) == ["a1", "b1", "n2"]
    removed = {
        (o.candidate.item_id, o.removed_by, o.reason)
        for o in result.outcomes
        if o.action is BlendAction.REMOVED
    }
    assert removed == {
        ("a5", "seen_items", "the user hid this item"),
        ("zzz", "unavailable_items", "not in the catalog"),
        ("x1", "unavailable_items", "hidden or deleted in the catalog"),
        ("b2", "seen_items", "the user already engaged with it"),
        ("a1", "duplicates", "duplicate of a higher-ranked entry"),
        ("n1", "earlier_pages", "shown on an earlier page"),
    }
    assert_outcomes_follow_input(result, candidates)
    assert not result.has_more


def test_components_report_counts_in_order():
    candidates = scored("a1", "a1", "zzz", "x1", "b2", "n1", "a2", "a3", "a4", "b1", "n2")
    result = blend(candidates, user_id="u", page_size=10, cap=2, served={item_key("n1")})
    reports = [(c.name, c.output_count, c.removed_count) for c in result.components]
    assert reports == [
        ("unavailable_items", 9, 2),
        ("excluded_categories", 9, 0),
        ("seen_items", 8, 1),
        ("earlier_pages", 7, 1),
        ("duplicates", 6, 1),
        ("placement", 4, 2),
    ]
    assert all(c.duration_s >= 0 for c in result.components)


def test_outcomes_cover_each_input_once_in_input_order():
    candidates = scored("n3", "a1", "x1", "a2", "a1", "a3", "zzz", "b2", "b1", "n1", "n2")
    result = blend(candidates, user_id="u", page_size=4, cap=2)
    assert_outcomes_follow_input(result, candidates)
    assert actions(result) == [
        ("n3", BlendAction.PLACED),
        ("a1", BlendAction.PLACED),
        ("x1", BlendAction.REMOVED),
        ("a2", BlendAction.PLACED),
        ("a1", BlendAction.REMOVED),
        ("a3", BlendAction.CAPPED),
        ("zzz", BlendAction.REMOVED),
        ("b2", BlendAction.REMOVED),
        ("b1", BlendAction.PLACED),
        ("n1", BlendAction.BELOW_PAGE),
        ("n2", BlendAction.BELOW_PAGE),
    ]


def test_outcomes_follow_the_input_when_one_object_is_listed_twice():
    a1, b1 = scored("a1", "b1")
    candidates = [a1, b1, a1]
    result = blend(candidates)
    assert_outcomes_follow_input(result, candidates)
    assert actions(result) == [
        ("a1", BlendAction.PLACED),
        ("b1", BlendAction.PLACED),
        ("a1", BlendAction.REMOVED),
    ]
    assert [o.position for o in result.outcomes] == [0, 1, -1]


def test_placed_items_keep_the_candidate_and_its_score():
    candidates = scored("b1", "n1")
    result = blend(candidates)
    assert [item.candidate for item in result.items] == candidates
    assert [item.creator_id for item in result.items] == ["cb", ""]


def test_no_candidates_give_an_empty_page():
    result = blend([])
    assert result.items == []
    assert not result.has_more
    assert result.outcomes == []
    assert [c.output_count for c in result.components] == [0, 0, 0, 0, 0, 0]


def test_the_small_snapshot_for_a_user_with_history():
    # c engaged with i2, i3 and hid i6; i4 and i8 are inactive.
    snapshot = small_snapshot()
    candidates = scored("i6", "i1", "i2", "i3", "i4", "i5", "i7", "i8")
    result = blend(candidates, user_id="c", snapshot=snapshot, page_size=10, cap=1)
    assert placed(result) == ["i1", "i5", "i7"]
    assert not result.has_more
    assert_outcomes_follow_input(result, candidates)
