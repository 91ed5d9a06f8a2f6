"""A serving snapshot kept on disk, so a restarted server serves in about a second.

Building a snapshot reads the whole catalog and every event from Postgres and derives
the signals: about 8 s at a million items, in every server, before it can serve. A
server that finds a recent snapshot file of the same database and signal settings
loads it instead and serves from it once the cursors stored with it have let the item
status changes and seen events since be applied; when the database has moved on, the
snapshot holder rebuilds from Postgres at its next regular refresh, as for any
snapshot that aged.

One ``.npz`` file (no pickles): arrays as they are, string lists as one text with
offsets, and a JSON header naming each field's form. Written to a temporary file and
renamed into place, so readers never see half a file; any file that cannot be read,
is of another format version or of other settings is ignored (and rebuilt).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cascade_server.features.engagement import Csr, EngagementSnapshot, SignalConfig
from cascade_server.logs import get_logger

_log = get_logger(__name__)

FORMAT_VERSION = 3
_HEADER = "__header__"


@dataclass(frozen=True)
class SnapshotCursors:
    """Where the data behind a snapshot ends, so changes since can be read."""

    fingerprint: str
    items_updated_at: str
    last_event_id: int


class SnapshotFile:
    """The snapshot file at ``path`` for snapshots built with ``config``.

    ``min_interval_s``: a snapshot is written only when the file is older than this,
    so servers that rebuild every half minute under a stream of events do not rewrite
    hundreds of megabytes each time (a restart then starts from a snapshot up to this
    old and catches up at once).
    """

    def __init__(self, path: Path, config: SignalConfig, min_interval_s: float = 300.0) -> None:
        self.path = path
        self._config = dataclasses.asdict(config)
        self._min_interval_s = min_interval_s

    def save(self, snapshot: EngagementSnapshot, cursors: SnapshotCursors) -> bool:
        """Write ``snapshot`` unless the file is recent; whether it was written."""
        try:
            if time.time() - self.path.stat().st_mtime < self._min_interval_s:
                return False
        except FileNotFoundError:
            pass
        arrays, forms = _encode(snapshot)
        header = {
            "version": FORMAT_VERSION,
            "config": self._config,
            "cursors": dataclasses.asdict(cursors),
            "forms": forms,
            "data_as_of": snapshot.data_as_of.isoformat() if snapshot.data_as_of else None,
            "snapshot_id": snapshot.snapshot_id,
            "stats": snapshot.stats,
        }
        arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as out:
                np.savez(out, **arrays)  # type: ignore[arg-type]
            partial.replace(self.path)
        finally:
            partial.unlink(missing_ok=True)
        return True

    def load(self) -> tuple[EngagementSnapshot, SnapshotCursors] | None:
        """The stored snapshot and its cursors; None when there is none that fits."""
        if not self.path.exists():
            return None
        try:
            with self.path.open("rb") as raw, np.load(raw, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
            header = json.loads(arrays.pop(_HEADER).tobytes())
            if header["version"] != FORMAT_VERSION or header["config"] != self._config:
                _log.info("snapshot file is of other settings; building", path=str(self.path))
                return None
            snapshot = _decode(arrays, header)
            return snapshot, SnapshotCursors(**header["cursors"])
        except Exception as error:  # a damaged file must never stop a server
            _log.warning(
                "snapshot file unreadable; building", path=str(self.path), error=str(error)
            )
            return None


def _encode(snapshot: EngagementSnapshot) -> tuple[dict[str, npt.NDArray[Any]], dict[str, str]]:
    """Every field as arrays, and each field's form."""
    arrays: dict[str, npt.NDArray[Any]] = {}
    forms: dict[str, str] = {}
    for spec in dataclasses.fields(snapshot):
        value = getattr(snapshot, spec.name)
        if spec.name in ("snapshot_id", "data_as_of", "stats"):
            continue  # in the header
        if isinstance(value, np.ndarray):
            forms[spec.name] = "array"
            arrays[spec.name] = value
        elif isinstance(value, Csr):
            forms[spec.name] = "csr"
            for part in ("indptr", "indices", "data"):
                arrays[f"{spec.name}.{part}"] = getattr(value, part)
        elif isinstance(value, dict):  # an index: keys in position order
            forms[spec.name] = "index"
            keys = list(value)
            if list(value.values()) != list(range(len(keys))):
                raise ValueError(f"{spec.name} is not an index in position order")
            arrays.update(_strings(spec.name, keys))
        else:
            forms[spec.name] = "strings"
            arrays.update(_strings(spec.name, list(value)))
    return arrays, forms


def _decode(arrays: dict[str, npt.NDArray[Any]], header: dict[str, Any]) -> EngagementSnapshot:
    values: dict[str, Any] = {}
    for name, form in header["forms"].items():
        if form == "array":
            values[name] = arrays[name]
        elif form == "csr":
            values[name] = Csr(
                arrays[f"{name}.indptr"], arrays[f"{name}.indices"], arrays[f"{name}.data"]
            )
        elif form == "index":
            keys = _read_strings(name, arrays)
            values[name] = dict(zip(keys, range(len(keys)), strict=True))
        else:
            values[name] = _read_strings(name, arrays)
    if len(values["item_id_bytes"]) not in (0, len(values["item_ids"])):
        raise ValueError("item_id_bytes does not hold one entry per item")
    as_of = header["data_as_of"]
    return EngagementSnapshot(
        **values,
        snapshot_id=header["snapshot_id"],
        data_as_of=datetime.fromisoformat(as_of) if as_of else None,
        stats=header["stats"],
    )


def _strings(name: str, values: list[str]) -> dict[str, npt.NDArray[Any]]:
    """Strings as one UTF-8 text and each one's end (in characters)."""
    ends = np.cumsum([len(v) for v in values], dtype=np.int64)
    text = "".join(values).encode()
    return {f"{name}.text": np.frombuffer(text, dtype=np.uint8), f"{name}.ends": ends}


def _read_strings(name: str, arrays: dict[str, npt.NDArray[Any]]) -> tuple[str, ...]:
    text = arrays[f"{name}.text"].tobytes().decode()
    ends = arrays[f"{name}.ends"].tolist()
    if (ends[-1] if ends else 0) != len(text):
        raise ValueError(f"{name}: the offsets do not fit the text")
    # A tuple, as the snapshot holds them (see EngagementSnapshot).
    return tuple(text[start:end] for start, end in zip([0, *ends][:-1], ends, strict=True))
