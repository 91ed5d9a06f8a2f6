"""A synthetic catalog with engagement that has structure to learn, deterministic by seed.

``generate`` is pure: it builds users, items and events in memory with numpy. ``load``
writes them into an empty database with ``COPY``, in one transaction.

The engagement model, so that recommenders have something real to find:

* Categories have skewed sizes. Each creator has a home category, and most of a
  creator's items are in it. Each item has one latent primary category (the first of
  its one to three ``categories``) and a latent popularity that follows a Zipf law
  (exponent 1.1) over a random ranking, correlated with the creator.
* Each user has a latent taste: a sparse Dirichlet over categories that puts almost all
  of its mass on one to four favourite categories.
* An event picks its item with probability proportional to
  ``popularity ** POPULARITY_ALPHA * weight[category]`` among the items that exist and
  are active at the event's time. For clicks, saves, likes and shares the weight is the
  user's taste; for impressions it is half taste, half uniform (a feed shows more than
  what one likes); for hides it is uniform over the categories the user does not favour.
* Per-user event counts are lognormal (a few heavy users, a long tail of light ones).
  Event times are uniform over the ``days`` before ``end``; kinds follow
  ``KIND_SHARES``.

Items are created over the window with a density that grows towards ``end``; a fifth of
them (the back catalog) predate the window so that the first events have something to
engage with. About 3% of items end hidden and 1% deleted; ``updated_at`` is when their
status changed, and they have no events after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from cascade_server.errors import ConfigurationError
from cascade_server.storage.bulk import copy_rows, deferred_indexes
from cascade_server.storage.tables import EVENT_KINDS, ITEM_STATUSES, Event, Item, User

DEFAULT_END = datetime(2026, 1, 1, tzinfo=UTC)
"""The default end of the event window. The CLI passes the current time floored to the hour."""

SURFACE = "home_feed"
"""The surface every demo event is attributed to."""

KIND_SHARES: dict[str, float] = {
    "impression": 0.55,
    "click": 0.28,
    "save": 0.09,
    "like": 0.05,
    "share": 0.02,
    "hide": 0.01,
    "rate": 0.0,
}
"""The expected share of each event kind (demo data has no ratings)."""

POSITIVE_KINDS = ("click", "save", "like", "share")
"""The kinds that follow the user's taste closely."""

COUNTRIES = ("US", "IN", "BR", "GB", "DE", "FR", "JP", "CA")
"""The countries users are drawn from, most common first."""

POPULARITY_EXPONENT = 1.1
"""The Zipf exponent of item popularity."""

POPULARITY_ALPHA = 0.8
"""How strongly popularity steers the choice of item (``popularity ** POPULARITY_ALPHA``)."""

_COUNTRY_WEIGHTS = (0.3, 0.2, 0.12, 0.1, 0.08, 0.08, 0.06, 0.06)
_CATEGORY_SIZE_EXPONENT = 0.6
_HOME_CATEGORY_SHARE = 0.85
_CREATOR_ACTIVITY_SIGMA = 1.0
_CREATOR_QUALITY_WEIGHT = 0.7
_EXTRA_CATEGORY_COUNT_P = (0.5, 0.35, 0.15)
_BACK_CATALOG_SHARE = 0.2
_HIDDEN_SHARE = 0.03
_DELETED_SHARE = 0.01
_FAVOURITE_COUNT_P = (0.3, 0.35, 0.25, 0.1)
_FAVOURITE_CONCENTRATION = 2.0
_OTHER_CONCENTRATION = 0.01
_TASTE_FLOOR = 0.02
_IMPRESSION_TASTE_SHARE = 0.5
_USER_ACTIVITY_SIGMA = 1.0
_RESAMPLE_ROUNDS = 10
_CHUNK = 1 << 16
_US_PER_SECOND = 1_000_000
_US_PER_MS = 1_000
_US_PER_HOUR = 3_600 * _US_PER_SECOND

_log = logging.getLogger(__name__)

Int64Array = NDArray[np.int64]
FloatArray = NDArray[np.float64]
TimeArray = NDArray[np.datetime64]


@dataclass(frozen=True)
class DemoDataConfig:
    """How much demo data to make, over which window, from which seed.

    ``end`` is the (exclusive) end of the event window; it must be timezone-aware and is
    kept in UTC. It defaults to the fixed ``DEFAULT_END`` so that generation is
    reproducible; the ``cascade demo`` CLI passes the current time floored to the hour
    (see ``floor_to_hour``).
    """

    users: int = 2_000
    items: int = 20_000
    creators: int = 200
    categories: int = 30
    events: int = 500_000
    days: int = 90
    seed: int = 42
    end: datetime = DEFAULT_END

    def __post_init__(self) -> None:
        """Check the numbers and normalise ``end`` to UTC."""
        for name in ("users", "items", "creators", "categories", "days"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"demo data needs at least one of {name}")
        if self.events < 0:
            raise ConfigurationError("the number of demo events cannot be negative")
        if self.end.tzinfo is None or self.end.utcoffset() is None:
            raise ConfigurationError("the end of the demo window must be timezone-aware")
        object.__setattr__(self, "end", self.end.astimezone(UTC))

    @property
    def start(self) -> datetime:
        """The (inclusive) start of the event window, ``days`` before ``end``."""
        return self.end - timedelta(days=self.days)


def floor_to_hour(moment: datetime) -> datetime:
    """``moment`` in UTC with minutes, seconds and microseconds dropped."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, eq=False)
class DemoItems:
    """The catalog, one entry per item in every field. Times are UTC ``datetime64[us]``.

    ``category`` (an index into ``DemoData.category_names``) and ``popularity`` (sums to
    one) are the latent truth the events were drawn from; they are not stored.
    """

    external_ids: list[str]
    creator_ids: list[str]
    categories: list[list[str]]
    titles: list[str]
    statuses: list[str]
    attributes: list[dict[str, Any]]
    created_at: TimeArray
    updated_at: TimeArray
    category: Int64Array
    popularity: FloatArray

    def __len__(self) -> int:
        """The number of items."""
        return len(self.external_ids)


@dataclass(frozen=True, eq=False)
class DemoUsers:
    """The users, one entry per user in every field. Times are UTC ``datetime64[us]``.

    ``taste`` (users x categories, rows sum to one) and ``favourites`` (the categories
    the taste concentrates on) are the latent truth; they are not stored.
    """

    external_ids: list[str]
    attributes: list[dict[str, Any]]
    created_at: TimeArray
    taste: FloatArray
    favourites: NDArray[np.bool_]

    def __len__(self) -> int:
        """The number of users."""
        return len(self.external_ids)


@dataclass(frozen=True, eq=False)
class DemoEvents:
    """The events in time order. ``user`` and ``item`` index ``DemoData.users``/``items``.

    ``kind`` holds indexes into ``cascade_server.storage.tables.EVENT_KINDS``;
    ``occurred_at`` is UTC ``datetime64[us]``.
    """

    event_ids: list[str]
    user: Int64Array
    item: Int64Array
    kind: NDArray[np.int8]
    occurred_at: TimeArray
    value: FloatArray
    surface: str = SURFACE

    def __len__(self) -> int:
        """The number of events."""
        return len(self.event_ids)

    def kind_names(self) -> list[str]:
        """The kind of each event by name."""
        return np.asarray(EVENT_KINDS, dtype=object)[self.kind].tolist()  # type: ignore[no-any-return]


@dataclass(frozen=True, eq=False)
class DemoData:
    """A generated data set: the config it came from, the category names, and the rows."""

    config: DemoDataConfig
    category_names: list[str]
    items: DemoItems
    users: DemoUsers
    events: DemoEvents


@dataclass(frozen=True)
class DemoLoadResult:
    """How many rows ``load`` wrote into each table."""

    users: int
    items: int
    events: int
    seconds: float = field(default=0.0, compare=False)


def _ids(prefix: str, count: int) -> list[str]:
    width = len(str(count))
    return [f"{prefix}{number:0{width}d}" for number in range(1, count + 1)]


def _as_times(microseconds: Int64Array) -> TimeArray:
    return microseconds.astype(np.int64).view("datetime64[us]")


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _category_weights(rng: np.random.Generator, categories: int) -> FloatArray:
    ranks = rng.permutation(categories) + 1
    weights: FloatArray = ranks.astype(np.float64) ** -_CATEGORY_SIZE_EXPONENT
    weights /= weights.sum()
    return weights


def _top_k_mask(
    rng: np.random.Generator, log_weights: FloatArray, counts: Int64Array
) -> NDArray[np.bool_]:
    """Per row, a mask of ``counts[row]`` columns drawn without replacement by weight."""
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    order = np.argsort(-keys, axis=1, kind="stable")
    position = np.argsort(order, axis=1, kind="stable")
    mask: NDArray[np.bool_] = position < counts[:, None]
    return mask


def generate(config: DemoDataConfig) -> DemoData:
    """Build users, items and events for ``config``; the same config gives the same data."""
    began = time.perf_counter()
    catalog_seed, user_seed, event_seed = np.random.SeedSequence(config.seed).spawn(3)
    catalog_rng = np.random.default_rng(catalog_seed)
    category_weights = _category_weights(catalog_rng, config.categories)
    category_names = _ids("cat", config.categories)
    items = _generate_items(catalog_rng, config, category_weights, category_names)
    users = _generate_users(np.random.default_rng(user_seed), config, category_weights)
    events = _generate_events(np.random.default_rng(event_seed), config, items, users)
    _log.info(
        "generated %d users, %d items, %d events in %.2f s",
        len(users),
        len(items),
        len(events),
        time.perf_counter() - began,
    )
    return DemoData(config, category_names, items, users, events)


def _generate_items(
    rng: np.random.Generator,
    config: DemoDataConfig,
    category_weights: FloatArray,
    category_names: list[str],
) -> DemoItems:
    count, categories = config.items, config.categories
    creator_names = _ids("c", config.creators)
    creator_home = rng.choice(categories, size=config.creators, p=category_weights)
    creator_activity = rng.lognormal(0.0, _CREATOR_ACTIVITY_SIGMA, size=config.creators)
    creator_quality = rng.normal(size=config.creators)
    creator = rng.choice(config.creators, size=count, p=creator_activity / creator_activity.sum())

    at_home = rng.random(count) < _HOME_CATEGORY_SHARE
    elsewhere = rng.choice(categories, size=count, p=category_weights)
    category = np.where(at_home, creator_home[creator], elsewhere).astype(np.int64)

    score = _CREATOR_QUALITY_WEIGHT * creator_quality[creator] + rng.normal(size=count)
    popularity = np.empty(count, dtype=np.float64)
    popularity[np.argsort(-score, kind="stable")] = (
        np.arange(1, count + 1, dtype=np.float64) ** -POPULARITY_EXPONENT
    )
    popularity /= popularity.sum()

    extra_counts = np.minimum(
        rng.choice(len(_EXTRA_CATEGORY_COUNT_P), size=count, p=_EXTRA_CATEGORY_COUNT_P),
        categories - 1,
    )
    log_weights = np.tile(np.log(category_weights), (count, 1))
    log_weights[np.arange(count), category] = -np.inf
    extra_mask = _top_k_mask(rng, log_weights, extra_counts)

    start_us, end_us = _epoch_us(config.start), _epoch_us(config.end)
    window = end_us - start_us
    uniform = rng.random(count)
    # Density 1 + 2x over the window (x from 0 to 1): three times as many new items at the end.
    in_window = start_us + (np.sqrt(1.0 + 8.0 * uniform) - 1.0) / 2.0 * window
    back_catalog = rng.random(count) < _BACK_CATALOG_SHARE
    most_popular = int(np.argmax(popularity))
    back_catalog[most_popular] = True  # something exists, and stays active, from the start
    created = np.where(back_catalog, start_us - uniform * window, in_window)
    created_us = np.minimum(created // _US_PER_SECOND * _US_PER_SECOND, end_us - 1).astype(np.int64)

    draw = rng.random(count)
    status = np.full(count, ITEM_STATUSES.index("active"), dtype=np.int64)
    status[draw < _HIDDEN_SHARE + _DELETED_SHARE] = ITEM_STATUSES.index("hidden")
    status[draw < _DELETED_SHARE] = ITEM_STATUSES.index("deleted")
    status[most_popular] = ITEM_STATUSES.index("active")
    changed = created_us + rng.random(count) * (end_us - created_us)
    updated_us = np.where(
        status == ITEM_STATUSES.index("active"),
        created_us,
        changed // _US_PER_SECOND * _US_PER_SECOND,
    ).astype(np.int64)
    updated_us = np.maximum(updated_us, created_us)
    durations = np.rint(rng.lognormal(np.log(180.0), 0.8, size=count)).astype(np.int64) + 1

    names = np.asarray(category_names, dtype=object)
    item_categories = [
        [names[primary], *names[np.flatnonzero(extras)].tolist()]
        for primary, extras in zip(category.tolist(), extra_mask, strict=True)
    ]
    creator_ids = [creator_names[index] for index in creator.tolist()]
    return DemoItems(
        external_ids=_ids("i", count),
        creator_ids=creator_ids,
        categories=item_categories,
        titles=[f"Item {number} by {who}" for number, who in enumerate(creator_ids, start=1)],
        statuses=[ITEM_STATUSES[code] for code in status.tolist()],
        attributes=[{"duration_s": seconds} for seconds in durations.tolist()],
        created_at=_as_times(created_us),
        updated_at=_as_times(updated_us),
        category=category,
        popularity=popularity,
    )


def _generate_users(
    rng: np.random.Generator, config: DemoDataConfig, category_weights: FloatArray
) -> DemoUsers:
    count, categories = config.users, config.categories
    country = rng.choice(len(COUNTRIES), size=count, p=_COUNTRY_WEIGHTS)
    favourite_counts = np.minimum(
        rng.choice(len(_FAVOURITE_COUNT_P), size=count, p=_FAVOURITE_COUNT_P) + 1, categories
    )
    log_weights = np.tile(np.log(category_weights), (count, 1))
    favourites = _top_k_mask(rng, log_weights, favourite_counts)
    concentration = np.where(favourites, _FAVOURITE_CONCENTRATION, _OTHER_CONCENTRATION)
    raw = rng.gamma(concentration)
    raw[favourites] = np.maximum(raw[favourites], 1e-6)
    taste = (1.0 - _TASTE_FLOOR) * raw / raw.sum(axis=1, keepdims=True) + _TASTE_FLOOR / categories

    start_us = _epoch_us(config.start)
    window = _epoch_us(config.end) - start_us
    created = start_us - rng.random(count) * window
    created_us = (created // _US_PER_SECOND * _US_PER_SECOND).astype(np.int64)
    return DemoUsers(
        external_ids=_ids("u", count),
        attributes=[{"country": COUNTRIES[code]} for code in country.tolist()],
        created_at=_as_times(created_us),
        taste=taste,
        favourites=favourites,
    )


@dataclass(frozen=True)
class _Availability:
    """Which items exist at the start of each hour of the window, by category.

    An item is available from the first hour boundary at or after its creation, so an
    event in hour ``b`` only picks items created at or before the start of hour ``b``.
    """

    hours: int
    mass: FloatArray  # categories x hours: summed item weight available in each hour
    keys: Int64Array  # sorted (category * (hours + 1) + first available hour)
    items: Int64Array  # the items in the order of ``keys``
    cumulative: FloatArray  # cumulative weight in that order, with a leading zero

    @classmethod
    def build(cls, config: DemoDataConfig, items: DemoItems) -> _Availability:
        start_us, end_us = _epoch_us(config.start), _epoch_us(config.end)
        hours = -(-(end_us - start_us) // _US_PER_HOUR)
        since_start = items.created_at.view(np.int64) - start_us
        first_hour = np.clip(-(-since_start // _US_PER_HOUR), 0, hours)
        weight = items.popularity**POPULARITY_ALPHA
        mass = np.zeros((config.categories, hours + 1), dtype=np.float64)
        np.add.at(mass, (items.category, first_hour), weight)
        keys = items.category * (hours + 1) + first_hour
        order = np.argsort(keys, kind="stable")
        return cls(
            hours=int(hours),
            mass=np.cumsum(mass, axis=1)[:, :hours],
            keys=keys[order],
            items=order.astype(np.int64),
            cumulative=np.concatenate(([0.0], np.cumsum(weight[order]))),
        )

    def sample(
        self,
        rng: np.random.Generator,
        category_weights: FloatArray,
        hour: Int64Array,
    ) -> Int64Array:
        """Draw one item per row: a category by weight times available mass, then an item.

        ``category_weights`` has one row of per-category weights per draw.
        """
        count = len(hour)
        category = np.empty(count, dtype=np.int64)
        for low in range(0, count, _CHUNK):
            rows = slice(low, low + _CHUNK)
            available = self.mass[:, hour[rows]].T
            weights = category_weights[rows] * available
            total = weights.sum(axis=1)
            nothing = total <= 0.0
            if nothing.any():  # the user's categories have nothing yet: take anything
                weights[nothing] = available[nothing]
                total[nothing] = weights[nothing].sum(axis=1)
            cumulative = np.cumsum(weights, axis=1)
            target = rng.random(len(total)) * total
            chosen = (cumulative <= target[:, None]).sum(axis=1)
            category[rows] = np.minimum(chosen, self.mass.shape[0] - 1)
        base = category * (self.hours + 1)
        low_index = np.searchsorted(self.keys, base, side="left")
        high_index = np.searchsorted(self.keys, base + hour, side="right")
        low_mass = self.cumulative[low_index]
        target = low_mass + rng.random(count) * (self.cumulative[high_index] - low_mass)
        position = np.searchsorted(self.cumulative, target, side="right") - 1
        position = np.clip(position, low_index, np.maximum(high_index - 1, low_index))
        picked: Int64Array = self.items[position]
        return picked


def _generate_events(
    rng: np.random.Generator, config: DemoDataConfig, items: DemoItems, users: DemoUsers
) -> DemoEvents:
    count, categories = config.events, config.categories
    start_us, end_us = _epoch_us(config.start), _epoch_us(config.end)
    activity = rng.lognormal(0.0, _USER_ACTIVITY_SIGMA, size=len(users))
    per_user = rng.multinomial(count, activity / activity.sum())
    user = np.repeat(np.arange(len(users), dtype=np.int64), per_user)
    occurred = (
        start_us + rng.integers(0, (end_us - start_us) // _US_PER_MS, size=count) * _US_PER_MS
    )
    occurred = occurred.astype(np.int64)
    shares = np.array([KIND_SHARES[kind] for kind in EVENT_KINDS])
    kind = rng.choice(len(EVENT_KINDS), size=count, p=shares / shares.sum()).astype(np.int8)

    # Per-user category weights for the three behaviours: 0 impression, 1 positive, 2 hide.
    outside = (~users.favourites).astype(np.float64)
    outside[outside.sum(axis=1) == 0.0] = 1.0
    behaviour_weights = np.stack(
        [
            _IMPRESSION_TASTE_SHARE * users.taste + (1.0 - _IMPRESSION_TASTE_SHARE) / categories,
            users.taste,
            outside / outside.sum(axis=1, keepdims=True),
        ]
    )
    behaviour_of_kind = np.array(
        [0 if name == "impression" else 2 if name == "hide" else 1 for name in EVENT_KINDS],
        dtype=np.int64,
    )
    behaviour = behaviour_of_kind[kind]

    availability = _Availability.build(config, items)
    hour = (occurred - start_us) // _US_PER_HOUR
    item = availability.sample(rng, behaviour_weights[behaviour, user], hour)

    # Hidden and deleted items get no events after their status changed: draw again.
    inactive = np.array([status != "active" for status in items.statuses])
    changed_us = items.updated_at.view(np.int64)
    created_us = items.created_at.view(np.int64)
    for _ in range(_RESAMPLE_ROUNDS):
        late = np.flatnonzero(inactive[item] & (occurred >= changed_us[item]))
        if len(late) == 0:
            break
        rows = behaviour_weights[behaviour[late], user[late]]
        item[late] = availability.sample(rng, rows, hour[late])
    late = np.flatnonzero(inactive[item] & (occurred >= changed_us[item]))
    if len(late):  # rare: the only candidates went away; move the event before that
        lived = changed_us[item[late]] - created_us[item[late]]
        occurred[late] = created_us[item[late]] + (rng.random(len(late)) * lived).astype(np.int64)

    value = np.zeros(count, dtype=np.float64)
    clicks = np.flatnonzero(kind == EVENT_KINDS.index("click"))
    liked = users.favourites[user[clicks], items.category[item[clicks]]]
    value[clicks] = np.round(rng.beta(np.where(liked, 4.0, 1.5), 2.0), 3)

    order = np.argsort(occurred, kind="stable")
    return DemoEvents(
        event_ids=[f"demo-{number}" for number in range(1, count + 1)],
        user=user[order],
        item=item[order],
        kind=kind[order],
        occurred_at=_as_times(occurred[order]),
        value=value[order],
    )


def is_empty(engine: sa.Engine) -> bool:
    """Whether the database has no items, no users and no events."""
    with engine.connect() as connection:
        return _is_empty(connection)


def _is_empty(connection: sa.Connection) -> bool:
    anything = sa.select(sa.or_(*(sa.exists().select_from(table) for table in (Item, User, Event))))
    return not connection.scalar(anything)


ProgressCallback = Callable[[int], None]


@contextmanager
def _progress(enabled: bool, totals: dict[str, int]) -> Iterator[dict[str, ProgressCallback]]:
    if not enabled:
        yield {name: _ignore for name in totals}
        return
    columns = (
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield {
            name: _advance(bar, bar.add_task(f"loading {name}", total=total))
            for name, total in totals.items()
        }


def _ignore(_: int) -> None:
    """Discard a progress report."""


def _advance(bar: Progress, task: TaskID) -> ProgressCallback:
    def report(completed: int) -> None:
        bar.update(task, completed=completed)

    return report


def _timestamps(times: TimeArray) -> list[str]:
    """ISO 8601 UTC strings, which ``COPY`` parses as ``timestamptz`` whatever the TimeZone."""
    strings: list[str] = np.datetime_as_string(times, unit="us", timezone="UTC").tolist()
    return strings


def _id_map(
    connection: sa.Connection, table: type[Item] | type[User], external_ids: list[str]
) -> Int64Array:
    """The internal ids Postgres assigned, in the order of ``external_ids``."""
    rows = connection.execute(sa.select(table.external_id, table.id))
    assigned: dict[str, int] = {external: internal for external, internal in rows}
    return np.array([assigned[external] for external in external_ids], dtype=np.int64)


def load(engine: sa.Engine, data: DemoData, *, progress: bool = True) -> DemoLoadResult:
    """Write ``data`` into an empty database in one transaction and count the rows.

    Raises ``ConfigurationError`` when the database already has items, users or events;
    nothing is written then. ``progress`` shows a progress bar per table on stderr.
    """
    began = time.perf_counter()
    totals = {"users": len(data.users), "items": len(data.items), "events": len(data.events)}
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        if not _is_empty(connection):
            raise ConfigurationError(
                "the database is not empty (it has items, users or events); demo data loads "
                "only into an empty database: point CASCADE_DATABASE_URL at a new one"
            )
        with _progress(progress, totals) as report:
            users = _load_users(connection, data.users, report["users"])
            user_ids = _id_map(connection, User, data.users.external_ids)
            items = _load_items(connection, data.items, report["items"])
            item_ids = _id_map(connection, Item, data.items.external_ids)
            with deferred_indexes(connection, "events"):
                events = _load_events(connection, data.events, user_ids, item_ids, report["events"])
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE users, items, events")
        connection.commit()
    result = DemoLoadResult(users, items, events, time.perf_counter() - began)
    _log.info(
        "loaded %d users, %d items, %d events in %.1f s",
        result.users,
        result.items,
        result.events,
        result.seconds,
    )
    return result


def _load_users(connection: sa.Connection, users: DemoUsers, report: ProgressCallback) -> int:
    created = _timestamps(users.created_at)
    rows = (
        (external, Jsonb(attributes), at, at)
        for external, attributes, at in zip(
            users.external_ids, users.attributes, created, strict=True
        )
    )
    columns = ("external_id", "attributes", "created_at", "updated_at")
    return copy_rows(connection, "users", columns, rows, on_progress=report)


def _load_items(connection: sa.Connection, items: DemoItems, report: ProgressCallback) -> int:
    rows = zip(
        items.external_ids,
        items.creator_ids,
        items.categories,
        items.titles,
        items.statuses,
        (Jsonb(attributes) for attributes in items.attributes),
        _timestamps(items.created_at),
        _timestamps(items.updated_at),
        strict=True,
    )
    columns = (
        "external_id",
        "creator_id",
        "categories",
        "title",
        "status",
        "attributes",
        "created_at",
        "updated_at",
    )
    return copy_rows(connection, "items", columns, rows, on_progress=report)


def _load_events(
    connection: sa.Connection,
    events: DemoEvents,
    user_ids: Int64Array,
    item_ids: Int64Array,
    report: ProgressCallback,
) -> int:
    occurred = _timestamps(events.occurred_at)
    surface = [events.surface] * len(events)
    rows = zip(
        events.event_ids,
        user_ids[events.user].tolist(),
        item_ids[events.item].tolist(),
        events.kind_names(),
        occurred,
        surface,
        events.value.tolist(),
        occurred,
        strict=True,
    )
    columns = (
        "event_id",
        "user_id",
        "item_id",
        "kind",
        "occurred_at",
        "surface",
        "value",
        "received_at",
    )
    return copy_rows(connection, "events", columns, rows, on_progress=report)
