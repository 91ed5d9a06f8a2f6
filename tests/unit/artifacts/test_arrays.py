import numpy as np
import pytest

from cascade_server.artifacts.arrays import all_finite, load_mapped


def test_a_mapped_array_holds_the_files_values_and_cannot_be_written(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", values)
    mapped = load_mapped(tmp_path / "a.npy")
    assert type(mapped) is np.ndarray
    np.testing.assert_array_equal(mapped, values)
    with pytest.raises(ValueError, match="read-only"):
        mapped[0, 0] = 1.0


@pytest.mark.parametrize("row", [0, 2, 3, 4, 9])
def test_a_value_that_is_not_finite_is_found_in_any_pass(row):
    values = np.ones((10, 2))
    assert all_finite(values, rows_per_pass=3)
    values[row, 1] = np.nan if row % 2 else -np.inf
    assert not all_finite(values, rows_per_pass=3)


def test_an_empty_array_is_finite():
    assert all_finite(np.zeros((0, 4), dtype=np.float32))
