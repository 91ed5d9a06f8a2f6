"""The blending policy's placement rules, one at a time, on a catalog built for them."""

import dataclasses

import numpy as np
import pytest
from support.engagement import make_data

from cascade_server.blending.filters import CategoryFilter, DuplicateFilter
from cascade_server.blending.policy import SurfacePolicy
from cascade_server.blending.release import ItemVectors
from cascade_server.blending.stage import BlendingStage, BlendRequest, Demotion, Slot
from cascade_server.features.engagement import SignalConfig, build_snapshot
from cascade_server.pipeline.types import BlendAction, ScoredCandidate, SourceHit, SourceKind

# Twelve items: d* are dramas, c* comedies, h* horror; each item its own creator except
# the two "same" items. d1 and d1r share a title (a re-upload).
ITEMS = {
    "d1": ("Drama", "Storm"),
    "d1r": ("Drama", "storm "),
    "d2": ("Drama", "Rain"),
    "d3": ("Drama", "Snow"),
    "d4": ("Drama", "Hail"),
    "c1": ("Comedy", "Laugh"),
    "c2": ("Comedy", "Smile"),
    "h1": ("Horror", "Fear"),
    "h2": ("Horror", "Dread"),
    "s1": ("Comedy", "Same one"),
    "s2": ("Comedy", "Same two"),
    "f1": ("Horror", "Brand new"),
}
CREATORS = {"s1": "same", "s2": "same"}
DATA = dataclasses.replace(
    make_data([(i, CREATORS.get(i, f"by-{i}"), "active") for i in ITEMS], ["u"], []),
    item_categories=[(category,) for category, _ in ITEMS.values()],
    item_titles=[title for _, title in ITEMS.values()],
)
SNAPSHOT = build_snapshot(DATA, SignalConfig())
# Dramas point one way, comedies another, horror a third: similar within a genre.
AXIS = {"Drama": 0, "Comedy": 1, "Horror": 2}
VECTORS = ItemVectors(
    list(ITEMS), np.eye(3, dtype=np.float32)[[AXIS[c] for c, _ in ITEMS.values()]]
)


def scored(*item_ids, fresh=()):
    n = len(item_ids)
    return [
        ScoredCandidate(
            item_id,
            float(n - i),
            sources=(SourceHit(SourceKind.FRESH, fresh.index(item_id), 0.0),)
            if item_id in fresh
            else (),
        )
        for i, item_id in enumerate(item_ids)
    ]


def blend(candidates, page_size=4, *, vectors=None, random_key="", **policy):
    request = BlendRequest(SurfacePolicy(**policy), page_size, random_key=random_key)
    return BlendingStage().blend(SNAPSHOT, candidates, request, vectors)


def page(result):
    return [item.candidate.item_id for item in result.items]


def outcome(result, item_id):
    return next(o for o in result.outcomes if o.candidate.item_id == item_id)


def test_without_rules_the_page_follows_the_ranking():
    assert page(blend(scored("d1", "d2", "d3", "c1", "h1"))) == ["d1", "d2", "d3", "c1"]


def test_title_dedup_removes_a_reupload_but_item_id_dedup_alone_keeps_it():
    candidates = scored("d1", "d1r", "c1")
    assert page(blend(candidates)) == ["d1", "d1r", "c1"]
    result = blend(candidates, dedup_keys=["item_id", "title"])
    assert page(result) == ["d1", "c1"]
    assert outcome(result, "d1r").reason == "same title as a higher-ranked item"


def test_duplicate_filter_ignores_empty_titles_and_unknown_items():
    snapshot = build_snapshot(
        dataclasses.replace(DATA, item_titles=[""] * len(ITEMS)), SignalConfig()
    )
    ids = ["d1", "d2", "nope"]
    assert (
        DuplicateFilter(snapshot, ("item_id", "title")).removals(ids, snapshot.lookup_items(ids))
        == {}
    )


def test_excluded_categories_are_removed_with_the_reason():
    ids = ["h1", "d1", "h2", "nope"]
    assert CategoryFilter(SNAPSHOT, {"Horror", "Unknown"}).removals(
        ids, SNAPSHOT.lookup_items(ids)
    ) == {0: "category Horror is excluded", 2: "category Horror is excluded"}
    assert page(blend(scored("h1", "d1", "c1"), exclude_categories={"Horror"})) == ["d1", "c1"]


def test_mmr_interleaves_genres_as_lambda_falls():
    candidates = scored("d1", "d2", "d3", "d4", "c1", "h1")
    assert page(blend(candidates, vectors=VECTORS, diversity_lambda=1.0)) == [
        "d1", "d2", "d3", "d4"
    ]  # fmt: skip
    diverse = blend(candidates, vectors=VECTORS, diversity_lambda=0.5)
    assert page(diverse) == ["d1", "c1", "h1", "d2"]
    assert outcome(diverse, "d3").action is BlendAction.DEMOTED
    assert outcome(diverse, "d3").demoted_by is Demotion.DIVERSITY
    assert outcome(diverse, "d2").demoted_by is Demotion.DIVERSITY
    assert outcome(diverse, "d1").demoted_by is None


def test_mmr_without_embeddings_is_relevance_order():
    candidates = scored("d1", "d2", "c1")
    assert page(blend(candidates, diversity_lambda=0.2)) == ["d1", "d2", "c1"]


def test_category_spacing_keeps_same_category_items_apart():
    result = blend(scored("d1", "d2", "d3", "c1", "c2", "h1"), page_size=6, category_spacing=1)
    assert page(result) == ["d1", "c1", "d2", "c2", "d3", "h1"]
    assert outcome(result, "d2").demoted_by is Demotion.CATEGORY_SPACING
    wide = blend(scored("d1", "d2", "c1", "h1", "c2"), page_size=5, category_spacing=2)
    assert page(wide) == ["d1", "c1", "h1", "d2", "c2"]


def test_category_spacing_is_relaxed_when_nothing_else_fits():
    assert page(blend(scored("d1", "d2", "d3"), category_spacing=1)) == ["d1", "d2", "d3"]


def test_a_candidate_passed_over_twice_is_traced_with_the_later_rule():
    # Slot 2 passes d2 over for the spacing (after d1), slot 3 for diversity (like d1).
    result = blend(
        scored("d1", "d2", "c1", "h1"), vectors=VECTORS, diversity_lambda=0.5, category_spacing=1
    )
    assert page(result) == ["d1", "c1", "h1", "d2"]
    assert outcome(result, "d2").demoted_by is Demotion.DIVERSITY
    spaced_only = blend(scored("d1", "d2", "c1", "h1"), category_spacing=1)
    assert page(spaced_only) == ["d1", "c1", "d2", "h1"]
    assert outcome(spaced_only, "d2").demoted_by is Demotion.CATEGORY_SPACING


def test_the_creator_cap_is_hard_and_traced():
    result = blend(scored("s1", "s2", "d1"), max_items_per_creator=1)
    assert page(result) == ["s1", "d1"]
    assert outcome(result, "s2").action is BlendAction.CAPPED
    assert outcome(result, "s2").demoted_by is Demotion.CREATOR_CAP


def test_fresh_slots_take_fresh_candidates_in_the_fresh_sources_order():
    candidates = scored("d1", "d2", "d3", "c1", "c2", "f1", "h2", fresh=("h2", "f1"))
    result = blend(candidates, page_size=4, fresh_share=0.5)
    placed = {item.candidate.item_id: item.slot for item in result.items}
    assert [i for i, slot in placed.items() if slot is Slot.FRESH] == ["h2", "f1"]
    assert page(result)[0] == "d1", "the first position always stays ranked"
    assert outcome(result, "h2").slot is Slot.FRESH


def test_fresh_slots_fall_back_to_ranked_when_nothing_is_fresh():
    result = blend(scored("d1", "d2", "d3", "c1", "c2"), page_size=4, fresh_share=0.5)
    assert page(result) == ["d1", "d2", "d3", "c1"]
    assert all(item.slot is Slot.RANKED for item in result.items)


def test_exploration_draws_from_below_the_page_and_is_reproducible():
    candidates = scored("d1", "d2", "d3", "d4", "c1", "c2", "h1", "h2", "s1", "s2")
    pages = {
        key: blend(candidates, page_size=4, exploration_share=0.5, random_key=key)
        for key in ("a", "b", "c", "d", "e", "f")
    }
    for key, result in pages.items():
        explored = [i.candidate.item_id for i in result.items if i.slot is Slot.EXPLORATION]
        assert len(explored) == 2
        assert set(explored) <= {"c1", "c2", "h1", "h2", "s1", "s2"}, "drawn from below the page"
        again = blend(candidates, page_size=4, exploration_share=0.5, random_key=key)
        assert page(again) == page(result), "same request, same page"
    assert len({tuple(page(r)) for r in pages.values()}) > 1, "different requests explore apart"


def test_exploration_depth_bounds_the_draw():
    candidates = scored("d1", "d2", "d3", "d4", "c1", "c2", "h1")
    for key in "abcdefgh":
        result = blend(
            candidates, page_size=2, exploration_share=0.5, exploration_depth=3, random_key=key
        )
        assert page(result) == ["d1", "d3"]


def test_head_weights_reorder_the_heavy_scored_candidates():
    heads = {"d1": (0.9, 0.0), "d2": (0.1, 0.9), "d3": (0.5, 0.5)}
    candidates = [
        ScoredCandidate(i, 10.0 - k, head_scores={"click": click, "like": like})
        for k, (i, (click, like)) in enumerate(heads.items())
    ] + scored("c1")
    assert page(blend(candidates)) == ["d1", "d2", "d3", "c1"]
    liked = blend(candidates, head_weights={"like": 1.0})
    assert page(liked) == ["d2", "d3", "d1", "c1"]
    mixed = blend(candidates, head_weights={"click": 2.0, "like": 1.0})
    assert page(mixed) == ["d1", "d3", "d2", "c1"]
    partial = [*candidates[:2], dataclasses.replace(candidates[2], head_scores={"click": 0.5})]
    assert page(blend(partial, head_weights={"like": 1.0}))[:3] == ["d2", "d1", "d3"], (
        "a candidate without every weighted head keeps its place"
    )


def test_category_boosts_move_items_up_and_down():
    candidates = scored("d1", "d2", "c1", "h1")
    assert page(blend(candidates, category_boosts={"Horror": 0.9})) == ["h1", "d1", "d2", "c1"]
    assert page(blend(candidates, category_boosts={"Drama": -0.9})) == ["c1", "h1", "d1", "d2"]
    result = blend(candidates, category_boosts={"Horror": 0.9})
    assert outcome(result, "h1").blend_score == pytest.approx(1.0 - 3 / 4 + 0.9)


def test_mmr_places_the_greedy_choice_however_deep_it_lies():
    # 300 candidates in five tight clusters: the lower lambda is, the further down the
    # ranking a slot reaches for something unlike the page; each slot must take the
    # best value over every candidate, as a plain greedy loop in float64 does.
    n, page_size = 300, 20
    item_ids = [f"m{k}" for k in range(n)]
    snapshot = build_snapshot(
        make_data([(i, i, "active") for i in item_ids], ["u"], []), SignalConfig()
    )
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((5, 8))
    raw = centres[rng.integers(0, 5, n)] + 0.3 * rng.standard_normal((n, 8))
    vectors = ItemVectors(item_ids, raw.astype(np.float32))
    order = rng.permutation(n)
    unit = raw[order].astype(np.float32).astype(np.float64)  # by rank, as placed
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    candidates = [ScoredCandidate(item_ids[k], float(n - r)) for r, k in enumerate(order)]
    relevance = 1.0 - np.arange(n) / n
    deepest = {}
    for lam in (0.9, 0.6, 0.3):
        expected: list[int] = []
        largest = np.zeros(n)
        for _ in range(page_size):
            value = lam * relevance - (1 - lam) * largest
            value[expected] = -np.inf
            best = int(np.argmax(value))
            expected.append(best)
            largest = np.maximum(largest, unit @ unit[best])
        request = BlendRequest(SurfacePolicy(diversity_lambda=lam), page_size)
        result = BlendingStage().blend(snapshot, candidates, request, vectors)
        assert page(result) == [item_ids[order[r]] for r in expected]
        deepest[lam] = max(expected)
    assert deepest[0.3] >= 2 * page_size > deepest[0.9]
