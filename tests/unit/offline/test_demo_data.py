"""The demo data generator: deterministic, exact counts, and engagement with structure."""

from __future__ import annotations

import dataclasses
import re
import time
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from cascade_server.errors import ConfigurationError
from cascade_server.offline.demo_data import (
    KIND_SHARES,
    POSITIVE_KINDS,
    DemoData,
    DemoDataConfig,
    floor_to_hour,
    generate,
)
from cascade_server.storage.tables import EVENT_KINDS, ITEM_STATUSES

SMALL = DemoDataConfig(users=200, items=2_000, creators=50, categories=30, events=20_000, seed=7)


@pytest.fixture(scope="module")
def data() -> DemoData:
    """One small data set shared by the read-only tests."""
    return generate(SMALL)


def _utc64(moment: datetime) -> np.datetime64:
    return np.datetime64(moment.astimezone(UTC).replace(tzinfo=None), "us")


def _fields_equal(left: object, right: object) -> bool:
    if isinstance(left, np.ndarray):
        return isinstance(right, np.ndarray) and np.array_equal(left, right)
    if dataclasses.is_dataclass(left) and not isinstance(left, type):
        return all(
            _fields_equal(getattr(left, field.name), getattr(right, field.name))
            for field in dataclasses.fields(left)
        )
    return left == right


def test_same_seed_gives_identical_data(data: DemoData) -> None:
    assert _fields_equal(generate(SMALL), data)


def test_different_seed_gives_different_data(data: DemoData) -> None:
    other = generate(dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    assert not np.array_equal(other.events.item, data.events.item)
    assert not np.array_equal(other.items.created_at, data.items.created_at)
    assert other.items.creator_ids != data.items.creator_ids


def test_counts_are_exactly_as_configured(data: DemoData) -> None:
    assert len(data.users) == SMALL.users
    assert len(data.items) == SMALL.items
    assert len(data.events) == SMALL.events
    assert len(data.category_names) == SMALL.categories
    for name, column in dataclasses.asdict(data.events).items():
        if name != "surface":
            assert len(column) == SMALL.events, name
    assert len(set(data.items.creator_ids)) <= SMALL.creators


def test_ids_are_unique_and_zero_padded(data: DemoData) -> None:
    assert len(set(data.items.external_ids)) == SMALL.items
    assert len(set(data.users.external_ids)) == SMALL.users
    assert len(set(data.events.event_ids)) == SMALL.events
    assert data.items.external_ids[:2] == ["i0001", "i0002"]
    assert data.items.external_ids[-1] == "i2000"
    assert data.users.external_ids[-1] == "u200"
    assert data.category_names[0] == "cat01"
    assert data.events.event_ids[0] == "demo-1"
    assert all(re.fullmatch(r"c\d{2}", creator) for creator in data.items.creator_ids)


def test_items_look_like_a_catalog(data: DemoData) -> None:
    items = data.items
    for categories, primary, title, creator, number in zip(
        items.categories,
        items.category.tolist(),
        items.titles,
        items.creator_ids,
        range(1, len(items) + 1),
        strict=True,
    ):
        assert 1 <= len(categories) <= 3
        assert len(set(categories)) == len(categories)
        assert categories[0] == data.category_names[primary]
        assert title == f"Item {number} by {creator}"
    assert set(items.statuses) <= set(ITEM_STATUSES)
    assert all(attributes["duration_s"] > 0 for attributes in items.attributes)
    assert np.isclose(items.popularity.sum(), 1.0)


def test_creators_mostly_share_a_home_category(data: DemoData) -> None:
    creators = np.unique(data.items.creator_ids, return_inverse=True)[1]
    home_share = []
    for creator in range(creators.max() + 1):
        categories = data.items.category[creators == creator]
        if len(categories) >= 10:
            home_share.append(np.bincount(categories).max() / len(categories))
    assert np.mean(home_share) > 0.7


def test_a_few_percent_of_items_are_hidden_or_deleted(data: DemoData) -> None:
    statuses = np.array(data.items.statuses)
    assert 0.015 < np.mean(statuses == "hidden") < 0.045
    assert 0.002 < np.mean(statuses == "deleted") < 0.02
    active = statuses == "active"
    assert np.array_equal(data.items.updated_at[active], data.items.created_at[active])
    assert np.all(data.items.updated_at >= data.items.created_at)


def test_recent_items_are_more_numerous(data: DemoData) -> None:
    start, end = _utc64(SMALL.start), _utc64(SMALL.end)
    third = (end - start) / 3
    created = data.items.created_at
    first = np.count_nonzero((created >= start) & (created < start + third))
    last = np.count_nonzero(created >= end - third)
    assert last > 1.5 * first
    assert np.all(created < end)


def test_users_have_countries_and_sparse_tastes(data: DemoData) -> None:
    assert {attributes["country"] for attributes in data.users.attributes} > {"US"}
    taste = data.users.taste
    assert np.allclose(taste.sum(axis=1), 1.0)
    favourite_counts = data.users.favourites.sum(axis=1)
    assert favourite_counts.min() >= 1
    assert favourite_counts.max() <= 4
    assert np.mean(np.sum(taste * data.users.favourites, axis=1)) > 0.8


def test_popularity_is_skewed(data: DemoData) -> None:
    engaged = data.events.kind != EVENT_KINDS.index("impression")
    counts = np.sort(np.bincount(data.events.item[engaged], minlength=len(data.items)))[::-1]
    top = counts[: len(data.items) // 100].sum()
    assert top / counts.sum() > 0.10


def test_positive_events_concentrate_in_each_users_top_categories(data: DemoData) -> None:
    events = data.events
    category = data.items.category[events.item]
    occurred = events.occurred_at.view(np.int64)
    cut = np.quantile(occurred, 2 / 3)
    positive = np.isin(events.kind, [EVENT_KINDS.index(kind) for kind in POSITIVE_KINDS])
    hide = events.kind == EVENT_KINDS.index("hide")

    # Each user's top three categories from the first two thirds of the window ...
    early = (occurred < cut) & ~hide
    history = np.zeros((len(data.users), SMALL.categories))
    np.add.at(history, (events.user[early], category[early]), 1.0)
    top3 = np.zeros_like(history, dtype=bool)
    np.put_along_axis(top3, np.argsort(-history, axis=1)[:, :3], True, axis=1)
    # ... hold most of their positive events in the last third.
    late = (occurred >= cut) & positive & (history.sum(axis=1)[events.user] > 0)
    share = top3[events.user[late], category[late]].mean()
    overall = np.bincount(category, minlength=SMALL.categories) / len(category)
    baseline = (top3[events.user[late]] * overall).sum(axis=1).mean()
    assert share > 0.7
    assert share > 2.5 * baseline


def test_positive_events_follow_taste_more_than_impressions(data: DemoData) -> None:
    events = data.events
    favourite = data.users.favourites[events.user, data.items.category[events.item]]
    positive = np.isin(events.kind, [EVENT_KINDS.index(kind) for kind in POSITIVE_KINDS])
    impression = events.kind == EVENT_KINDS.index("impression")
    hide = events.kind == EVENT_KINDS.index("hide")
    assert favourite[positive].mean() > favourite[impression].mean() + 0.25
    assert not favourite[hide].any()


def test_clicks_carry_a_watch_fraction(data: DemoData) -> None:
    clicks = data.events.kind == EVENT_KINDS.index("click")
    assert np.all((data.events.value[clicks] >= 0.0) & (data.events.value[clicks] <= 1.0))
    assert data.events.value[clicks].mean() > 0.3
    assert np.all(data.events.value[~clicks] == 0.0)


def test_no_event_before_its_item_was_created(data: DemoData) -> None:
    assert np.all(data.events.occurred_at >= data.items.created_at[data.events.item])


def test_no_event_on_an_item_after_it_was_hidden(data: DemoData) -> None:
    statuses = np.array(data.items.statuses)[data.events.item]
    changed = data.items.updated_at[data.events.item]
    assert not np.any((statuses != "active") & (data.events.occurred_at >= changed))


def test_events_are_inside_the_window_and_in_time_order(data: DemoData) -> None:
    occurred = data.events.occurred_at
    assert occurred.min() >= _utc64(SMALL.start)
    assert occurred.max() < _utc64(SMALL.end)
    assert np.all(np.diff(occurred.view(np.int64)) >= 0)
    assert data.events.surface == "home_feed"


def test_kind_shares_are_near_the_configured_mix(data: DemoData) -> None:
    shares = np.bincount(data.events.kind, minlength=len(EVENT_KINDS)) / len(data.events)
    for code, kind in enumerate(EVENT_KINDS):
        assert shares[code] == pytest.approx(KIND_SHARES[kind], abs=0.015), kind
    assert data.events.kind_names()[:3] == [EVENT_KINDS[code] for code in data.events.kind[:3]]


def test_per_user_event_counts_are_heavy_tailed(data: DemoData) -> None:
    counts = np.bincount(data.events.user, minlength=len(data.users))
    assert counts.sum() == SMALL.events
    assert counts.max() > 5 * np.median(counts)


def test_a_tiny_config_still_works() -> None:
    tiny = generate(DemoDataConfig(users=1, items=1, creators=1, categories=1, events=50, days=1))
    assert len(tiny.events) == 50
    assert np.all(tiny.events.item == 0)
    assert np.all(tiny.events.occurred_at >= tiny.items.created_at[0])
    assert len(generate(dataclasses.replace(SMALL, events=0)).events) == 0


def test_the_config_is_checked_and_kept_in_utc() -> None:
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        DemoDataConfig(end=datetime(2026, 1, 1))
    with pytest.raises(ConfigurationError, match="users"):
        DemoDataConfig(users=0)
    with pytest.raises(ConfigurationError, match="negative"):
        DemoDataConfig(events=-1)
    paris = DemoDataConfig(end=datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    assert paris.end == datetime(2026, 1, 1, tzinfo=UTC)
    assert paris.end.tzinfo is UTC
    assert paris.start == datetime(2025, 10, 3, tzinfo=UTC)


def test_floor_to_hour() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 8, tzinfo=timezone(timedelta(hours=2)))
    assert floor_to_hour(moment) == datetime(2026, 3, 4, 3, tzinfo=UTC)


def test_the_default_config_generates_quickly() -> None:
    began = time.perf_counter()
    full = generate(DemoDataConfig())
    assert len(full.events) == 500_000
    assert time.perf_counter() - began < 15.0
