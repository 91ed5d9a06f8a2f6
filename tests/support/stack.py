"""The four Cascade servers, in-process on free ports, on one shared event loop.

Tests talk to them with the ordinary blocking clients, exactly as another service
would. The servers are the real ones (``build_server``), over a real database.

Every in-process server of a test session runs on the same event loop, in one
daemon thread that lives as long as the process. gRPC's asyncio layer keeps
process-wide state bound to the loops it has seen; creating and closing a loop per
test module left server and channel objects to be finalised after their loop was
gone, which crashed the interpreter now and then (a segfault in teardown).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa

from cascade_server.rpc.app import CascadeServer, build_server
from cascade_server.settings import ServiceName, Settings
from cascade_server.storage.database import make_engine

T = TypeVar("T")

BACKENDS = (ServiceName.RETRIEVAL, ServiceName.RANKING, ServiceName.CATALOG)


_loop_lock = threading.Lock()
_shared_loop: asyncio.AbstractEventLoop | None = None


def server_loop() -> asyncio.AbstractEventLoop:
    """The event loop every in-process server runs on, started on first use."""
    global _shared_loop
    with _loop_lock:
        if _shared_loop is None:
            _shared_loop = asyncio.new_event_loop()
            threading.Thread(
                target=_shared_loop.run_forever, name="test-servers", daemon=True
            ).start()
        return _shared_loop


def run_on_server_loop(coroutine: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
    """Run ``coroutine`` on the servers' loop and wait for its result."""
    future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, server_loop())
    return future.result(timeout_s)


class ServerStack:
    """Starts retrieval, ranking and catalog, then blending pointed at the first two."""

    def __init__(self, settings: Settings, engine: sa.Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.servers: dict[ServiceName, CascadeServer] = {}

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run ``coroutine`` on the servers' loop and wait for its result."""
        return run_on_server_loop(coroutine, timeout_s)

    def start(
        self,
        services: tuple[ServiceName, ...] = (*BACKENDS, ServiceName.BLENDING),
        *,
        wait_ready: bool = True,
    ) -> None:
        """Start ``services`` on port 0 (and wait until each reports SERVING)."""
        for service in services:
            settings = self.settings
            if service is ServiceName.BLENDING:
                settings = settings.model_copy(
                    update={
                        "retrieval_target": self.target(ServiceName.RETRIEVAL),
                        "ranking_target": self.target(ServiceName.RANKING),
                    }
                )
            self.servers[service] = self.run(self._start(settings, service, wait_ready))

    async def _start(
        self, settings: Settings, service: ServiceName, wait_ready: bool
    ) -> CascadeServer:
        server = build_server(settings, service, self.engine, port=0)
        await server.start()
        if wait_ready:
            await server.wait_ready(20.0)
        return server

    def target(self, service: ServiceName) -> str:
        """``host:port`` of a started server."""
        return self.servers[service].address

    def stop(self, service: ServiceName, grace_s: float = 0.5) -> None:
        """Stop one server (for fail-open tests); its port is then closed."""
        self.run(self.servers.pop(service).stop(grace_s))

    def close(self) -> None:
        """Stop every server (the shared loop keeps running for the next stack)."""
        for service in list(self.servers):
            self.stop(service, 0.2)


def stack_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for servers under test: loopback, fast refresh, small worker pools."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "host": "127.0.0.1",
        "snapshot_refresh_seconds": 0.2,
        "workers": 2,
        "grace_seconds": 1.0,
        "recommend_deadline_ms": 2000,
        "retrieval_timeout_ms": 1000,
        "source_budget_ms": 800,
        "ranking_timeout_ms": 1000,
        # Every in-process server serves metrics on a free port.
        "blending_metrics_port": 0,
        "retrieval_metrics_port": 0,
        "ranking_metrics_port": 0,
        "catalog_metrics_port": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@contextmanager
def running_stack(
    database_url: str,
    services: tuple[ServiceName, ...] = (*BACKENDS, ServiceName.BLENDING),
    **overrides: Any,
) -> Iterator[ServerStack]:
    """The started servers; everything is stopped afterwards."""
    engine = make_engine(database_url, pool_size=4)
    stack = ServerStack(stack_settings(database_url, **overrides), engine)
    try:
        stack.start(services)
        yield stack
    finally:
        stack.close()
        engine.dispose()
