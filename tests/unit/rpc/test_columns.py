"""The column form of candidate lists: what goes in comes out, and bad columns are refused."""

import numpy as np
import pytest

from cascade.common.v1 import candidate_pb2
from cascade_server.pipeline.table import CandidateTable
from cascade_server.pipeline.types import Candidate, ScoredCandidate, SourceHit, SourceKind
from cascade_server.rpc.convert import (
    candidates_from_columns,
    fill_candidate_columns,
    fill_scored_columns,
    hits_from_proto,
    scored_from_columns,
)


def _sent(candidates: list[Candidate] | CandidateTable) -> candidate_pb2.CandidateColumns:
    """``candidates`` in columns, as the receiver reads them off the wire."""
    columns = candidate_pb2.CandidateColumns()
    fill_candidate_columns(columns, candidates)
    return candidate_pb2.CandidateColumns.FromString(columns.SerializeToString())


def test_candidates_survive_the_column_form():
    candidates = [
        Candidate("a", [SourceHit(SourceKind.ANN, 0, 0.9), SourceHit(SourceKind.POPULAR, 3, 12.0)]),
        Candidate("b", [SourceHit(SourceKind.RANDOM_WALK, 1, 0.25)]),
        Candidate("c", [SourceHit(SourceKind.FRESH, 0, 1.0)]),
    ]
    wire = _sent(candidates)
    assert list(wire.hit_counts) == [2, 1, 1]
    assert candidates_from_columns(wire) == candidates
    assert candidates_from_columns(wire).item_rows is None


def test_the_senders_rows_travel_with_the_candidates():
    table = CandidateTable.of([Candidate("a", []), Candidate("b", [])])
    table.item_rows = np.array([7, 3])
    wire = _sent(table)
    assert list(wire.item_rows) == [7, 3]
    received = candidates_from_columns(wire)
    assert received.item_ids == ["a", "b"]
    assert received.item_rows is not None
    assert received.item_rows.tolist() == [7, 3]
    # Ranking's answer keeps each item's row (and -1 for an item retrieval did not send).
    scored = scored_from_columns(
        candidate_pb2.ScoredColumns(item_ids=["b", "x", "a"], scores=[3.0, 2.0, 1.0]), received
    )
    assert scored.hits.item_rows is not None
    assert scored.hits.item_rows.tolist() == [3, -1, 7]


def test_hits_from_unknown_sources_are_dropped_not_shifted():
    wire = candidate_pb2.CandidateColumns(
        item_ids=["a", "b"],
        hit_counts=[2, 2],
        hit_sources=[
            candidate_pb2.CandidateSource.ValueType(99),  # from a newer server
            candidate_pb2.CANDIDATE_SOURCE_ANN,
            candidate_pb2.CandidateSource.ValueType(-3),  # an open enum may be negative
            candidate_pb2.CANDIDATE_SOURCE_POPULAR,
        ],
        hit_ranks=[0, 1, 2, 3],
        hit_scores=[0.5, 0.6, 0.7, 0.8],
    )
    expected = [
        Candidate("a", [SourceHit(SourceKind.ANN, 1, 0.6)]),
        Candidate("b", [SourceHit(SourceKind.POPULAR, 3, 0.8)]),
    ]
    assert candidates_from_columns(wire) == expected
    rows = candidate_pb2.Candidate(item_id="b")
    rows.sources.add(source=candidate_pb2.CandidateSource.ValueType(-3), rank=2, score=0.7)
    rows.sources.add(source=candidate_pb2.CANDIDATE_SOURCE_POPULAR, rank=3, score=0.8)
    assert hits_from_proto(rows.sources) == tuple(expected[1].sources)


@pytest.mark.parametrize(
    "fields",
    [
        {"item_ids": ["a", "b"], "hit_counts": [1]},
        {
            "item_ids": ["a"],
            "hit_counts": [2],
            "hit_sources": [4],
            "hit_ranks": [0],
            "hit_scores": [0.1],
        },
        {
            "item_ids": ["a"],
            "hit_counts": [1],
            "hit_sources": [4],
            "hit_ranks": [0, 1],
            "hit_scores": [0.1],
        },
        {"item_ids": ["a"], "hit_counts": [0], "item_rows": [1, 2]},
    ],
)
def test_columns_that_do_not_line_up_are_refused(fields):
    with pytest.raises(ValueError, match="different lengths"):
        candidates_from_columns(candidate_pb2.CandidateColumns(**fields))


def test_scored_columns_keep_order_and_attach_the_callers_sources():
    hits = [SourceHit(SourceKind.ANN, 0, 0.9), SourceHit(SourceKind.FRESH, 2, 1.0)]
    retrieved = CandidateTable.of([Candidate("a", hits), Candidate("c", hits[:1])])
    scored = [ScoredCandidate("b", 2.5), ScoredCandidate("a", 1.0)]
    wire = candidate_pb2.ScoredColumns()
    fill_scored_columns(wire, scored)
    assert scored_from_columns(wire, retrieved) == [
        ScoredCandidate("b", 2.5),
        ScoredCandidate("a", 1.0, sources=tuple(hits)),
    ]
    with pytest.raises(ValueError, match="different lengths"):
        scored_from_columns(
            candidate_pb2.ScoredColumns(item_ids=["a"], scores=[]), CandidateTable.of([])
        )


def test_scored_columns_join_the_sent_candidates_by_position():
    hits = [SourceHit(SourceKind.ANN, 0, 0.9), SourceHit(SourceKind.FRESH, 2, 1.0)]
    sent = CandidateTable.of([Candidate("a", hits), Candidate("b", []), Candidate("c", hits[1:])])
    sent.item_rows = np.array([4, 5, 6])
    wire = candidate_pb2.ScoredColumns()
    fill_scored_columns(
        wire, [ScoredCandidate("c", 2.0), ScoredCandidate("a", 1.0)], np.array([2, 0])
    )
    by_position = scored_from_columns(wire, sent)
    assert by_position == [
        ScoredCandidate("c", 2.0, sources=tuple(hits[1:])),
        ScoredCandidate("a", 1.0, sources=tuple(hits)),
    ]
    assert by_position.hits.item_rows is not None
    assert by_position.hits.item_rows.tolist() == [6, 4]
    wire.ClearField("request_positions")  # an older ranking server: joined by id
    assert scored_from_columns(wire, sent) == by_position


@pytest.mark.parametrize("positions", [[0], [0, 3]])
def test_scored_columns_with_positions_that_do_not_fit_are_refused(positions):
    sent = CandidateTable.of([Candidate("a", []), Candidate("b", []), Candidate("c", [])])
    wire = candidate_pb2.ScoredColumns(
        item_ids=["a", "b"], scores=[1.0, 0.5], request_positions=positions
    )
    with pytest.raises(ValueError, match=r"different lengths|past the 3 candidates"):
        scored_from_columns(wire, sent)
