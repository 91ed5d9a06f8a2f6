"""Promise: Postgres going away and coming back under load costs no acknowledged event.

A private embedded Postgres is really stopped and started again under the running
servers: recommendations keep coming from memory, event writes are refused with
UNAVAILABLE while it is down and never acknowledged unless stored, and writes work
again after the restart without restarting Cascade (the pool pings before use).
"""

from __future__ import annotations

import itertools
import time

import pytest
import sqlalchemy as sa
from conftest import SMALL_DEMO
from support.stack import running_stack

from cascade.blending.v1 import blending_service_pb2 as blending_pb
from cascade.catalog.v1 import catalog_service_pb2 as catalog_pb
from cascade_client import BlendingClient, CatalogClient, UnavailableError
from cascade_server.offline.demo_data import generate, load
from cascade_server.settings import ServiceName
from cascade_server.storage import migrations
from cascade_server.storage.database import EmbeddedPostgres, make_engine


def _event(number: int) -> catalog_pb.Event:
    return catalog_pb.Event(
        event_id=f"restart-{number}",
        user_id="u001",
        item_id="i0001",
        kind=catalog_pb.EVENT_KIND_CLICK,
    )


def test_writes_are_refused_while_postgres_is_down_and_resume_after_it_restarts(tmp_path):
    database = EmbeddedPostgres(tmp_path / "pgdata")
    url = database.start()
    migrations.upgrade(url)
    engine = make_engine(url, pool_size=1)
    load(engine, generate(SMALL_DEMO), progress=False)
    engine.dispose()
    acknowledged: list[str] = []
    numbers = itertools.count()

    def log(catalog: CatalogClient) -> None:
        event = _event(next(numbers))
        catalog.log_events(catalog_pb.LogEventsRequest(events=[event]), timeout=15)
        acknowledged.append(event.event_id)

    try:
        with running_stack(url, snapshot_refresh_seconds=0.5) as stack:
            front = BlendingClient(stack.target(ServiceName.BLENDING))
            catalog = CatalogClient(stack.target(ServiceName.CATALOG))
            with front, catalog:
                log(catalog)
                database.stop()  # the only handle: the server really stops
                for _ in range(3):
                    with pytest.raises(UnavailableError) as raised:
                        log(catalog)
                    assert raised.value.reason == "STORAGE_UNAVAILABLE"
                    page = front.recommend(
                        blending_pb.RecommendRequest(user_id="u042", page_size=10)
                    )
                    assert len(page.items) == 10  # served from memory
                assert database.start() == url
                deadline = time.monotonic() + 30
                while True:  # back within seconds, without restarting anything
                    try:
                        log(catalog)
                        break
                    except UnavailableError:
                        assert time.monotonic() < deadline, "writes did not resume"
                        time.sleep(0.5)
                # A client retrying a batch it was not sure about stores nothing twice.
                again = catalog.log_events(
                    catalog_pb.LogEventsRequest(events=[_event(0)]), timeout=15
                )
                assert again.duplicate_count == 1
                assert front.recommend(blending_pb.RecommendRequest(user_id="u042")).items
        engine = make_engine(url, pool_size=1)
        with engine.connect() as connection:
            stored = connection.scalars(
                sa.text("SELECT event_id FROM events WHERE event_id LIKE 'restart-%'")
            ).all()
        engine.dispose()
        assert sorted(stored) == sorted(acknowledged)
    finally:
        database.stop()
