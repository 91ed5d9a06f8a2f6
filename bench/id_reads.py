"""What reading and checking candidate ids at their rows costs, in-process: through the
catalog's tuple of strings against its fixed-width byte array (`features/id_bytes.py`).

    .venv/bin/python bench/id_reads.py RELEASE_DIR            # a release's item list
    .venv/bin/python bench/id_reads.py --items 1000000        # generated ids

Per call: ``--rows`` random rows (a request's candidates), with 64 MB of other memory
read before each call so the caches are as cold as between served requests. Reports
medians and p90 over ``--repeat`` calls, and what building the byte array takes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cascade_server.features.id_bytes import id_bytes, ids_at, matches
from cascade_server.features.release_items import read_item_ids

Call = Callable[[np.ndarray, list[str]], object]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", nargs="?", type=Path, help="a release (or build) directory")
    parser.add_argument("--items", type=int, default=1_000_000, help="generated ids (no release)")
    parser.add_argument("--rows", type=int, default=500, help="ids per call")
    parser.add_argument("--repeat", type=int, default=300, help="calls per measurement")
    args = parser.parse_args()
    ids: tuple[str, ...] = (
        tuple(read_item_ids(args.release))
        if args.release
        else tuple(f"item-{i:07d}" for i in range(args.items))
    )
    started = time.perf_counter()
    column = id_bytes(ids)
    print(
        f"{len(ids):,} ids; byte array {column.dtype}, {column.nbytes / 2**20:.1f} MiB, "
        f"built in {(time.perf_counter() - started) * 1000:.0f} ms"
    )
    if not len(column):
        raise SystemExit("these ids do not fit a byte array (see features/id_bytes.py)")
    calls: dict[str, Call] = {
        "ids at rows, tuple": lambda rows, _: [ids[r] for r in rows.tolist()],
        "ids at rows, bytes": lambda rows, _: ids_at(column, rows),
        "check rows, tuple": lambda rows, asked: list(map(ids.__getitem__, rows.tolist())) == asked,
        "check rows, bytes": lambda rows, asked: bool(matches(column, rows, asked).all()),
    }
    for name, call in calls.items():
        median, p90 = _measure(call, ids, args.rows, args.repeat)
        print(f"{name:20}  median {median:.3f} ms  p90 {p90:.3f} ms")


def _measure(call: Call, ids: Sequence[str], n_rows: int, repeat: int) -> tuple[float, float]:
    rng = random.Random(1)
    other = np.ones(64 * 2**20 // 8)
    times = []
    for _ in range(repeat):
        rows = np.array(rng.sample(range(len(ids)), n_rows), dtype=np.int64)
        asked = [ids[r].encode().decode() for r in rows.tolist()]  # new strings, as parsed
        other.sum()
        started = time.perf_counter()
        call(rows, asked)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), float(np.percentile(times, 90))


if __name__ == "__main__":
    main()
