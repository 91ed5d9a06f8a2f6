"""RetrieveCandidates, RankCandidates and BlendCandidates on the real servers."""

import pytest

from cascade.blending.v1 import blending_service_pb2 as blending_pb
from cascade.common.v1 import candidate_pb2, context_pb2, trace_pb2
from cascade.ranking.v1 import ranking_service_pb2 as ranking_pb
from cascade.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from cascade_client import InvalidArgumentError

CALLER = candidate_pb2.CANDIDATE_SOURCE_CALLER


def context(**fields):
    return context_pb2.RequestContext(**fields)


def test_retrieve_candidates_merges_sources_with_provenance(retrieval):
    response = retrieval.retrieve_candidates(
        retrieval_pb.RetrieveCandidatesRequest(context=context(user_id="u042"), max_candidates=300)
    )
    ids = [c.item_id for c in response.candidates]
    assert 0 < len(ids) <= 300
    assert len(set(ids)) == len(ids)
    assert response.release_id.startswith("baseline-")
    assert {hit.source for c in response.candidates for hit in c.sources} == {
        candidate_pb2.CANDIDATE_SOURCE_CO_ENGAGEMENT,
        candidate_pb2.CANDIDATE_SOURCE_RANDOM_WALK,
        candidate_pb2.CANDIDATE_SOURCE_CATEGORY_POPULAR,
        candidate_pb2.CANDIDATE_SOURCE_TRENDING,
        candidate_pb2.CANDIDATE_SOURCE_POPULAR,
        candidate_pb2.CANDIDATE_SOURCE_FRESH,
    }


def test_retrieve_candidates_in_columns_are_the_same_candidates(retrieval):
    request = retrieval_pb.RetrieveCandidatesRequest(
        context=context(user_id="u042"), max_candidates=300
    )
    rows = retrieval.retrieve_candidates(request)
    request.columnar = True
    columns = retrieval.retrieve_candidates(request)
    assert not columns.candidates
    assert list(columns.columns.item_ids) == [c.item_id for c in rows.candidates]
    assert list(columns.columns.hit_counts) == [len(c.sources) for c in rows.candidates]
    hits = [h for c in rows.candidates for h in c.sources]
    assert list(columns.columns.hit_sources) == [h.source for h in hits]
    assert list(columns.columns.hit_ranks) == [h.rank for h in hits]
    assert list(columns.columns.hit_scores) == pytest.approx([h.score for h in hits])
    # Each item's row in retrieval's catalog snapshot travels with it (a hint for ranking).
    assert len(columns.columns.item_rows) == len(rows.candidates)
    assert len(set(columns.columns.item_rows)) == len(rows.candidates)


def test_retrieve_candidates_honours_limits_exclusions_and_seeds(retrieval):
    popular_only = retrieval_pb.RetrieveCandidatesRequest(
        context=context(),
        source_limits=[
            retrieval_pb.SourceLimit(source=candidate_pb2.CANDIDATE_SOURCE_POPULAR, limit=5),
            retrieval_pb.SourceLimit(source=candidate_pb2.CANDIDATE_SOURCE_CO_ENGAGEMENT, limit=0),
            retrieval_pb.SourceLimit(source=candidate_pb2.CANDIDATE_SOURCE_RANDOM_WALK, limit=0),
            retrieval_pb.SourceLimit(source=candidate_pb2.CANDIDATE_SOURCE_TRENDING, limit=0),
            retrieval_pb.SourceLimit(
                source=candidate_pb2.CANDIDATE_SOURCE_CATEGORY_POPULAR, limit=0
            ),
            retrieval_pb.SourceLimit(source=candidate_pb2.CANDIDATE_SOURCE_FRESH, limit=0),
        ],
    )
    first = retrieval.retrieve_candidates(popular_only)
    assert len(first.candidates) == 5
    excluded = first.candidates[0].item_id
    popular_only.exclude_item_ids.append(excluded)
    second = retrieval.retrieve_candidates(popular_only)
    assert excluded not in [c.item_id for c in second.candidates]

    seeded = retrieval.retrieve_candidates(
        retrieval_pb.RetrieveCandidatesRequest(
            context=context(debug=True), seed_item_ids=["i0001", "missing"]
        )
    )
    assert list(seeded.unknown_seed_item_ids) == ["missing"]
    assert "i0001" not in [c.item_id for c in seeded.candidates]
    assert [c.name for c in seeded.trace.components] == [
        "co_engagement",
        "random_walk",
        "category_popular",
        "trending",
        "popular",
        "fresh",
    ]
    assert seeded.trace.stage == trace_pb2.STAGE_RETRIEVAL


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"max_candidates": 2001}, "max_candidates"),
        ({"seed_item_ids": ["s"] * 51}, "seed_item_ids"),
        ({"exclude_item_ids": [""]}, "exclude_item_ids[0]"),
        ({"context": context(user_id="u" * 129)}, "context.user_id"),
        (
            {
                "source_limits": [
                    retrieval_pb.SourceLimit(source=candidate_pb2.CANDIDATE_SOURCE_CALLER)
                ]
            },
            "source_limits[0].source",
        ),
    ],
)
def test_retrieve_candidates_rejects_bad_requests(retrieval, request_fields, field):
    with pytest.raises(InvalidArgumentError) as raised:
        retrieval.retrieve_candidates(retrieval_pb.RetrieveCandidatesRequest(**request_fields))
    assert field in [v.field for v in raised.value.field_violations]


def test_rank_candidates_sorts_and_reports_unknown_ids(ranking):
    ids = [f"i{n:04d}" for n in range(1, 501)] + ["nope"]
    response = ranking.rank_candidates(
        ranking_pb.RankCandidatesRequest(context=context(user_id="u042"), item_ids=ids)
    )
    assert len(response.candidates) == 500
    assert list(response.unknown_item_ids) == ["nope"]
    assert response.scorer == "baseline"
    keys = [(-c.score, c.item_id) for c in response.candidates]
    assert keys == sorted(keys)
    assert set(response.candidates[0].head_scores) == {"co_engagement", "popularity"}


def test_rank_candidates_in_columns_carry_the_final_scores_in_order(ranking):
    ids = [f"i{n:04d}" for n in range(1, 301)] + ["nope"]
    request = ranking_pb.RankCandidatesRequest(context=context(user_id="u042"), item_ids=ids)
    rows = ranking.rank_candidates(request)
    request.columnar = True
    columns = ranking.rank_candidates(request)
    assert not columns.candidates
    assert list(columns.columns.item_ids) == [c.item_id for c in rows.candidates]
    assert list(columns.columns.scores) == pytest.approx([c.score for c in rows.candidates])
    assert list(columns.unknown_item_ids) == ["nope"]
    # Each scored item's place in the request, for the caller to join on.
    assert [ids[p] for p in columns.columns.request_positions] == list(columns.columns.item_ids)
    # A debug request gets its score details: rows, whatever it asked.
    request.context.debug = True
    debug = ranking.rank_candidates(request)
    assert len(debug.candidates) == 300
    assert debug.candidates[0].head_scores


def test_rank_candidates_positions_point_at_each_ids_first_place(ranking):
    ids = ["i0005", "nope", "i0003", "i0005", "i0001", "i0003"]
    request = ranking_pb.RankCandidatesRequest(
        context=context(user_id="u042"), item_ids=ids, columnar=True, max_results=2
    )
    columns = ranking.rank_candidates(request).columns
    assert len(columns.item_ids) == 2
    first = {item_id: ids.index(item_id) for item_id in ids}
    assert list(columns.request_positions) == [first[i] for i in columns.item_ids]


def test_rank_candidates_scores_the_same_whatever_rows_the_caller_hints(ranking):
    request = ranking_pb.RankCandidatesRequest(
        context=context(user_id="u042"), item_ids=[f"i{n:04d}" for n in range(1, 201)]
    )
    request.columnar = True
    plain = ranking.rank_candidates(request)
    # Rows in catalog order, the same off by one, and nonsense: only time may differ.
    for hint in (range(200), range(1, 201), [10**6] * 100 + [-5] * 100):
        request.ClearField("item_rows")
        request.item_rows.extend(hint)
        hinted = ranking.rank_candidates(request)
        assert list(hinted.columns.item_ids) == list(plain.columns.item_ids)
        assert list(hinted.columns.scores) == list(plain.columns.scores)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"item_ids": []}, "item_ids"),
        ({"item_ids": ["i"] * 2001}, "item_ids"),
        ({"item_ids": ["x" * 129]}, "item_ids[0]"),
        ({"item_ids": ["i0001"], "max_results": -1}, "max_results"),
        ({"item_ids": ["i0001", "i0002"], "item_rows": [0]}, "item_rows"),
    ],
)
def test_rank_candidates_rejects_bad_requests(ranking, request_fields, field):
    with pytest.raises(InvalidArgumentError) as raised:
        ranking.rank_candidates(ranking_pb.RankCandidatesRequest(**request_fields))
    assert field in [v.field for v in raised.value.field_violations]


def test_blend_candidates_filters_caps_and_explains(blending):
    candidates = [
        candidate_pb2.ScoredCandidate(item_id=f"i{n:04d}", score=100.0 - n) for n in range(1, 40)
    ]
    candidates.append(candidate_pb2.ScoredCandidate(item_id="i0001", score=0.0))
    candidates.append(candidate_pb2.ScoredCandidate(item_id="ghost", score=0.0))
    response = blending.blend_candidates(
        blending_pb.BlendCandidatesRequest(
            context=context(user_id="u042", debug=True),
            candidates=candidates,
            page_size=10,
            max_items_per_creator=1,
        )
    )
    ids = [item.item_id for item in response.items]
    assert len(ids) == 10
    assert len({item.creator_id for item in response.items}) == 10
    actions = {c.item_id: c for c in response.trace.candidates}
    assert len(response.trace.candidates) == len(candidates)
    assert actions["ghost"].removed_by == "unavailable_items"
    assert any(c.removed_by == "duplicates" for c in response.trace.candidates)
    assert response.release_id.startswith("baseline-")


def test_blend_candidates_follow_the_surface_policy_and_its_overrides(blending):
    candidates = [
        candidate_pb2.ScoredCandidate(item_id=f"i{n:04d}", score=100.0 - n) for n in range(1, 80)
    ]
    plain = blending_pb.BlendCandidatesRequest(
        context=context(debug=True),
        candidates=candidates,
        page_size=10,
        policy_overrides=blending_pb.PolicyOverrides(diversity_lambda=1.0, category_spacing=0),
    )
    response = blending.blend_candidates(plain)
    assert response.trace.policy_version == "default-1"
    ids = [item.item_id for item in response.items]
    order = [c.item_id for c in candidates]
    assert ids == sorted(ids, key=order.index), "relevance order when diversity is off"
    plain.policy_overrides.exclude_categories.append("cat01")
    plain.policy_overrides.max_items_per_creator = 1
    excluded = blending.blend_candidates(plain)
    removed = [c for c in excluded.trace.candidates if c.removed_by == "excluded_categories"]
    assert removed
    assert all(c.removal_reason == "category cat01 is excluded" for c in removed)
    assert not {c.item_id for c in removed} & {item.item_id for item in excluded.items}
    assert len({item.creator_id for item in excluded.items}) == len(excluded.items)


def test_blend_candidates_rejects_non_finite_scores(blending):
    with pytest.raises(InvalidArgumentError) as raised:
        blending.blend_candidates(
            blending_pb.BlendCandidatesRequest(
                candidates=[candidate_pb2.ScoredCandidate(item_id="i0001", score=float("nan"))]
            )
        )
    assert [v.field for v in raised.value.field_violations] == ["candidates[0].score"]
