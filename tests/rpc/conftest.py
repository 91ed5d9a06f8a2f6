"""Fixtures for RPC tests: the real servers, in-process, over a demo database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.stack import ServerStack, running_stack

from cascade_client import BlendingClient, CatalogClient, RankingClient, RetrievalClient
from cascade_server.settings import ServiceName


@pytest.fixture(scope="module")
def stack(shared_demo_database_url: str) -> Iterator[ServerStack]:
    """All four servers over the small demo data set, shared by a module's read-only tests."""
    with running_stack(shared_demo_database_url) as servers:
        yield servers


@pytest.fixture
def fresh_stack(demo_database_url: str) -> Iterator[ServerStack]:
    """All four servers over a fresh demo database: for tests that write or stop servers."""
    with running_stack(demo_database_url) as servers:
        yield servers


@pytest.fixture
def incremental_stack(demo_database_url: str) -> Iterator[ServerStack]:
    """Fresh servers whose full refreshes are a minute apart: catalog status changes and
    seen events can only reach them through the status refresh (every 0.2 s)."""
    with running_stack(
        demo_database_url, snapshot_refresh_seconds=60, status_refresh_seconds=0.2
    ) as servers:
        yield servers


@pytest.fixture(scope="module")
def blending(stack: ServerStack) -> Iterator[BlendingClient]:
    """A client of the front door."""
    with BlendingClient(stack.target(ServiceName.BLENDING)) as client:
        yield client


@pytest.fixture(scope="module")
def retrieval(stack: ServerStack) -> Iterator[RetrievalClient]:
    """A client of the retrieval server."""
    with RetrievalClient(stack.target(ServiceName.RETRIEVAL)) as client:
        yield client


@pytest.fixture(scope="module")
def ranking(stack: ServerStack) -> Iterator[RankingClient]:
    """A client of the ranking server."""
    with RankingClient(stack.target(ServiceName.RANKING)) as client:
        yield client


@pytest.fixture(scope="module")
def catalog(stack: ServerStack) -> Iterator[CatalogClient]:
    """A client of the catalog server."""
    with CatalogClient(stack.target(ServiceName.CATALOG)) as client:
        yield client
