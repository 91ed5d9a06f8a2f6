"""What loading a release costs each server, in-process: wall and CPU time, the longest
pause a 1 ms ticker thread sees (how long requests would wait on the interpreter lock),
and the memory it adds: resident (RSS, which counts the pages of mapped files it
touched: the page cache holds those, once for every process mapping the file) and
anonymous (what it allocated for itself, from /proc/self/smaps_rollup).

    .venv/bin/python bench/release_load.py RELEASE_DIR
    .venv/bin/python bench/release_load.py RELEASE_DIR --components ranking --repeat 5

Each component loads the release the way its server's loader does (`RetrievalModels`,
`LearnedRanker`, `BlendingReleaseLoader`), after the release's files were read once (a
server loads after its release check read them, so they are in the page cache) and
without the check itself (a child process hashes the files; see
`artifacts/release_probe.py`). Then the loaded release is dropped and the heap settled,
as a swap does with the release it replaces. Medians over --repeat loads.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from cascade_server import heap
from cascade_server.artifacts.manifest import Manifest, read_verified
from cascade_server.blending.release import BlendingReleaseLoader
from cascade_server.ranking.models import LearnedRanker
from cascade_server.retrieval.models import RetrievalModels

LOADERS: dict[str, Callable[[Path, Manifest], object]] = {
    "retrieval": RetrievalModels,
    "ranking": LearnedRanker,
    "blending": lambda path, manifest: BlendingReleaseLoader()(path, manifest),
}


class Ticker:
    """A thread that sleeps 1 ms at a time and keeps the longest gap between wake-ups."""

    def __enter__(self) -> Ticker:
        self.longest_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.05)
        self.longest_s = 0.0
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.longest_s = max(self.longest_s, now - last)
            last = now


def measure(step: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    """Run ``step``: its wall and CPU ms, the ticker's longest pause, the memory it added."""
    process = psutil.Process()
    rss, anonymous = process.memory_info().rss, _anonymous_bytes()
    with Ticker() as ticker:
        wall, cpu = time.perf_counter(), time.process_time()
        value = step()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "wall_ms": wall * 1000,
        "cpu_ms": cpu * 1000,
        "pause_ms": ticker.longest_s * 1000,
        "rss_mib": (process.memory_info().rss - rss) / 2**20,
        "anonymous_mib": (_anonymous_bytes() - anonymous) / 2**20,
    }, value


def main() -> int:
    args = _arguments()
    manifest = read_verified(args.release)
    for file in args.release.rglob("*"):
        if file.is_file():
            file.read_bytes()  # in the page cache, as after the release check
    print(f"release {manifest.release_id}: {args.repeat} loads each, medians\n")
    print("| component | step | wall ms | CPU ms | longest pause ms | RSS MiB | anonymous MiB |")
    print("|---|---|---|---|---|---|---|")
    for component in args.components.split(","):
        load = LOADERS[component]
        rows: dict[str, list[dict[str, float]]] = {"load": [], "drop and settle": []}
        for _ in range(args.repeat):
            point, loaded = measure(functools.partial(load, args.release, manifest))
            rows["load"].append(point)
            held = [loaded]
            del loaded
            point, _ = measure(functools.partial(_drop, held))
            rows["drop and settle"].append(point)
        for step, points in rows.items():
            medians = [statistics.median(p[key] for p in points) for key in points[0]]
            print(f"| {component} | {step} | " + " | ".join(f"{m:.0f}" for m in medians) + " |")
    return 0


def _anonymous_bytes() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/smaps_rollup has no Anonymous line")


def _drop(held: list[object]) -> None:
    """Let go of a loaded release and settle the heap, as a swap does with the old one."""
    held.clear()
    heap.settle()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("release", type=Path, help="A release directory (HOME/releases/ID).")
    parser.add_argument("--components", default="retrieval,ranking,blending")
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
