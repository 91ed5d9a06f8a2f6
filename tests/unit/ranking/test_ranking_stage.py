import pytest
from support.engagement import FixedHolder, make_data, small_snapshot

from cascade_server.errors import DeadlineError
from cascade_server.features.engagement import SignalConfig, build_snapshot
from cascade_server.pipeline.deadline import Deadline
from cascade_server.pipeline.types import RequestContext
from cascade_server.ranking.scorers import BaselineScorer
from cascade_server.ranking.stage import RankingStage, RankRequest


def rank(user_id, item_ids, max_results=0):
    stage = RankingStage(FixedHolder(small_snapshot()), BaselineScorer())
    return stage.rank(
        RankRequest(RequestContext(user_id=user_id), item_ids, max_results), Deadline.after(1)
    )


def test_items_co_engaged_with_the_history_rank_first():
    result = rank("b", ["i5", "i3", "i7"])
    assert next(c.item_id for c in result.candidates) == "i3"
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)


def test_heads_and_stage_scores_are_reported():
    [candidate] = rank("b", ["i3"]).candidates
    assert set(candidate.head_scores) == {"co_engagement", "popularity"}
    expected = candidate.head_scores["co_engagement"] + 0.1 * candidate.head_scores["popularity"]
    assert candidate.score == pytest.approx(expected)
    assert candidate.stage_scores == {"baseline": candidate.score}


def test_unknown_ids_are_reported_in_request_order_and_duplicates_scored_once():
    result = rank("a", ["x", "i1", "i1", "y"])
    assert result.unknown_item_ids == ["x", "y"]
    assert [c.item_id for c in result.candidates] == ["i1"]


def test_anonymous_users_are_ranked_by_popularity_with_ties_broken_by_id():
    result = rank("", ["i7", "i6", "i5", "nope"])
    for c in result.candidates:
        assert c.head_scores["co_engagement"] == 0
    keys = [(-c.score, c.item_id) for c in result.candidates]
    assert keys == sorted(keys)


def test_max_results_cuts_the_list():
    assert len(rank("a", ["i1", "i2", "i3"], max_results=2).candidates) == 2


def test_a_passed_deadline_raises():
    stage = RankingStage(FixedHolder(small_snapshot()), BaselineScorer())
    with pytest.raises(DeadlineError):
        stage.rank(RankRequest(RequestContext(), ["i1"]), Deadline.after(-1))


def test_seeds_replace_the_history_as_what_candidates_relate_to():
    stage = RankingStage(FixedHolder(small_snapshot()), BaselineScorer())
    request = RankRequest(RequestContext(user_id="a"), ["i2", "i6"], seed_item_ids=["i5", "zz"])
    result = stage.rank(request, Deadline.after(1))
    assert result.candidates[0].item_id == "i6"  # a's history would pick i2
    without_seeds = rank("a", ["i2", "i6"])
    assert without_seeds.candidates[0].item_id == "i2"


@pytest.mark.parametrize(
    "ids",
    [
        ["b", "é", "a", "ab", "Z", "日本", "a\x00b", "aa", "a b", "~"],
        ["b", "a", "ab", "end\x00"],  # a trailing NUL: the snapshot keeps no id bytes
    ],
)
def test_tied_candidates_come_in_id_order_whatever_the_ids(ids):
    items = [(item, "c", "active") for item in ids]
    snapshot = build_snapshot(make_data(items, ["u"], []), SignalConfig())
    stage = RankingStage(FixedHolder(snapshot), BaselineScorer())
    result = stage.rank(RankRequest(RequestContext(), list(reversed(ids))), Deadline.after(1))
    assert len({c.score for c in result.candidates}) == 1
    assert [c.item_id for c in result.candidates] == sorted(ids)
