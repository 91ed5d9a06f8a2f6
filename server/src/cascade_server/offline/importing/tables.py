"""Delimited numeric tables (NCF lines, MovieLens ``ratings.dat``): splitting a text into
columns of equal width, checking whole columns at once, and turning ``user item [rating
timestamp]`` columns into ``rate`` events.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat

import numpy as np

from cascade_server.catalog.records import EventKind
from cascade_server.catalog.validation import MAX_EVENT_TIME_AHEAD, MAX_ID_LENGTH
from cascade_server.offline.importing.problems import Problems, shown
from cascade_server.offline.importing.reading import split_lines
from cascade_server.offline.importing.rows import EventRows
from cascade_server.offline.importing.times import US_PER_SECOND, future_problem

_RATE = EventKind.RATE.value


@dataclass
class _Table:
    """A delimited file split into columns; ``line_numbers`` None means line = index + 1."""

    columns: list[list[str]]
    line_numbers: list[int] | None

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def line(self, index: int) -> int:
        return index + 1 if self.line_numbers is None else self.line_numbers[index]


def split_table(
    source: str,
    text: str,
    separator: str,
    widths: tuple[int, ...],
    describe: str,
    problems: Problems,
) -> _Table | None:
    """Split ``text`` into columns; every non-blank line must have the first line's width.

    ``widths`` are the field counts allowed; ``describe`` says what they are in a problem.
    Fields are split with whole-text operations (no per-line lists), which keeps a
    million-line file to about a second.
    """
    if separator != "\t":
        if "\t" in text:
            for number, line in enumerate(split_lines(text), start=1):
                if "\t" in line:
                    column = line[: line.index("\t")].count(separator) + 1
                    problems.add(source, number, column, "", f"holds a tab; {describe}")
                    return None
        text = text.replace(separator, "\t")
    lines = split_lines(text)
    line_numbers: list[int] | None = None
    if not all(lines):
        line_numbers = [number for number, line in enumerate(lines, start=1) if line]
        lines = [line for line in lines if line]
    if not lines:
        return _Table([[] for _ in range(max(widths))], None)
    tabs = np.fromiter(map(str.count, lines, repeat("\t")), dtype=np.int64, count=len(lines))
    width = int(tabs[0]) + 1
    first = 1 if line_numbers is None else line_numbers[0]
    if width not in widths:
        problems.add(source, first, None, "", f"has {width} fields; {describe}")
        return None
    wrong = np.flatnonzero(tabs != width - 1)
    for index in wrong.tolist():
        number = index + 1 if line_numbers is None else line_numbers[index]
        problems.add(
            source,
            number,
            None,
            "",
            f"has {int(tabs[index]) + 1} fields; line {first} has {width} "
            "(every line of a file must have the same number)",
        )
    if len(wrong):
        return None
    flat = "\t".join(lines).split("\t")
    del lines
    return _Table([flat[column::width] for column in range(width)], line_numbers)


def _all_ids(column: list[str]) -> bool:
    """Whether every entry is a non-negative integer written in at most MAX_ID_LENGTH digits."""
    return all(map(str.isdecimal, column)) and max(map(len, column), default=0) <= MAX_ID_LENGTH


def id_problem(value: str) -> str:
    """What is wrong with a numeric id, or ``""`` if nothing."""
    if not value.isdecimal():
        return f"must be a non-negative integer (got {shown(value)})"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters (got {len(value)})"
    return ""


def _float_problem(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return f"must be a number (got {shown(value)})"
    if not math.isfinite(number):
        return f"must be finite (got {shown(value)})"
    return ""


def _seconds_problem(value: str, latest_s: int) -> str:
    if not value.isdecimal():
        return f"must be whole seconds since 1970-01-01 UTC (got {shown(value)})"
    if int(value) > latest_s:
        return future_problem(int(value) * US_PER_SECOND, latest_s * US_PER_SECOND)
    return ""


def rating_events(
    source: str,
    table: _Table,
    names: tuple[str, ...],
    prefix: str,
    started: datetime,
    problems: Problems,
) -> EventRows:
    """``rate`` events from a table of ``user item [rating timestamp]`` columns.

    The checks run on whole columns; only when one fails is the file walked line by
    line to name every bad field in order.
    """
    started_s = int(started.timestamp())
    latest_s = int((started + MAX_EVENT_TIME_AHEAD).timestamp())
    users, items = table.columns[0], table.columns[1]
    rated = len(table.columns) == 4
    ratings = table.columns[2] if rated else []
    stamps = table.columns[3] if rated else []
    values: list[float] = []
    seconds: list[int] = []
    good = _all_ids(users) and _all_ids(items)
    if good and rated:
        try:
            values = list(map(float, ratings))
            good = all(map(math.isfinite, values)) and all(map(str.isdecimal, stamps))
            seconds = list(map(int, stamps)) if good else []
            good = good and max(seconds, default=0) <= latest_s
        except ValueError:
            good = False
    if not good:
        _diagnose_ratings(source, table, names, latest_s, problems)
        return EventRows()
    count = len(users)
    if rated:
        event_ids = list(map(f"{prefix}:{{}}:{{}}:{{}}".format, users, items, stamps))
        occurred = [second * US_PER_SECOND for second in seconds]
    else:
        event_ids = list(map(f"{prefix}:{{}}:{{}}".format, users, items))
        values = [0.0] * count
        occurred = [started_s * US_PER_SECOND] * count
    if max(map(len, event_ids), default=0) > MAX_ID_LENGTH:
        for index, event_id in enumerate(event_ids):
            if len(event_id) > MAX_ID_LENGTH:
                problems.add(
                    source,
                    table.line(index),
                    None,
                    "event_id",
                    f"{shown(event_id[:30])} (made from the line) must be at most "
                    f"{MAX_ID_LENGTH} characters (got {len(event_id)})",
                )
        return EventRows()
    return EventRows(
        event_ids=event_ids,
        user_ids=users,
        item_ids=items,
        kinds=[_RATE] * count,
        occurred_us=occurred,
        values=values,
    )


def _diagnose_ratings(
    source: str, table: _Table, names: tuple[str, ...], latest_s: int, problems: Problems
) -> None:
    """Name every bad field of every line, in line order."""
    checks: list[Callable[[str], str]] = [id_problem, id_problem]
    if len(table.columns) == 4:
        checks += [_float_problem, lambda value: _seconds_problem(value, latest_s)]
    for index in range(len(table)):
        for column, check in enumerate(checks):
            problem = check(table.columns[column][index])
            if problem:
                problems.add(source, table.line(index), column + 1, names[column], problem)
