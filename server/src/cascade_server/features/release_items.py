"""A release's item list: the ids its models know, in the models' own order."""

from __future__ import annotations

import json
from pathlib import Path

ITEMS_FILE = "items.json"


def read_item_ids(release: Path) -> tuple[str, ...]:
    """The release's item ids, as a tuple: the garbage collector untracks a tuple of
    strings after one look, where it walks every entry of a list at each full collection
    (a million of them in a large catalog)."""
    return tuple(json.loads((release / ITEMS_FILE).read_text()))
