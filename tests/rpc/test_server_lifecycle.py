"""Health, reflection, readiness and start-up errors of the real servers."""

import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from support.metrics import scrape, total
from support.stack import ServerStack, run_on_server_loop, stack_settings

from cascade.blending.v1 import blending_service_pb2 as blending_pb
from cascade.ranking.v1 import ranking_service_pb2 as ranking_pb
from cascade_client import BlendingClient, RankingClient, UnavailableError
from cascade_server.errors import ConfigurationError
from cascade_server.rpc.app import build_server
from cascade_server.settings import ServiceName
from cascade_server.storage.database import make_engine

SERVICE_NAMES = {
    ServiceName.BLENDING: "cascade.blending.v1.BlendingService",
    ServiceName.RETRIEVAL: "cascade.retrieval.v1.RetrievalService",
    ServiceName.RANKING: "cascade.ranking.v1.RankingService",
    ServiceName.CATALOG: "cascade.catalog.v1.CatalogService",
}


def health_status(target, service=""):
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return stub.Check(request, timeout=2).status  # type: ignore[attr-defined]


@pytest.mark.parametrize("service", list(SERVICE_NAMES))
def test_every_server_reports_serving_for_itself_and_overall(stack, service):
    target = stack.target(service)
    assert health_status(target) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(target, SERVICE_NAMES[service]) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", list(SERVICE_NAMES))
def test_reflection_lists_the_service_health_and_reflection(stack, service):
    with grpc.insecure_channel(stack.target(service)) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert services == {
        SERVICE_NAMES[service],
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_reflection_describes_documented_messages(stack):
    with grpc.insecure_channel(stack.target(ServiceName.BLENDING)) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        proto = database.FindFileContainingSymbol("cascade.blending.v1.RecommendRequest")
    assert proto.name == "cascade/blending/v1/blending_service.proto"
    assert "RecommendRequest" in [m.name for m in proto.message_type]


def run_alone(database_url, service, **overrides):
    """One server on port 0, not waiting for it to be ready."""
    engine = make_engine(database_url, pool_size=2)
    stack = ServerStack(stack_settings(database_url, **overrides), engine)
    stack.start((service,), wait_ready=False)
    return stack, engine


def test_reflection_can_be_turned_off(demo_database_url):
    stack, engine = run_alone(demo_database_url, ServiceName.CATALOG, reflection=False)
    try:
        with (
            grpc.insecure_channel(stack.target(ServiceName.CATALOG)) as channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        stack.close()
        engine.dispose()


def test_a_server_without_its_data_is_not_serving_and_says_not_ready(demo_database_url):
    # The database is unreachable: the server listens, but cannot load its data.
    unreachable = "postgresql://postgres@127.0.0.1:1/nothing"
    stack, engine = run_alone(unreachable, ServiceName.RANKING)
    try:
        target = stack.target(ServiceName.RANKING)
        assert health_status(target) == health_pb2.HealthCheckResponse.NOT_SERVING
        with RankingClient(target) as client, pytest.raises(UnavailableError) as raised:
            client.rank_candidates(ranking_pb.RankCandidatesRequest(item_ids=["i0001"]))
        assert raised.value.reason == "NOT_READY"
    finally:
        stack.close()
        engine.dispose()


def test_a_taken_port_is_a_clear_configuration_error(stack, demo_database_url):
    taken = int(stack.target(ServiceName.CATALOG).rsplit(":", 1)[1])
    engine = make_engine(demo_database_url, pool_size=1)

    async def start_on_taken_port():
        server = build_server(
            stack_settings(demo_database_url), ServiceName.CATALOG, engine, port=taken
        )
        await server.start()

    try:
        with pytest.raises(ConfigurationError, match="CASCADE_"):
            run_on_server_loop(start_on_taken_port())
    finally:
        engine.dispose()


def test_processes_of_one_stage_share_its_port_and_outlive_each_other(demo_database_url):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = make_engine(demo_database_url, pool_size=2)
    shared = stack_settings(demo_database_url, ranking_processes=2)
    request = ranking_pb.RankCandidatesRequest(item_ids=["i0001", "i0002"])

    async def start_two():
        servers = [build_server(shared, ServiceName.RANKING, engine, port=port) for _ in range(2)]
        for server in servers:
            await server.start()
        for server in servers:
            await server.wait_ready(60)
        return servers

    servers = run_on_server_loop(start_two(), timeout_s=90)
    try:
        with RankingClient(f"127.0.0.1:{port}") as client:
            assert len(client.rank_candidates(request).candidates) == 2
        run_on_server_loop(servers.pop(0).stop(0.5))
        # The port still serves, from the other process's socket.
        with RankingClient(f"127.0.0.1:{port}") as client:
            assert len(client.rank_candidates(request).candidates) == 2

        async def start_alone():
            await build_server(
                stack_settings(demo_database_url), ServiceName.RANKING, engine, port=port
            ).start()

        # A server that does not share its port cannot take one that is shared.
        with pytest.raises(ConfigurationError, match="CASCADE_"):
            run_on_server_loop(start_alone())
    finally:
        for server in servers:
            run_on_server_loop(server.stop(0.5))
        engine.dispose()


def test_metrics_count_calls_stage_timings_and_snapshots(stack):
    front = stack.servers[ServiceName.BLENDING]
    assert front.metrics is not None
    method = "/cascade.blending.v1.BlendingService/Recommend"
    before = scrape(front.metrics.port)
    with BlendingClient(stack.target(ServiceName.BLENDING)) as client:
        for _ in range(3):
            client.recommend(blending_pb.RecommendRequest(user_id="u042", page_size=10))
    after = scrape(front.metrics.port)

    def grew(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("cascade_rpc_calls_total", method=method, code="OK") == 3
    assert grew("cascade_rpc_duration_seconds_count", method=method) == 3
    # The stages' 6 ms budget is a bucket boundary: the share within it is exact.
    bounds = {
        labels["le"]
        for name, labels, _ in after
        if name == "cascade_rpc_duration_seconds_bucket" and labels.get("method") == method
    }
    assert {"0.004", "0.005", "0.006", "+Inf"} <= bounds
    assert grew("cascade_rpc_duration_seconds_bucket", method=method, le="+Inf") == 3
    for stage in ("retrieval", "ranking", "blending"):
        assert grew("cascade_stage_duration_seconds_count", stage=stage) == 3
    assert grew("cascade_stage_candidates_sum", stage="blending") == 30
    # Built from Postgres, or loaded from the snapshot file another server wrote.
    snapshots = total(after, "cascade_snapshot_builds_total", result="built")
    assert snapshots + total(after, "cascade_snapshot_builds_total", result="loaded") >= 1
    assert total(after, "cascade_rpc_calls_in_flight") == 0
