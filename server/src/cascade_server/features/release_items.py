"""A release's item list: the ids its models know, in the models' own order."""

from __future__ import annotations

import json
from pathlib import Path

ITEMS_FILE = "items.json"
_SEPARATOR = '", "'
"""Between two ids of the list as ``json.dumps`` writes it (training writes the file)."""
_SLICE_CHARS = 64 * 1024
"""About how much of the file one ``json.loads`` call parses (under a millisecond)."""


def read_item_ids(release: Path) -> tuple[str, ...]:
    """The release's item ids, as a tuple: the garbage collector untracks a tuple of
    strings after one look, where it walks every entry of a list at each full collection
    (a million of them in a large catalog)."""
    return tuple(parse_id_list((release / ITEMS_FILE).read_text()))


def parse_id_list(text: str) -> list[str]:
    """The JSON list of strings ``text``, parsed a slice at a time.

    One ``json.loads`` of a million ids holds the GIL for 90 to 140 ms, and a server
    parses its next release's list while it answers requests. Slices end at a
    separator between two ids; the separator's text inside an id (one ending in a
    quote, a comma and a space) leaves that id unterminated, so its slice fails to parse
    and the whole text is parsed at once instead.
    """
    body = text.strip()
    if len(body) <= _SLICE_CHARS or not (body.startswith('["') and body.endswith('"]')):
        return list(json.loads(text))
    inner = body[1:-1]
    ids: list[str] = []
    start = 0
    try:
        while start < len(inner):
            cut = inner.find(_SEPARATOR, start + _SLICE_CHARS)
            end = len(inner) if cut < 0 else cut + 1
            ids += json.loads(f"[{inner[start:end]}]")
            start = end + 2
    except json.JSONDecodeError:
        return list(json.loads(text))
    return ids
