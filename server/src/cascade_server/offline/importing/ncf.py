"""Neural Collaborative Filtering benchmark files: tab-separated ``user item`` or ``user item
rating timestamp`` lines, read as ``rate`` events.
"""

from __future__ import annotations

from datetime import datetime

from cascade_server.offline.importing.problems import Problems
from cascade_server.offline.importing.progress import Task
from cascade_server.offline.importing.reading import decode
from cascade_server.offline.importing.rows import EventRows
from cascade_server.offline.importing.tables import rating_events, split_table

_NCF_FIELDS = ("user", "item", "rating", "timestamp")


def parse_ncf(
    source: str, data: bytes, started: datetime, problems: Problems, task: Task
) -> EventRows:
    """The ``rate`` events of one NCF file; none when it has problems."""
    text = decode(
        source, data, "ascii", problems, separator=b"\t", what=" (NCF files hold numbers)"
    )
    if text is None:
        return EventRows()
    table = split_table(
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
    events = rating_events(source, table, _NCF_FIELDS, "ncf", started, problems)
    task.done(len(table))
    return events
