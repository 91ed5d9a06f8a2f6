"""Engagement signals: decayed popularity, users' recent items, item-to-item co-engagement.

``build_snapshot`` turns the raw catalog and event log (``EngagementData``, read from
Postgres by ``storage.engagement_reader``) into an immutable
``EngagementSnapshot`` that serving reads without touching the database. Items and
users are addressed by dense indices (positions in ``item_ids`` / ``user_ids``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import sparse

from cascade_server.features.id_bytes import IdBytes, id_bytes, ids_at, matches
from cascade_server.features.scratch import ScratchArray
from cascade_server.storage.engagement_reader import EngagementData
from cascade_server.storage.tables import EVENT_KINDS, ITEM_STATUSES

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

KIND_WEIGHT_BY_NAME: Final = {
    "impression": 0.0,
    "click": 1.0,
    "save": 3.0,
    "like": 2.0,
    "share": 3.0,
    "hide": 0.0,
    "rate": 1.0,
}
"""How much one event of each kind counts as positive engagement."""

KIND_WEIGHTS: Final = np.array([KIND_WEIGHT_BY_NAME[kind] for kind in EVENT_KINDS])
HIDE_CODE: Final = EVENT_KINDS.index("hide")
IMPRESSION_CODE: Final = EVENT_KINDS.index("impression")
ACTIVE: Final = ITEM_STATUSES.index("active")

_SECONDS_PER_DAY: Final = 86_400.0


@dataclass(frozen=True)
class SignalConfig:
    """Knobs of the signals; see ``Settings`` for their meaning."""

    popularity_half_life_days: float = 7.0
    history_length: int = 50
    neighbours_per_item: int = 50
    shrinkage: float = 5.0
    """Added to the cosine denominator so pairs seen by few users count less."""
    trending_half_life_hours: float = 24.0
    """Half-life of the short-term engagement that trending compares with popularity."""
    seen_ttl_hours: float = 24.0
    """Items shown to a user (impressions) this recently are not recommended again; 0: off."""
    seen_max_items: int = 500
    """At most this many recent impressions are remembered per user."""


@dataclass(frozen=True)
class Csr:
    """Rows of variable length: row ``r`` is ``values[indptr[r]:indptr[r + 1]]``."""

    indptr: IntArray
    indices: IntArray
    data: FloatArray

    def row(self, r: int) -> tuple[IntArray, FloatArray]:
        """The indices and values of row ``r`` (empty for rows out of range)."""
        if r < 0 or r + 1 >= len(self.indptr):
            return _EMPTY_INT, _EMPTY_FLOAT
        start, end = self.indptr[r], self.indptr[r + 1]
        return self.indices[start:end], self.data[start:end]

    @property
    def n_rows(self) -> int:
        """How many rows there are."""
        return len(self.indptr) - 1

    def entry_rows(self) -> IntArray:
        """The row of each stored entry (aligned with ``indices`` and ``data``)."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.indptr))

    def where(self, keep: npt.NDArray[np.bool_]) -> Csr:
        """The same rows holding only the entries where ``keep`` is set (order kept)."""
        indptr = np.zeros(self.n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.entry_rows()[keep], minlength=self.n_rows), out=indptr[1:])
        return Csr(indptr, self.indices[keep], self.data[keep])

    def transpose(self, n_columns: int) -> Csr:
        """Row ``c`` lists the rows whose entries hold index ``c`` (in row order)."""
        order = np.argsort(self.indices, kind="stable")
        indptr = np.zeros(n_columns + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.indices, minlength=n_columns), out=indptr[1:])
        return Csr(indptr, self.entry_rows()[order], self.data[order])

    def take(self, rows: IntArray) -> Csr:
        """The matrix of ``rows``, in their order (rows out of range are empty)."""
        positions, indptr = self._entries(rows)
        return Csr(indptr, self.indices[positions], self.data[positions])

    def _entries(self, rows: IntArray) -> tuple[IntArray, IntArray]:
        """Where the entries of ``rows`` are stored, one row after another, and the indptr
        of those rows taken (rows out of range are empty)."""
        valid = (rows >= 0) & (rows < self.n_rows)
        safe = np.where(valid, rows, 0)
        starts = self.indptr[safe]
        lengths = np.where(valid, self.indptr[safe + 1] - starts, 0)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        positions = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return positions, indptr

    def rows(self, rows: IntArray) -> tuple[IntArray, FloatArray]:
        """The indices and values of ``rows``, one row after another (rows out of range
        are empty)."""
        taken = self.take(rows)
        return taken.indices, taken.data

    def sum_rows(self, rows: IntArray) -> tuple[IntArray, FloatArray]:
        """The sum of ``rows`` as a sparse vector: its indices (sorted) and values."""
        indices, values = self.rows(rows)
        if len(indices) == 0:
            return _EMPTY_INT, _EMPTY_FLOAT
        unique, inverse = np.unique(indices, return_inverse=True)
        summed = np.bincount(inverse, weights=values, minlength=len(unique))
        return unique.astype(np.int64), summed.astype(np.float64)

    def sum_rows_at(self, rows: IntArray, columns: IntArray) -> FloatArray:
        """The sum of ``rows`` read at ``columns`` (0 where no row has the column)."""
        positions, _ = self._entries(rows)
        if len(positions) == 0 or len(columns) == 0:
            return np.zeros(len(columns))
        if int(columns.min()) < 0:
            raise ValueError("columns must be non-negative")
        indices = self.indices[positions]
        # Only the entries at ``columns`` are summed, in the rows' order (so a row's sum
        # never depends on other rows), found through a per-thread array over the
        # columns: one lookup per entry, where a binary search took nine. Only those
        # entries' values are read (a few percent of them).
        size = max(int(indices.max()), int(columns.max())) + 1
        slots = _COLUMN_SLOTS.get(size)
        slots[columns] = np.arange(len(columns), dtype=np.int32)  # repeats share one slot
        try:
            slot = slots[indices]
            hit = np.flatnonzero(slot >= 0)
            values = self.data[positions[hit]]
            sums = np.bincount(slot[hit], weights=values, minlength=len(columns))
            found: FloatArray = np.asarray(sums[slots[columns]], dtype=np.float64)
        finally:
            slots[columns] = -1
        return found


_COLUMN_SLOTS = ScratchArray(np.int32, -1)
"""Each thread's slots over the columns, every one -1 (callers put back what they set)."""


_EMPTY_INT: Final[IntArray] = np.zeros(0, dtype=np.int64)
_EMPTY_FLOAT: Final[FloatArray] = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True)
class EngagementSnapshot:
    """Everything serving needs from the engagement data, immutable once built.

    The catalog-sized string sequences (``item_ids``, ``item_creators``,
    ``item_titles``) are tuples: the garbage collector stops scanning a tuple of strings
    after its first look, where every full collection walks each entry of a list. The
    heap is frozen once loaded (``heap``), but a release swap's full collection and any
    collection before the freeze walked these lists: 70 ms of the 88 ms a full
    collection took at a million items.
    """

    item_ids: Sequence[str]
    item_index: dict[str, int]
    item_creators: Sequence[str]
    item_active: npt.NDArray[np.bool_]
    user_index: dict[str, int]
    popularity: FloatArray
    """Decayed, weighted positive engagement per item."""
    popular_items: IntArray
    """Active items with any positive engagement, most popular first."""
    trending: FloatArray
    """Short-term engagement above what the item's popularity predicts (see ``_trending``)."""
    trending_items: IntArray
    """Active items with a positive trending score, most trending first."""
    history: Csr
    """Per user: distinct positively engaged items, most recent first, at most history_length."""
    engaged: Csr
    """Per user: every item with positive engagement, sorted by index (for membership)."""
    hidden: Csr
    """Per user: every item the user hid, sorted by index."""
    impressed: Csr
    """Per user: items shown within ``seen_ttl_hours`` of the newest event, newest first,
    at most ``seen_max_items``."""
    neighbours: Csr
    """Per item: co-engaged items with cosine similarity, most similar first."""
    categories: Sequence[str]
    """Category names; a category's id is its position."""
    item_categories: Csr
    """Per item: its category ids."""
    category_items: Csr
    """Per category: its active items with positive engagement, most popular first."""
    item_titles: Sequence[str]
    """Each item's title, case- and space-normalised for deduplication ("" when unknown)."""
    item_created: FloatArray
    """Each item's creation time in seconds since the epoch (0 when unknown)."""
    item_creator_codes: IntArray
    """Each item's creator as a dense code (-1 for items without a creator)."""
    item_title_codes: IntArray
    """Each item's (normalised) title as a dense code (-1 for items without a title)."""
    item_id_bytes: IdBytes
    """``item_ids`` as one fixed-width UTF-8 array, for reading and checking ids at rows
    (empty when the ids do not fit one: see ``features.id_bytes``)."""
    item_primary_category: IntArray
    """Each item's first category id (-1 for items without one)."""
    snapshot_id: str
    data_as_of: datetime | None
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def item_count(self) -> int:
        """How many items the catalog holds (every status)."""
        return len(self.item_ids)

    def user_row(self, user_id: str) -> int:
        """The user's index, or -1 for an unknown (or empty) user id."""
        return self.user_index.get(user_id, -1)

    def item_ids_of(self, items: IntArray) -> list[str]:
        """The ids of ``items`` (indices)."""
        if len(self.item_id_bytes):
            return ids_at(self.item_id_bytes, items)
        return [self.item_ids[item] for item in items.tolist()]

    def lookup_items(self, item_ids: Sequence[str], hint: IntArray | None = None) -> IntArray:
        """Indices of ``item_ids``; -1 for unknown ids.

        ``hint`` (one per id, or None) guesses each index, as a server that read the
        same catalog found it: a guess is kept where this catalog has that id there,
        and only the other ids are looked up. Checking the guesses reads one entry of
        ``item_id_bytes`` per id (of ``item_ids`` when the ids do not fit that array);
        looking ids up in a million-entry dict costs several times as much.
        """
        if hint is None or len(hint) != len(item_ids):
            found = map(self.item_index.get, item_ids, itertools.repeat(-1))
            return np.fromiter(found, np.int64, len(item_ids))
        rows = np.array(hint, dtype=np.int64)
        in_range = (rows >= 0) & (rows < len(self.item_ids))
        guesses = np.where(in_range, rows, 0)
        if len(self.item_id_bytes):
            wrong = ~(in_range & matches(self.item_id_bytes, guesses, item_ids))
        else:
            at_rows = list(map(self.item_ids.__getitem__, guesses.tolist()))
            if in_range.all() and at_rows == list(item_ids):  # one comparison in C
                return rows
            differs = map(operator.ne, at_rows, item_ids)
            wrong = ~in_range | np.fromiter(differs, np.bool_, len(rows))
        if not wrong.any():  # the usual case
            return rows
        misses = np.flatnonzero(wrong)
        rows[misses] = self.lookup_items([item_ids[i] for i in misses.tolist()])
        return rows

    @cached_property
    def category_index(self) -> dict[str, int]:
        """Category name → id (built once per snapshot)."""
        return {name: i for i, name in enumerate(self.categories)}

    def category_of(self, name: str) -> int:
        """A category's id, or -1 when no item has it."""
        return self.category_index.get(name, -1)

    def user_with_history(self) -> str:
        """Some user with engagement history ("" when there is none), for warm-ups."""
        return next(
            (user for user, row in self.user_index.items() if len(self.history.row(row)[0])), ""
        )

    @cached_property
    def category_members_lists(self) -> Csr:
        """Per category, its items of any status (built once per snapshot)."""
        return self.item_categories.transpose(len(self.categories))

    def category_members(self, category: int) -> npt.NDArray[np.bool_]:
        """[items]: whether each item (of any status) is in ``category``."""
        members = np.zeros(self.item_count, dtype=np.bool_)
        members[self.category_members_lists.row(category)[0]] = True
        return members

    def in_categories(self, items: IntArray, categories: IntArray) -> npt.NDArray[np.bool_]:
        """Whether each of ``items`` is in any of ``categories``."""
        wanted = np.zeros(len(self.categories), dtype=np.bool_)
        wanted[categories] = True
        taken = self.item_categories.take(items)
        found = np.zeros(len(items), dtype=np.bool_)
        found[taken.entry_rows()[wanted[taken.indices]]] = True
        return found

    def popularity_head(self, items: IntArray) -> FloatArray:
        """Popularity scaled to [0, 1] by log: 1 for the most popular item."""
        top = self.popularity[self.popular_items[0]] if len(self.popular_items) else 0.0
        if top <= 0:
            return np.zeros(len(items))
        return np.log1p(self.popularity[items]) / math.log1p(top)

    def aggregate_neighbours(self, seeds: IntArray) -> tuple[IntArray, FloatArray]:
        """Items co-engaged with ``seeds``, with summed similarity, sorted by item index."""
        return self.neighbours.sum_rows(seeds)

    def co_engagement(self, seeds: IntArray, candidates: IntArray) -> FloatArray:
        """Summed similarity of each candidate to the seeds (0 when not co-engaged)."""
        return self.neighbours.sum_rows_at(seeds, candidates)


def build_snapshot(data: EngagementData, config: SignalConfig) -> EngagementSnapshot:
    """Compute every signal from the raw arrays. Deterministic for the same input."""
    n_items, n_users = len(data.item_ids), len(data.user_ids)
    positive = KIND_WEIGHTS[data.kinds] > 0
    newest = float(data.timestamps.max()) if len(data.timestamps) else None
    popularity = _popularity(data, positive, n_items, newest, config.popularity_half_life_days)
    active = data.item_status == ACTIVE
    ranked = np.lexsort((np.arange(n_items), -popularity))
    popular_items = ranked[active[ranked] & (popularity[ranked] > 0)].astype(np.int64)
    trending = _trending(data, positive, n_items, newest, popularity, config)
    by_trend = np.lexsort((np.arange(n_items), -trending))
    trending_items = by_trend[active[by_trend] & (trending[by_trend] > 0)].astype(np.int64)
    titles = tuple(" ".join(t.casefold().split()) for t in data.item_titles) or ("",) * n_items

    users, items, last_seen = distinct_pairs(
        data.event_users[positive], data.event_items[positive], data.timestamps[positive]
    )
    engaged = _rows(users, items, np.ones(len(items)), n_users)
    history = _history(users, items, last_seen, n_users, config.history_length)
    hide = data.kinds == HIDE_CODE
    hidden = _hidden(data.event_users[hide], data.event_items[hide], n_users)
    shown = data.kinds == IMPRESSION_CODE
    impressed = _recent_impressions(
        data.event_users[shown],
        data.event_items[shown],
        data.timestamps[shown],
        newest,
        n_users,
        config,
    )
    neighbours = _neighbours(history, n_users, n_items, config)
    categories, item_categories = _categories(data.item_categories, n_items)
    category_items = _category_items(item_categories, len(categories), popular_items, popularity)
    return EngagementSnapshot(
        item_ids=tuple(data.item_ids),
        item_index=dict(zip(data.item_ids, range(n_items), strict=True)),
        item_creators=tuple(data.item_creators),
        item_active=active,
        user_index={user: u for u, user in enumerate(data.user_ids)},
        popularity=popularity,
        popular_items=popular_items,
        trending=trending,
        trending_items=trending_items,
        history=history,
        engaged=engaged,
        hidden=hidden,
        impressed=impressed,
        neighbours=neighbours,
        categories=categories,
        item_categories=item_categories,
        category_items=category_items,
        item_titles=titles,
        item_created=data.item_created if len(data.item_created) else np.zeros(n_items),
        item_creator_codes=_codes(data.item_creators),
        item_title_codes=_codes(titles),
        item_id_bytes=id_bytes(data.item_ids),
        item_primary_category=_primary_categories(item_categories),
        snapshot_id="baseline-" + hashlib.sha256(data.fingerprint.encode()).hexdigest()[:10],
        data_as_of=datetime.fromtimestamp(newest, UTC) if newest is not None else None,
        stats={
            "items": n_items,
            "active_items": int(active.sum()),
            "users": n_users,
            "events": len(data.kinds),
            "neighbour_pairs": len(neighbours.indices),
        },
    )


def with_item_statuses(
    snapshot: EngagementSnapshot, changes: Sequence[tuple[str, str]]
) -> EngagementSnapshot:
    """``snapshot`` with new catalog statuses applied: items that stopped being active
    leave every list at once; items unknown to the snapshot, and items that became
    active again, wait for the next full build. Returns ``snapshot`` when nothing changed."""
    active = snapshot.item_active.copy()
    for item_id, status in changes:
        index = snapshot.item_index.get(item_id)
        if index is not None:
            active[index] = status == ITEM_STATUSES[ACTIVE]
    if np.array_equal(active, snapshot.item_active):
        return snapshot
    return dataclasses.replace(
        snapshot,
        item_active=active,
        popular_items=snapshot.popular_items[active[snapshot.popular_items]],
        trending_items=snapshot.trending_items[active[snapshot.trending_items]],
        category_items=snapshot.category_items.where(active[snapshot.category_items.indices]),
    )


def with_seen_events(
    snapshot: EngagementSnapshot,
    events: Sequence[tuple[str, str, str, float]],
    config: SignalConfig,
) -> EngagementSnapshot:
    """``snapshot`` with new impression and hide events ``(user_id, item_id, kind, time)``
    added to its seen items, as a full build would (users or items the snapshot does not
    know wait for the next full build). Returns ``snapshot`` when nothing applies."""
    known = [
        (snapshot.user_index[user], snapshot.item_index[item], kind, at)
        for user, item, kind, at in events
        if user in snapshot.user_index and item in snapshot.item_index
    ]
    if not known:
        return snapshot
    users = np.array([k[0] for k in known], dtype=np.int64)
    items = np.array([k[1] for k in known], dtype=np.int64)
    times = np.array([k[3] for k in known], dtype=np.float64)
    hide = np.array([k[2] == "hide" for k in known])
    hidden, impressed = snapshot.hidden, snapshot.impressed
    if hide.any():
        hidden = _hidden(
            np.concatenate([hidden.entry_rows(), users[hide]]),
            np.concatenate([hidden.indices, items[hide]]),
            hidden.n_rows,
        )
    if not hide.all():
        as_of = snapshot.data_as_of.timestamp() if snapshot.data_as_of else -np.inf
        impressed = _recent_impressions(
            np.concatenate([impressed.entry_rows(), users[~hide]]),
            np.concatenate([impressed.indices, items[~hide]]),
            np.concatenate([impressed.data, times[~hide]]),
            max(as_of, float(times.max())),
            impressed.n_rows,
            config,
        )
    return dataclasses.replace(snapshot, hidden=hidden, impressed=impressed)


def _popularity(
    data: EngagementData,
    positive: npt.NDArray[np.bool_],
    n_items: int,
    newest: float | None,
    half_life_days: float,
) -> FloatArray:
    if newest is None:
        return np.zeros(n_items)
    age_days = (newest - data.timestamps[positive]) / _SECONDS_PER_DAY
    weights = KIND_WEIGHTS[data.kinds[positive]] * np.exp2(-age_days / half_life_days)
    summed = np.bincount(data.event_items[positive], weights=weights, minlength=n_items)
    return summed.astype(np.float64)


def _trending(
    data: EngagementData,
    positive: npt.NDArray[np.bool_],
    n_items: int,
    newest: float | None,
    popularity: FloatArray,
    config: SignalConfig,
) -> FloatArray:
    """Short-term decayed engagement minus what the long-term rate predicts for it.

    For an item engaged with at a steady rate, decayed sums are proportional to their
    half-lives, so ``short - popularity * short_half_life / long_half_life`` is about 0;
    it is positive for items whose engagement is accelerating.
    """
    short_days = config.trending_half_life_hours / 24.0
    short = _popularity(data, positive, n_items, newest, short_days)
    return short - popularity * short_days / config.popularity_half_life_days


def distinct_pairs(
    users: IntArray, items: IntArray, timestamps: FloatArray
) -> tuple[IntArray, IntArray, FloatArray]:
    """Distinct (user, item) pairs with the latest time of each, sorted by user then item."""
    if len(users) == 0:
        return _EMPTY_INT, _EMPTY_INT, _EMPTY_FLOAT
    order = np.lexsort((-timestamps, items, users))
    users, items, timestamps = users[order], items[order], timestamps[order]
    first = np.ones(len(users), dtype=bool)
    first[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    return users[first], items[first], timestamps[first]


def _rows(users: IntArray, items: IntArray, values: FloatArray, n_users: int) -> Csr:
    """Group pairs already sorted by user into per-user rows."""
    counts = np.bincount(users, minlength=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Csr(indptr, items.astype(np.int64), values.astype(np.float64))


def _history(
    users: IntArray, items: IntArray, last_seen: FloatArray, n_users: int, length: int
) -> Csr:
    """Each user's most recently engaged distinct items, newest first.

    Items engaged at the same moment count the higher item index as newer, the same
    order training uses (``Interactions.user_items`` reversed), so the two-tower model
    sees identical histories offline and online.
    """
    order = np.lexsort((-items, -last_seen, users))
    users, items, last_seen = users[order], items[order], last_seen[order]
    starts = np.searchsorted(users, users, side="left")
    keep = (np.arange(len(users)) - starts) < length
    return _rows(users[keep], items[keep], last_seen[keep], n_users)


def _categories(item_categories: Sequence[Sequence[str]], n_items: int) -> tuple[list[str], Csr]:
    """Category names (sorted) and each item's category ids, each once, in the item's order."""
    counts = np.fromiter(map(len, item_categories), np.int64, len(item_categories))
    flat = list(itertools.chain.from_iterable(item_categories))
    names = sorted(set(flat))
    index = {name: i for i, name in enumerate(names)}
    codes = np.fromiter(map(index.__getitem__, flat), np.int64, len(flat))
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    # An item lists a category once, at its first place.
    _, first = np.unique(rows * max(len(names), 1) + codes, return_index=True)
    keep = np.sort(first)
    rows, codes = rows[keep], codes[keep]
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_items), out=indptr[1:])
    return names, Csr(indptr, codes, np.ones(len(codes)))


def _codes(values: Sequence[str]) -> IntArray:
    """Each value as a dense code, -1 for the empty string (no creator, no title)."""
    codes = {c: i for i, c in enumerate(dict.fromkeys(values))}
    codes.pop("", None)
    return np.fromiter(map(codes.get, values, itertools.repeat(-1)), np.int64, len(values))


def _primary_categories(item_categories: Csr) -> IntArray:
    primary = np.full(item_categories.n_rows, -1, dtype=np.int64)
    has = np.diff(item_categories.indptr) > 0
    primary[has] = item_categories.indices[item_categories.indptr[:-1][has]]
    return primary


def _category_items(
    item_categories: Csr, n_categories: int, popular_items: IntArray, popularity: FloatArray
) -> Csr:
    """Per category, its popular items (``popular_items`` order: active, most popular first)."""
    counts = np.diff(item_categories.indptr)[popular_items]
    items = np.repeat(popular_items, counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    cats = item_categories.indices[
        np.repeat(item_categories.indptr[popular_items], counts) + within
    ]
    order = np.argsort(cats, kind="stable")  # keeps the popularity order within a category
    return _rows(cats[order], items[order], popularity[items[order]], n_categories)


def _hidden(users: IntArray, items: IntArray, n_users: int) -> Csr:
    """Per user, the distinct items of their hide events, sorted by index."""
    users, items, _ = distinct_pairs(users, items, np.zeros(len(items)))
    return _rows(users, items, np.ones(len(items)), n_users)


def _recent_impressions(
    users: IntArray,
    items: IntArray,
    times: FloatArray,
    newest: float | None,
    n_users: int,
    config: SignalConfig,
) -> Csr:
    """Per user, the items of their impressions within the TTL of ``newest``, newest first
    (time is measured back from the newest event, so a snapshot stays a pure function of
    the data), each with the time it was last shown."""
    if newest is None or config.seen_ttl_hours <= 0:
        shown = np.zeros(len(times), dtype=bool)
    else:
        shown = times >= newest - config.seen_ttl_hours * 3600.0
    users, items, last_shown = distinct_pairs(users[shown], items[shown], times[shown])
    return _history(users, items, last_shown, n_users, config.seen_max_items)


def _neighbours(history: Csr, n_users: int, n_items: int, config: SignalConfig) -> Csr:
    """Top co-engaged items per item: cosine similarity of the users' recent-item sets."""
    if len(history.indices) == 0 or n_items == 0:
        return Csr(np.zeros(n_items + 1, dtype=np.int64), _EMPTY_INT, _EMPTY_FLOAT)
    matrix = sparse.csr_matrix(
        (np.ones(len(history.indices)), history.indices, history.indptr),
        shape=(n_users, n_items),
    )
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    co = (matrix.T @ matrix).tocsr()
    rows = np.repeat(np.arange(n_items), np.diff(co.indptr))
    off = (co.indices != rows) & (co.data != 0)  # an item is not its own neighbour
    rows, cols, together = rows[off], co.indices[off].astype(np.int64), co.data[off]
    sims = together / (np.sqrt(counts[rows] * counts[cols]) + config.shrinkage)
    # Top-k per row: sort every entry by (row, -similarity, column) once, then keep
    # the first k of each row (rows keep their place: each starts where its counts say).
    order = np.lexsort((cols, -sims, rows))
    rows, cols, sims = rows[order], cols[order], sims[order]
    starts = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_items), out=starts[1:])
    keep = (np.arange(len(rows)) - starts[rows]) < config.neighbours_per_item
    return _rows(rows[keep], cols[keep], sims[keep], n_items)
