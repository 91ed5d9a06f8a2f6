"""CSV and JSONL files: telling an events file from an items file by its columns (or keys),
checking those, and handing each record to a ``RowReader``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from cascade_server.offline.importing.formats import FileKind
from cascade_server.offline.importing.problems import Problems, shown
from cascade_server.offline.importing.progress import Task
from cascade_server.offline.importing.reading import decode, split_lines
from cascade_server.offline.importing.row_reader import Row, RowReader

EVENT_COLUMNS = ("user_id", "item_id", "kind", "timestamp", "value", "event_id")
"""The columns (CSV) or keys (JSONL) of an events file; the first four are required."""

ITEM_COLUMNS = ("item_id", "creator_id", "categories", "title", "status", "created_at")
"""The columns (CSV) or keys (JSONL) of an items file; only ``item_id`` is required."""

_REQUIRED_EVENT_COLUMNS = EVENT_COLUMNS[:4]
_PROGRESS_ROWS = 10_000


def _file_kind(
    source: str, line: int, names: Sequence[str], forced: FileKind | None, problems: Problems
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
    source: str, line: int, names: Sequence[str], kind: FileKind, problems: Problems
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


def parse_csv(
    source: str,
    data: bytes,
    forced: FileKind | None,
    reader: RowReader,
    problems: Problems,
    task: Task,
) -> None:
    """Read a CSV file (a header line, then rows) into ``reader``."""
    text = decode(source, data, "utf-8", problems)
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
            row = Row(source, start, values, columns)
            if kind is FileKind.EVENTS:
                reader.event(row)
            else:
                reader.item(row, split_categories=True)
            if start % _PROGRESS_ROWS == 0:
                task.update(line)
    except csv.Error as error:
        problems.add(source, rows.line_num, None, "", f"is not valid CSV ({error})")
    task.done()


def parse_jsonl(
    source: str,
    data: bytes,
    forced: FileKind | None,
    reader: RowReader,
    problems: Problems,
    task: Task,
) -> None:
    """Read a JSONL file (one object per line) into ``reader``."""
    text = decode(source, data, "utf-8", problems)
    if text is None:
        return
    lines = split_lines(text)
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
            problems.add(source, number, None, "", f"must be a JSON object (got {shown(record)})")
            continue
        names = list(record)
        if kind is None:
            kind = _file_kind(source, number, names, forced, problems)
            if kind is None:
                return
        if not _check_names(source, number, names, kind, problems):
            continue
        columns = {name: column for column, name in enumerate(names, start=1)}
        row = Row(source, number, record, columns)
        if kind is FileKind.EVENTS:
            reader.event(row)
        else:
            reader.item(row, split_categories=False)
        if number % _PROGRESS_ROWS == 0:
            task.update(number)
    task.done(len(lines))
