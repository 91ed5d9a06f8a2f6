import math

import pytest

from cascade_server.errors import InvalidArgumentError
from cascade_server.offline.evaluate import (
    CatalogRecall,
    Metrics,
    RankingCase,
    agreement,
    evaluate,
    read_ncf_cases,
)


def write_split(tmp_path, ratings, negatives):
    rating = tmp_path / "t.test.rating"
    negative = tmp_path / "t.test.negative"
    rating.write_text("".join(f"{u}\t{i}\t5\t978300760\n" for u, i in ratings))
    lines = [
        f"({u},{i})\t" + "\t".join(n) + "\n" for (u, i), n in zip(ratings, negatives, strict=True)
    ]
    negative.write_text("".join(lines))
    return rating, negative


def test_cases_hold_the_negatives_and_the_positive_once(tmp_path):
    rating, negative = write_split(
        tmp_path, [("0", "25"), ("1", "7")], [["3", "25", "9"], ["4", "5"]]
    )
    cases = read_ncf_cases(rating, negative)
    assert cases[0] == RankingCase("0", "25", ("3", "25", "9"))  # the duplicate collapses
    assert cases[1] == RankingCase("1", "7", ("4", "5", "7"))


def test_misaligned_files_are_rejected_with_the_line(tmp_path):
    rating, negative = write_split(tmp_path, [("0", "25")], [["3"]])
    negative.write_text("(0,26)\t3\n")
    with pytest.raises(InvalidArgumentError, match=r":1 is for \(0,26\)"):
        read_ncf_cases(rating, negative)


def test_metrics_follow_the_ncf_definitions():
    metrics = Metrics(10)
    for rank in (0, 3, 9, 10, -1):
        metrics.add(rank)
    assert metrics.hit_rate == pytest.approx(3 / 5)
    expected = (1 + math.log(2) / math.log(5) + math.log(2) / math.log(11)) / 5
    assert metrics.ndcg == pytest.approx(expected)


def test_evaluate_ranks_with_the_given_function():
    cases = [RankingCase("u", "b", ("a", "b", "c")), RankingCase("v", "z", ("x", "y", "z"))]
    metrics, results = evaluate(cases, lambda case: sorted(case.candidates, reverse=True), k=1)
    assert [r.rank for r in results] == [1, 0]
    assert metrics.hit_rate == 0.5


def test_agreement_counts_equal_ranks():
    served, offline = Metrics(10), Metrics(10)
    for a, b in ((0, 0), (3, 4), (-1, -1)):
        served.add(a)
        offline.add(b)
    assert agreement(served, offline) == pytest.approx(2 / 3)


def test_catalog_recall_counts_the_held_out_item_in_the_page():
    recall = CatalogRecall(ks=(1, 3))
    recall.add(["a", "b", "c"], "b")
    recall.add(["a", "b", "c"], "zz")
    values = recall.summary()
    assert values["recall@1"] == 0
    assert values["recall@3"] == 0.5
    assert values["ndcg@3"] == pytest.approx(math.log(2) / math.log(3) / 2)
