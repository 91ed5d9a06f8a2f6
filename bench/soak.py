"""Soak: a longer run of mixed load and faults, and what the users of Cascade saw.

    make soak                                   # 3 minutes, demo data
    .venv/bin/python bench/soak.py --minutes 10 --rate 40

Sets up as a user does (embedded Postgres in a temporary CASCADE_HOME, `cascade
demo-data`, `cascade train all`), runs the four servers as separate processes, then for
--minutes keeps `Recommend` at --rate requests/s and a writer logging batches of events,
while a fault is injected every --fault-every seconds, in turn:

* `kill -9` of the ranking, retrieval or catalog server (restarted a few seconds later);
* Postgres stopped for a few seconds, then started again;
* a release swap (`cascade policy publish`);

The writer retries a batch until it is acknowledged (event ids make that idempotent), so
at the end every event it sent must be stored exactly once. Prints (and writes to
bench/results/soak-*.{json,md}) requests served, failed by status, degraded, and events
acknowledged against stored. Exit 1 when they differ or a request got INTERNAL.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from pipeline import CASCADE, machine, serving_env, step, wait_serving, write_report

from cascade.blending.v1 import (
    blending_service_pb2 as blending_pb,
    blending_service_pb2_grpc as blending_grpc,
)
from cascade.catalog.v1 import catalog_service_pb2 as catalog_pb
from cascade_client import CascadeError, CatalogClient
from cascade_server.storage.database import EmbeddedPostgres, make_engine

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ("retrieval", "ranking", "catalog", "blending")
FAULTS = ("kill ranking", "kill retrieval", "restart postgres", "kill catalog", "swap release")
BATCH = 50


class Servers:
    """The four servers as separate processes, each restartable."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        self.processes[name] = subprocess.Popen(
            [*CASCADE, "serve", name], env=self.env, stderr=subprocess.DEVNULL
        )
        wait_serving(f"127.0.0.1:{self.env[f'CASCADE_{name.upper()}_PORT']}", timeout_s=120)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


async def _recommend_load(
    target: str, rate: float, stop: threading.Event, outcome: collections.Counter[str]
) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = blending_grpc.BlendingServiceStub(channel)
        started = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            try:
                response = await stub.Recommend(
                    blending_pb.RecommendRequest(user_id=f"u{i % 500 + 1:04d}", page_size=10),
                    timeout=2,
                )
                outcome["OK, degraded" if response.degraded else "OK"] += 1
            except grpc.RpcError as error:
                outcome[error.code().name] += 1

        i = 0
        while not stop.is_set():
            due = started + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks, return_exceptions=True)


def _writer(target: str, stop: threading.Event, acknowledged: list[str]) -> None:
    """Logs batches until ``stop``; a batch is retried until acknowledged."""
    number = 0
    with CatalogClient(target) as catalog:
        while not stop.is_set():
            batch = [f"soak-{number}-{i}" for i in range(BATCH)]
            request = catalog_pb.LogEventsRequest(
                events=[
                    catalog_pb.Event(
                        event_id=event_id,
                        user_id=f"u{(number + i) % 500 + 1:04d}",
                        item_id=f"i{(number * 7 + i) % 2000 + 1:05d}",
                        kind=catalog_pb.EVENT_KIND_CLICK,
                    )
                    for i, event_id in enumerate(batch)
                ]
            )
            while True:
                try:
                    catalog.log_events(request, timeout=5)
                    acknowledged.extend(batch)
                    break
                except CascadeError:
                    time.sleep(0.5)  # a fault: the same batch again (idempotent)
            number += 1
            time.sleep(0.2)


def main() -> int:
    args = _arguments()
    home = Path(tempfile.mkdtemp(prefix="cascade-soak-"))
    database = EmbeddedPostgres(home / "pgdata")
    url = database.start()
    env, ports = serving_env(
        {
            **os.environ,
            "CASCADE_HOME": str(home),
            "CASCADE_DATABASE_URL": url,
            "CASCADE_LOG_LEVEL": "WARNING",
            "CASCADE_RELEASE_POLL_SECONDS": "1",
            "CASCADE_SNAPSHOT_REFRESH_SECONDS": "5",
        },
        home,
        url,
    )
    timings: dict[str, float] = {}
    step(timings, "db upgrade", env, "db", "upgrade")
    step(timings, "demo data", env, "demo-data")
    step(timings, "train all", env, "train", "all")
    servers = Servers(env)
    for name in SERVERS:
        servers.start(name)
    outcome: collections.Counter[str] = collections.Counter()
    acknowledged: list[str] = []
    faults: list[dict[str, Any]] = []
    stop = threading.Event()
    front = f"127.0.0.1:{ports['BLENDING']}"
    load = threading.Thread(
        target=lambda: asyncio.run(_recommend_load(front, args.rate, stop, outcome))
    )
    writer = threading.Thread(
        target=_writer, args=(f"127.0.0.1:{ports['CATALOG']}", stop, acknowledged)
    )
    load.start()
    writer.start()
    started = time.monotonic()
    policy = home / "soak-policy.yaml"
    try:
        number = 0
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.fault_every)
            fault = FAULTS[number % len(FAULTS)]
            number += 1
            at = round(time.monotonic() - started, 1)
            print(f"{at:7.1f} s  {fault}", file=sys.stderr, flush=True)
            if fault.startswith("kill "):
                name = fault.removeprefix("kill ")
                servers.kill(name)
                time.sleep(args.down_s)
                servers.start(name)
            elif fault == "restart postgres":
                database.stop()
                time.sleep(args.down_s)
                database.start()
            else:
                policy.write_text(f"version: soak-{number}\n")
                subprocess.run(
                    [*CASCADE, "policy", "publish", str(policy)],
                    env=env,
                    check=True,
                    capture_output=True,
                )
            faults.append({"at_s": at, "fault": fault})
    finally:
        stop.set()
        load.join(60)
        writer.join(120)
        servers.stop_all()
    engine = make_engine(url, pool_size=1)
    with engine.connect() as connection:
        stored = connection.scalar(
            sa.text("SELECT count(*) FROM events WHERE event_id LIKE 'soak-%'")
        )
    engine.dispose()
    database.stop()
    served = outcome["OK"] + outcome["OK, degraded"]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "minutes": args.minutes,
        "rate": args.rate,
        "requests": sum(outcome.values()),
        "served": served,
        "degraded": outcome["OK, degraded"],
        "failed": {code: n for code, n in outcome.items() if not code.startswith("OK")},
        "events_acknowledged": len(acknowledged),
        "events_stored": int(stored or 0),
        "faults": faults,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    lines = [
        f"# Soak — {args.minutes:g} min, Recommend at {args.rate:g}/s, a fault every "
        f"{args.fault_every:g} s",
        "",
        f"{report['date']} — {report['machine']}",
        "",
        f"* requests: {report['requests']:,}; served {served:,} "
        f"({outcome['OK, degraded']:,} of them degraded); failed: {report['failed'] or 'none'}",
        f"* events acknowledged {len(acknowledged):,}, stored {report['events_stored']:,}",
        "* faults: " + ", ".join(f"{f['fault']} at {f['at_s']} s" for f in faults),
    ]
    write_report(args.out, "soak", report, lines)
    broken = report["events_stored"] != len(acknowledged) or "INTERNAL" in report["failed"]
    return 1 if broken else 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="How long to run.")
    parser.add_argument("--rate", type=float, default=30.0, help="Recommend requests per second.")
    parser.add_argument("--fault-every", type=float, default=20.0, help="Seconds between faults.")
    parser.add_argument("--down-s", type=float, default=3.0, help="How long a fault lasts.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
