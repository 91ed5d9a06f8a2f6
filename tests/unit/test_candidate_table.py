"""Candidates in columns read back as the candidates that went in."""

import numpy as np
import pytest

from cascade_server.features.engagement import Csr
from cascade_server.pipeline.table import CandidateTable
from cascade_server.pipeline.types import Candidate, SourceHit, SourceKind

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
        CandidateTable(["a"], np.array([2]), [SourceKind.ANN], np.array([0]), np.array([1.0]))
    with pytest.raises(ValueError, match="different lengths"):
        CandidateTable(["a", "b"], np.array([0]), [], np.zeros(0, int), np.zeros(0))


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
