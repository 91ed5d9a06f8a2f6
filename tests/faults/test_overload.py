"""Promise: past its limit of calls in flight a server refuses at once, and recovers.

Real servers, real concurrent calls: a ranking server allowed two calls at a time gets
a burst of forty, each scoring 2,000 candidates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from support.metrics import scrape, total
from support.stack import ServerStack, running_stack

from cascade.ranking.v1 import (
    ranking_service_pb2 as ranking_pb,
    ranking_service_pb2_grpc as ranking_grpc,
)
from cascade_server.settings import ServiceName

BURST = 40
SHED = "RESOURCE_EXHAUSTED"


@pytest.fixture
def narrow_stack(demo_database_url: str) -> Iterator[ServerStack]:
    with running_stack(
        demo_database_url, (ServiceName.RANKING,), max_concurrent_calls=2
    ) as servers:
        yield servers


def _reason(error: grpc.Call) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


def test_a_burst_past_the_limit_is_refused_at_once_and_the_server_recovers(narrow_stack):
    request = ranking_pb.RankCandidatesRequest(item_ids=[f"i{n:04d}" for n in range(1, 2001)])
    metrics = narrow_stack.servers[ServiceName.RANKING].metrics
    assert metrics is not None
    method = "/cascade.ranking.v1.RankingService/RankCandidates"
    before = total(scrape(metrics.port), "cascade_rpc_calls_total", method=method, code=SHED)
    with grpc.insecure_channel(narrow_stack.target(ServiceName.RANKING)) as channel:
        stub = ranking_grpc.RankingServiceStub(channel)
        calls = [stub.RankCandidates.future(request, timeout=30) for _ in range(BURST)]
        # Health checks are never refused, even now.
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # type: ignore[attr-defined]
            == health_pb2.HealthCheckResponse.SERVING
        )
        refused = [cast(grpc.Call, e) for e in (c.exception() for c in calls) if e is not None]
        assert 0 < len(refused) <= BURST - 2
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert _reason(error) == "OVERLOADED"
            assert "limit of 2 calls" in (error.details() or "")
        after = total(scrape(metrics.port), "cascade_rpc_calls_total", method=method, code=SHED)
        assert after - before == len(refused)
        # Load gone: every call is served again.
        for _ in range(5):
            assert stub.RankCandidates(request, timeout=30).candidates
