"""Positions of one id list in another, with and without the prefix shortcut."""

import pytest

from cascade_server.features.id_positions import id_positions


@pytest.mark.parametrize(
    ("ids", "within", "expected"),
    [
        (["a", "b", "c"], ["a", "b", "c"], [0, 1, 2]),
        (["a", "b", "c", "new"], ["a", "b", "c"], [0, 1, 2, -1]),  # added since
        (["a", "b"], ["a", "b", "c"], [0, 1]),
        (["c", "a", "x"], ["a", "b", "c"], [2, 0, -1]),  # no prefix: by lookup
        (["b", "a"], ["a", "b"], [1, 0]),
        ([], ["a"], []),
        (["a"], [], [-1]),
    ],
)
def test_each_id_gets_its_position_or_minus_one(ids, within, expected):
    assert id_positions(ids, within).tolist() == expected
    index = {item: i for i, item in enumerate(within)}
    assert id_positions(ids, within, index).tolist() == expected


@pytest.mark.parametrize("changed", [0, 65_535, 65_536, 65_537, 150_000, 199_999])
def test_lists_longer_than_one_comparison_differ_wherever_one_id_does(changed):
    within = [f"i{k}" for k in range(200_000)]
    ids = ([*within[:changed], "other", *within[changed + 1 :]], [*within, "new"])
    moved, added = (id_positions(tuple(each), within) for each in ids)
    expected = list(range(200_000))
    expected[changed] = -1
    assert moved.tolist() == expected
    assert added.tolist() == [*range(200_000), -1]
