import asyncio
import dataclasses
import time
from collections import Counter

import pytest
from support.backends import FailingStage, InProcessRanking, InProcessRetrieval, policy_release
from support.engagement import FixedHolder, make_data, small_snapshot

from cascade_server.blending.paging import encode_token, request_fingerprint
from cascade_server.blending.policy import BlendingPolicies
from cascade_server.blending.recommend import (
    Recommender,
    RecommendLimits,
    RecommendQuery,
    RecommendResult,
)
from cascade_server.blending.release import BlendingRelease
from cascade_server.blending.stage import BlendingStage
from cascade_server.errors import InvalidArgumentError, NotFoundError
from cascade_server.features.engagement import SignalConfig, build_snapshot
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import (
    Degradation,
    DegradationKind,
    RequestContext,
    SourceKind,
    StageName,
    Surface,
)
from cascade_server.retrieval.sources import CoEngagementCandidateSource, PopularCandidateSource
from cascade_server.retrieval.stage import RetrievalRequest, RetrievalStage

LIMITS = {SourceKind.CO_ENGAGEMENT: 300, SourceKind.POPULAR: 200}
INACTIVE = {"it07": "hidden", "it23": "deleted", "it41": "hidden"}
U1_SEEN = {"it00", "it01", "it02", "it03", "it04", "it10", "it11"}


def catalog_data():
    """60 items over 10 creators (item k is by creator k % 10); three are inactive.

    "fan" engaged with every item (so every active item is popular, in varying
    amounts); u1 clicked it00-it04 and hid it10, it11; u2 shares items with u1; u3
    hid it00; u5 only saw an impression; "cold" has no events.
    """
    items = [(f"it{k:02d}", f"cr{k % 10}", INACTIVE.get(f"it{k:02d}", "active")) for k in range(60)]
    events = [("fan", f"it{k:02d}", "click", k % 5) for k in range(60)]
    events += [("fan", f"it{k:02d}", "like", 4) for k in range(0, 60, 3)]
    events += [("u1", f"it{k:02d}", "click", 1 + k) for k in range(5)]
    events += [("u1", "it10", "hide", 6), ("u1", "it11", "hide", 6)]
    events += [("u2", f"it{k:02d}", "click", 2) for k in (0, 1, 2, 30)]
    events += [("u2", "it31", "like", 3)]
    events += [("u3", f"it{k:02d}", "click", 3) for k in range(30, 35)]
    events += [("u3", "it00", "hide", 4)]
    events += [("u4", f"it{k:02d}", "save", 4) for k in (50, 51, 52)]
    events += [("u5", "it05", "impression", 4)]
    return make_data(items, ["fan", "u1", "u2", "u3", "u4", "u5", "cold"], events)


def snapshot_of(data, release):
    """The same data under another release id, as another process would load it."""
    return build_snapshot(dataclasses.replace(data, fingerprint=release), SignalConfig())


CATALOG = catalog_data()
FRONT = snapshot_of(CATALOG, "front")
RETRIEVAL = snapshot_of(CATALOG, "retrieval")
RANKING = snapshot_of(CATALOG, "ranking")


def DownRetrieval():
    return FailingStage(DegradationKind.UNAVAILABLE)


def SlowRanking():
    return FailingStage(DegradationKind.DEADLINE_EXCEEDED)


def make_recommender(
    front=FRONT, retrieval=None, ranking=None, *, cap=2, ttl=3600.0, stage_snapshot=None
):
    retrieval = retrieval or InProcessRetrieval(stage_snapshot or RETRIEVAL)
    ranking = ranking or InProcessRanking(stage_snapshot or RANKING)
    timeouts = RecommendLimits(retrieval_timeout_s=1.0, ranking_timeout_s=1.0, page_token_ttl_s=ttl)
    release = policy_release(max_items_per_creator=cap)
    return Recommender(
        FixedHolder(front), retrieval, ranking, BlendingStage(), timeouts, lambda: release
    )


def recommend(recommender, user_id="", *, seed="", page_size=10, token="", **context):
    query = RecommendQuery(
        RequestContext(user_id=user_id, **context),
        seed_item_id=seed,
        page_size=page_size,
        page_token=token,
    )
    result: RecommendResult = asyncio.run(recommender.recommend(query, Deadline.after(5.0)))
    return result


def page(result):
    return [item.candidate.item_id for item in result.blend.items]


def creators(result):
    return Counter(item.creator_id for item in result.blend.items)


def popular_ids(snapshot):
    return [snapshot.item_ids[i] for i in snapshot.popular_items.tolist()]


def walk(recommender, user_id="", *, seed="", page_size=7):
    """Every page of a token chain."""
    pages = []
    token = ""
    while True:
        result = recommend(recommender, user_id, seed=seed, page_size=page_size, token=token)
        pages.append(result)
        token = result.next_page_token
        if not token:
            return pages
        assert len(pages) < 100, "the token chain does not end"


def test_a_user_gets_a_full_page_without_seen_hidden_or_inactive_items():
    result = recommend(make_recommender(), "u1", page_size=10)
    items = page(result)
    assert len(items) == 10
    assert len(set(items)) == 10
    assert U1_SEEN.isdisjoint(items)
    assert set(INACTIVE).isdisjoint(items)
    assert max(creators(result).values()) <= 2
    assert result.degraded == []
    assert result.surface is Surface.HOME_FEED
    assert result.next_page_token


def test_a_user_of_the_small_snapshot_gets_what_is_left():
    # c engaged with i2 and i3 and hid i6; i4 and i8 are inactive.
    snapshot = small_snapshot()
    recommender = make_recommender(snapshot, stage_snapshot=snapshot)
    result = recommend(recommender, "c", page_size=3)
    assert sorted(page(result)) == ["i1", "i5", "i7"]
    assert result.next_page_token == ""


def test_the_stages_report_what_they_did():
    result = recommend(make_recommender(), "u1", page_size=10, debug=True)
    assert [s.stage for s in result.stages] == [
        StageName.RETRIEVAL,
        StageName.RANKING,
        StageName.BLENDING,
    ]
    retrieval, ranking, blending = result.stages
    assert retrieval.release is not None
    assert retrieval.release.release_id == RETRIEVAL.snapshot_id
    assert [c.name for c in retrieval.components] == ["co_engagement", "popular"]
    assert ranking.input_count == retrieval.output_count
    assert ranking.release is not None
    assert ranking.release.release_id == RANKING.snapshot_id
    assert blending.input_count == ranking.output_count
    assert blending.output_count == 10
    assert blending.release is not None
    assert blending.release.release_id == FRONT.snapshot_id
    assert [c.name for c in blending.components][-1] == "placement"
    # Only traces show the components' work: without debug, blending does not report it.
    plain = recommend(make_recommender(), "u1", page_size=10)
    assert plain.stages[-1].components == []


@pytest.mark.parametrize("user_id", ["cold", "never-seen"])
def test_a_cold_start_user_gets_popular_items(user_id):
    result = recommend(make_recommender(), user_id, page_size=10)
    items = page(result)
    assert len(items) == 10
    popular = popular_ids(FRONT)
    assert items[0] == popular[0]
    assert set(items) <= set(popular)
    scores = [FRONT.popularity[FRONT.item_index[i]] for i in items]
    assert scores == sorted(scores, reverse=True)
    for item in result.blend.items:
        assert [hit.source for hit in item.candidate.sources] == [SourceKind.POPULAR]
    assert result.degraded == []


def test_a_cold_start_user_of_the_small_snapshot_gets_the_popular_items():
    snapshot = small_snapshot()
    result = recommend(make_recommender(snapshot, stage_snapshot=snapshot), "f", page_size=20)
    assert set(page(result)) == set(popular_ids(snapshot))
    assert page(result)[0] == popular_ids(snapshot)[0]


@pytest.mark.parametrize("user_id", ["", "a", "f"])
def test_a_seed_item_gives_related_items_without_the_seed(user_id):
    snapshot = small_snapshot()
    result = recommend(make_recommender(snapshot, stage_snapshot=snapshot), user_id, seed="i5")
    assert result.surface is Surface.RELATED_ITEMS
    items = page(result)
    assert items
    assert "i5" not in items
    assert items[0] in {"i6", "i7"}  # co-engaged with i5 by d and e
    assert result.blend.items[0].candidate.sources[0].source is SourceKind.CO_ENGAGEMENT


def test_the_seed_is_sent_to_retrieval():
    retrieval = InProcessRetrieval(RETRIEVAL)
    recommend(make_recommender(retrieval=retrieval), "u2", seed="it30")
    [(context, seeds, max_candidates, _)] = retrieval.calls
    assert seeds == ["it30"]
    assert context.surface is Surface.RELATED_ITEMS
    assert max_candidates >= 500


@pytest.mark.parametrize(
    ("retrieval", "ranking"),
    [(DownRetrieval, None), (DownRetrieval, SlowRanking), (None, SlowRanking)],
)
def test_the_seed_is_never_in_the_page_when_stages_fail(retrieval, ranking):
    snapshot = small_snapshot()
    recommender = make_recommender(
        snapshot,
        retrieval and retrieval(),
        ranking and ranking(),
        stage_snapshot=snapshot,
    )
    for seed in ("i5", "i6", "i1"):
        result = recommend(recommender, "", seed=seed, page_size=20)
        assert result.degraded
        assert page(result)
        assert seed not in page(result)


def test_an_explicit_surface_is_kept():
    result = recommend(make_recommender(), "u1", seed="it30", surface=Surface.HOME_FEED)
    assert result.surface is Surface.HOME_FEED


@pytest.mark.parametrize("seed", ["nope", "it07", "it23", "it41"])
def test_an_unknown_or_inactive_seed_is_not_found(seed):
    retrieval, ranking = InProcessRetrieval(RETRIEVAL), InProcessRanking(RANKING)
    with pytest.raises(NotFoundError) as caught:
        recommend(make_recommender(retrieval=retrieval, ranking=ranking), "u1", seed=seed)
    assert caught.value.metadata == {"kind": "item", "id": seed}
    assert retrieval.calls == []
    assert ranking.calls == []


def test_when_ranking_fails_the_page_follows_retrieval_order():
    ranking = SlowRanking()
    result = recommend(make_recommender(ranking=ranking, cap=100), "u1", page_size=10)
    expected = RetrievalStage(
        FixedHolder(RETRIEVAL), [CoEngagementCandidateSource(), PopularCandidateSource()], LIMITS
    ).retrieve(RetrievalRequest(RequestContext(user_id="u1")), Deadline.after(1.0))
    assert page(result) == [c.item_id for c in expected.candidates][:10]
    scores = [item.candidate.score for item in result.blend.items]
    assert scores == sorted(scores, reverse=True)
    assert result.degraded == [
        Degradation(
            StageName.RANKING,
            DegradationKind.DEADLINE_EXCEEDED,
            "ranking failed: DEADLINE_EXCEEDED",
            fallback="retrieval_order",
        )
    ]
    assert ranking.calls == 1
    assert result.release_id == RETRIEVAL.snapshot_id
    assert result.stages[1].release is None


def test_when_ranking_fails_the_cap_still_applies():
    result = recommend(make_recommender(ranking=SlowRanking(), cap=1), "u1", page_size=10)
    assert max(creators(result).values()) == 1
    assert U1_SEEN.isdisjoint(page(result))


def test_when_retrieval_fails_popular_items_of_the_snapshot_are_ranked():
    result = recommend(make_recommender(retrieval=DownRetrieval()), "u1", page_size=10)
    items = page(result)
    assert len(items) == 10
    assert set(items) <= set(popular_ids(FRONT))
    assert U1_SEEN.isdisjoint(items)
    assert max(creators(result).values()) <= 2
    for item in result.blend.items:
        assert [hit.source for hit in item.candidate.sources] == [SourceKind.POPULAR]
    assert result.degraded == [
        Degradation(
            StageName.RETRIEVAL,
            DegradationKind.UNAVAILABLE,
            "retrieval failed: UNAVAILABLE",
            fallback="popular_cache",
        )
    ]
    assert result.release_id == RANKING.snapshot_id
    assert result.stages[0].release is None


def test_when_retrieval_skips_every_source_popular_items_fill_the_page():
    # A real retrieval stage given no time skips each source and proposes nothing (as a
    # server still warming up or past its capacity may): the front door falls back.
    timeouts = RecommendLimits(
        retrieval_timeout_s=1e-9, ranking_timeout_s=1.0, page_token_ttl_s=3600.0
    )
    recommender = Recommender(
        FixedHolder(FRONT),
        InProcessRetrieval(RETRIEVAL),
        InProcessRanking(RANKING),
        BlendingStage(),
        timeouts,
        lambda: policy_release(max_items_per_creator=2),
    )
    result = recommend(recommender, "u1", page_size=10)
    items = page(result)
    assert len(items) == 10
    assert set(items) <= set(popular_ids(FRONT))
    assert U1_SEEN.isdisjoint(items)
    skipped = [d for d in result.degraded if d.component]
    assert {d.component for d in skipped} == {"co_engagement", "popular"}
    assert all(d.reason == DegradationKind.DEADLINE_EXCEEDED for d in skipped)
    [failure] = [d for d in result.degraded if not d.component]
    assert (failure.stage, failure.reason, failure.fallback) == (
        StageName.RETRIEVAL,
        DegradationKind.DEADLINE_EXCEEDED,
        "popular_cache",
    )
    assert failure.message == "retrieval proposed no candidates: 2 of its sources were skipped"


def test_when_both_fail_the_page_is_the_popular_list():
    retrieval, ranking = DownRetrieval(), SlowRanking()
    result = recommend(make_recommender(retrieval=retrieval, ranking=ranking, cap=100), "u1")
    expected = [i for i in popular_ids(FRONT) if i not in U1_SEEN][:10]
    assert page(result) == expected
    assert [(d.stage, d.fallback) for d in result.degraded] == [
        (StageName.RETRIEVAL, "popular_cache"),
        (StageName.RANKING, "retrieval_order"),
    ]
    assert (retrieval.calls, ranking.calls) == (1, 1)
    assert result.release_id == FRONT.snapshot_id
    assert result.next_page_token


@pytest.mark.parametrize(
    ("retrieval", "ranking"),
    [(None, None), (None, SlowRanking), (DownRetrieval, None), (DownRetrieval, SlowRanking)],
)
@pytest.mark.parametrize("user_id", ["u1", "cold"])
def test_walking_every_page_never_repeats_an_item(retrieval, ranking, user_id):
    recommender = make_recommender(
        retrieval=retrieval and retrieval(), ranking=ranking and ranking()
    )
    pages = walk(recommender, user_id, page_size=7)
    items = [i for result in pages for i in page(result)]
    assert len(items) == len(set(items))
    seen = U1_SEEN if user_id == "u1" else set()
    available = {i for i in CATALOG.item_ids if i not in INACTIVE and i not in seen}
    assert set(items) == available
    assert pages[-1].next_page_token == ""
    for result in pages:
        assert 0 < len(page(result)) <= 7
        assert max(creators(result).values()) <= 2
    assert all(result.next_page_token for result in pages[:-1])


def test_walking_related_items_never_repeats_and_never_shows_the_seed():
    pages = walk(make_recommender(), "u2", seed="it30", page_size=5)
    items = [i for result in pages for i in page(result)]
    assert len(items) == len(set(items))
    assert "it30" not in items
    assert all(result.surface is Surface.RELATED_ITEMS for result in pages)


def test_a_page_token_is_bound_to_the_user_seed_and_surface():
    recommender = make_recommender()
    token = recommend(recommender, "u1", page_size=5).next_page_token
    assert recommend(recommender, "u1", page_size=5, token=token).blend.items
    for user_id, seed, surface in [
        ("u2", "", None),
        ("", "", None),
        ("u1", "it30", None),
        ("u1", "", Surface.RELATED_ITEMS),
    ]:
        with pytest.raises(InvalidArgumentError) as caught:
            recommend(recommender, user_id, seed=seed, token=token, surface=surface)
        [violation] = caught.value.violations
        assert violation.field == "page_token"
        assert "different user, seed item or surface" in violation.description


def test_malformed_and_expired_tokens_are_invalid_arguments():
    recommender = make_recommender(ttl=60)
    fingerprint = request_fingerprint("u1", "", Surface.HOME_FEED.value)
    expired = encode_token(fingerprint, [], now=time.time() - 120)
    for token, words in [("garbage!", "base64"), ("A" * 40, "malformed"), (expired, "expired")]:
        with pytest.raises(InvalidArgumentError) as caught:
            recommend(recommender, "u1", token=token)
        assert words in caught.value.violations[0].description


def test_the_token_chain_stops_before_max_served():
    fingerprint = request_fingerprint("u1", "", Surface.HOME_FEED.value)
    deep = encode_token(fingerprint, range(985))  # keys of no real item
    recommender = make_recommender()
    result = recommend(recommender, "u1", page_size=10, token=deep)
    assert len(page(result)) == 10
    assert result.blend.has_more
    assert result.next_page_token == ""
    shallow = encode_token(fingerprint, range(980))
    assert recommend(recommender, "u1", page_size=10, token=shallow).next_page_token


def test_a_request_id_is_assigned_when_empty_and_passed_on():
    retrieval, ranking = InProcessRetrieval(RETRIEVAL), InProcessRanking(RANKING)
    recommender = make_recommender(retrieval=retrieval, ranking=ranking)
    first = recommend(recommender, "u1")
    second = recommend(recommender, "u1")
    assert len(first.request_id) == 32
    int(first.request_id, 16)
    assert first.request_id != second.request_id
    assert retrieval.calls[0][0].request_id == first.request_id
    assert ranking.calls[0][0].request_id == first.request_id


def test_a_given_request_id_is_kept_and_passed_on():
    retrieval, ranking = InProcessRetrieval(RETRIEVAL), InProcessRanking(RANKING)
    recommender = make_recommender(retrieval=retrieval, ranking=ranking)
    result = recommend(recommender, "u1", request_id="req-42", locale="de-CH")
    assert result.request_id == "req-42"
    [(context, _, _, timeout)] = retrieval.calls
    assert context.request_id == "req-42"
    assert context.locale == "de-CH"
    assert context.surface is Surface.HOME_FEED
    assert 0 < timeout <= 1.0
    assert ranking.calls[0][0].request_id == "req-42"


def test_the_release_is_the_ranking_release_when_ranking_answered():
    result = recommend(make_recommender(), "u1")
    assert result.release_id == RANKING.snapshot_id
    assert RANKING.snapshot_id not in {FRONT.snapshot_id, RETRIEVAL.snapshot_id}


def test_ranking_is_skipped_when_retrieval_finds_nothing():
    # u engaged with every item, so nothing is left to retrieve.
    data = make_data(
        [("x", "c", "active"), ("y", "c", "active")],
        ["u"],
        [("u", "x", "click", 0), ("u", "y", "click", 0)],
    )
    snapshot = build_snapshot(data, SignalConfig())
    ranking = InProcessRanking(snapshot)
    result = recommend(make_recommender(snapshot, stage_snapshot=snapshot, ranking=ranking), "u")
    assert page(result) == []
    assert result.next_page_token == ""
    assert ranking.calls == []
    assert result.release_id == snapshot.snapshot_id


def test_experiment_variants_reach_every_stage_and_the_result():
    policies = BlendingPolicies.parse(
        """
version: exp
experiments:
  - name: quotas
    variants:
      - {name: control, weight: 1}
      - {name: no_popular, weight: 1, heavy_top_n: 7, source_limits: {popular: 0}}
""",
        "test",
    )
    release = BlendingRelease(policies)
    retrieval, ranking = InProcessRetrieval(RETRIEVAL), InProcessRanking(RANKING)
    recommender = Recommender(
        FixedHolder(FRONT),
        retrieval,
        ranking,
        BlendingStage(),
        RecommendLimits(1.0, 1.0, 3600.0),
        lambda: release,
    )
    forced = recommend(recommender, "u1", experiment_ids=("quotas/no_popular",))
    [assignment] = forced.assignments
    assert (assignment.label, assignment.forced) == ("quotas/no_popular", True)
    assert forced.policy_version == "exp"
    context, *_ = retrieval.calls[-1]
    assert context.experiments == ("quotas/no_popular",)
    assert ranking.calls[-1][0].experiments == ("quotas/no_popular",)
    sources = {hit.source for item in forced.blend.items for hit in item.candidate.sources}
    assert SourceKind.POPULAR not in sources
    control = recommend(recommender, "u1", experiment_ids=("quotas/control",))
    assert SourceKind.POPULAR in {
        hit.source for item in control.blend.items for hit in item.candidate.sources
    }
    bucketed = {recommend(recommender, f"user{k}").assignments[0].variant.name for k in range(20)}
    assert bucketed == {"control", "no_popular"}


def test_a_category_feed_pages_through_the_category_only():
    data = dataclasses.replace(
        CATALOG, item_categories=[("even",) if k % 2 == 0 else ("odd",) for k in range(60)]
    )
    snapshot = snapshot_of(data, "categories")
    recommender = make_recommender(snapshot, stage_snapshot=snapshot)
    query = RecommendQuery(RequestContext(user_id="u1"), category_id="odd", page_size=50)
    result = asyncio.run(recommender.recommend(query, Deadline.after(5.0)))
    assert result.surface is Surface.CATEGORY_FEED
    assert page(result)
    assert all(int(i[2:]) % 2 == 1 for i in page(result))
    missing = RecommendQuery(RequestContext(user_id="u1"), category_id="none")
    with pytest.raises(NotFoundError):
        asyncio.run(recommender.recommend(missing, Deadline.after(5.0)))
    down = make_recommender(snapshot, retrieval=DownRetrieval(), stage_snapshot=snapshot)
    fallback = asyncio.run(down.recommend(query, Deadline.after(5.0)))
    assert fallback.degraded
    assert page(fallback)
    assert all(int(i[2:]) % 2 == 1 for i in page(fallback)), "the fallback keeps to the category"


def test_the_front_door_warms_blending_without_calling_the_stages():
    retrieval, ranking = DownRetrieval(), SlowRanking()
    recommender = make_recommender(retrieval=retrieval, ranking=ranking)
    recommender.warm()
    assert retrieval.calls == ranking.calls == 0
