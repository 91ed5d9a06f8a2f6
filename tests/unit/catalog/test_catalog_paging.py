"""Catalog page tokens: round trips, filter binding, and rejection of anything else."""

from __future__ import annotations

import base64
import json
import re

import pytest
from hypothesis import given, strategies as st

from cascade_server.catalog.paging import (
    MAX_TOKEN_LENGTH,
    decode_list_token,
    encode_list_token,
)
from cascade_server.catalog.validation import MAX_ID_LENGTH
from cascade_server.errors import FieldViolation, InvalidArgumentError

FILTERS = '["items", "active", "news"]'
# Ids the catalog can hold: 1 to 128 characters, no NUL, valid UTF-8.
ids = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
    min_size=1,
    max_size=MAX_ID_LENGTH,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


def raw_token(payload: object) -> str:
    """A token made from an arbitrary JSON payload, the way encode_list_token frames it."""
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def rejected(token: str, filters: str = FILTERS, field: str = "page_token") -> str:
    with pytest.raises(InvalidArgumentError) as caught:
        decode_list_token(token, filters, field=field)
    assert [violation.field for violation in caught.value.violations] == [field]
    return caught.value.violations[0].description


def test_round_trip() -> None:
    token = encode_list_token("item-42", FILTERS)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert decode_list_token(token, FILTERS) == "item-42"


def test_longest_possible_id_fits_the_token_limit() -> None:
    worst = "\x01" * MAX_ID_LENGTH  # escaped as \u0001, six bytes each
    token = encode_list_token(worst, FILTERS)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert decode_list_token(token, FILTERS) == worst


def test_token_for_other_filters_is_rejected() -> None:
    token = encode_list_token("item-42", FILTERS)
    description = rejected(token, filters='["items", "", "news"]')
    assert "different filters" in description
    rejected(token, filters='["users"]', field="next")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!!",
        "a",
        "abc\n",
        "é",
        "A" * (MAX_TOKEN_LENGTH + 1),
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[" * 1500).decode(),
        raw_token([1, "a", "f"]),
        raw_token({"v": 1, "a": "x"}),
        raw_token({"v": 1, "a": "x", "f": "y", "extra": 1}),
        raw_token({"v": 2, "a": "x", "f": "y"}),
        raw_token({"v": True, "a": "x", "f": "y"}),
        raw_token({"v": "1", "a": "x", "f": "y"}),
        raw_token({"v": 1, "a": "", "f": "y"}),
        raw_token({"v": 1, "a": 7, "f": "y"}),
        raw_token({"v": 1, "a": "x" * (MAX_ID_LENGTH + 1), "f": "y"}),
        raw_token({"v": 1, "a": "nul\x00", "f": "y"}),
        raw_token({"v": 1, "a": "x", "f": 3}),
    ],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    rejected(token)


def test_forged_version_is_named() -> None:
    assert "version" in rejected(raw_token({"v": 2, "a": "x", "f": "y"}))


@given(ids, st.text())
def test_decode_inverts_encode(after: str, filters: str) -> None:
    assert decode_list_token(encode_list_token(after, filters), filters) == after


@given(ids, st.text(), st.text())
def test_other_filters_never_decode(after: str, filters: str, other: str) -> None:
    if other != filters:
        rejected(encode_list_token(after, filters), filters=other)


@given(
    st.one_of(
        st.text(),
        st.binary().map(lambda data: base64.urlsafe_b64encode(data).decode()),
        json_values.map(raw_token),
        st.fixed_dictionaries({"v": json_values, "a": json_values, "f": json_values}).map(
            raw_token
        ),
    )
)
def test_garbage_raises_only_invalid_argument(token: str) -> None:
    violations: tuple[FieldViolation, ...] = ()
    try:
        decode_list_token(token, FILTERS)
    except InvalidArgumentError as error:
        violations = error.violations
    assert all(violation.field == "page_token" for violation in violations)
