import dataclasses

import numpy as np
import pytest
from support.engagement import make_data, small_snapshot

from cascade_server.features.engagement import Csr, SignalConfig, build_snapshot
from cascade_server.pipeline.components import RetrievalQuery
from cascade_server.pipeline.types import RequestContext
from cascade_server.retrieval.sources import RandomWalkCandidateSource


def walk(user_id="", seeds=(), limit=10, **settings):
    snapshot = small_snapshot()
    query = RetrievalQuery(
        RequestContext(user_id=user_id),
        snapshot.user_row(user_id),
        snapshot.lookup_items(list(seeds)),
    )
    found = RandomWalkCandidateSource(**settings).fetch(snapshot, query, limit)
    return [snapshot.item_ids[i] for i in found.items], found.scores


def test_walks_from_the_users_items_stay_in_their_neighbourhood():
    items, scores = walk("b")
    # b engaged with i1 and i2; a and c also engaged with i3. Cluster two is unreachable.
    assert items == ["i3"]
    assert 0 < scores[0] <= 1


def test_walks_from_seeds_return_active_items_most_visited_first():
    items, scores = walk(seeds=["i5"])
    # d and e share i5; their other items: i6, i7, and i4 (hidden) and i8 (deleted).
    assert set(items) == {"i6", "i7"}
    assert list(scores) == sorted(scores, reverse=True)
    assert items[0] == "i6"  # reached through both d and e


def test_the_same_request_gets_the_same_candidates():
    first = walk("a", steps=500, walkers=50)
    second = walk("a", steps=500, walkers=50)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])


def test_a_user_without_history_and_without_seeds_gets_nothing():
    items, scores = walk("never-seen")
    assert items == []
    assert len(scores) == 0


def test_the_limit_caps_the_candidates():
    items, _ = walk(seeds=["i5"], limit=1)
    assert items == ["i6"]


def test_seeds_without_any_engagement_reach_nothing():
    snapshot = small_snapshot()
    empty = dataclasses.replace(
        snapshot, engaged=Csr(np.zeros(1, dtype=np.int64), np.zeros(0, np.int64), np.zeros(0))
    )
    query = RetrievalQuery(RequestContext(), -1, snapshot.lookup_items(["i5"]))
    found = RandomWalkCandidateSource().fetch(empty, query, 10)
    assert len(found.items) == 0


def test_walkers_start_only_from_seeds_someone_engaged_with():
    snapshot = small_snapshot()
    # Nobody engaged with i1 any more: walks from it lead nowhere.
    i1 = snapshot.item_index["i1"]
    engaged = snapshot.engaged
    keep = engaged.indices != i1
    snapshot = dataclasses.replace(snapshot, engaged=engaged.where(keep))
    source = RandomWalkCandidateSource(steps=2000, walkers=100)

    def visits(seeds):
        query = RetrievalQuery(RequestContext(), -1, snapshot.lookup_items(seeds))
        found = source.fetch(snapshot, query, 10)
        return {snapshot.item_ids[i] for i in found.items}, found.scores.sum()

    both, both_share = visits(["i1", "i5"])
    alone, alone_share = visits(["i5"])
    assert both == alone == {"i6", "i7"}
    # No step is spent at the dead end: the visits are as many as from i5 alone
    # (half as many if walkers restarted at i1 half the time).
    assert both_share == pytest.approx(alone_share, rel=0.1)


def star_snapshot():
    """Item hub engaged with by users u0..u5; each user also engaged with one item of
    their own (o0..o5), and user u0 with a second one (p0) as well."""
    users = [f"u{k}" for k in range(6)]
    items = [("hub", "c", "active")] + [(f"o{k}", "c", "active") for k in range(6)]
    items.append(("p0", "c", "active"))
    events = [(u, "hub", "click", 1) for u in users]
    events += [(f"u{k}", f"o{k}", "click", 2) for k in range(6)]
    events.append(("u0", "p0", "click", 3))
    return build_snapshot(make_data(items, users, events), SignalConfig())


@pytest.mark.parametrize("restart", [1.0, 0.5])
def test_each_hop_picks_a_neighbour_uniformly(restart):
    snapshot = star_snapshot()
    source = RandomWalkCandidateSource(steps=60_000, restart=restart, walkers=2_000)
    query = RetrievalQuery(RequestContext(), -1, snapshot.lookup_items(["hub"]))
    found = source.fetch(snapshot, query, 10)
    share = dict(zip((snapshot.item_ids[i] for i in found.items), found.scores, strict=True))
    # From the hub: each user 1/6, then each of that user's items alike (1/12 for an
    # item of u1..u5, 1/18 for u0's). A walker that does not restart stands on the hub
    # again or on one user's own item, whose next hop goes back through that user: the
    # shares move, but the users' items stay alike.
    own = [share[f"o{k}"] for k in range(1, 6)]
    assert np.ptp(own) < 0.01
    assert share["o0"] == pytest.approx(share["p0"], abs=0.01)
    assert share["o0"] < min(own)  # u0 splits its visits three ways, the others two
    if restart == 1.0:
        assert np.mean(own) == pytest.approx(1 / 12, abs=0.005)
        assert share["o0"] == pytest.approx(1 / 18, abs=0.005)
