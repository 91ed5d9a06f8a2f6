"""Importing the real MovieLens 1M benchmark files, when they are next to the repository.

The files live in ``../shared/datasets/ml-1m`` (relative to the repository root) and are
never shipped with Cascade: they are read in place, and only a truncated copy of the
training pairs is written, to the test's temporary directory.
"""

from __future__ import annotations

import gzip
from itertools import islice
from pathlib import Path

import pytest
import sqlalchemy as sa

from cascade_server.offline.importing import ImportFormat, ImportResult, import_files

pytestmark = pytest.mark.db

PAIRS = 50_000
"""How many training pairs to import: enough to defer the event indexes, still quick."""


@pytest.fixture
def ml1m(repo_root: Path) -> Path:
    """The shared ML-1M directory, or a skip when it is absent."""
    directory = repo_root.parent / "shared" / "datasets" / "ml-1m"
    if not (directory / "ml-1m.train.pairs.gz").is_file():
        pytest.skip("../shared/datasets/ml-1m is not present (it is never shipped with Cascade)")
    return directory


def _count(engine: sa.Engine, query: str) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(sa.text(query)) or 0)


def test_ml1m_training_pairs_import_with_the_right_counts(engine, ml1m, tmp_path):
    with gzip.open(ml1m / "ml-1m.train.pairs.gz", "rt", encoding="ascii") as source:
        lines = list(islice(source, PAIRS))
    pairs = [line.rstrip("\n").split("\t") for line in lines]
    truncated = tmp_path / "ml-1m.train.pairs.gz"
    truncated.write_bytes(gzip.compress("".join(lines).encode("ascii")))
    users = {user for user, _ in pairs}
    items = {item for _, item in pairs}

    result = import_files(engine, [truncated], ImportFormat.NCF, progress=False)
    assert result == ImportResult(
        files=1,
        users_created=len(users),
        items_created=len(items),
        events_stored=PAIRS,
        events_duplicate=0,
    )
    assert _count(engine, "SELECT count(*) FROM events WHERE kind = 'rate'") == PAIRS
    assert _count(engine, "SELECT count(DISTINCT occurred_at) FROM events") == 1

    test = import_files(engine, [ml1m / "ml-1m.test.rating"], ImportFormat.NCF, progress=False)
    assert (test.events_stored, test.events_duplicate) == (6_040, 0)
    assert _count(engine, "SELECT count(*) FROM events WHERE value > 0") == 6_040


def test_ml1m_movies_and_users_import(engine, ml1m):
    paths = [ml1m / "movies.dat", ml1m / "users.dat"]
    result = import_files(engine, paths, ImportFormat.MOVIELENS, progress=False)
    assert (result.items_created, result.users_created) == (3_883, 6_040)
    with engine.connect() as connection:
        title = connection.scalar(sa.text("SELECT title FROM items WHERE external_id = '73'"))
        genres = connection.scalar(sa.text("SELECT categories FROM items WHERE external_id = '1'"))
        user = connection.scalar(sa.text("SELECT attributes FROM users WHERE external_id = '1'"))
    assert title == "Misérables, Les (1995)"
    assert genres == ["Animation", "Children's", "Comedy"]
    assert user == {"gender": "F", "age": 1, "occupation": 10, "zip": "48067"}
