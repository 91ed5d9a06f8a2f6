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

from cascade_server.offline.importing.csv_jsonl import EVENT_COLUMNS, ITEM_COLUMNS
from cascade_server.offline.importing.formats import FileKind, ImportFormat
from cascade_server.offline.importing.loading import ImportResult, import_files
from cascade_server.offline.importing.parsing import parse_files
from cascade_server.offline.importing.problems import (
    MAX_LISTED_PROBLEMS,
    DataFileError,
    FileProblem,
)
from cascade_server.offline.importing.rows import ParsedFiles

__all__ = [
    "EVENT_COLUMNS",
    "ITEM_COLUMNS",
    "MAX_LISTED_PROBLEMS",
    "DataFileError",
    "FileKind",
    "FileProblem",
    "ImportFormat",
    "ImportResult",
    "ParsedFiles",
    "import_files",
    "parse_files",
]
