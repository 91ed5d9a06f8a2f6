import numpy as np
import pytest

from cascade_server.features.id_bytes import MAX_WIDTH, NO_ID_BYTES, id_bytes, ids_at, matches

IDS = ["i1", "item-22", "élan", "鳥", "x" * MAX_WIDTH, ""]


def test_ids_read_back_from_the_array_are_the_ids():
    column = id_bytes(IDS)
    rows = np.array([4, 0, 3, 2, 5, 1, 0])
    assert ids_at(column, rows) == [IDS[r] for r in rows.tolist()]


@pytest.mark.parametrize(
    "ids",
    [
        ["a", "b\0"],  # the fixed width would drop the NUL
        ["a", "x" * (MAX_WIDTH + 1)],
        ["a", "é" * (MAX_WIDTH // 2 + 1)],  # short in characters, long in bytes
        [],
    ],
)
def test_ids_that_do_not_fit_the_array_get_none(ids):
    assert id_bytes(ids) is NO_ID_BYTES


def test_an_id_matches_only_its_own_row():
    column = id_bytes(IDS)
    rows = np.array([0, 1, 2, 3, 4, 5, 0, 0, 1, 2])
    asked = [*IDS, "i1\0", "i", "item-22 ", "elan"]
    assert matches(column, rows, asked).tolist() == [True] * 6 + [False] * 4


def test_no_ids_match_nothing():
    assert matches(id_bytes(IDS), np.zeros(0, dtype=np.int64), []).tolist() == []
