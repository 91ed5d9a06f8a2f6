"""Reading and checking import files (no database): every format, and the problem lists."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cascade_server.catalog.records import EventKind, EventRecord, ItemStatus
from cascade_server.errors import InvalidArgumentError
from cascade_server.offline.importing import (
    MAX_LISTED_PROBLEMS,
    DataFileError,
    FileProblem,
    ImportFormat,
    parse_files,
)

NOW = datetime(2026, 6, 1, 12, 30, 45, 678_000, tzinfo=UTC)
STARTED = datetime(2026, 6, 1, 12, 30, 45, tzinfo=UTC)
"""When an import started at ``NOW`` says two-field NCF lines happened: floored to the second."""


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _write_gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode("ascii")))
    return path


def _problems(paths: list[Path], fmt: ImportFormat, **options) -> list[str]:
    with pytest.raises(DataFileError) as caught:
        parse_files(paths, fmt, now=NOW, **options)
    error = caught.value
    assert error.status == "INVALID_ARGUMENT"
    assert error.reason == "BAD_DATA_FILE"
    return [str(problem) for problem in error.problems]


def _at(moment: datetime) -> int:
    return int(moment.timestamp())


# ----------------------------------------------------------------------------- NCF


def test_ncf_pairs_are_rate_events_at_the_start_of_the_import(tmp_path):
    path = _write(tmp_path / "train.pairs", "0\t10\n0\t11\n1\t10\n")
    parsed = parse_files([path], ImportFormat.NCF, now=NOW)
    assert parsed.events.records() == [
        EventRecord("ncf:0:10", "0", "10", EventKind.RATE, STARTED, value=0.0),
        EventRecord("ncf:0:11", "0", "11", EventKind.RATE, STARTED, value=0.0),
        EventRecord("ncf:1:10", "1", "10", EventKind.RATE, STARTED, value=0.0),
    ]
    assert len(parsed.items) == len(parsed.users) == 0  # created from the events when loading
    assert parsed.creates_items


def test_ncf_gzip_is_recognised_by_name_and_by_magic_bytes(tmp_path):
    text = "0\t10\n0\t11\n1\t10\n"
    plain = parse_files([_write(tmp_path / "a.pairs", text)], ImportFormat.NCF, now=NOW)
    for name in ("b.pairs.gz", "c.pairs"):
        packed = parse_files([_write_gz(tmp_path / name, text)], ImportFormat.NCF, now=NOW)
        assert packed.events.records() == plain.events.records()


def test_ncf_gzip_with_several_members_is_read_whole(tmp_path):
    path = tmp_path / "two.gz"
    path.write_bytes(gzip.compress(b"0\t1\n") + gzip.compress(b"2\t3\n"))
    parsed = parse_files([path], ImportFormat.NCF, now=NOW)
    assert parsed.events.event_ids == ["ncf:0:1", "ncf:2:3"]


def test_ncf_ratings_keep_rating_time_and_write_order(tmp_path):
    path = _write_gz(
        tmp_path / "test.rating.gz",
        "0\t25\t5\t978824351\r\n1\t133\t3.5\t978300174\r\n0\t25\t4\t978824999\r\n\r\n",
    )
    records = parse_files([path], ImportFormat.NCF, now=NOW).events.records()
    assert records == [
        EventRecord(
            "ncf:0:25:978824351",
            "0",
            "25",
            EventKind.RATE,
            datetime(2001, 1, 6, 23, 39, 11, tzinfo=UTC),
            value=5.0,
        ),
        EventRecord(
            "ncf:1:133:978300174",
            "1",
            "133",
            EventKind.RATE,
            datetime.fromtimestamp(978300174, UTC),
            value=3.5,
        ),
        EventRecord(
            "ncf:0:25:978824999",
            "0",
            "25",
            EventKind.RATE,
            datetime.fromtimestamp(978824999, UTC),
            value=4.0,
        ),
    ]


def test_ncf_ids_are_kept_as_written(tmp_path):
    path = _write(tmp_path / "ids.tsv", "007\t0010\n")
    assert parse_files([path], ImportFormat.NCF, now=NOW).events.records()[0].user_id == "007"


def test_ncf_blank_lines_are_skipped_and_line_numbers_still_count_them(tmp_path):
    path = _write(tmp_path / "gaps.tsv", "0\t1\n\n\n2\tx\n")
    assert _problems([path], ImportFormat.NCF) == [
        f"{path}:4:2: item: must be a non-negative integer (got 'x')"
    ]


def test_ncf_mixed_column_counts_are_rejected(tmp_path):
    path = _write(tmp_path / "mixed.tsv", "0\t1\n0\t2\t5\t978824351\n1\t1\n")
    problems = _problems([path], ImportFormat.NCF)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:2: has 4 fields; line 1 has 2")


def test_ncf_lines_need_two_or_four_fields(tmp_path):
    path = _write(tmp_path / "three.tsv", "0\t1\t5\n")
    (problem,) = _problems([path], ImportFormat.NCF)
    assert problem.startswith(f"{path}:1: has 3 fields; NCF lines have 2 (user, item) or 4")


def test_ncf_bad_fields_name_line_column_and_field_in_line_order(tmp_path):
    path = _write(
        tmp_path / "bad.rating",
        "0\t1\t5\t978824351\n-1\t2\tfive\t978824351\n3\ta b\t4\tyesterday\n4\t5\tnan\t1\n",
    )
    assert _problems([path], ImportFormat.NCF) == [
        f"{path}:2:1: user: must be a non-negative integer (got '-1')",
        f"{path}:2:3: rating: must be a number (got 'five')",
        f"{path}:3:2: item: must be a non-negative integer (got 'a b')",
        f"{path}:3:4: timestamp: must be whole seconds since 1970-01-01 UTC (got 'yesterday')",
        f"{path}:4:3: rating: must be finite (got 'nan')",
    ]


def test_ncf_ids_longer_than_the_api_allows_are_rejected(tmp_path):
    path = _write(tmp_path / "long.tsv", f"{'1' * 129}\t2\n")
    (problem,) = _problems([path], ImportFormat.NCF)
    assert problem == f"{path}:1:1: user: must be at most 128 characters (got 129)"


def test_ncf_event_ids_longer_than_the_api_allows_are_rejected(tmp_path):
    path = _write(tmp_path / "long.tsv", f"{'1' * 100}\t{'2' * 100}\n")
    (problem,) = _problems([path], ImportFormat.NCF)
    assert problem.startswith(f"{path}:1: event_id: ")
    assert problem.endswith("must be at most 128 characters (got 205)")


def test_ncf_times_more_than_five_minutes_ahead_are_rejected(tmp_path):
    soon = _at(STARTED + timedelta(minutes=5))
    late = soon + 1
    path = _write(tmp_path / "future.rating", f"0\t1\t4\t{soon}\n0\t2\t4\t{late}\n")
    assert _problems([path], ImportFormat.NCF) == [
        f"{path}:2:4: timestamp: is 301 s in the future; at most 300 s ahead of the "
        "import's start is allowed"
    ]


def test_ncf_undecodable_bytes_name_line_and_field(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"0\t1\n2\t\xe93\n")
    (problem,) = _problems([path], ImportFormat.NCF)
    assert problem.startswith(f"{path}:2:2: byte 0xE9 is not valid ascii")


def test_ncf_truncated_and_corrupt_gzip_are_reported(tmp_path):
    packed = gzip.compress(b"".join(b"%d\t%d\n" % (n, n) for n in range(1000)))
    truncated = tmp_path / "cut.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    (problem,) = _problems([truncated], ImportFormat.NCF)
    line = int(problem.removeprefix(f"{truncated}:").split(":")[0])
    assert 1 < line < 1000  # where the data stops
    assert problem.endswith(": the gzip data ends early (truncated file?)")
    fake = _write(tmp_path / "fake.gz", "0\t1\n")
    (problem,) = _problems([fake], ImportFormat.NCF)
    assert problem.startswith(f"{fake}:1: is not valid gzip data")


def test_missing_files_are_problems_too(tmp_path):
    good = _write(tmp_path / "good.tsv", "0\t1\n")
    missing = tmp_path / "missing.tsv"
    assert _problems([good, missing], ImportFormat.NCF) == [
        f"{missing}: cannot be read: No such file or directory"
    ]


def test_problem_lists_stop_at_twenty_but_count_everything(tmp_path):
    path = _write(tmp_path / "many.tsv", "x\t1\n" * 50)
    with pytest.raises(DataFileError) as caught:
        parse_files([path], ImportFormat.NCF, now=NOW)
    assert len(caught.value.problems) == MAX_LISTED_PROBLEMS
    assert caught.value.count == 50
    assert "50 problems in the data files; nothing was imported" in caught.value.message
    assert caught.value.message.endswith("... and 30 more")


def test_file_problems_render_what_is_known():
    assert str(FileProblem("a.csv", 3, 2, "kind", "bad")) == "a.csv:3:2: kind: bad"
    assert str(FileProblem("a.csv", 3, None, "", "bad")) == "a.csv:3: bad"
    assert str(FileProblem("a.csv", None, None, "", "bad")) == "a.csv: bad"


def test_kind_is_only_for_csv_and_jsonl(tmp_path):
    path = _write(tmp_path / "a.tsv", "0\t1\n")
    with pytest.raises(InvalidArgumentError, match="kind"):
        parse_files([path], ImportFormat.NCF, kind="events", now=NOW)
    with pytest.raises(InvalidArgumentError, match="events or items"):
        parse_files([path], ImportFormat.CSV, kind="users", now=NOW)


# ----------------------------------------------------------------------- MovieLens


@pytest.fixture
def movielens(tmp_path):
    """A tiny MovieLens 1M directory, in the original encodings."""
    directory = tmp_path / "ml"
    directory.mkdir()
    _write(
        directory / "movies.dat",
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "73::Misérables, Les (1995)::Drama|Musical\n"
        "99::Untitled::\n",
        encoding="latin-1",
    )
    _write(directory / "users.dat", "1::F::1::10::48067\n2::M::56::16::02460\n")
    _write(
        directory / "RATINGS.DAT",
        "1::1::5::978300760\n1::73::3::978302109\n2::1::4::978298413\n",
    )
    return directory


def test_movielens_files_become_items_users_and_ratings(movielens):
    paths = [movielens / "RATINGS.DAT", movielens / "movies.dat", movielens / "users.dat"]
    parsed = parse_files(paths, ImportFormat.MOVIELENS, now=NOW)
    items = parsed.items.records()
    assert [(i.item_id, i.title, i.categories) for i in items] == [
        ("1", "Toy Story (1995)", ("Animation", "Children's", "Comedy")),
        ("73", "Misérables, Les (1995)", ("Drama", "Musical")),
        ("99", "Untitled", ()),
    ]
    assert all(item.status is ItemStatus.ACTIVE for item in items)
    assert [(u.user_id, u.attributes) for u in parsed.users.records()] == [
        ("1", {"gender": "F", "age": 1, "occupation": 10, "zip": "48067"}),
        ("2", {"gender": "M", "age": 56, "occupation": 16, "zip": "02460"}),
    ]
    assert parsed.events.records() == [
        EventRecord(
            "movielens:1:1:978300760",
            "1",
            "1",
            EventKind.RATE,
            datetime.fromtimestamp(978300760, UTC),
            value=5.0,
        ),
        EventRecord(
            "movielens:1:73:978302109",
            "1",
            "73",
            EventKind.RATE,
            datetime.fromtimestamp(978302109, UTC),
            value=3.0,
        ),
        EventRecord(
            "movielens:2:1:978298413",
            "2",
            "1",
            EventKind.RATE,
            datetime.fromtimestamp(978298413, UTC),
            value=4.0,
        ),
    ]


def test_movielens_files_are_recognised_by_name(movielens, tmp_path):
    other = _write(tmp_path / "tags.dat", "1::1::funny::978300760\n")
    assert _problems([movielens / "movies.dat", other], ImportFormat.MOVIELENS) == [
        f"{other}: is not a MovieLens file: the names are ratings.dat, movies.dat and users.dat"
    ]


def test_movielens_bad_rows_are_reported(movielens):
    ratings = _write(movielens / "ratings.dat", "1::1::5::978300760\n1::x::5\n")
    (problem,) = _problems([ratings], ImportFormat.MOVIELENS)
    assert problem.startswith(f"{ratings}:2: has 3 fields; line 1 has 4")
    ratings = _write(movielens / "ratings.dat", "1::1::5::978300760\n1::x::5::978300760\n")
    assert _problems([ratings], ImportFormat.MOVIELENS) == [
        f"{ratings}:2:2: MovieID: must be a non-negative integer (got 'x')"
    ]
    movies = _write(
        movielens / "movies.dat",
        "1::A::Drama\n1::B::Drama\n2::" + "t" * 1001 + "::Drama\n3::only two\n",
    )
    assert _problems([movies], ImportFormat.MOVIELENS) == [
        f"{movies}:2:1: MovieID: item '1' is also at line 1; each item may appear once per import",
        f"{movies}:3:2: Title: must be at most 1000 characters (got 1001)",
        f"{movies}:4: has 2 fields; movies.dat lines are MovieID::Title::Genres",
    ]
    users = _write(movielens / "users.dat", "1::F::young::10::48067\n")
    assert _problems([users], ImportFormat.MOVIELENS) == [
        f"{users}:1:3: Age: must be a non-negative integer (got 'young')"
    ]


# --------------------------------------------------------------------- CSV and JSONL


def test_csv_events_read_every_column_and_time_form(tmp_path):
    path = _write(
        tmp_path / "events.csv",
        "user_id,item_id,kind,timestamp,value,event_id\n"
        "u1,i1,click,2026-05-01T10:00:00Z,,e-1\n"
        "u1, i2 ,LIKE,1777629600,0.5,e-2\n"
        "u2,i1,rate,2026-05-01T12:00:00.25+02:00,4,\n",
    )
    parsed = parse_files([path], ImportFormat.CSV, now=NOW)
    records = parsed.events.records()
    assert records[:2] == [
        EventRecord("e-1", "u1", "i1", EventKind.CLICK, datetime(2026, 5, 1, 10, tzinfo=UTC)),
        EventRecord(
            "e-2", "u1", "i2", EventKind.LIKE, datetime(2026, 5, 1, 10, tzinfo=UTC), value=0.5
        ),
    ]
    derived = records[2]
    assert derived.event_id.startswith("csv:")
    assert len(derived.event_id) == len("csv:") + 16
    assert derived.occurred_at == datetime(2026, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    assert (derived.kind, derived.value) == (EventKind.RATE, 4.0)
    assert parsed.events.lines == [2, 3, 4]
    assert parsed.events.item_columns == [2, 2, 2]
    assert not parsed.creates_items


def test_derived_event_ids_depend_on_the_row_not_its_spelling(tmp_path):
    csv_path = _write(
        tmp_path / "a.csv",
        "kind,user_id,item_id,timestamp\nclick,u1,i1,2026-05-01T10:00:00Z\n"
        "click,u1,i1,2026-05-01T10:00:01Z\n",
    )
    jsonl_path = _write(
        tmp_path / "b.jsonl",
        '{"user_id": "u1", "item_id": "i1", "kind": "click", "timestamp": 1777629600}\n',
    )
    first, second = parse_files([csv_path], ImportFormat.CSV, now=NOW).events.event_ids
    (same,) = parse_files([jsonl_path], ImportFormat.JSONL, now=NOW).events.event_ids
    assert first == same != second


def test_csv_items_read_every_column(tmp_path):
    path = _write(
        tmp_path / "items.csv",
        "item_id,creator_id,categories,title,status,created_at\n"
        'i1,c1,news|sport,"  Spaced, quoted title ",hidden,2026-01-01T00:00:00Z\n'
        "i2,,,,,\n",
    )
    parsed = parse_files([path], ImportFormat.CSV, now=NOW)
    first, second = parsed.items.records()
    assert (first.item_id, first.creator_id, first.categories, first.title, first.status) == (
        "i1",
        "c1",
        ("news", "sport"),
        "  Spaced, quoted title ",
        ItemStatus.HIDDEN,
    )
    assert first.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert (second.categories, second.title, second.status, second.created_at) == (
        (),
        "",
        ItemStatus.ACTIVE,
        None,
    )
    assert len(parsed.events) == 0


def test_csv_file_kind_comes_from_the_header_or_the_option(tmp_path):
    both = _write(tmp_path / "both.csv", "item_id,user_id\ni1,u1\n")
    (problem,) = _problems([both], ImportFormat.CSV)
    assert problem.startswith(f"{both}:1: cannot tell an events file")
    assert problem.endswith("pass --kind events or --kind items")
    assert _problems([both], ImportFormat.CSV, kind="items") == [
        f"{both}:1:2: user_id: is not a column of items files "
        "(item_id, creator_id, categories, title, status, created_at)"
    ]
    titled = _write(tmp_path / "titled.csv", "item_id,title\ni1,One\n")
    assert _problems([titled], ImportFormat.CSV, kind="events") == [
        f"{titled}:1: user_id: is required in events files",
        f"{titled}:1: kind: is required in events files",
        f"{titled}:1: timestamp: is required in events files",
        f"{titled}:1:2: title: is not a column of events files "
        "(user_id, item_id, kind, timestamp, value, event_id)",
    ]


def test_csv_bad_rows_name_line_column_and_field(tmp_path):
    long_id = "u" * 129
    path = _write(
        tmp_path / "bad.csv",
        "timestamp,user_id,item_id,kind,value\n"
        "2026-05-01T10:00:00Z,u1,i1,click,1\n"
        "2026-05-01T10:00:00,u1,i1,clik,x\n"
        f"1777629600,{long_id},,click,nan\n"
        "1777629600,u1,i1\n"
        "2999-01-01T00:00:00Z,u1,i1,click,\n",
    )
    assert _problems([path], ImportFormat.CSV) == [
        f"{path}:3:1: timestamp: '2026-05-01T10:00:00' has no time zone; write ISO 8601 "
        "with a zone (2026-01-31T12:00:00Z) or seconds since 1970-01-01 UTC",
        f"{path}:3:4: kind: 'clik' is not an event kind "
        "(impression, click, save, like, share, hide, rate)",
        f"{path}:3:5: value: must be a number (got 'x')",
        f"{path}:4:2: user_id: must be at most 128 characters (got 129)",
        f"{path}:4:3: item_id: is required",
        f"{path}:4:5: value: must be finite (got nan)",
        f"{path}:5: has 3 fields; the header has 5",
        _future_problem(path, 6, 1, datetime(2999, 1, 1, tzinfo=UTC)),
    ]


def _future_problem(path: Path, line: int, column: int, moment: datetime) -> str:
    ahead = (moment - STARTED).total_seconds()
    return (
        f"{path}:{line}:{column}: timestamp: is {ahead:.0f} s in the future; at most 300 s "
        "ahead of the import's start is allowed"
    )


def test_csv_items_problems_use_the_api_limits(tmp_path):
    categories = "|".join(f"c{n}" for n in range(17))
    path = _write(
        tmp_path / "items.csv",
        f"item_id,status,categories\ni1,gone,\ni2,,{categories}\ni2,,\n",
    )
    assert _problems([path], ImportFormat.CSV) == [
        f"{path}:2:2: status: 'gone' is not a status (active, hidden, deleted)",
        f"{path}:3:3: categories: at most 16 categories are allowed (got 17)",
        f"{path}:4:1: item_id: item 'i2' is also at line 3; each item may appear once per import",
    ]


def test_csv_undecodable_bytes_and_bad_quoting_are_reported(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"item_id,title\ni1,Caf\xe9\n")
    (problem,) = _problems([latin], ImportFormat.CSV)
    assert problem.startswith(f"{latin}:2: byte 0xE9 is not valid utf-8")
    quoted = _write(tmp_path / "quoted.csv", 'item_id,title\ni1,"a"b\n')
    (problem,) = _problems([quoted], ImportFormat.CSV)
    assert problem.startswith(f"{quoted}:2: is not valid CSV")


def test_jsonl_events_and_items(tmp_path):
    events = _write(
        tmp_path / "events.jsonl",
        '{"user_id": 7, "item_id": "i1", "kind": "save", "timestamp": "2026-05-01T10:00:00Z",'
        ' "value": 2, "event_id": "j-1"}\n'
        "\n"
        '{"user_id": "u8", "item_id": 3, "kind": "hide", "timestamp": 1777629600.5,'
        ' "value": null}\n',
    )
    items = _write(
        tmp_path / "items.jsonl",
        '{"item_id": "i1", "categories": ["a", "b"], "title": "One", "created_at": null}\n'
        '{"item_id": 3, "status": "deleted"}\n',
    )
    parsed = parse_files([items, events], ImportFormat.JSONL, now=NOW)
    records = parsed.events.records()
    assert records[0] == EventRecord(
        "j-1", "7", "i1", EventKind.SAVE, datetime(2026, 5, 1, 10, tzinfo=UTC), value=2.0
    )
    assert (records[1].user_id, records[1].item_id, records[1].kind, records[1].value) == (
        "u8",
        "3",
        EventKind.HIDE,
        0.0,
    )
    assert records[1].occurred_at == datetime(2026, 5, 1, 10, 0, 0, 500_000, tzinfo=UTC)
    assert parsed.events.lines == [1, 3]
    assert [(i.item_id, i.categories, i.title, i.status) for i in parsed.items.records()] == [
        ("i1", ("a", "b"), "One", ItemStatus.ACTIVE),
        ("3", (), "", ItemStatus.DELETED),
    ]


def test_jsonl_bad_lines_are_reported(tmp_path):
    path = _write(
        tmp_path / "events.jsonl",
        '{"user_id": "u1", "item_id": "i1", "kind": "click", "timestamp": 1777629600}\n'
        "{not json}\n"
        "[1, 2]\n"
        '{"user_id": true, "item_id": "i1", "kind": "click", "timestamp": "soon"}\n'
        '{"user_id": "u1", "item_id": "i1", "kind": "click", "timestamp": 1, "extra": 1}\n',
    )
    problems = _problems([path], ImportFormat.JSONL)
    assert problems[0].startswith(f"{path}:2: is not valid JSON")
    assert problems[1:] == [
        f"{path}:3: must be a JSON object (got [1, 2])",
        f"{path}:4:1: user_id: must be a string or an integer (got True)",
        f"{path}:4:4: timestamp: 'soon' is not a time; write ISO 8601 with a zone "
        "(2026-01-31T12:00:00Z) or seconds since 1970-01-01 UTC",
        f"{path}:5:5: extra: is not a column of events files "
        "(user_id, item_id, kind, timestamp, value, event_id)",
    ]


def test_items_repeated_across_files_are_reported(tmp_path):
    first = _write(tmp_path / "a.csv", "item_id\ni1\n")
    second = _write(tmp_path / "b.csv", "item_id,title\ni1,Again\n")
    assert _problems([first, second], ImportFormat.CSV) == [
        f"{second}:2:1: item_id: item 'i1' is also at {first}:2; each item may appear once "
        "per import"
    ]


def test_movielens_ids_are_ascii_digits_even_in_latin_1(movielens):
    ratings = _write(movielens / "ratings.dat", "1::\u00b2::5::978300760\n", encoding="latin-1")
    assert _problems([ratings], ImportFormat.MOVIELENS) == [
        f"{ratings}:1:2: MovieID: must be a non-negative integer (got '\u00b2')"
    ]
