"""Promise: `kill -9` of the catalog server mid-batch loses no acknowledged event and
leaves no batch half-stored (each LogEvents batch is one transaction)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from functools import partial

import sqlalchemy as sa
from support.processes import CASCADE, cascade_env, is_serving, wait_for

from cascade.catalog.v1 import catalog_service_pb2 as catalog_pb
from cascade_client import CascadeError, CatalogClient
from cascade_server.storage.database import make_engine

BATCH = 200


def _batch(number: int) -> catalog_pb.LogEventsRequest:
    return catalog_pb.LogEventsRequest(
        events=[
            catalog_pb.Event(
                event_id=f"kill-{number}-{i}",
                user_id=f"u{i % 50 + 1:03d}",
                item_id=f"i{i % 400 + 1:04d}",
                kind=catalog_pb.EVENT_KIND_CLICK,
            )
            for i in range(BATCH)
        ]
    )


def test_kill_9_mid_batch_keeps_every_acknowledged_event_and_no_half_batch(
    demo_database_url, tmp_path
):
    env, ports = cascade_env(demo_database_url, tmp_path / "home")
    target = f"127.0.0.1:{ports['CATALOG']}"
    server = subprocess.Popen([*CASCADE, "serve", "catalog"], env=env, stderr=subprocess.DEVNULL)
    acknowledged: list[int] = []
    sent: list[int] = []
    stop = threading.Event()

    def write() -> None:
        with CatalogClient(target) as catalog:
            number = 0
            while not stop.is_set():
                sent.append(number)
                try:
                    catalog.log_events(_batch(number), timeout=5)
                    acknowledged.append(number)
                except CascadeError:
                    time.sleep(0.05)
                number += 1

    try:
        wait_for(partial(is_serving, target), 60, "the catalog server")
        writer = threading.Thread(target=write)
        writer.start()
        wait_for(lambda: len(acknowledged) >= 5, 60, "five stored batches")
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        time.sleep(0.5)
        stop.set()
        writer.join(30)
    finally:
        if server.poll() is None:
            server.kill()
    engine = make_engine(demo_database_url, pool_size=1)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT split_part(event_id, '-', 2)::int AS batch, count(*) FROM events "
                "WHERE event_id LIKE 'kill-%' GROUP BY 1"
            )
        ).all()
    engine.dispose()
    stored = dict((int(batch), count) for batch, count in rows)
    assert set(acknowledged) <= set(stored), "an acknowledged batch is missing"
    assert all(count == BATCH for count in stored.values()), f"half-stored batch: {stored}"
    assert set(stored) <= set(sent)
