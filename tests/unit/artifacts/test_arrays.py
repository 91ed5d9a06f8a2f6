import zipfile

import numpy as np
import pytest

from cascade_server.artifacts.arrays import all_finite, load_mapped, load_npz_mapped


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


def _arrays():
    rng = np.random.default_rng(5)
    return {
        "table": rng.standard_normal((70_000, 8)).astype(np.float32),  # over 1 MB: mapped
        "columns": np.asfortranarray(rng.standard_normal((600, 300))),
        "ids": np.arange(200_000, dtype=np.int64),
        "small": np.arange(5),
        "empty": np.zeros((0, 3)),
        "scalar": np.array(3.5),
    }


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_an_npz_files_arrays_are_read_whole_whether_mapped_or_not(tmp_path, save):
    arrays = _arrays()
    save(tmp_path / "a.npz", **arrays)
    loaded = load_npz_mapped(tmp_path / "a.npz")
    assert loaded.keys() == arrays.keys()
    for name, values in arrays.items():
        assert type(loaded[name]) is np.ndarray
        assert loaded[name].dtype == values.dtype
        np.testing.assert_array_equal(loaded[name], values)
    if save is np.savez:  # stored members over a megabyte are maps of the file
        assert not loaded["table"].flags.writeable
        assert not loaded["ids"].flags.writeable


def test_a_cut_npz_file_is_an_error_not_a_crash(tmp_path):
    np.savez(tmp_path / "a.npz", **_arrays())
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "a.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises((ValueError, zipfile.BadZipFile)):
        load_npz_mapped(tmp_path / "a.npz")
