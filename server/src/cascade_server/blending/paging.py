"""Opaque page tokens for Recommend: stable paging with no repeats across pages.

A token records which items earlier pages served (as 64-bit hashes), which request
it belongs to (a fingerprint of user, seed item and surface) and when it was
issued. The next page is computed fresh and drops the served items, so consecutive
pages never repeat an item even when the data changed in between. The format is
versioned and checksummed; anything else is rejected as malformed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from cascade_server.errors import FieldViolation, InvalidArgumentError

MAX_SERVED = 1000
"""How deep a token chain may go; past this many items a feed has no next page."""

_VERSION = 1
_HEADER = struct.Struct(">BIQH")  # version, issued_at (s), request fingerprint, served count
_CHECKSUM_BYTES = 4


def item_key(item_id: str) -> int:
    """The 64-bit key a token stores for an item."""
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "big")


def request_fingerprint(*parts: str) -> int:
    """The 64-bit fingerprint tying a token to one request shape."""
    joined = "\x1f".join(parts).encode()
    return int.from_bytes(hashlib.blake2b(joined, digest_size=8).digest(), "big")


@dataclass(frozen=True)
class PageState:
    """What a token carries: the served item keys of every earlier page."""

    served: frozenset[int]


def encode_token(fingerprint: int, served: Iterable[int], now: float | None = None) -> str:
    """A token for the page after ``served``."""
    keys = sorted(set(served))
    if len(keys) > MAX_SERVED:
        raise ValueError(f"a page token holds at most {MAX_SERVED} items")
    issued = int(time.time() if now is None else now)
    body = _HEADER.pack(_VERSION, issued, fingerprint, len(keys)) + b"".join(
        k.to_bytes(8, "big") for k in keys
    )
    checksum = hashlib.blake2b(body, digest_size=_CHECKSUM_BYTES).digest()
    return base64.urlsafe_b64encode(body + checksum).rstrip(b"=").decode()


def decode_token(token: str, fingerprint: int, ttl_s: float, now: float | None = None) -> PageState:
    """The state in ``token``; INVALID_ARGUMENT when malformed, foreign or expired."""
    if not token:
        return PageState(frozenset())
    raw = _unpack(token)
    version, issued, token_fingerprint, count = _HEADER.unpack_from(raw)
    if version != _VERSION or count > MAX_SERVED or len(raw) != _HEADER.size + 8 * count:
        raise _invalid("the page token is malformed; request the first page with no page_token")
    if token_fingerprint != fingerprint:
        raise _invalid(
            "the page token belongs to a different user, seed item or surface; "
            "send the same request fields as for the first page"
        )
    age = (time.time() if now is None else now) - issued
    if age > ttl_s or age < -300:
        raise _invalid("the page token has expired; request the first page again")
    keys = frozenset(
        int.from_bytes(raw[offset : offset + 8], "big")
        for offset in range(_HEADER.size, len(raw), 8)
    )
    return PageState(keys)


def _unpack(token: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as error:
        raise _invalid("the page token is not valid base64; pass next_page_token as is") from error
    body, checksum = data[:-_CHECKSUM_BYTES], data[-_CHECKSUM_BYTES:]
    valid = (
        len(body) >= _HEADER.size
        and checksum == hashlib.blake2b(body, digest_size=_CHECKSUM_BYTES).digest()
    )
    if not valid:
        raise _invalid("the page token is malformed; request the first page with no page_token")
    return body


def _invalid(description: str) -> InvalidArgumentError:
    return InvalidArgumentError([FieldViolation("page_token", description)])
