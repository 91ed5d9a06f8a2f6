import base64
import hashlib
import struct
import time

import pytest
from hypothesis import given, settings, strategies as st

from cascade_server.blending.paging import (
    MAX_SERVED,
    PageState,
    decode_token,
    encode_token,
    item_key,
    request_fingerprint,
)
from cascade_server.errors import InvalidArgumentError

NOW = 1_700_000_000.0
TTL = 3600.0
FINGERPRINT = request_fingerprint("user-1", "", "home_feed")
KEYS = {item_key(f"item-{i}") for i in range(25)}

_HEADER = struct.Struct(">BIQH")
MALFORMED = "the page token is malformed; request the first page with no page_token"
NOT_BASE64 = "the page token is not valid base64; pass next_page_token as is"


def decode(token, fingerprint=FINGERPRINT, now=NOW + 10):
    return decode_token(token, fingerprint, TTL, now=now)


def raw(token):
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def pack(body):
    """A token for arbitrary body bytes, with a correct checksum."""
    checksum = hashlib.blake2b(body, digest_size=4).digest()
    return base64.urlsafe_b64encode(body + checksum).rstrip(b"=").decode()


def rejected(token, fingerprint=FINGERPRINT, now=NOW + 10):
    with pytest.raises(InvalidArgumentError) as caught:
        decode(token, fingerprint, now)
    [violation] = caught.value.violations
    assert violation.field == "page_token"
    assert caught.value.metadata["field"] == "page_token"
    assert caught.value.status == "INVALID_ARGUMENT"
    return violation.description


def test_round_trip():
    token = encode_token(FINGERPRINT, KEYS, now=NOW)
    assert decode(token) == PageState(frozenset(KEYS))
    assert token.isascii()
    assert "=" not in token


def test_a_token_for_nothing_served_round_trips():
    token = encode_token(FINGERPRINT, [], now=NOW)
    assert token
    assert decode(token).served == frozenset()


def test_repeated_keys_are_stored_once_and_order_does_not_matter():
    keys = sorted(KEYS)
    token = encode_token(FINGERPRINT, keys + keys[:5], now=NOW)
    assert token == encode_token(FINGERPRINT, reversed(keys), now=NOW)
    assert decode(token).served == frozenset(KEYS)


def test_the_empty_token_is_the_first_page():
    assert decode_token("", FINGERPRINT, TTL) == PageState(frozenset())
    assert decode_token("", 0, 0.0, now=0.0).served == frozenset()


def test_item_keys_and_fingerprints_are_stable_64_bit_values():
    assert item_key("i1") == item_key("i1")
    assert item_key("i1") != item_key("i2")
    assert 0 <= item_key("x") < 2**64
    assert request_fingerprint("a", "b", "c") != request_fingerprint("a", "c", "b")
    assert request_fingerprint("u", "", "home_feed") != request_fingerprint(
        "u", "", "related_items"
    )


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "not a token at all!",
        "a",
        "AAAA",
        "====",
        "é",
        "\x00\x01",
        base64.urlsafe_b64encode(b"\x01" * 40).decode(),
    ],
)
def test_garbage_is_malformed(token):
    assert rejected(token) in {MALFORMED, NOT_BASE64}


def test_bad_base64_says_to_pass_the_token_as_is():
    assert rejected("abcde") == NOT_BASE64  # five characters cannot be base64


def test_a_truncated_token_is_malformed():
    token = encode_token(FINGERPRINT, KEYS, now=NOW)
    for cut in (1, 4, 8, len(token) // 2, len(token) - 3):
        assert rejected(token[:-cut]) in {MALFORMED, NOT_BASE64}
    assert rejected(token[:-8]) == MALFORMED


def test_a_flipped_byte_fails_the_checksum():
    token = encode_token(FINGERPRINT, KEYS, now=NOW)
    data = bytearray(raw(token))
    for position in (0, 5, 14, 20, len(data) - 1):
        flipped = bytearray(data)
        flipped[position] ^= 0x40
        forged = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        assert rejected(forged) == MALFORMED


def test_an_unknown_version_is_malformed_even_with_a_valid_checksum():
    body = _HEADER.pack(2, int(NOW), FINGERPRINT, 0)
    assert rejected(pack(body)) == MALFORMED


def test_a_count_that_does_not_match_the_keys_is_malformed():
    body = _HEADER.pack(1, int(NOW), FINGERPRINT, 3) + (7).to_bytes(8, "big")
    assert rejected(pack(body)) == MALFORMED
    body = _HEADER.pack(1, int(NOW), FINGERPRINT, 1) + (7).to_bytes(8, "big") + b"\x00"
    assert rejected(pack(body)) == MALFORMED
    assert rejected(pack(b"\x01" * (_HEADER.size - 1))) == MALFORMED


def test_a_well_formed_body_decodes():
    body = _HEADER.pack(1, int(NOW), FINGERPRINT, 2) + (7).to_bytes(8, "big") * 2
    assert decode(pack(body)).served == frozenset({7})


def test_a_token_of_another_request_is_rejected():
    token = encode_token(FINGERPRINT, KEYS, now=NOW)
    for other in (
        request_fingerprint("user-2", "", "home_feed"),
        request_fingerprint("user-1", "i1", "related_items"),
        request_fingerprint("user-1", "", "related_items"),
    ):
        description = rejected(token, fingerprint=other)
        assert "different user, seed item or surface" in description
        assert "send the same request fields as for the first page" in description


def test_tokens_expire_after_the_ttl():
    token = encode_token(FINGERPRINT, KEYS, now=NOW)
    assert decode(token, now=NOW + TTL).served == frozenset(KEYS)
    assert (
        rejected(token, now=NOW + TTL + 1)
        == "the page token has expired; request the first page again"
    )


def test_tokens_from_the_future_beyond_clock_skew_are_expired():
    token = encode_token(FINGERPRINT, KEYS, now=NOW)
    assert decode(token, now=NOW - 300).served == frozenset(KEYS)
    assert "expired" in rejected(token, now=NOW - 301)


def test_decode_uses_the_clock_when_now_is_not_given():
    fresh = encode_token(FINGERPRINT, KEYS)
    assert decode_token(fresh, FINGERPRINT, TTL).served == frozenset(KEYS)
    stale = encode_token(FINGERPRINT, KEYS, now=time.time() - 2 * TTL)
    with pytest.raises(InvalidArgumentError, match="expired"):
        decode_token(stale, FINGERPRINT, TTL)


def test_max_served_is_enforced_when_encoding():
    keys = list(range(MAX_SERVED))
    token = encode_token(FINGERPRINT, keys, now=NOW)
    assert len(decode(token).served) == MAX_SERVED
    # Repeats do not count.
    encode_token(FINGERPRINT, [*keys, 0, 1, 2], now=NOW)
    with pytest.raises(ValueError, match=str(MAX_SERVED)):
        encode_token(FINGERPRINT, range(MAX_SERVED + 1), now=NOW)


def test_max_served_is_enforced_when_decoding():
    count = MAX_SERVED + 1
    body = _HEADER.pack(1, int(NOW), FINGERPRINT, count) + b"".join(
        k.to_bytes(8, "big") for k in range(count)
    )
    assert rejected(pack(body)) == MALFORMED


@settings(max_examples=100)
@given(st.text(max_size=200))
def test_arbitrary_text_is_rejected_with_invalid_argument_only(token):
    if not token:
        assert decode(token).served == frozenset()
        return
    assert rejected(token) in {MALFORMED, NOT_BASE64}


@settings(max_examples=100)
@given(st.binary(max_size=120))
def test_arbitrary_base64_bytes_are_rejected_with_invalid_argument_only(data):
    token = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    if not token:
        return
    assert rejected(token) == MALFORMED


@settings(max_examples=100)
@given(
    st.frozensets(st.integers(min_value=0, max_value=2**64 - 1), max_size=60),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.floats(min_value=0, max_value=TTL),
)
def test_any_set_of_keys_round_trips(keys, fingerprint, age):
    token = encode_token(fingerprint, keys, now=NOW)
    assert decode_token(token, fingerprint, TTL, now=NOW + age) == PageState(keys)
