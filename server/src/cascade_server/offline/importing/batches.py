"""Checks with the catalog API's own rules: records wait in batches for the
``catalog.validation`` functions, whose violations become problems at the line and column
each field came from; and ``Seen``, which reports an item or user written twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cascade_server.catalog.validation import (
    MAX_BATCH_SIZE,
    validate_events,
    validate_items,
    validate_users,
)
from cascade_server.errors import FieldViolation
from cascade_server.offline.importing.problems import Problems, shown

_VIOLATION_PATH = re.compile(r"\w+\[(\d+)\]\.(\w+)(.*)")

_Columns = Mapping[str, tuple[int | None, str]]
"""Per record field name: the column it came from (None if derived) and its name there."""


class _Pending:
    """Records waiting to be checked by a ``catalog.validation`` function in batches."""

    def __init__(self, problems: Problems) -> None:
        self._problems = problems
        self._records: list[Any] = []
        self._where: list[tuple[str, int, _Columns]] = []

    def add(self, record: Any, source: str, line: int, columns: _Columns) -> None:
        self._records.append(record)
        self._where.append((source, line, columns))
        if len(self._records) >= MAX_BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        if self._records:
            for violation in self._validate(self._records):
                self._report(violation)
        self._records.clear()
        self._where.clear()

    def _validate(self, records: list[Any]) -> list[FieldViolation]:
        raise NotImplementedError

    def _report(self, violation: FieldViolation) -> None:
        match = _VIOLATION_PATH.fullmatch(violation.field)
        if match is None:  # a batch-level violation; batches are never empty or too big
            raise AssertionError(f"unexpected violation {violation}")
        index, name, rest = int(match[1]), match[2], match[3]
        source, line, columns = self._where[index]
        column, label = columns.get(name, (None, name))
        self._problems.add(source, line, column, label + rest, violation.description)


class PendingItems(_Pending):
    def _validate(self, records: list[Any]) -> list[FieldViolation]:
        return validate_items(records)


class PendingUsers(_Pending):
    def _validate(self, records: list[Any]) -> list[FieldViolation]:
        return validate_users(records)


class PendingEvents(_Pending):
    def __init__(self, problems: Problems, now: datetime) -> None:
        super().__init__(problems)
        self._now = now

    def _validate(self, records: list[Any]) -> list[FieldViolation]:
        return validate_events(records, self._now)


class Seen:
    """The first place each item and user id was written, to report repeats."""

    def __init__(self, problems: Problems) -> None:
        self._problems = problems
        self._first: dict[tuple[str, str], tuple[str, int]] = {}

    def first(
        self, noun: str, key: str, source: str, line: int, column: int | None, name: str
    ) -> bool:
        """Whether this is the first time ``key`` is seen; a problem if it is not."""
        earlier = self._first.setdefault((noun, key), (source, line))
        if earlier == (source, line):
            return True
        place = f"line {earlier[1]}" if earlier[0] == source else f"{earlier[0]}:{earlier[1]}"
        self._problems.add(
            source,
            line,
            column,
            name,
            f"{noun} {shown(key)} is also at {place}; each {noun} may appear once per import",
        )
        return False
