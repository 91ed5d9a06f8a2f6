"""Recommend through the real front door, retrieval and ranking servers."""

import pytest
from support.processes import wait_for
from support.stack import running_stack

from cascade.blending.v1 import blending_service_pb2 as blending_pb
from cascade.catalog.v1 import catalog_service_pb2 as catalog_pb
from cascade.common.v1 import candidate_pb2, context_pb2, trace_pb2
from cascade_client import BlendingClient, CatalogClient, InvalidArgumentError, NotFoundError
from cascade_server.settings import ServiceName


def recommend(client, **fields):
    return client.recommend(blending_pb.RecommendRequest(**fields))


def test_a_user_gets_a_full_page_of_distinct_items_and_a_release_id(blending):
    response = recommend(blending, user_id="u042", page_size=20)
    ids = [item.item_id for item in response.items]
    assert len(ids) == 20
    assert len(set(ids)) == 20
    assert response.release_id.startswith("baseline-")
    assert response.surface == context_pb2.SURFACE_HOME_FEED
    assert response.request_id
    assert not response.degraded
    assert response.next_page_token
    assert all(item.sources and item.creator_id for item in response.items)
    assert not response.HasField("trace")


def test_a_user_with_history_gets_co_engaged_items(blending):
    response = recommend(blending, user_id="u042", page_size=10)
    sources = {hit.source for item in response.items for hit in item.sources}
    assert candidate_pb2.CANDIDATE_SOURCE_CO_ENGAGEMENT in sources


def test_the_page_respects_the_creator_cap(blending):
    response = recommend(blending, user_id="u007", page_size=50)
    creators = [item.creator_id for item in response.items]
    assert max(creators.count(c) for c in set(creators)) <= 2


def test_a_cold_start_user_gets_popular_trending_and_fresh_items(blending):
    response = recommend(blending, user_id="someone-new", page_size=10)
    assert len(response.items) == 10
    everyones = {
        candidate_pb2.CANDIDATE_SOURCE_POPULAR,
        candidate_pb2.CANDIDATE_SOURCE_TRENDING,
        candidate_pb2.CANDIDATE_SOURCE_FRESH,
    }
    assert all({hit.source for hit in item.sources} <= everyones for item in response.items)
    assert not response.degraded


def test_pages_never_repeat_an_item(blending):
    seen: list[str] = []
    token = ""
    for _ in range(5):
        response = recommend(blending, user_id="u042", page_size=20, page_token=token)
        seen += [item.item_id for item in response.items]
        token = response.next_page_token
    assert len(seen) == 100
    assert len(set(seen)) == 100


def test_related_items_for_a_seed_item_are_its_co_engaged_items(blending):
    response = recommend(blending, seed_item_id="i0001", page_size=10, debug=True)
    assert response.surface == context_pb2.SURFACE_RELATED_ITEMS
    assert "i0001" not in [item.item_id for item in response.items]
    assert len(response.items) == 10
    top = response.trace.candidates[0]
    assert top.sources[0].source == candidate_pb2.CANDIDATE_SOURCE_CO_ENGAGEMENT
    assert top.head_scores["co_engagement"] > 0


def test_an_unknown_seed_item_is_not_found(blending):
    with pytest.raises(NotFoundError) as raised:
        recommend(blending, seed_item_id="no-such-item")
    assert raised.value.reason == "NOT_FOUND"
    assert raised.value.metadata["id"] == "no-such-item"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"user_id": "u1", "page_size": 101}, "page_size"),
        ({"user_id": "u1", "page_size": -1}, "page_size"),
        ({}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"user_id": "u1", "page_token": "not-a-token"}, "page_token"),
        ({"user_id": "u1", "surface": 99}, "surface"),
        ({"user_id": "u1", "experiment_ids": [""]}, "experiment_ids[0]"),
        ({"user_id": "u1", "surface": context_pb2.SURFACE_CATEGORY_FEED}, "category_id"),
        ({"user_id": "u1", "category_id": "cat01", "seed_item_id": "i0001"}, "category_id"),
        (
            {"user_id": "u1", "category_id": "cat01", "surface": context_pb2.SURFACE_HOME_FEED},
            "category_id",
        ),
        (
            {"user_id": "u1", "policy_overrides": {"diversity_lambda": 1.5}},
            "policy_overrides.diversity_lambda",
        ),
        (
            {"user_id": "u1", "policy_overrides": {"max_items_per_creator": 0}},
            "policy_overrides.max_items_per_creator",
        ),
        (
            {"user_id": "u1", "policy_overrides": {"fresh_share": float("nan")}},
            "policy_overrides.fresh_share",
        ),
        (
            {"user_id": "u1", "policy_overrides": {"exclude_categories": [""]}},
            "policy_overrides.exclude_categories[0]",
        ),
    ],
)
def test_bad_requests_are_invalid_argument_with_field_violations(blending, fields, field):
    with pytest.raises(InvalidArgumentError) as raised:
        recommend(blending, **fields)
    assert field in [v.field for v in raised.value.field_violations]
    assert raised.value.domain == "cascade.dev"
    assert raised.value.request_id


def test_a_token_from_another_user_is_rejected(blending):
    token = recommend(blending, user_id="u042", page_size=5).next_page_token
    with pytest.raises(InvalidArgumentError) as raised:
        recommend(blending, user_id="u043", page_size=5, page_token=token)
    assert "different user" in raised.value.field_violations[0].description


def test_debug_explains_every_stage_and_candidate(blending):
    response = recommend(blending, user_id="u042", page_size=10, debug=True)
    stages = [stage.stage for stage in response.trace.stages]
    assert stages == [trace_pb2.STAGE_RETRIEVAL, trace_pb2.STAGE_RANKING, trace_pb2.STAGE_BLENDING]
    assert response.trace.stages[0].output_count > 10
    placed = sorted(
        (c for c in response.trace.candidates if c.blend_action == trace_pb2.BLEND_ACTION_PLACED),
        key=lambda c: c.position,
    )
    assert [c.item_id for c in placed] == [item.item_id for item in response.items]
    assert all("co_engagement" in c.head_scores for c in placed)
    assert {c.slot for c in placed} <= {"ranked", "fresh", "exploration"}
    assert placed[0].slot == "ranked"
    assert all(c.blend_score > 0 for c in placed)
    filters = [c.name for c in response.trace.stages[2].components]
    assert filters == [
        "unavailable_items",
        "excluded_categories",
        "seen_items",
        "earlier_pages",
        "duplicates",
        "placement",
    ]
    assert response.trace.policy_version == response.policy_version == "default-1"


def test_items_shown_or_hidden_through_log_events_leave_the_feed(incremental_stack):
    with (
        BlendingClient(incremental_stack.target(ServiceName.BLENDING)) as blending,
        CatalogClient(incremental_stack.target(ServiceName.CATALOG)) as catalog,
    ):
        first = [item.item_id for item in recommend(blending, user_id="u042", page_size=20).items]
        shown, hidden = first[:10], first[10]
        events = [
            catalog_pb.Event(
                event_id=f"seen-{n}",
                user_id="u042",
                item_id=item,
                kind=catalog_pb.EVENT_KIND_IMPRESSION,
            )
            for n, item in enumerate(shown)
        ]
        events.append(
            catalog_pb.Event(
                event_id="hide-1", user_id="u042", item_id=hidden, kind=catalog_pb.EVENT_KIND_HIDE
            )
        )
        catalog.log_events(catalog_pb.LogEventsRequest(events=events))
        gone = {*shown, hidden}

        def page_without_them() -> list[str]:
            page = recommend(blending, user_id="u042", page_size=20)
            ids = [item.item_id for item in page.items]
            return ids if gone.isdisjoint(ids) else []

        ids = wait_for(page_without_them, 10, "the shown and hidden items to leave the feed")
    assert gone.isdisjoint(ids)
    assert len(ids) == 20  # retrieval fetched past the excluded items: still a full page
    assert set(ids) & set(first[11:])  # items not shown yet stay eligible


def test_ranking_down_serves_retrieval_order_and_says_so(fresh_stack):
    fresh_stack.stop(ServiceName.RANKING)
    with BlendingClient(fresh_stack.target(ServiceName.BLENDING)) as client:
        response = recommend(client, user_id="u042", page_size=10)
    assert len(response.items) == 10
    [degraded] = response.degraded
    assert degraded.stage == trace_pb2.STAGE_RANKING
    assert degraded.reason == trace_pb2.DEGRADATION_REASON_UNAVAILABLE
    assert degraded.fallback == "retrieval_order"


def test_retrieval_down_serves_popular_items_from_memory(fresh_stack):
    fresh_stack.stop(ServiceName.RETRIEVAL)
    with BlendingClient(fresh_stack.target(ServiceName.BLENDING)) as client:
        response = recommend(client, user_id="u042", page_size=10)
    assert len(response.items) == 10
    assert [d.fallback for d in response.degraded] == ["popular_cache"]


def test_a_hop_that_misses_its_budget_is_cut_and_reported(demo_database_url):
    # Ranking gets 20 µs per call, far less than a network hop takes.
    with (
        running_stack(demo_database_url, ranking_timeout_ms=0.02) as servers,
        BlendingClient(servers.target(ServiceName.BLENDING)) as client,
    ):
        response = recommend(client, user_id="u042", page_size=10)
    assert len(response.items) == 10
    [degraded] = response.degraded
    assert degraded.stage == trace_pb2.STAGE_RANKING
    assert degraded.reason == trace_pb2.DEGRADATION_REASON_DEADLINE_EXCEEDED
    assert degraded.fallback == "retrieval_order"


def test_a_category_feed_holds_only_the_categorys_items(blending, catalog):
    response = recommend(blending, user_id="u042", category_id="cat02", page_size=20, debug=True)
    assert response.surface == context_pb2.SURFACE_CATEGORY_FEED
    ids = [item.item_id for item in response.items]
    assert len(ids) == 20
    items = catalog.get_items(catalog_pb.GetItemsRequest(item_ids=ids)).items
    assert all("cat02" in item.categories for item in items)
    anonymous = recommend(blending, category_id="cat02", page_size=5)
    assert anonymous.surface == context_pb2.SURFACE_CATEGORY_FEED
    assert len(anonymous.items) == 5


def test_an_unknown_category_is_not_found(blending):
    with pytest.raises(NotFoundError) as raised:
        recommend(blending, user_id="u042", category_id="no-such-category")
    assert raised.value.metadata["kind"] == "category"
    assert raised.value.metadata["id"] == "no-such-category"


def test_policy_overrides_change_this_request_only(blending, catalog):
    strict = recommend(
        blending,
        user_id="u042",
        page_size=20,
        policy_overrides={"max_items_per_creator": 1, "exclude_categories": ["cat01"]},
    )
    creators = [item.creator_id for item in strict.items]
    assert len(creators) == 20
    assert max(creators.count(c) for c in creators) == 1
    items = catalog.get_items(
        catalog_pb.GetItemsRequest(item_ids=[i.item_id for i in strict.items])
    ).items
    assert all("cat01" not in item.categories for item in items)
    usual = recommend(blending, user_id="u042", page_size=20)
    assert max([i.creator_id for i in usual.items].count(c) for c in creators) <= 2


def test_the_same_request_gets_the_same_page(blending):
    first = recommend(blending, user_id="u042", page_size=20)
    again = recommend(blending, user_id="u042", page_size=20)
    assert [i.item_id for i in first.items] == [i.item_id for i in again.items]
