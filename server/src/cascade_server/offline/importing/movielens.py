"""MovieLens 1M files, recognised by name: ``movies.dat`` (items), ``users.dat`` (users)
and ``ratings.dat`` (``rate`` events), all ``::``-separated Latin-1 text.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from cascade_server.catalog.records import ItemRecord, ItemStatus, UserRecord
from cascade_server.offline.importing.batches import PendingItems, PendingUsers, Seen
from cascade_server.offline.importing.problems import Problems
from cascade_server.offline.importing.progress import Task
from cascade_server.offline.importing.reading import decode, split_lines
from cascade_server.offline.importing.rows import ItemRows, ParsedFiles, UserRows
from cascade_server.offline.importing.tables import id_problem, rating_events, split_table

_RATING_FIELDS = ("UserID", "MovieID", "Rating", "Timestamp")
_USER_FIELDS = ("UserID", "Gender", "Age", "Occupation", "Zip-code")
_MOVIELENS_FILES = ("ratings.dat", "movies.dat", "users.dat")


def movielens_role(path: Path) -> str | None:
    """The MovieLens file ``path`` is by its name (``ratings.dat``...), None if none."""
    name = path.name.lower().removesuffix(".gz")
    return name if name in _MOVIELENS_FILES else None


def parse_movielens(
    source: str,
    role: str,
    data: bytes,
    started: datetime,
    parsed: ParsedFiles,
    problems: Problems,
    seen: Seen,
    task: Task,
) -> None:
    """Add what one MovieLens file of ``role`` holds to ``parsed``."""
    text = decode(source, data, "latin-1", problems)
    if text is None:
        return
    if role == "ratings.dat":
        table = split_table(
            source,
            text,
            "::",
            (4,),
            "ratings.dat lines are UserID::MovieID::Rating::Timestamp",
            problems,
        )
        if table is not None:
            task.update(0, total=len(table))
            events = rating_events(source, table, _RATING_FIELDS, "movielens", started, problems)
            parsed.events.extend(events)
            task.done(len(table))
        return
    lines = split_lines(text)
    task.update(0, total=len(lines))
    if role == "movies.dat":
        _parse_movies(source, lines, parsed.items, problems, seen)
    else:
        _parse_users(source, lines, parsed.users, problems, seen)
    task.done(len(lines))


def _parse_movies(
    source: str, lines: list[str], items: ItemRows, problems: Problems, seen: Seen
) -> None:
    pending = PendingItems(problems)
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
        problem = id_problem(movie)
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
    source: str, lines: list[str], users: UserRows, problems: Problems, seen: Seen
) -> None:
    columns = {"user_id": (1, "UserID"), "attributes": (None, "attributes")}
    pending = PendingUsers(problems)
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
            problem = id_problem(value)
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
