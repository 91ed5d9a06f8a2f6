"""Reading and checking every file of one import, whatever its format, without touching the
database: ``parse_files``, and ``parse_paths``, which ``import_files`` calls with its own bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cascade_server.errors import FieldViolation, InvalidArgumentError
from cascade_server.offline.importing.batches import Seen
from cascade_server.offline.importing.csv_jsonl import parse_csv, parse_jsonl
from cascade_server.offline.importing.formats import FileKind, ImportFormat
from cascade_server.offline.importing.movielens import movielens_role, parse_movielens
from cascade_server.offline.importing.ncf import parse_ncf
from cascade_server.offline.importing.problems import Problems
from cascade_server.offline.importing.progress import Bars, progress_bars
from cascade_server.offline.importing.reading import read
from cascade_server.offline.importing.row_reader import RowReader
from cascade_server.offline.importing.rows import EventRows, ItemRows, ParsedFiles, UserRows


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
    with progress_bars(progress) as bars:
        return parse_paths(paths, ImportFormat(format), kind, import_start(now), bars)


def import_start(now: datetime | None) -> datetime:
    """When an import started at ``now`` (default: the current time), floored to the second."""
    moment = datetime.now(UTC) if now is None else now
    if moment.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0)


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


def parse_paths(
    paths: Sequence[Path],
    format: ImportFormat,  # noqa: A002
    kind: str | None,
    started: datetime,
    bars: Bars,
) -> ParsedFiles:
    """``parse_files`` with the import's start already known and its bars already shown."""
    if not paths:
        raise InvalidArgumentError([FieldViolation("paths", "name at least one file")])
    forced = _forced_kind(format, kind)
    paths = tuple(Path(path) for path in paths)
    parsed = ParsedFiles(format, paths, UserRows(), ItemRows(), EventRows())
    problems = Problems()
    seen = Seen(problems)
    order = list(range(len(paths)))
    if format is ImportFormat.MOVIELENS:
        roles = [movielens_role(path) for path in paths]
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
        data = read(path, problems)
        if data is None:
            continue
        if format is ImportFormat.NCF:
            parsed.events.extend(parse_ncf(source, data, started, problems, task))
        elif format is ImportFormat.MOVIELENS:
            role = movielens_role(path)
            if role is not None:
                parse_movielens(source, role, data, started, parsed, problems, seen, task)
        else:
            reader = RowReader(parsed, index, problems, seen, started)
            parse = parse_csv if format is ImportFormat.CSV else parse_jsonl
            parse(source, data, forced, reader, problems, task)
            reader.finish()
    problems.raise_if_any([str(path) for path in paths])
    return parsed
