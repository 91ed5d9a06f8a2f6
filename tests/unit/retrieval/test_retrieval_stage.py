import threading
import time

import numpy as np
import pytest
from support.engagement import FixedHolder, small_snapshot

from cascade_server.errors import CancelledWorkError
from cascade_server.pipeline.components import RetrievalQuery, SourceResult
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import DegradationKind, RequestContext, SourceKind
from cascade_server.retrieval.sources import (
    CoEngagementCandidateSource,
    PopularCandidateSource,
    TrendingCandidateSource,
)
from cascade_server.retrieval.stage import RetrievalRequest, RetrievalStage

LIMITS = {SourceKind.CO_ENGAGEMENT: 10, SourceKind.POPULAR: 10}
ANYONE = RetrievalQuery(RequestContext(), -1, np.zeros(0, np.int64))


def stage(*sources, snapshot=None, limits=LIMITS, budget_s=5.0):
    sources = sources or (CoEngagementCandidateSource(), PopularCandidateSource())
    return RetrievalStage(
        FixedHolder(snapshot or small_snapshot()), sources, limits, source_budget_s=budget_s
    )


def retrieve(request, *sources):
    return stage(*sources).retrieve(request, Deadline.after(1.0))


def by_id(result):
    return {c.item_id: c for c in result.candidates}


def test_user_gets_co_engaged_then_popular_items_without_seen_or_inactive_ones():
    result = retrieve(RetrievalRequest(RequestContext(user_id="b")))
    found = by_id(result)
    assert "i3" in found  # co-engaged with b's i1 and i2
    assert {"i1", "i2"}.isdisjoint(found)  # b engaged with them
    assert {"i4", "i8"}.isdisjoint(found)  # hidden and deleted
    assert result.candidates[0].sources[0].source is SourceKind.CO_ENGAGEMENT
    assert not result.degraded


def test_an_item_from_two_sources_appears_once_with_both():
    result = retrieve(RetrievalRequest(RequestContext(user_id="b")))
    i3 = by_id(result)["i3"]
    assert [hit.source for hit in i3.sources] == [SourceKind.CO_ENGAGEMENT, SourceKind.POPULAR]
    assert len(result.candidates) == len(by_id(result))


def test_cold_start_user_gets_popular_items():
    result = retrieve(RetrievalRequest(RequestContext(user_id="never-seen")))
    assert [c.item_id for c in result.candidates]
    assert all(c.sources[0].source is SourceKind.POPULAR for c in result.candidates)


def test_hidden_items_of_the_user_are_excluded():
    result = retrieve(RetrievalRequest(RequestContext(user_id="c")))
    assert "i6" not in by_id(result)


def test_seeds_drive_co_engagement_and_are_never_returned():
    result = retrieve(RetrievalRequest(RequestContext(), seed_item_ids=["i5", "zzz", "i4"]))
    found = by_id(result)
    assert "i5" not in found
    assert found["i6"].sources[0].source is SourceKind.CO_ENGAGEMENT
    assert result.unknown_seed_item_ids == ["zzz", "i4"]


def test_exclusions_source_limits_and_max_candidates():
    request = RetrievalRequest(
        RequestContext(),
        source_limits={SourceKind.POPULAR: 3},
        exclude_item_ids=["i1"],
    )
    result = retrieve(request)
    assert len(result.candidates) == 3
    assert "i1" not in by_id(result)
    capped = retrieve(RetrievalRequest(RequestContext(), max_candidates=2))
    assert len(capped.candidates) == 2


class BrokenSource:
    kind = SourceKind.CO_ENGAGEMENT

    def fetch(self, snapshot, query, limit):
        raise RuntimeError("index file vanished")


def test_a_failing_source_is_skipped_and_reported():
    result = retrieve(
        RetrievalRequest(RequestContext(user_id="a")), BrokenSource(), PopularCandidateSource()
    )
    assert result.candidates
    [degraded] = result.degraded
    assert degraded.component == "co_engagement"
    assert degraded.reason is DegradationKind.ERROR
    assert "index file vanished" in degraded.message


def test_sources_are_skipped_once_the_deadline_passed():
    result = stage().retrieve(RetrievalRequest(RequestContext(user_id="a")), Deadline.after(-1))
    assert result.candidates == []
    assert {d.reason for d in result.degraded} == {DegradationKind.DEADLINE_EXCEEDED}


def test_components_report_counts():
    result = retrieve(RetrievalRequest(RequestContext(user_id="a")))
    assert [c.name for c in result.components] == ["co_engagement", "popular"]
    assert result.release.release_id.startswith("baseline-")


def test_popular_source_returns_scores_aligned_with_items():
    snapshot = small_snapshot()
    found: SourceResult = PopularCandidateSource().fetch(snapshot, ANYONE, 2)
    assert found.scores.tolist() == pytest.approx(snapshot.popularity[found.items].tolist())
    assert len(found.items) == 2
    assert np.all(np.diff(found.scores) <= 0)


def test_items_the_user_was_recently_shown_are_excluded():
    # e was shown i1 (a popular item) on the newest day of the data.
    assert "i1" in by_id(retrieve(RetrievalRequest(RequestContext(user_id="d"))))
    assert "i1" not in by_id(retrieve(RetrievalRequest(RequestContext(user_id="e"))))


class FixedSource:
    """A source that proposes the given items, optionally after a delay."""

    def __init__(self, kind, items, delay_s=0.0):
        self.kind = kind
        self.items = items
        self.delay_s = delay_s
        self.done = threading.Event()

    def fetch(self, snapshot, query, limit):
        time.sleep(self.delay_s)
        self.done.set()
        items = snapshot.lookup_items(self.items)[:limit]
        return SourceResult(items, np.linspace(1.0, 0.5, len(items)))


def test_each_source_gets_its_quota_of_max_candidates():
    many = FixedSource(SourceKind.CO_ENGAGEMENT, ["i1", "i2", "i3", "i5", "i6", "i7"])
    few = FixedSource(SourceKind.POPULAR, ["i7", "i6", "i5"])
    limits = {SourceKind.CO_ENGAGEMENT: 4, SourceKind.POPULAR: 2}
    result = stage(many, few, limits=limits).retrieve(
        RetrievalRequest(RequestContext(), max_candidates=3), Deadline.after(5.0)
    )
    # Ranks relative to the limits: co 0/4, pop 0/2, co 1/4, ... so popular's first
    # item comes second although co-engagement is listed first.
    assert [c.item_id for c in result.candidates] == ["i1", "i7", "i2"]
    assert [h.source for h in result.candidates[1].sources] == [SourceKind.POPULAR]


def test_an_item_keeps_every_source_that_proposed_it_in_source_order():
    first = FixedSource(SourceKind.CO_ENGAGEMENT, ["i2", "i3"])
    second = FixedSource(SourceKind.POPULAR, ["i3", "i2"])
    result = stage(first, second, limits={SourceKind.CO_ENGAGEMENT: 2, SourceKind.POPULAR: 2})
    found = result.retrieve(RetrievalRequest(RequestContext()), Deadline.after(5.0))
    for candidate in found.candidates:
        assert [h.source for h in candidate.sources] == [
            SourceKind.CO_ENGAGEMENT,
            SourceKind.POPULAR,
        ]


def test_a_source_over_its_budget_is_cut_while_the_others_serve():
    slow = FixedSource(SourceKind.CO_ENGAGEMENT, ["i1"], delay_s=1.0)
    fast = FixedSource(SourceKind.POPULAR, ["i7"])
    started = time.perf_counter()
    result = stage(slow, fast, budget_s=0.2).retrieve(
        RetrievalRequest(RequestContext()), Deadline.after(5.0)
    )
    assert time.perf_counter() - started < 0.9
    assert [c.item_id for c in result.candidates] == ["i7"]
    [degraded] = result.degraded
    assert degraded.component == "co_engagement"
    assert degraded.reason is DegradationKind.DEADLINE_EXCEEDED
    assert "budget" in degraded.message


def test_slow_sources_do_not_wait_for_each_other():
    sources = [
        FixedSource(kind, ["i1"], delay_s=0.3)
        for kind in (SourceKind.CO_ENGAGEMENT, SourceKind.POPULAR, SourceKind.RANDOM_WALK)
    ]
    limits = dict.fromkeys((s.kind for s in sources), 5)
    started = time.perf_counter()
    result = stage(*sources, limits=limits).retrieve(
        RetrievalRequest(RequestContext()), Deadline.after(5.0)
    )
    assert time.perf_counter() - started < 0.8  # one after the other would take 0.9 s
    assert len(result.candidates[0].sources) == 3


def test_trending_source_returns_the_snapshots_trending_items_with_their_scores():
    snapshot = small_snapshot()
    found = TrendingCandidateSource().fetch(snapshot, ANYONE, 3)
    assert found.items.tolist() == snapshot.trending_items[:3].tolist()
    assert found.scores.tolist() == snapshot.trending[found.items].tolist()
    assert np.all(found.scores > 0)
    assert np.all(snapshot.item_active[found.items])


def test_a_cancelled_request_calls_off_queued_sources_and_skips_the_merge():
    running = FixedSource(SourceKind.CO_ENGAGEMENT, ["i1"], delay_s=0.3)
    queued = FixedSource(SourceKind.POPULAR, ["i7"])
    one_worker = RetrievalStage(
        FixedHolder(small_snapshot()),
        [running, queued],
        LIMITS,
        source_budget_s=5.0,
        workers=1,  # the second source waits for the first
    )
    deadline = Deadline.after(5.0)
    threading.Timer(0.05, deadline.cancel).start()
    started = time.perf_counter()
    with pytest.raises(CancelledWorkError, match="cancelled"):
        one_worker.retrieve(RetrievalRequest(RequestContext()), deadline)
    assert time.perf_counter() - started < 0.25  # at once, not when the running one ends
    assert running.done.wait(1.0)  # a source already running finishes
    time.sleep(0.1)
    assert not queued.done.is_set()  # a queued one never starts
    one_worker.close()


def test_a_cancelled_deadline_has_no_time_left_and_says_why():
    deadline = Deadline.after(5.0)
    called: list[bool] = []
    deadline.on_cancel(lambda: called.append(True))
    deadline.cancel()
    assert deadline.remaining() == 0.0
    assert deadline.budget(1.0) == 0.0
    assert called == [True]
    deadline.on_cancel(lambda: called.append(True))  # already cancelled: at once
    assert called == [True, True]
    with pytest.raises(CancelledWorkError):
        deadline.check("ranking")


def test_a_requests_exclusions_do_not_carry_over_to_the_next():
    # The exclusion mask is the thread's, reused by every request it serves.
    shared = stage()
    request = RetrievalRequest(RequestContext(), exclude_item_ids=["i1"])
    assert "i1" not in by_id(shared.retrieve(request, Deadline.after(1.0)))
    assert "i1" in by_id(shared.retrieve(RetrievalRequest(RequestContext()), Deadline.after(1.0)))
