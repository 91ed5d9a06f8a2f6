"""Properties of blending over random catalogs, event logs and ranked candidate lists.

The oracles below read the generated catalog and events directly, not the snapshot.
"""

import asyncio
import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings, strategies as st
from support.backends import FailingStage, InProcessRanking, InProcessRetrieval, policy_release
from support.engagement import FixedHolder, make_data

from cascade_server.blending.paging import item_key
from cascade_server.blending.policy import SurfacePolicy
from cascade_server.blending.recommend import (
    Recommender,
    RecommendLimits,
    RecommendQuery,
    RecommendResult,
)
from cascade_server.blending.release import ItemVectors
from cascade_server.blending.stage import BlendingStage, BlendRequest
from cascade_server.features.engagement import EngagementSnapshot, SignalConfig, build_snapshot
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.table import CandidateTable, ScoredTable
from cascade_server.pipeline.types import (
    BlendAction,
    Candidate,
    RequestContext,
    ScoredCandidate,
    SourceHit,
    SourceKind,
)
from cascade_server.storage.tables import EVENT_KINDS

CREATORS = ["", "c0", "c1", "c2", "c3"]
CATEGORIES = ["A", "B", "C"]
TITLES = ["", "", "t1", "t2", "t3", "t4"]
STATUSES = ["active", "active", "active", "hidden", "deleted"]
UNKNOWN = ["zz-unknown", ""]
POSITIVE = {"click", "save", "like", "share", "rate"}


@dataclass(frozen=True)
class World:
    """A generated catalog and event log, and the snapshot built from it."""

    items: list[tuple[str, str, str]]
    users: list[str]
    events: list[tuple[str, str, str, float]]
    snapshot: EngagementSnapshot
    categories: dict[str, tuple[str, ...]]
    titles: dict[str, str]
    vectors: ItemVectors

    @property
    def item_ids(self) -> list[str]:
        return [item[0] for item in self.items]

    def creator(self, item_id: str) -> str:
        return next(item[1] for item in self.items if item[0] == item_id)

    def active(self) -> set[str]:
        return {item[0] for item in self.items if item[2] == "active"}

    def seen(self, user_id: str) -> set[str]:
        """Items the user engaged with, hid, or was shown within a day (the default
        seen TTL) of the newest event."""
        newest = max((e[3] for e in self.events), default=0.0)
        return {
            e[1]
            for e in self.events
            if e[0] == user_id and (e[2] != "impression" or e[3] >= newest - 1)
        }

    def popular(self) -> set[str]:
        """Active items with any positive engagement."""
        return {e[1] for e in self.events if e[2] in POSITIVE} & self.active()


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n_items = draw(st.integers(min_value=1, max_value=24))
    items = [
        (f"p{k:02d}", draw(st.sampled_from(CREATORS)), draw(st.sampled_from(STATUSES)))
        for k in range(n_items)
    ]
    users = [f"u{k}" for k in range(draw(st.integers(min_value=1, max_value=4)))]
    events = draw(
        st.lists(
            st.tuples(
                st.sampled_from(users),
                st.sampled_from([item[0] for item in items]),
                st.sampled_from(EVENT_KINDS),
                st.integers(min_value=0, max_value=30).map(float),
            ),
            max_size=60,
        )
    )
    ids = [item[0] for item in items]
    categories = {
        i: tuple(draw(st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True))) for i in ids
    }
    titles = {i: draw(st.sampled_from(TITLES)) for i in ids}
    data = dataclasses.replace(
        make_data(items, users, events),
        item_categories=[categories[i] for i in ids],
        item_titles=[titles[i] for i in ids],
    )
    seed = draw(st.integers(min_value=0, max_value=2**16))
    embeddings = np.random.default_rng(seed).normal(size=(len(ids), 4)).astype(np.float32)
    snapshot = build_snapshot(data, SignalConfig())
    return World(items, users, events, snapshot, categories, titles, ItemVectors(ids, embeddings))


def policies(world: World) -> st.SearchStrategy[SurfacePolicy]:
    """Policies using every rule, small enough to bite on small pages."""
    return st.builds(
        SurfacePolicy,
        dedup_keys=st.sampled_from([("item_id",), ("item_id", "title")]),
        max_items_per_creator=st.integers(min_value=1, max_value=3),
        category_spacing=st.integers(min_value=0, max_value=2),
        diversity_lambda=st.sampled_from([1.0, 0.8, 0.3, 0.0]),
        fresh_share=st.sampled_from([0.0, 0.25]),
        exploration_share=st.sampled_from([0.0, 0.0, 0.25]),
        exploration_depth=st.integers(min_value=1, max_value=30),
        category_boosts=st.dictionaries(
            st.sampled_from(CATEGORIES), st.sampled_from([-1.0, -0.2, 0.3, 1.0]), max_size=2
        ),
        exclude_categories=st.frozensets(st.sampled_from([*CATEGORIES, "Z"]), max_size=2),
        seed=st.integers(min_value=0, max_value=99),
    )


def eligible_in_order(
    world: World,
    candidates: list[ScoredCandidate],
    policy: SurfacePolicy,
    user_id: str,
    served: set[str],
) -> list[str]:
    """The oracle: candidates that pass every filter, first of each id (and title)."""
    allowed = world.active() - world.seen(user_id) - served
    kept: list[str] = []
    titles: set[str] = set()
    for candidate in candidates:
        item = candidate.item_id
        if item not in allowed or item in kept:
            continue
        if policy.exclude_categories.intersection(world.categories[item]):
            continue
        title = world.titles[item]
        if "title" in policy.dedup_keys and title:
            if title in titles:
                continue
            titles.add(title)
        kept.append(item)
    return kept


def candidate_lists(world: World) -> st.SearchStrategy[list[ScoredCandidate]]:
    """Ranked candidates with repeated ids, repeated objects and unknown ids."""
    names = st.lists(st.sampled_from(world.item_ids + UNKNOWN), max_size=40)

    def pick(pool: list[ScoredCandidate]) -> st.SearchStrategy[list[ScoredCandidate]]:
        if not pool:
            return st.just([])
        picks = st.lists(st.integers(min_value=0, max_value=len(pool) - 1), max_size=50)
        return st.one_of(st.just(pool), picks.map(lambda ix: [pool[i] for i in ix]))

    return names.map(
        lambda ns: [
            ScoredCandidate(
                n,
                float(len(ns) - k),
                sources=(SourceHit(SourceKind.FRESH, k, 0.0),) if k % 3 == 1 else (),
            )
            for k, n in enumerate(ns)
        ]
    ).flatmap(pick)


def users_of(world: World) -> st.SearchStrategy[str]:
    return st.sampled_from([*world.users, "", "stranger"])


@settings(max_examples=100)
@given(st.data())
def test_a_blended_page_obeys_every_rule(data):
    world = data.draw(worlds())
    candidates = data.draw(candidate_lists(world))
    user_id = data.draw(users_of(world))
    served_ids = data.draw(st.sets(st.sampled_from(world.item_ids + UNKNOWN), max_size=6))
    page_size = data.draw(st.integers(min_value=1, max_value=12))
    policy = data.draw(policies(world))
    vectors = data.draw(st.sampled_from([None, world.vectors]))
    request = BlendRequest(
        policy,
        page_size,
        user_id=user_id,
        served={item_key(i) for i in served_ids},
        random_key=data.draw(st.text(max_size=3)),
    )

    result = BlendingStage().blend(world.snapshot, candidates, request, vectors)
    page = [item.candidate.item_id for item in result.items]

    assert len(page) <= page_size
    assert len(page) == len(set(page)), "duplicates on the page"
    per_creator = Counter(world.creator(i) for i in page)
    cap = policy.max_items_per_creator
    assert all(count <= cap for creator, count in per_creator.items() if creator)
    assert set(page) <= world.active(), "unknown or inactive item on the page"
    assert world.seen(user_id).isdisjoint(page), "engaged, hidden or recently shown item"
    assert served_ids.isdisjoint(page), "item of an earlier page on the page"
    assert not any(policy.exclude_categories.intersection(world.categories[i]) for i in page)
    if "title" in policy.dedup_keys:
        titles = [world.titles[i] for i in page if world.titles[i]]
        assert len(titles) == len(set(titles)), "two items with one title"
    assert [item.creator_id for item in result.items] == [world.creator(i) for i in page]
    # The same request gives the same page.
    again = BlendingStage().blend(world.snapshot, candidates, request, vectors)
    assert [item.candidate.item_id for item in again.items] == page

    # Candidates in columns (as the front door gets them) blend the same way.
    table = ScoredTable(
        np.array([c.score for c in candidates]),
        CandidateTable.of([Candidate(c.item_id, list(c.sources)) for c in candidates]),
    )
    columnar = BlendingStage().blend(world.snapshot, table, request, vectors)
    assert columnar.items == result.items
    assert columnar.outcomes == result.outcomes

    # Every input candidate has exactly one outcome, in input order.
    assert [id(o.candidate) for o in result.outcomes] == [id(c) for c in candidates]
    placed = sorted(
        (o for o in result.outcomes if o.action is BlendAction.PLACED), key=lambda o: o.position
    )
    assert [o.candidate.item_id for o in placed] == page
    assert [o.position for o in placed] == list(range(len(page)))
    held_back = {BlendAction.CAPPED, BlendAction.BELOW_PAGE, BlendAction.DEMOTED}
    assert result.has_more == any(o.action in held_back for o in result.outcomes)
    if len(page) < page_size:
        assert all(o.action is BlendAction.CAPPED for o in result.outcomes if o.action in held_back)
    # Anything eligible that is not on the page was held back, not dropped.
    eligible = eligible_in_order(world, candidates, policy, user_id, served_ids)
    assert set(page) <= set(eligible)
    assert {o.candidate.item_id for o in result.outcomes if o.action in held_back} == (
        set(eligible) - set(page)
    )


async def walk(
    recommender: Recommender, user_id: str, seed: str, page_size: int
) -> list[RecommendResult]:
    pages: list[RecommendResult] = []
    token = ""
    for _ in range(200):
        query = RecommendQuery(
            RequestContext(user_id=user_id),
            seed_item_id=seed,
            page_size=page_size,
            page_token=token,
        )
        result = await recommender.recommend(query, Deadline.after(5.0))
        pages.append(result)
        token = result.next_page_token
        if not token:
            return pages
    raise AssertionError("the token chain does not end")


@settings(max_examples=60)
@given(st.data())
def test_paging_through_recommend_never_repeats_an_item(data):
    world = data.draw(worlds())
    user_id = data.draw(users_of(world))
    seed = data.draw(st.sampled_from(["", *sorted(world.active())]))
    page_size = data.draw(st.integers(min_value=1, max_value=6))
    policy = data.draw(policies(world))
    cap = policy.max_items_per_creator
    retrieval_down, ranking_down = data.draw(st.booleans()), data.draw(st.booleans())
    snapshot = world.snapshot
    release = policy_release(world.vectors, **policy.model_dump())
    recommender = Recommender(
        FixedHolder(snapshot),
        FailingStage() if retrieval_down else InProcessRetrieval(snapshot),
        FailingStage() if ranking_down else InProcessRanking(snapshot),
        BlendingStage(),
        RecommendLimits(retrieval_timeout_s=1.0, ranking_timeout_s=1.0, page_token_ttl_s=3600.0),
        lambda: release,
    )

    pages = asyncio.run(walk(recommender, user_id, seed, page_size))

    served = [item.candidate.item_id for result in pages for item in result.blend.items]
    assert len(served) == len(set(served)), "an item was repeated across pages"
    assert seed not in served
    allowed = world.active() - world.seen(user_id)
    assert set(served) <= allowed
    # Every candidate source proposes popular items only, so the chain serves exactly
    # the popular items the user has not seen (the seed, excluded categories and
    # repeated titles aside).
    excluded = {i for i, cats in world.categories.items() if policy.exclude_categories & set(cats)}
    expected = world.popular() - world.seen(user_id) - {seed} - excluded
    if "title" not in policy.dedup_keys:
        assert set(served) == expected
    else:
        assert set(served) <= expected
        titled = [world.titles[i] for i in served if world.titles[i]]
        assert len(titled) == len(set(titled)), "a title was repeated across the chain"
        assert {world.titles[i] or i for i in served} == {world.titles[i] or i for i in expected}
    for result in pages[:-1]:
        assert result.blend.items, "a page in the middle of a chain is empty"
    for result in pages:
        assert len(result.blend.items) <= page_size
        per_creator = Counter(item.creator_id for item in result.blend.items)
        assert all(count <= cap for creator, count in per_creator.items() if creator)
