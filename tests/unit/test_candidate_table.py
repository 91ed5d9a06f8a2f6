"""Candidates in columns read back as the candidates that went in."""

import numpy as np
import pytest

from cascade_server.features.engagement import Csr
from cascade_server.pipeline.table import CandidateTable, ScoredTable, source_codes
from cascade_server.pipeline.types import Candidate, ScoredCandidate, SourceHit, SourceKind

CANDIDATES = [
    Candidate("a", [SourceHit(SourceKind.ANN, 0, 0.9), SourceHit(SourceKind.POPULAR, 3, 12.0)]),
    Candidate("b", []),
    Candidate("c", [SourceHit(SourceKind.FRESH, 1, 0.5)]),
]


def test_a_table_reads_back_its_candidates():
    table = CandidateTable.of(CANDIDATES)
    assert len(table) == 3
    assert list(table) == CANDIDATES
    assert table == CANDIDATES
    assert [table[i] for i in range(3)] == CANDIDATES
    assert table[-1] == CANDIDATES[-1]
    assert table[1:] == CANDIDATES[1:]
    assert table.sources() == [tuple(c.sources) for c in CANDIDATES]
    with pytest.raises(IndexError):
        table[3]


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        CandidateTable(
            ["a"], np.array([2]), source_codes([SourceKind.ANN]), np.array([0]), np.array([1.0])
        )
    with pytest.raises(ValueError, match="different lengths"):
        CandidateTable(["a", "b"], np.array([0]), source_codes([]), np.zeros(0, int), np.zeros(0))


def test_csr_rows_are_the_rows_one_after_another():
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 5, 50)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    csr = Csr(indptr, rng.integers(0, 100, indptr[-1]), rng.random(indptr[-1]))
    rows = np.array([3, -1, 49, 50, 3, 0, 17])  # out of range rows are empty; repeats kept
    indices, values = csr.rows(rows)
    np.testing.assert_array_equal(indices, np.concatenate([csr.row(int(r))[0] for r in rows]))
    np.testing.assert_array_equal(values, np.concatenate([csr.row(int(r))[1] for r in rows]))
    assert len(csr.rows(np.zeros(0, dtype=np.int64))[0]) == 0


def test_an_empty_table_is_empty():
    table = CandidateTable.of([])
    assert len(table) == 0
    assert list(table) == []
    assert table.sources() == []


def test_the_table_of_a_table_is_itself():
    table = CandidateTable.of(CANDIDATES)
    assert CandidateTable.of(table) is table


def test_csr_take_keeps_every_row_in_place():
    csr = Csr(np.array([0, 2, 2, 3]), np.array([1, 0, 1]), np.array([5.0, 6.0, 7.0]))
    taken = csr.take(np.array([2, -1, 0, 3, 0]))
    assert taken.n_rows == 5
    assert [taken.row(r)[0].tolist() for r in range(5)] == [[1], [], [1, 0], [], [1, 0]]
    assert taken.data.tolist() == [7.0, 5.0, 6.0, 5.0, 6.0]


def test_take_reorders_candidates_with_their_hits():
    table = CandidateTable.of(CANDIDATES)
    assert table.take(np.array([2, 0, 0])) == [CANDIDATES[2], CANDIDATES[0], CANDIDATES[0]]
    assert table.take(np.zeros(0, dtype=np.int64)) == []
    renamed = table.take(np.array([-1, 0]), ["new", "a"])
    assert renamed == [Candidate("new", []), CANDIDATES[0]]


def test_best_rank_is_the_lowest_rank_from_the_source():
    more = [
        Candidate("d", [SourceHit(SourceKind.FRESH, 4, 0.1), SourceHit(SourceKind.FRESH, 6, 0.1)]),
        Candidate("e", [SourceHit(SourceKind.ANN, 0, 1.0), SourceHit(SourceKind.FRESH, 0, 1.0)]),
    ]
    table = CandidateTable.of([*CANDIDATES, *more])
    np.testing.assert_array_equal(
        table.best_rank(SourceKind.FRESH), [np.inf, np.inf, 1.0, 4.0, 0.0]
    )
    assert table.best_rank(SourceKind.TRENDING).tolist() == [np.inf] * 5


def test_a_scored_table_attaches_each_ranked_items_hits():
    retrieved = CandidateTable.of(CANDIDATES)
    ranked = ScoredTable.ranked(["c", "x", "a"], np.array([3.0, 2.0, 1.0]), retrieved)
    expected = [
        ScoredCandidate("c", 3.0, sources=tuple(CANDIDATES[2].sources)),
        ScoredCandidate("x", 2.0),
        ScoredCandidate("a", 1.0, sources=tuple(CANDIDATES[0].sources)),
    ]
    assert len(ranked) == 3
    assert ranked.item_ids == ["c", "x", "a"]
    assert list(ranked) == expected
    assert [ranked[i] for i in (0, 1, -1)] == [expected[0], expected[1], expected[2]]
    assert ranked[1:] == expected[1:]
    with pytest.raises(IndexError):
        ranked[3]
    assert ranked.take(np.array([2, 0])) == [expected[2], expected[0]]
    assert ranked.take(np.zeros(0, dtype=np.int64)) == []
    with pytest.raises(ValueError, match="different lengths"):
        ScoredTable(np.array([1.0]), retrieved)


def test_csr_sum_rows_at_reads_the_summed_rows_at_the_columns():
    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 6, 40)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    csr = Csr(indptr, rng.integers(0, 60, indptr[-1]), rng.random(indptr[-1]))
    dense = np.zeros((40, 80))
    np.add.at(dense, (csr.entry_rows(), csr.indices), csr.data)
    rows = np.array([3, 7, 7, 39, -1, 12])
    columns = np.array([5, 59, 5, 79, 0, 33, 12])  # a repeat; 79 is in no row
    expected = dense[rows[rows >= 0]].sum(axis=0)[columns]
    np.testing.assert_allclose(csr.sum_rows_at(rows, columns), expected)
    # The per-thread slots are left clean: a second call with other columns agrees too.
    np.testing.assert_allclose(
        csr.sum_rows_at(rows, np.array([1, 2])), dense[rows[rows >= 0]].sum(axis=0)[[1, 2]]
    )
    assert csr.sum_rows_at(rows, np.zeros(0, dtype=np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="non-negative"):
        csr.sum_rows_at(rows, np.array([-1]))
