"""Import data files into Postgres: ``cascade import --format FORMAT PATH...``.

One call of ``import_files`` is one transaction. Every file is read and every row is
checked against the limits of the catalog API (``catalog.validation``) before anything
is written; if any row is bad, ``DataFileError`` lists up to ``MAX_LISTED_PROBLEMS``
problems as ``path:line:column: field: what is wrong`` (``column`` is the 1-based field
number) and nothing is imported. Any file may be gzip-compressed: a name ending in
``.gz`` or the gzip magic bytes say so.

Formats and id rules:

``ncf``
    Tab-separated lines ``user item`` or ``user item rating timestamp`` (the Neural
    Collaborative Filtering benchmark files); all lines of one file have the same number
    of fields. Users and items are non-negative integers, used as external ids exactly
    as written (``"0"``, ``"17"``); unknown ones are created (ids only), existing ones
    are left as they are. Each line is a ``rate`` event whose ``value`` is the rating
    (0 in the two-field form). Event ids are ``ncf:<user>:<item>`` for two fields (the
    same pair twice in a file is one event, the second counted as a duplicate) and
    ``ncf:<user>:<item>:<timestamp>`` for four (two ratings of one item at different
    times are two events). A four-field line happened at its timestamp (whole seconds
    since 1970-01-01 UTC); every two-field line of one import happened at the time the
    import started, floored to the second: the file has no times, and one shared time
    gives no pair an artificial order or age.
``movielens``
    MovieLens 1M ``::``-separated Latin-1 files, recognised by name (case-insensitive,
    optionally with ``.gz``): ``movies.dat`` (``MovieID::Title::Genres``) creates or
    updates items (external id = MovieID; title; categories = the ``|``-separated
    genres), ``users.dat`` (``UserID::Gender::Age::Occupation::Zip-code``) creates or
    updates users (attributes ``gender``, ``age``, ``occupation``, ``zip`` merged into
    the stored ones), ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) adds
    ``rate`` events with id ``movielens:<user>:<movie>:<timestamp>``, creating unknown
    users and items (ids only). Items and users are written before ratings, whatever
    the order of the paths.
``csv`` and ``jsonl``
    Events files (columns or keys ``user_id, item_id, kind, timestamp[, value]
    [, event_id]``) or items files (``item_id[, creator_id][, categories][, title]
    [, status][, created_at]``); a CSV file has a header line, a JSONL file one object
    per line. A file with ``kind`` is an events file; one with ``item_id`` and no
    ``user_id`` an items file (``kind=`` forces either). ``kind`` is an event kind's
    name (``click``); times are ISO 8601 with a zone or epoch seconds; CSV categories
    are ``|``-separated, JSONL ones a list; ids in JSONL may also be integers. CSV
    cells lose surrounding spaces, except ``title``. Unknown users are created; every
    item must exist or be in an items file of the same import (as with ``LogEvents``).
    An event without ``event_id`` gets ``csv:`` + the first 16 hex digits of the SHA-1
    of its normalised row (user, item, kind, time in microseconds, value, joined by
    tabs), in both formats, so the same row always gets the same id. An items row
    replaces the item like ``UpsertItems`` (fields it leaves out take their defaults;
    ``created_at`` is kept unless given; attributes are kept).

Events are copied into a temporary table and inserted with ``ON CONFLICT (event_id) DO
NOTHING``, so a re-run stores nothing twice; external ids become internal ids through
joins in SQL. When the events table is empty and the import is large, its indexes are
dropped during the load and rebuilt after (``storage.bulk.deferred_indexes``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
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

from cascade_server.catalog.records import (
    EventKind,
    EventRecord,
    ItemRecord,
    ItemStatus,
    UserRecord,
)
from cascade_server.catalog.validation import (
    MAX_BATCH_SIZE,
    MAX_EVENT_TIME_AHEAD,
    MAX_ID_LENGTH,
    validate_events,
    validate_items,
    validate_users,
)
from cascade_server.errors import CascadeError, FieldViolation, InvalidArgumentError
from cascade_server.storage.bulk import copy_rows, deferred_indexes
from cascade_server.storage.tables import EVENT_KINDS, ITEM_STATUSES, Event

MAX_LISTED_PROBLEMS = 20
"""Most problems a ``DataFileError`` lists; it counts them all."""

DEFER_INDEXES_FROM = 10_000
"""Fewest events an import into an empty events table needs to defer its indexes."""

EVENT_COLUMNS = ("user_id", "item_id", "kind", "timestamp", "value", "event_id")
"""The columns (CSV) or keys (JSONL) of an events file; the first four are required."""

ITEM_COLUMNS = ("item_id", "creator_id", "categories", "title", "status", "created_at")
"""The columns (CSV) or keys (JSONL) of an items file; only ``item_id`` is required."""

_REQUIRED_EVENT_COLUMNS = EVENT_COLUMNS[:4]
_NCF_FIELDS = ("user", "item", "rating", "timestamp")
_RATING_FIELDS = ("UserID", "MovieID", "Rating", "Timestamp")
_MOVIE_FIELDS = ("MovieID", "Title", "Genres")
_USER_FIELDS = ("UserID", "Gender", "Age", "Occupation", "Zip-code")
_MOVIELENS_FILES = ("ratings.dat", "movies.dat", "users.dat")
_RATE = EventKind.RATE.value
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_CHUNK = 1 << 20
_PROGRESS_ROWS = 10_000
_US_PER_SECOND = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_US = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_MAX_US = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_EPOCH_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_VIOLATION_PATH = re.compile(r"\w+\[(\d+)\]\.(\w+)(.*)")

_log = logging.getLogger(__name__)


class ImportFormat(StrEnum):
    """The file formats ``import_files`` reads; see the module documentation."""

    NCF = "ncf"
    MOVIELENS = "movielens"
    CSV = "csv"
    JSONL = "jsonl"


class FileKind(StrEnum):
    """What a CSV or JSONL file holds."""

    EVENTS = "events"
    ITEMS = "items"


@dataclass(frozen=True)
class FileProblem:
    """One thing wrong in a data file; ``line`` and ``column`` are 1-based, None if unknown."""

    path: str
    line: int | None
    column: int | None
    field: str
    description: str

    def __str__(self) -> str:
        """``path:line:column: field: description``, leaving out what is unknown."""
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        what = f"{self.field}: {self.description}" if self.field else self.description
        return f"{where}: {what}"


class DataFileError(CascadeError):
    """A data file is unreadable or has bad rows; nothing was imported.

    ``problems`` holds the first ``MAX_LISTED_PROBLEMS`` problems in file and line
    order; ``count`` is how many were found in all.
    """

    status = "INVALID_ARGUMENT"
    reason = "BAD_DATA_FILE"

    def __init__(self, problems: Sequence[FileProblem], count: int | None = None) -> None:
        if not problems:
            raise ValueError("a DataFileError needs at least one problem")
        self.problems = tuple(problems)
        self.count = max(count or 0, len(self.problems))
        noun = "problem" if self.count == 1 else "problems"
        lines = [f"{self.count} {noun} in the data files; nothing was imported"]
        lines += [f"  {problem}" for problem in self.problems]
        if self.count > len(self.problems):
            lines.append(f"  ... and {self.count - len(self.problems)} more")
        super().__init__(
            "\n".join(lines),
            metadata={"problem": str(self.problems[0]), "problemCount": str(self.count)},
        )


@dataclass(frozen=True)
class ImportResult:
    """What one import did: files read, rows created, events stored and skipped."""

    files: int
    users_created: int
    items_created: int
    events_stored: int
    events_duplicate: int
    """Events not stored because their id was stored before or repeats in the import."""
    seconds: float = field(default=0.0, compare=False)


@dataclass(eq=False)
class UserRows:
    """Users with attributes to write, one entry per user in every list."""

    external_ids: list[str] = field(default_factory=list)
    attributes: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        """The number of users."""
        return len(self.external_ids)

    def records(self) -> list[UserRecord]:
        """The users as catalog records."""
        return [
            UserRecord(user_id=user, attributes=attributes)
            for user, attributes in zip(self.external_ids, self.attributes, strict=True)
        ]


@dataclass(eq=False)
class ItemRows:
    """Items to write, one entry per item in every list; ``created_us`` None means unset."""

    external_ids: list[str] = field(default_factory=list)
    creator_ids: list[str] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    created_us: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        """The number of items."""
        return len(self.external_ids)

    def records(self) -> list[ItemRecord]:
        """The items as catalog records."""
        return [
            ItemRecord(
                item_id=item,
                creator_id=creator,
                categories=tuple(categories),
                title=title,
                status=ItemStatus(status),
                created_at=None if created is None else _datetime(created),
            )
            for item, creator, categories, title, status, created in zip(
                self.external_ids,
                self.creator_ids,
                self.categories,
                self.titles,
                self.statuses,
                self.created_us,
                strict=True,
            )
        ]


@dataclass(eq=False)
class EventRows:
    """Events to store, in file order, one entry per event in every column.

    ``occurred_us`` is microseconds since the epoch. ``sources``, ``lines`` and
    ``item_columns`` say where each event's item id was written (an index into
    ``ParsedFiles.paths``, a line, a column); they are kept only for CSV and JSONL,
    whose items must exist, and are empty otherwise.
    """

    event_ids: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    occurred_us: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    item_columns: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        """The number of events."""
        return len(self.event_ids)

    def extend(self, other: EventRows) -> None:
        """Append ``other``'s events."""
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))

    def records(self) -> list[EventRecord]:
        """The events as catalog records."""
        return [
            EventRecord(
                event_id=event_id,
                user_id=user,
                item_id=item,
                kind=EventKind(kind),
                occurred_at=_datetime(occurred),
                value=value,
            )
            for event_id, user, item, kind, occurred, value in zip(
                self.event_ids,
                self.user_ids,
                self.item_ids,
                self.kinds,
                self.occurred_us,
                self.values,
                strict=True,
            )
        ]


@dataclass(eq=False)
class ParsedFiles:
    """Everything read from the files of one import, checked and ready to load."""

    format: ImportFormat
    paths: tuple[Path, ...]
    users: UserRows
    items: ItemRows
    events: EventRows

    @property
    def creates_items(self) -> bool:
        """Whether events may name unknown items (created with ids only)."""
        return self.format in (ImportFormat.NCF, ImportFormat.MOVIELENS)


class _Problems:
    """Collects problems: lists the first ``MAX_LISTED_PROBLEMS``, counts them all."""

    def __init__(self) -> None:
        self.listed: list[FileProblem] = []
        self.count = 0

    def add(
        self, path: str, line: int | None, column: int | None, name: str, description: str
    ) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_PROBLEMS:
            self.listed.append(FileProblem(path, line, column, name, description))

    def raise_if_any(self, paths: Sequence[str]) -> None:
        if not self.count:
            return
        order = {path: index for index, path in reversed(list(enumerate(paths)))}
        listed = sorted(
            self.listed,
            key=lambda p: (order.get(p.path, -1), p.line or 0, p.column or 0),
        )
        raise DataFileError(listed, self.count)


class _Bars:
    """Rich progress bars on stderr, or nothing when disabled."""

    def __init__(self, bar: Progress | None) -> None:
        self._bar = bar

    def add(self, description: str, total: int | None = None) -> _Task:
        if self._bar is None:
            return _Task(None, TaskID(0))
        return _Task(self._bar, self._bar.add_task(description, total=total), total)


class _Task:
    """One bar: ``update`` moves it, ``done`` fills it (to ``count`` when given)."""

    def __init__(self, bar: Progress | None, task: TaskID, total: int | None = None) -> None:
        self._bar = bar
        self._task = task
        self._total = total

    def update(self, completed: int, total: int | None = None) -> None:
        if total is not None:
            self._total = total
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=self._total)

    def done(self, count: int | None = None) -> None:
        total = count if count is not None else self._total if self._total is not None else 1
        self.update(total, total)


def _progress_bars(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=Console(stderr=True))


def _datetime(microseconds: int) -> datetime:
    return _EPOCH + timedelta(microseconds=microseconds)


def _shown(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- reading


def _read(path: Path, problems: _Problems) -> bytes | None:
    """The file's bytes, gunzipped when compressed; None (and a problem) when unreadable."""
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        problems.add(source, None, None, "", f"cannot be read: {error.strerror or error}")
        return None
    if path.suffix.lower() == ".gz" or data[:2] == _GZIP_MAGIC:
        return _gunzip(source, data, problems)
    return data


def _gunzip(source: str, data: bytes, problems: _Problems) -> bytes | None:
    """Decompress every gzip member of ``data``; a problem names the line it broke at."""
    out: list[bytes] = []
    pending = data
    while True:
        decompressor = zlib.decompressobj(wbits=31)
        position = 0
        try:
            while position < len(pending) and not decompressor.eof:
                out.append(decompressor.decompress(pending[position : position + _GZIP_CHUNK]))
                position += _GZIP_CHUNK
        except zlib.error as error:
            line = sum(chunk.count(b"\n") for chunk in out) + 1
            problems.add(source, line, None, "", f"is not valid gzip data ({error})")
            return None
        if not decompressor.eof:
            line = sum(chunk.count(b"\n") for chunk in out) + 1
            problems.add(source, line, None, "", "the gzip data ends early (truncated file?)")
            return None
        pending = decompressor.unused_data + pending[position:]
        if not pending.strip(b"\x00"):
            return b"".join(out)


def _decode(
    source: str,
    data: bytes,
    encoding: str,
    problems: _Problems,
    *,
    separator: bytes | None = None,
    what: str = "",
) -> str | None:
    """``data`` as text; a problem names the line (and field) of the first bad byte."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = None
        if separator is not None:
            start = data.rfind(b"\n", 0, error.start) + 1
            column = data.count(separator, start, error.start) + 1
        problems.add(
            source,
            line,
            column,
            "",
            f"byte 0x{data[error.start]:02X} is not valid {encoding}{what}",
        )
        return None
    return text.removeprefix("\ufeff")


def _split_lines(text: str) -> list[str]:
    """Lines without their ends (LF or CRLF); a final line end adds no empty line."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


# ------------------------------------------------------------ delimited numeric tables


@dataclass
class _Table:
    """A delimited file split into columns; ``line_numbers`` None means line = index + 1."""

    columns: list[list[str]]
    line_numbers: list[int] | None

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def line(self, index: int) -> int:
        return index + 1 if self.line_numbers is None else self.line_numbers[index]


def _split_table(
    source: str,
    text: str,
    separator: str,
    widths: tuple[int, ...],
    describe: str,
    problems: _Problems,
) -> _Table | None:
    """Split ``text`` into columns; every non-blank line must have the first line's width.

    ``widths`` are the field counts allowed; ``describe`` says what they are in a problem.
    Fields are split with whole-text operations (no per-line lists), which keeps a
    million-line file to about a second.
    """
    if separator != "\t":
        if "\t" in text:
            for number, line in enumerate(_split_lines(text), start=1):
                if "\t" in line:
                    column = line[: line.index("\t")].count(separator) + 1
                    problems.add(source, number, column, "", f"holds a tab; {describe}")
                    return None
        text = text.replace(separator, "\t")
    lines = _split_lines(text)
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


def _id_problem(value: str) -> str:
    if not value.isdecimal():
        return f"must be a non-negative integer (got {_shown(value)})"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters (got {len(value)})"
    return ""


def _float_problem(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return f"must be a number (got {_shown(value)})"
    if not math.isfinite(number):
        return f"must be finite (got {_shown(value)})"
    return ""


def _seconds_problem(value: str, latest_s: int) -> str:
    if not value.isdecimal():
        return f"must be whole seconds since 1970-01-01 UTC (got {_shown(value)})"
    if int(value) > latest_s:
        return _future(int(value) * _US_PER_SECOND, latest_s * _US_PER_SECOND)
    return ""


def _future(occurred_us: int, latest_us: int) -> str:
    ahead = (occurred_us - latest_us) / _US_PER_SECOND + MAX_EVENT_TIME_AHEAD.total_seconds()
    return (
        f"is {ahead:.0f} s in the future; at most "
        f"{MAX_EVENT_TIME_AHEAD.total_seconds():.0f} s ahead of the import's start is allowed"
    )


def _rating_events(
    source: str,
    table: _Table,
    names: tuple[str, ...],
    prefix: str,
    started: datetime,
    problems: _Problems,
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
        occurred = [second * _US_PER_SECOND for second in seconds]
    else:
        event_ids = list(map(f"{prefix}:{{}}:{{}}".format, users, items))
        values = [0.0] * count
        occurred = [started_s * _US_PER_SECOND] * count
    if max(map(len, event_ids), default=0) > MAX_ID_LENGTH:
        for index, event_id in enumerate(event_ids):
            if len(event_id) > MAX_ID_LENGTH:
                problems.add(
                    source,
                    table.line(index),
                    None,
                    "event_id",
                    f"{_shown(event_id[:30])} (made from the line) must be at most "
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
    source: str, table: _Table, names: tuple[str, ...], latest_s: int, problems: _Problems
) -> None:
    """Name every bad field of every line, in line order."""
    checks: list[Callable[[str], str]] = [_id_problem, _id_problem]
    if len(table.columns) == 4:
        checks += [_float_problem, lambda value: _seconds_problem(value, latest_s)]
    for index in range(len(table)):
        for column, check in enumerate(checks):
            problem = check(table.columns[column][index])
            if problem:
                problems.add(source, table.line(index), column + 1, names[column], problem)


# ----------------------------------------------------------------------------- NCF


def _parse_ncf(
    source: str, data: bytes, started: datetime, problems: _Problems, task: _Task
) -> EventRows:
    text = _decode(
        source, data, "ascii", problems, separator=b"\t", what=" (NCF files hold numbers)"
    )
    if text is None:
        return EventRows()
    table = _split_table(
        source,
        text,
        "\t",
        (2, 4),
        "NCF lines have 2 (user, item) or 4 (user, item, rating, timestamp), tab-separated",
        problems,
    )
    if table is None:
        return EventRows()
    task.update(0, total=len(table))
    events = _rating_events(source, table, _NCF_FIELDS, "ncf", started, problems)
    task.done(len(table))
    return events


# ----------------------------------------------------------------------- MovieLens


def _movielens_role(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    return name if name in _MOVIELENS_FILES else None


def _parse_movielens(
    source: str,
    role: str,
    data: bytes,
    started: datetime,
    parsed: ParsedFiles,
    problems: _Problems,
    seen: _Seen,
    task: _Task,
) -> None:
    text = _decode(source, data, "latin-1", problems)
    if text is None:
        return
    if role == "ratings.dat":
        table = _split_table(
            source,
            text,
            "::",
            (4,),
            "ratings.dat lines are UserID::MovieID::Rating::Timestamp",
            problems,
        )
        if table is not None:
            task.update(0, total=len(table))
            events = _rating_events(source, table, _RATING_FIELDS, "movielens", started, problems)
            parsed.events.extend(events)
            task.done(len(table))
        return
    lines = _split_lines(text)
    task.update(0, total=len(lines))
    if role == "movies.dat":
        _parse_movies(source, lines, parsed.items, problems, seen)
    else:
        _parse_users(source, lines, parsed.users, problems, seen)
    task.done(len(lines))


def _parse_movies(
    source: str, lines: list[str], items: ItemRows, problems: _Problems, seen: _Seen
) -> None:
    pending = _PendingItems(problems)
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        parts = line.split("::")
        if len(parts) < 3:
            problems.add(
                source,
                number,
                None,
                "",
                f"has {len(parts)} fields; movies.dat lines are MovieID::Title::Genres",
            )
            continue
        movie, title, genres = parts[0], "::".join(parts[1:-1]), parts[-1]
        problem = _id_problem(movie)
        if problem:
            problems.add(source, number, 1, "MovieID", problem)
            continue
        if not seen.first("item", movie, source, number, 1, "MovieID"):
            continue
        categories = genres.split("|") if genres else []
        items.external_ids.append(movie)
        items.creator_ids.append("")
        items.categories.append(categories)
        items.titles.append(title)
        items.statuses.append(ItemStatus.ACTIVE.value)
        items.created_us.append(None)
        pending.add(
            ItemRecord(item_id=movie, title=title, categories=tuple(categories)),
            source,
            number,
            {"item_id": (1, "MovieID"), "title": (2, "Title"), "categories": (3, "Genres")},
        )
    pending.flush()


def _parse_users(
    source: str, lines: list[str], users: UserRows, problems: _Problems, seen: _Seen
) -> None:
    columns = {"user_id": (1, "UserID"), "attributes": (None, "attributes")}
    pending = _PendingUsers(problems)
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        parts = line.split("::")
        if len(parts) != len(_USER_FIELDS):
            problems.add(
                source,
                number,
                None,
                "",
                f"has {len(parts)} fields; users.dat lines are "
                "UserID::Gender::Age::Occupation::Zip-code",
            )
            continue
        user, gender, age, occupation, zip_code = parts
        bad = False
        for column, value in ((1, user), (3, age), (4, occupation)):
            problem = _id_problem(value)
            if problem:
                problems.add(source, number, column, _USER_FIELDS[column - 1], problem)
                bad = True
        if bad or not seen.first("user", user, source, number, 1, "UserID"):
            continue
        attributes: dict[str, Any] = {
            "gender": gender,
            "age": int(age),
            "occupation": int(occupation),
            "zip": zip_code,
        }
        users.external_ids.append(user)
        users.attributes.append(attributes)
        pending.add(UserRecord(user_id=user, attributes=attributes), source, number, columns)
    pending.flush()


# ------------------------------------------------------------- API validation batches

_Columns = Mapping[str, tuple[int | None, str]]
"""Per record field name: the column it came from (None if derived) and its name there."""


class _Pending:
    """Records waiting to be checked by a ``catalog.validation`` function in batches."""

    def __init__(self, problems: _Problems) -> None:
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
        column, shown = columns.get(name, (None, name))
        self._problems.add(source, line, column, shown + rest, violation.description)


class _PendingItems(_Pending):
    def _validate(self, records: list[Any]) -> list[FieldViolation]:
        return validate_items(records)


class _PendingUsers(_Pending):
    def _validate(self, records: list[Any]) -> list[FieldViolation]:
        return validate_users(records)


class _PendingEvents(_Pending):
    def __init__(self, problems: _Problems, now: datetime) -> None:
        super().__init__(problems)
        self._now = now

    def _validate(self, records: list[Any]) -> list[FieldViolation]:
        return validate_events(records, self._now)


class _Seen:
    """The first place each item and user id was written, to report repeats."""

    def __init__(self, problems: _Problems) -> None:
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
            f"{noun} {_shown(key)} is also at {place}; each {noun} may appear once per import",
        )
        return False


# --------------------------------------------------------------------- CSV and JSONL


@dataclass
class _Row:
    """One CSV or JSONL record: its values by column name and where each came from."""

    source: str
    line: int
    values: dict[str, object]
    columns: dict[str, int]

    def where(self, name: str) -> int | None:
        return self.columns.get(name)


def _file_kind(
    source: str, line: int, names: Sequence[str], forced: FileKind | None, problems: _Problems
) -> FileKind | None:
    if forced is not None:
        return forced
    if "kind" in names:
        return FileKind.EVENTS
    if "item_id" in names and "user_id" not in names:
        return FileKind.ITEMS
    problems.add(
        source,
        line,
        None,
        "",
        "cannot tell an events file (it has a kind column) from an items file (item_id "
        "and no user_id); pass --kind events or --kind items",
    )
    return None


def _check_names(
    source: str, line: int, names: Sequence[str], kind: FileKind, problems: _Problems
) -> bool:
    """Whether the columns (or keys) fit ``kind``; problems name the unknown and missing."""
    known = EVENT_COLUMNS if kind is FileKind.EVENTS else ITEM_COLUMNS
    required = _REQUIRED_EVENT_COLUMNS if kind is FileKind.EVENTS else ("item_id",)
    good = True
    for column, name in enumerate(names, start=1):
        if name not in known:
            problems.add(
                source,
                line,
                column,
                name,
                f"is not a column of {kind.value} files ({', '.join(known)})",
            )
            good = False
        elif names.index(name) != column - 1:
            problems.add(source, line, column, name, "appears twice")
            good = False
    for name in required:
        if name not in names:
            problems.add(source, line, None, name, f"is required in {kind.value} files")
            good = False
    return good


class _RowReader:
    """Turns CSV or JSONL rows into events or items, checking every field."""

    def __init__(
        self,
        parsed: ParsedFiles,
        source_index: int,
        problems: _Problems,
        seen: _Seen,
        now: datetime,
    ) -> None:
        self._parsed = parsed
        self._source_index = source_index
        self._problems = problems
        self._seen = seen
        self._latest_us = (now + MAX_EVENT_TIME_AHEAD - _EPOCH) // timedelta(microseconds=1)
        self._events = _PendingEvents(problems, now)
        self._items = _PendingItems(problems)

    def finish(self) -> None:
        self._events.flush()
        self._items.flush()

    def _problem(self, row: _Row, name: str, description: str) -> None:
        self._problems.add(row.source, row.line, row.where(name), name, description)

    def _text(self, row: _Row, name: str, *, id_like: bool = False) -> str | None:
        value = row.values.get(name)
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if id_like and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        wanted = "a string or an integer" if id_like else "a string"
        self._problem(row, name, f"must be {wanted} (got {_shown(value)})")
        return None

    def _time(self, row: _Row, name: str) -> tuple[bool, int | None]:
        """Whether the time is good, and it in microseconds since the epoch (None if empty)."""
        value = row.values.get(name)
        if value is None or value == "":
            return True, None
        seconds: float | int
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = value
        elif isinstance(value, str) and _EPOCH_NUMBER.fullmatch(value):
            seconds = int(value) if value.lstrip("-").isdecimal() else float(value)
        elif isinstance(value, str):
            try:
                moment: datetime | None = datetime.fromisoformat(value)
            except ValueError:
                moment = None
            if moment is None or moment.utcoffset() is None:
                reason = "is not a time" if moment is None else "has no time zone"
                self._problem(
                    row,
                    name,
                    f"{_shown(value)} {reason}; write ISO 8601 with a zone "
                    "(2026-01-31T12:00:00Z) or seconds since 1970-01-01 UTC",
                )
                return False, None
            return True, (moment - _EPOCH) // timedelta(microseconds=1)
        else:
            self._problem(row, name, f"must be a time (got {_shown(value)})")
            return False, None
        if not math.isfinite(seconds):
            self._problem(row, name, f"must be finite (got {_shown(value)})")
            return False, None
        if isinstance(seconds, float):
            microseconds = round(seconds * _US_PER_SECOND)
        else:
            microseconds = seconds * _US_PER_SECOND
        if not _MIN_US <= microseconds <= _MAX_US:
            self._problem(row, name, f"{_shown(value)} is out of range (years 1 to 9999)")
            return False, None
        return True, microseconds

    def event(self, row: _Row) -> None:
        user = self._text(row, "user_id", id_like=True)
        item = self._text(row, "item_id", id_like=True)
        event_id = self._text(row, "event_id")
        kind_text = self._text(row, "kind")
        kind: EventKind | None = None
        if kind_text:
            try:
                kind = EventKind(kind_text.lower())
            except ValueError:
                self._problem(
                    row,
                    "kind",
                    f"{_shown(kind_text)} is not an event kind ({', '.join(EVENT_KINDS)})",
                )
        elif kind_text is not None:
            self._problem(row, "kind", "is required")
        good_time, occurred = self._time(row, "timestamp")
        if good_time and occurred is None:
            self._problem(row, "timestamp", "is required")
        elif occurred is not None and occurred > self._latest_us:
            self._problem(row, "timestamp", _future(occurred, self._latest_us))
            occurred = None
        value = self._value(row)
        if (
            user is None
            or item is None
            or event_id is None
            or kind is None
            or occurred is None
            or value is None
        ):
            return
        if not event_id:
            normalised = f"{user}\t{item}\t{kind.value}\t{occurred}\t{value!r}"
            digest = hashlib.sha1(normalised.encode("utf-8", "surrogatepass")).hexdigest()
            event_id = f"csv:{digest[:16]}"
        columns: dict[str, tuple[int | None, str]] = {
            name: (column, name) for name, column in row.columns.items()
        }
        columns["event_time"] = columns.get("timestamp", (None, "timestamp"))
        record = EventRecord(
            event_id=event_id,
            user_id=user,
            item_id=item,
            kind=kind,
            occurred_at=_datetime(occurred),
            value=value,
        )
        self._events.add(record, row.source, row.line, columns)
        events = self._parsed.events
        events.event_ids.append(event_id)
        events.user_ids.append(user)
        events.item_ids.append(item)
        events.kinds.append(kind.value)
        events.occurred_us.append(occurred)
        events.values.append(value)
        events.sources.append(self._source_index)
        events.lines.append(row.line)
        events.item_columns.append(row.columns.get("item_id", 0))

    def _value(self, row: _Row) -> float | None:
        value = row.values.get("value")
        if value is None or value == "":
            return 0.0
        if isinstance(value, str):
            try:
                return float(value)  # finiteness is checked with the API's rules
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        self._problem(row, "value", f"must be a number (got {_shown(value)})")
        return None

    def item(self, row: _Row, *, split_categories: bool) -> None:
        item = self._text(row, "item_id", id_like=True)
        creator = self._text(row, "creator_id", id_like=True)
        title = self._text(row, "title")
        categories = self._categories(row, split=split_categories)
        status = self._text(row, "status")
        if status == "":
            status = ItemStatus.ACTIVE.value
        elif status is not None and status not in ITEM_STATUSES:
            self._problem(
                row, "status", f"{_shown(status)} is not a status ({', '.join(ITEM_STATUSES)})"
            )
            status = None
        good_time, created = self._time(row, "created_at")
        if (
            item is None
            or creator is None
            or title is None
            or categories is None
            or status is None
            or not good_time
        ):
            return
        column = row.where("item_id")
        if item and not self._seen.first("item", item, row.source, row.line, column, "item_id"):
            return
        columns: dict[str, tuple[int | None, str]] = {
            name: (column, name) for name, column in row.columns.items()
        }
        columns["create_time"] = columns.get("created_at", (None, "created_at"))
        record = ItemRecord(
            item_id=item,
            creator_id=creator,
            categories=tuple(categories),
            title=title,
            status=ItemStatus(status),
        )
        self._items.add(record, row.source, row.line, columns)
        items = self._parsed.items
        items.external_ids.append(item)
        items.creator_ids.append(creator)
        items.categories.append(categories)
        items.titles.append(title)
        items.statuses.append(status)
        items.created_us.append(created)

    def _categories(self, row: _Row, *, split: bool) -> list[str] | None:
        value = row.values.get("categories")
        if value is None or value == "":
            return []
        if split and isinstance(value, str):
            return [category.strip() for category in value.split("|")]
        if isinstance(value, list) and all(isinstance(entry, str) for entry in value):
            return list(value)
        wanted = "|-separated text" if split else "a list of strings"
        self._problem(row, "categories", f"must be {wanted} (got {_shown(value)})")
        return None


def _parse_csv(
    source: str,
    data: bytes,
    forced: FileKind | None,
    reader: _RowReader,
    problems: _Problems,
    task: _Task,
) -> None:
    text = _decode(source, data, "utf-8", problems)
    if text is None:
        return
    task.update(0, total=text.count("\n") or 1)
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(rows, None)
        if header is None:
            problems.add(source, None, None, "", "is empty; a CSV file starts with a header line")
            return
        names = [name.strip() for name in header]
        kind = _file_kind(source, 1, names, forced, problems)
        if kind is None or not _check_names(source, 1, names, kind, problems):
            return
        columns = {name: column for column, name in enumerate(names, start=1)}
        line = rows.line_num
        for fields in rows:
            start, line = line + 1, rows.line_num
            if not fields:
                continue
            if len(fields) != len(names):
                problems.add(
                    source,
                    start,
                    None,
                    "",
                    f"has {len(fields)} fields; the header has {len(names)}",
                )
                continue
            values: dict[str, object] = {
                name: value if name == "title" else value.strip()
                for name, value in zip(names, fields, strict=True)
            }
            row = _Row(source, start, values, columns)
            if kind is FileKind.EVENTS:
                reader.event(row)
            else:
                reader.item(row, split_categories=True)
            if start % _PROGRESS_ROWS == 0:
                task.update(line)
    except csv.Error as error:
        problems.add(source, rows.line_num, None, "", f"is not valid CSV ({error})")
    task.done()


def _parse_jsonl(
    source: str,
    data: bytes,
    forced: FileKind | None,
    reader: _RowReader,
    problems: _Problems,
    task: _Task,
) -> None:
    text = _decode(source, data, "utf-8", problems)
    if text is None:
        return
    lines = _split_lines(text)
    task.update(0, total=len(lines))
    kind = forced
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            problems.add(source, number, None, "", f"is not valid JSON ({error})")
            continue
        if not isinstance(record, dict):
            problems.add(source, number, None, "", f"must be a JSON object (got {_shown(record)})")
            continue
        names = list(record)
        if kind is None:
            kind = _file_kind(source, number, names, forced, problems)
            if kind is None:
                return
        if not _check_names(source, number, names, kind, problems):
            continue
        columns = {name: column for column, name in enumerate(names, start=1)}
        row = _Row(source, number, record, columns)
        if kind is FileKind.EVENTS:
            reader.event(row)
        else:
            reader.item(row, split_categories=False)
        if number % _PROGRESS_ROWS == 0:
            task.update(number)
    task.done(len(lines))


# ---------------------------------------------------------------------------- parse


def parse_files(
    paths: Sequence[Path],
    format: ImportFormat,  # noqa: A002 - the name of the CLI option
    *,
    kind: str | None = None,
    now: datetime | None = None,
    progress: bool = False,
) -> ParsedFiles:
    """Read and check every file; raise ``DataFileError`` listing the problems if any.

    ``now`` (default: the current time) is when the import started: event times may be
    at most five minutes past it, and two-field NCF lines happen at it, floored to the
    second. ``kind`` (``events`` or ``items``) forces what CSV and JSONL files hold.
    Nothing touches the database.
    """
    with _bars(progress) as bars:
        return _parse(paths, ImportFormat(format), kind, _started(now), bars)


def _started(now: datetime | None) -> datetime:
    moment = datetime.now(UTC) if now is None else now
    if moment.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0)


@contextmanager
def _bars(enabled: bool) -> Iterator[_Bars]:
    bar = _progress_bars(enabled)
    if bar is None:
        yield _Bars(None)
        return
    with bar:
        yield _Bars(bar)


def _forced_kind(format: ImportFormat, kind: str | None) -> FileKind | None:  # noqa: A002
    if kind is None:
        return None
    if format not in (ImportFormat.CSV, ImportFormat.JSONL):
        raise InvalidArgumentError(
            [FieldViolation("kind", f"applies to csv and jsonl files, not {format.value}")]
        )
    try:
        return FileKind(kind)
    except ValueError:
        raise InvalidArgumentError(
            [FieldViolation("kind", f"must be events or items (got {kind!r})")]
        ) from None


def _parse(
    paths: Sequence[Path],
    format: ImportFormat,  # noqa: A002
    kind: str | None,
    started: datetime,
    bars: _Bars,
) -> ParsedFiles:
    if not paths:
        raise InvalidArgumentError([FieldViolation("paths", "name at least one file")])
    forced = _forced_kind(format, kind)
    paths = tuple(Path(path) for path in paths)
    parsed = ParsedFiles(format, paths, UserRows(), ItemRows(), EventRows())
    problems = _Problems()
    seen = _Seen(problems)
    order = list(range(len(paths)))
    if format is ImportFormat.MOVIELENS:
        roles = [_movielens_role(path) for path in paths]
        for path, role in zip(paths, roles, strict=True):
            if role is None:
                problems.add(
                    str(path),
                    None,
                    None,
                    "",
                    "is not a MovieLens file: the names are ratings.dat, movies.dat and users.dat",
                )
        # Items and users first, so that a problem list reads in the order of loading.
        order.sort(key=lambda index: roles[index] == "ratings.dat")
    for index in order:
        path = paths[index]
        source = str(path)
        task = bars.add(f"reading {path.name}")
        data = _read(path, problems)
        if data is None:
            continue
        if format is ImportFormat.NCF:
            parsed.events.extend(_parse_ncf(source, data, started, problems, task))
        elif format is ImportFormat.MOVIELENS:
            role = _movielens_role(path)
            if role is not None:
                _parse_movielens(source, role, data, started, parsed, problems, seen, task)
        else:
            reader = _RowReader(parsed, index, problems, seen, started)
            parse = _parse_csv if format is ImportFormat.CSV else _parse_jsonl
            parse(source, data, forced, reader, problems, task)
            reader.finish()
    problems.raise_if_any([str(path) for path in paths])
    return parsed


# ----------------------------------------------------------------------------- load

_TEMP_TABLES = (
    """
    CREATE TEMPORARY TABLE import_users (
        external_id text COLLATE "C" NOT NULL,
        attributes jsonb NOT NULL
    ) ON COMMIT DROP
    """,
    """
    CREATE TEMPORARY TABLE import_items (
        external_id text COLLATE "C" NOT NULL,
        creator_id text NOT NULL,
        categories text[] NOT NULL,
        title text NOT NULL,
        status text NOT NULL,
        created_us bigint
    ) ON COMMIT DROP
    """,
    """
    CREATE TEMPORARY TABLE import_events (
        ord bigint NOT NULL,
        event_id text COLLATE "C" NOT NULL,
        user_id text COLLATE "C" NOT NULL,
        item_id text COLLATE "C" NOT NULL,
        kind text NOT NULL,
        occurred_us bigint NOT NULL,
        value double precision NOT NULL
    ) ON COMMIT DROP
    """,
)
_TIME = "(TIMESTAMPTZ 'epoch' + {column} * INTERVAL '1 microsecond')"

_UPSERT_USERS = sa.text(
    """
    WITH written AS (
        INSERT INTO users AS u (external_id, attributes)
        SELECT external_id, attributes FROM import_users ORDER BY external_id
        ON CONFLICT (external_id) DO UPDATE
            SET attributes = u.attributes || excluded.attributes, updated_at = now()
            WHERE NOT u.attributes @> excluded.attributes
        RETURNING xmax = 0 AS created
    )
    SELECT count(*) FILTER (WHERE created) FROM written
    """
)
_UPSERT_MOVIES = sa.text(
    """
    WITH written AS (
        INSERT INTO items AS i (external_id, title, categories)
        SELECT external_id, title, categories FROM import_items ORDER BY external_id
        ON CONFLICT (external_id) DO UPDATE
            SET title = excluded.title, categories = excluded.categories, updated_at = now()
            WHERE (i.title, i.categories) IS DISTINCT FROM (excluded.title, excluded.categories)
        RETURNING xmax = 0 AS created
    )
    SELECT count(*) FILTER (WHERE created) FROM written
    """
)
_UPSERT_ITEMS = sa.text(
    f"""
    WITH written AS (
        INSERT INTO items AS i (external_id, creator_id, categories, title, status, created_at)
        SELECT external_id, creator_id, categories, title, status,
               coalesce({_TIME.format(column="created_us")}, now())
        FROM import_items ORDER BY external_id
        ON CONFLICT (external_id) DO UPDATE
            SET creator_id = excluded.creator_id, categories = excluded.categories,
                title = excluded.title, status = excluded.status, updated_at = now()
            WHERE (i.creator_id, i.categories, i.title, i.status) IS DISTINCT FROM
                  (excluded.creator_id, excluded.categories, excluded.title, excluded.status)
        RETURNING xmax = 0 AS created
    )
    SELECT count(*) FILTER (WHERE created) FROM written
    """
)
_SET_CREATED_AT = sa.text(
    f"""
    UPDATE items AS i SET created_at = {_TIME.format(column="t.created_us")}
    FROM import_items AS t
    WHERE i.external_id = t.external_id AND t.created_us IS NOT NULL
      AND i.created_at IS DISTINCT FROM {_TIME.format(column="t.created_us")}
    """
)
_INSERT_EVENT_USERS = sa.text(
    """
    WITH written AS (
        INSERT INTO users (external_id)
        SELECT DISTINCT e.user_id FROM import_events AS e
        WHERE NOT EXISTS (SELECT FROM users AS u WHERE u.external_id = e.user_id)
        ORDER BY e.user_id
        ON CONFLICT (external_id) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM written
    """
)
_INSERT_EVENT_ITEMS = sa.text(
    """
    WITH written AS (
        INSERT INTO items (external_id)
        SELECT DISTINCT e.item_id FROM import_events AS e
        WHERE NOT EXISTS (SELECT FROM items AS i WHERE i.external_id = e.item_id)
        ORDER BY e.item_id
        ON CONFLICT (external_id) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM written
    """
)
_UNKNOWN_ITEMS = sa.text(
    f"""
    SELECT e.ord, count(*) OVER () FROM import_events AS e
    WHERE NOT EXISTS (SELECT FROM items AS i WHERE i.external_id = e.item_id)
    ORDER BY e.ord LIMIT {MAX_LISTED_PROBLEMS}
    """
)
_INSERT_EVENTS = f"""
    INSERT INTO events (event_id, user_id, item_id, kind, occurred_at, value)
    SELECT e.event_id, u.id, i.id, e.kind, {_TIME.format(column="e.occurred_us")}, e.value
    FROM (SELECT DISTINCT ON (event_id) * FROM import_events ORDER BY event_id, ord) AS e
    JOIN users AS u ON u.external_id = e.user_id
    JOIN items AS i ON i.external_id = e.item_id
    ORDER BY e.ord
"""
_EVENTS_EXIST = sa.select(sa.exists().select_from(Event))


@dataclass
class _Counts:
    users_created: int = 0
    items_created: int = 0
    events_stored: int = 0


def import_files(
    engine: sa.Engine,
    paths: Sequence[Path],
    format: ImportFormat,  # noqa: A002 - the name of the CLI option
    *,
    kind: str | None = None,
    progress: bool = True,
    now: Callable[[], datetime] | None = None,
) -> ImportResult:
    """Read, check and load ``paths`` in ``format`` in one transaction; see the module doc.

    Raises ``DataFileError`` (nothing imported) when a file is unreadable or any row is
    bad, including CSV or JSONL events whose items neither exist nor are imported with
    them; ``InvalidArgumentError`` for a bad ``kind``. ``now`` (default: the system
    clock) is called once, for the start of the import. ``progress`` shows progress bars
    on stderr.
    """
    began = time.perf_counter()
    started = _started(None if now is None else now())
    with _bars(progress) as bars:
        parsed = _parse(paths, ImportFormat(format), kind, started, bars)
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            connection.exec_driver_sql("SET LOCAL work_mem = '64MB'")
            connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
            counts = _load(connection, parsed, bars)
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE users, items, events")
        connection.commit()
    result = ImportResult(
        files=len(parsed.paths),
        users_created=counts.users_created,
        items_created=counts.items_created,
        events_stored=counts.events_stored,
        events_duplicate=len(parsed.events) - counts.events_stored,
        seconds=time.perf_counter() - began,
    )
    _log.info(
        "imported %d file(s): %d users and %d items created, %d events stored, %d duplicate, "
        "in %.1f s",
        result.files,
        result.users_created,
        result.items_created,
        result.events_stored,
        result.events_duplicate,
        result.seconds,
    )
    return result


def _load(connection: sa.Connection, parsed: ParsedFiles, bars: _Bars) -> _Counts:
    counts = _Counts()
    for statement in _TEMP_TABLES:
        connection.exec_driver_sql(statement)
    users, items, events = parsed.users, parsed.items, parsed.events
    if users:
        task = bars.add("writing users", len(users))
        copy_rows(
            connection,
            "import_users",
            ("external_id", "attributes"),
            zip(users.external_ids, map(Jsonb, users.attributes), strict=True),
            on_progress=task.update,
        )
        counts.users_created += connection.execute(_UPSERT_USERS).scalar_one()
        task.done()
    if items:
        task = bars.add("writing items", len(items))
        copy_rows(
            connection,
            "import_items",
            ("external_id", "creator_id", "categories", "title", "status", "created_us"),
            zip(
                items.external_ids,
                items.creator_ids,
                items.categories,
                items.titles,
                items.statuses,
                items.created_us,
                strict=True,
            ),
            on_progress=task.update,
        )
        if parsed.format is ImportFormat.MOVIELENS:
            counts.items_created += connection.execute(_UPSERT_MOVIES).scalar_one()
        else:
            counts.items_created += connection.execute(_UPSERT_ITEMS).scalar_one()
            connection.execute(_SET_CREATED_AT)
        task.done()
    if events:
        _load_events(connection, parsed, counts, bars)
    return counts


def _load_events(
    connection: sa.Connection, parsed: ParsedFiles, counts: _Counts, bars: _Bars
) -> None:
    events = parsed.events
    task = bars.add("copying events", len(events))
    copy_rows(
        connection,
        "import_events",
        ("ord", "event_id", "user_id", "item_id", "kind", "occurred_us", "value"),
        zip(
            range(len(events)),
            events.event_ids,
            events.user_ids,
            events.item_ids,
            events.kinds,
            events.occurred_us,
            events.values,
            strict=True,
        ),
        on_progress=task.update,
    )
    connection.exec_driver_sql("ANALYZE import_events")
    task.done()

    task = bars.add("creating users and items")
    if parsed.creates_items:
        counts.items_created += connection.execute(_INSERT_EVENT_ITEMS).scalar_one()
    else:
        _check_items_exist(connection, parsed)
    counts.users_created += connection.execute(_INSERT_EVENT_USERS).scalar_one()
    task.done()

    defer = len(events) >= DEFER_INDEXES_FROM and not connection.scalar(_EVENTS_EXIST)
    if defer:  # lock first, then look again: nobody may add events in between
        connection.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        defer = not connection.scalar(_EVENTS_EXIST)
    task = bars.add("storing events")
    if defer:
        with deferred_indexes(connection, "events"):
            counts.events_stored = connection.exec_driver_sql(_INSERT_EVENTS).rowcount
            task.done(counts.events_stored)
            task = bars.add("rebuilding event indexes")
        task.done()
    else:
        statement = _INSERT_EVENTS + " ON CONFLICT (event_id) DO NOTHING"
        counts.events_stored = connection.exec_driver_sql(statement).rowcount
        task.done(counts.events_stored)


def _check_items_exist(connection: sa.Connection, parsed: ParsedFiles) -> None:
    """Raise ``DataFileError`` naming the events whose items neither exist nor were imported."""
    rows = connection.execute(_UNKNOWN_ITEMS).all()
    if not rows:
        return
    events = parsed.events
    problems = [
        FileProblem(
            str(parsed.paths[events.sources[ord_]]),
            events.lines[ord_],
            events.item_columns[ord_] or None,
            "item_id",
            f"item {_shown(events.item_ids[ord_])} does not exist; import it first "
            "(or in the same command, from an items file)",
        )
        for ord_, _ in rows
    ]
    raise DataFileError(problems, rows[0][1])
