"""Importing data files into Postgres: idempotence, creation rules, all-or-nothing."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from cascade_server.offline.importing import (
    DataFileError,
    ImportFormat,
    ImportResult,
    import_files,
    loading as importer,
)

pytestmark = pytest.mark.db

NOW = datetime(2026, 6, 1, 12, 30, 45, 500_000, tzinfo=UTC)
STARTED = datetime(2026, 6, 1, 12, 30, 45, tzinfo=UTC)


def _now() -> datetime:
    return NOW


def _import(engine, paths, fmt, **options) -> ImportResult:
    return import_files(engine, paths, fmt, progress=False, now=_now, **options)


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _counts(engine: sa.Engine) -> tuple[int, ...]:
    with engine.connect() as connection:
        return tuple(
            int(connection.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
            for table in ("users", "items", "events")
        )


def _events(engine: sa.Engine) -> list[tuple[object, ...]]:
    query = sa.text(
        "SELECT e.event_id, u.external_id, i.external_id, e.kind, e.occurred_at, e.value "
        "FROM events e JOIN users u ON u.id = e.user_id JOIN items i ON i.id = e.item_id "
        "ORDER BY e.id"
    )
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def _schema(connection: sa.Connection) -> set[tuple[str, str, str]]:
    constraints = connection.execute(
        sa.text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        )
    )
    indexes = connection.execute(
        sa.text("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    )
    return {(row[0], row[1], row[2]) for row in (*constraints, *indexes)}


def test_ncf_pairs_import_once_and_a_rerun_stores_nothing(engine, tmp_path):
    path = tmp_path / "train.pairs.gz"
    path.write_bytes(gzip.compress(b"0\t10\n0\t11\n1\t10\n0\t10\n"))
    first = _import(engine, [path], ImportFormat.NCF)
    assert first == ImportResult(
        files=1, users_created=2, items_created=2, events_stored=3, events_duplicate=1
    )
    assert first.seconds > 0
    assert _events(engine) == [
        ("ncf:0:10", "0", "10", "rate", STARTED, 0.0),
        ("ncf:0:11", "0", "11", "rate", STARTED, 0.0),
        ("ncf:1:10", "1", "10", "rate", STARTED, 0.0),
    ]
    again = _import(engine, [path], ImportFormat.NCF)
    assert again == ImportResult(
        files=1, users_created=0, items_created=0, events_stored=0, events_duplicate=4
    )
    assert _counts(engine) == (2, 2, 3)


def test_ncf_ratings_of_one_pair_at_two_times_are_two_events(engine, tmp_path):
    path = _write(tmp_path / "test.rating", "0\t25\t5\t978824351\n0\t25\t3\t978900000\n")
    result = _import(engine, [path], ImportFormat.NCF)
    assert (result.events_stored, result.events_duplicate) == (2, 0)
    assert _events(engine) == [
        ("ncf:0:25:978824351", "0", "25", "rate", _utc(978824351), 5.0),
        ("ncf:0:25:978900000", "0", "25", "rate", _utc(978900000), 3.0),
    ]


def test_ncf_leaves_existing_users_and_items_as_they_are(engine, tmp_path):
    items = _write(tmp_path / "items.csv", "item_id,title,categories\n10,Ten,a|b\n")
    _import(engine, [items], ImportFormat.CSV)
    result = _import(engine, [_write(tmp_path / "p.tsv", "0\t10\n0\t11\n")], ImportFormat.NCF)
    assert (result.users_created, result.items_created) == (1, 1)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT external_id, title, categories FROM items ORDER BY external_id")
        ).all()
    assert [tuple(row) for row in rows] == [("10", "Ten", ["a", "b"]), ("11", "", [])]


def test_movielens_import_creates_items_users_and_ratings(engine, tmp_path):
    _write(
        tmp_path / "movies.dat",
        "1::Toy Story (1995)::Animation|Children's|Comedy\n73::Misérables, Les (1995)::Drama\n",
        encoding="latin-1",
    )
    _write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::02460\n")
    _write(
        tmp_path / "ratings.dat",
        "1::1::5::978300760\n1::73::3::978302109\n2::1::4::978298413\n3::2::1::978298000\n",
    )
    paths = [tmp_path / name for name in ("ratings.dat", "movies.dat", "users.dat")]
    result = _import(engine, paths, ImportFormat.MOVIELENS)
    assert result == ImportResult(
        files=3, users_created=3, items_created=3, events_stored=4, events_duplicate=0
    )
    with engine.connect() as connection:
        items = connection.execute(
            sa.text("SELECT external_id, title, categories FROM items ORDER BY id")
        ).all()
        users = connection.execute(
            sa.text("SELECT external_id, attributes FROM users ORDER BY external_id")
        ).all()
        stamps = connection.execute(sa.text("SELECT max(updated_at) FROM items")).scalar()
    assert [tuple(row) for row in items] == [
        ("1", "Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
        ("73", "Misérables, Les (1995)", ["Drama"]),
        ("2", "", []),  # rated but not in movies.dat: created with its id only
    ]
    assert [tuple(row) for row in users] == [
        ("1", {"gender": "F", "age": 1, "occupation": 10, "zip": "48067"}),
        ("2", {"gender": "M", "age": 56, "occupation": 16, "zip": "02460"}),
        ("3", {}),
    ]
    assert _events(engine)[:2] == [
        ("movielens:1:1:978300760", "1", "1", "rate", _utc(978300760), 5.0),
        ("movielens:1:73:978302109", "1", "73", "rate", _utc(978302109), 3.0),
    ]

    again = _import(engine, paths, ImportFormat.MOVIELENS)
    assert again == ImportResult(
        files=3, users_created=0, items_created=0, events_stored=0, events_duplicate=4
    )
    with engine.connect() as connection:  # nothing changed, so nothing was touched
        assert connection.execute(sa.text("SELECT max(updated_at) FROM items")).scalar() == stamps


def test_movielens_metadata_updates_existing_items_and_users(engine, tmp_path):
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO items (external_id, title, status) VALUES ('1', 'Old', 'hidden');"
                "INSERT INTO users (external_id, attributes) VALUES ('1', '{\"vip\": true}')"
            )
        )
    _write(tmp_path / "movies.dat", "1::Toy Story (1995)::Comedy\n")
    _write(tmp_path / "users.dat", "1::F::1::10::48067\n")
    result = _import(
        engine, [tmp_path / "movies.dat", tmp_path / "users.dat"], ImportFormat.MOVIELENS
    )
    assert (result.items_created, result.users_created) == (0, 0)
    with engine.connect() as connection:
        item = connection.execute(sa.text("SELECT title, categories, status FROM items")).one()
        attributes = connection.scalar(sa.text("SELECT attributes FROM users"))
    assert tuple(item) == ("Toy Story (1995)", ["Comedy"], "hidden")
    assert attributes == {"vip": True, "gender": "F", "age": 1, "occupation": 10, "zip": "48067"}


def test_one_bad_row_in_the_middle_imports_nothing(engine, tmp_path):
    good = _write(tmp_path / "good.tsv", "0\t1\n1\t2\n")
    lines = [f"{n}\t{n + 1}\n" for n in range(100)]
    lines[50] = "50\tfifty-one\n"
    bad = _write(tmp_path / "bad.tsv", "".join(lines))
    with pytest.raises(DataFileError) as caught:
        _import(engine, [good, bad], ImportFormat.NCF)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{bad}:51:2: item: must be a non-negative integer (got 'fifty-one')"
    ]
    assert _counts(engine) == (0, 0, 0)


def test_csv_events_with_unknown_items_are_rejected_and_nothing_is_written(engine, tmp_path):
    items = _write(tmp_path / "items.csv", "item_id\ni1\n")
    events = _write(
        tmp_path / "events.csv",
        "user_id,kind,item_id,timestamp\n"
        "u1,click,i1,1777629600\n"
        "u1,click,i2,1777629600\n"
        "u2,like,i1,1777629600\n"
        "u2,like,i3,1777629600\n",
    )
    with pytest.raises(DataFileError) as caught:
        _import(engine, [events], ImportFormat.CSV)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{events}:2:3: item_id: item 'i1' does not exist; import it first (or in the same "
        "command, from an items file)",
        f"{events}:3:3: item_id: item 'i2' does not exist; import it first (or in the same "
        "command, from an items file)",
        f"{events}:4:3: item_id: item 'i1' does not exist; import it first (or in the same "
        "command, from an items file)",
        f"{events}:5:3: item_id: item 'i3' does not exist; import it first (or in the same "
        "command, from an items file)",
    ]
    with pytest.raises(DataFileError) as caught:
        _import(engine, [events, items], ImportFormat.CSV)  # items files load first
    assert [problem.line for problem in caught.value.problems] == [3, 5]
    assert caught.value.count == 2
    assert _counts(engine) == (0, 0, 0)


def test_csv_and_jsonl_events_create_users_but_need_their_items(engine, tmp_path):
    items = _write(tmp_path / "items.jsonl", '{"item_id": "i1"}\n{"item_id": "i2"}\n')
    _import(engine, [items], ImportFormat.JSONL)
    events = _write(
        tmp_path / "events.jsonl",
        '{"user_id": "u1", "item_id": "i1", "kind": "click", "timestamp": 1777629600}\n'
        '{"user_id": "u2", "item_id": "i2", "kind": "rate", "timestamp": 1777629600,'
        ' "value": 4.5, "event_id": "r-1"}\n',
    )
    result = _import(engine, [events], ImportFormat.JSONL)
    assert result == ImportResult(
        files=1, users_created=2, items_created=0, events_stored=2, events_duplicate=0
    )
    stored = _events(engine)
    assert stored[1] == ("r-1", "u2", "i2", "rate", datetime(2026, 5, 1, 10, tzinfo=UTC), 4.5)
    assert str(stored[0][0]).startswith("csv:")
    same_as_csv = _write(
        tmp_path / "events.csv",
        "user_id,item_id,kind,timestamp\nu1,i1,click,2026-05-01T10:00:00Z\n",
    )
    assert _import(engine, [same_as_csv], ImportFormat.CSV).events_duplicate == 1


def test_csv_items_replace_fields_and_set_created_at(engine, tmp_path):
    first = _write(
        tmp_path / "items.csv",
        "item_id,creator_id,categories,title,status\ni1,c1,a|b,One,hidden\ni2,c2,,Two,\n",
    )
    assert _import(engine, [first], ImportFormat.CSV).items_created == 2
    second = _write(
        tmp_path / "again.csv",
        "item_id,title,created_at\ni1,Uno,2020-01-01T00:00:00Z\ni3,Three,\n",
    )
    assert _import(engine, [second], ImportFormat.CSV).items_created == 1
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT external_id, creator_id, categories, title, status, created_at "
                "FROM items ORDER BY external_id"
            )
        ).all()
    assert [tuple(row)[:5] for row in rows] == [
        ("i1", "", [], "Uno", "active"),  # an items row replaces the item, like UpsertItems
        ("i2", "c2", [], "Two", "active"),
        ("i3", "", [], "Three", "active"),
    ]
    assert rows[0][5] == datetime(2020, 1, 1, tzinfo=UTC)


def test_large_imports_into_an_empty_table_defer_indexes_and_skip_repeats(
    engine, tmp_path, monkeypatch
):
    monkeypatch.setattr(importer, "DEFER_INDEXES_FROM", 1)
    with engine.connect() as connection:
        before = _schema(connection)
    path = _write(tmp_path / "pairs.tsv", "0\t1\n0\t2\n0\t1\n1\t1\n")
    assert _import(engine, [path], ImportFormat.NCF).events_stored == 3
    with engine.connect() as connection:
        assert _schema(connection) == before
    more = _write(tmp_path / "more.tsv", "0\t1\n2\t2\n")  # the table has events: no deferring
    result = _import(engine, [more], ImportFormat.NCF)
    assert (result.events_stored, result.events_duplicate) == (1, 1)
    assert _counts(engine) == (3, 2, 4)


def test_progress_goes_to_stderr(engine, tmp_path, capsys):
    path = _write(tmp_path / "pairs.tsv", "0\t1\n")
    import_files(engine, [path], ImportFormat.NCF, now=_now)
    captured = capsys.readouterr()
    assert "reading pairs.tsv" in captured.err
    assert "storing events" in captured.err
    assert captured.out == ""


def _cascade(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CASCADE_DATABASE_URL": database_url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cascade_server", "import", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_prints_a_summary_or_the_problems(database_url, engine, tmp_path):
    _write(tmp_path / "pairs.tsv", "0\t1\n0\t2\n")
    done = _cascade(database_url, tmp_path, "--format", "ncf", "pairs.tsv")
    assert done.returncode == 0, done.stderr
    assert "events stored" in done.stdout
    assert _counts(engine) == (1, 2, 2)

    _write(tmp_path / "bad.tsv", "0\t1\n[x]\t2\n")
    failed = _cascade(database_url, tmp_path, "--format", "ncf", "bad.tsv")
    assert failed.returncode == 2
    assert "1 problem in the data files; nothing was imported" in failed.stderr
    assert "bad.tsv:2:1: user: must be a non-negative integer (got '[x]')" in failed.stderr
    assert _counts(engine) == (1, 2, 2)
