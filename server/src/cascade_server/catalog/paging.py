"""Opaque page tokens for the catalog's list calls (keyset pagination).

A token is the unpadded urlsafe base64 of a compact JSON object::

    {"v": 1, "a": "<last external id returned>", "f": "<filters fingerprint>"}

``v`` is the format version, ``a`` the id the next page starts after, and ``f`` a
short hash of the listing's filters (the service builds the ``filters`` string from
the list kind, status and category), so a token reused with different filters is
rejected instead of silently skipping or repeating records. Tokens are not signed:
a forged token can only start a listing at another id, which any caller may do.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cascade_server.catalog.validation import MAX_ID_LENGTH, text_problem
from cascade_server.errors import FieldViolation, InvalidArgumentError

TOKEN_VERSION = 1
"""The token format written by this module; other versions are rejected."""
MAX_TOKEN_LENGTH = 2048
"""Longest token accepted; real ones stay well below it even for 128-character ids."""
_FINGERPRINT_CHARS = 16
_RESTART = "start again with an empty page_token"


def filters_fingerprint(filters: str) -> str:
    """A short, stable hash of a listing's filters (16 hex digits of SHA-256)."""
    digest = hashlib.sha256(filters.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:_FINGERPRINT_CHARS]


def encode_list_token(after: str, filters: str) -> str:
    """The token for the page that starts after the external id ``after``."""
    payload = {"v": TOKEN_VERSION, "a": after, "f": filters_fingerprint(filters)}
    raw = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_list_token(token: str, filters: str, field: str = "page_token") -> str:
    """Return the id a token's page starts after, checking it was made for ``filters``.

    Raises ``InvalidArgumentError`` with one violation on ``field`` when the token is
    malformed, of another format version, or was issued for different filters.
    Garbage input never raises anything else.
    """
    payload = _parse(token, field)
    if payload.get("f") != filters_fingerprint(filters):
        raise _invalid(
            field,
            "was issued for a listing with different filters; repeat the first page's "
            f"filters or {_RESTART}",
        )
    after: str = payload["a"]
    return after


def _parse(token: str, field: str) -> dict[str, Any]:
    if not token:
        raise _invalid(field, "is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _invalid(field, f"is not a page token from this service; {_RESTART}")
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        payload = json.loads(raw.decode("utf-8"))
    except (ValueError, TypeError, RecursionError):
        raise _invalid(field, f"is not a page token from this service; {_RESTART}") from None
    if not isinstance(payload, dict) or set(payload) != {"v", "a", "f"}:
        raise _invalid(field, f"is not a page token from this service; {_RESTART}")
    version = payload["v"]
    if type(version) is not int or version != TOKEN_VERSION:
        raise _invalid(field, f"has an unsupported format version; {_RESTART}")
    after = payload["a"]
    if (
        not isinstance(after, str)
        or not 0 < len(after) <= MAX_ID_LENGTH
        or text_problem(after)
        or not isinstance(payload["f"], str)
    ):
        raise _invalid(field, f"is not a page token from this service; {_RESTART}")
    return payload


def _invalid(field: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError([FieldViolation(field, description)])
