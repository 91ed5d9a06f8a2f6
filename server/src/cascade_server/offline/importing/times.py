"""Times as the importer keeps them, whole microseconds since the Unix epoch (UTC), and the
problem text for a time too far past the start of the import.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cascade_server.catalog.validation import MAX_EVENT_TIME_AHEAD

US_PER_SECOND = 1_000_000
"""Microseconds in a second."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Microsecond times count from here."""


def to_datetime(microseconds: int) -> datetime:
    """The moment ``microseconds`` after ``EPOCH``."""
    return EPOCH + timedelta(microseconds=microseconds)


def future_problem(occurred_us: int, latest_us: int) -> str:
    """Why a time is too late: ``latest_us`` is the start of the import plus the most allowed."""
    ahead = (occurred_us - latest_us) / US_PER_SECOND + MAX_EVENT_TIME_AHEAD.total_seconds()
    return (
        f"is {ahead:.0f} s in the future; at most "
        f"{MAX_EVENT_TIME_AHEAD.total_seconds():.0f} s ahead of the import's start is allowed"
    )
