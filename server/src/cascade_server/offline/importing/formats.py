"""The formats ``import_files`` reads, and what a CSV or JSONL file may hold."""

from __future__ import annotations

from enum import StrEnum


class ImportFormat(StrEnum):
    """The file formats ``import_files`` reads; see the package documentation."""

    NCF = "ncf"
    MOVIELENS = "movielens"
    CSV = "csv"
    JSONL = "jsonl"


class FileKind(StrEnum):
    """What a CSV or JSONL file holds."""

    EVENTS = "events"
    ITEMS = "items"
