"""A release's item list, parsed a slice at a time, equals one json.loads of it."""

import json

import pytest

from cascade_server.features import release_items
from cascade_server.features.release_items import ITEMS_FILE, parse_id_list, read_item_ids

MANY = [f"item-{i:07d}" for i in range(30_000)]  # several slices


def with_ids(ids, at, values):
    changed = list(ids)
    changed[at : at + len(values)] = values
    return changed


@pytest.mark.parametrize(
    "ids",
    [
        [],
        ["only"],
        MANY,
        # Ids holding the separator, quotes and backslashes, in the first slice and later.
        with_ids(MANY, 10, ['a", "b', "ends with a backslash\\", '", "', 'ünï "quoted"']),
        # An id ending in a quote, a comma and a space holds a separator's text.
        with_ids(MANY, 20, ['ends like a separator", ', "next"]),
        with_ids(MANY, 15_000, ['x", "y', "\\", '\\", "', "tab\there"]),
        with_ids(MANY, 29_990, ['last", "ones', "\\\\"]),
    ],
)
@pytest.mark.parametrize("slice_chars", [1, 64 * 1024])
def test_slices_parse_to_the_same_list(ids, slice_chars, monkeypatch):
    # One character: every separator ends a slice, those inside ids too.
    monkeypatch.setattr(release_items, "_SLICE_CHARS", slice_chars)
    assert parse_id_list(json.dumps(ids)) == ids


def test_other_layouts_are_parsed_whole(tmp_path):
    assert parse_id_list(json.dumps(MANY, indent=1)) == MANY
    (tmp_path / ITEMS_FILE).write_text(json.dumps(MANY, separators=(",", ":")))
    assert read_item_ids(tmp_path) == tuple(MANY)


def test_a_damaged_list_fails_to_parse():
    with pytest.raises(json.JSONDecodeError):
        parse_id_list(json.dumps(MANY)[:-2])
