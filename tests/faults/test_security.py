"""Promise: only who should gets in — TLS, mutual TLS, bearer tokens with scopes — and
ids are data, never SQL. Real servers, certificates from a CA the test makes."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.certificates import Certificates, make_certificates
from support.stack import ServerStack, running_stack

from cascade.blending.v1 import blending_service_pb2 as blending_pb
from cascade.catalog.v1 import catalog_service_pb2 as catalog_pb
from cascade_client import (
    BlendingClient,
    CatalogClient,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from cascade_server.security import Scope, add_token
from cascade_server.settings import ServiceName
from cascade_server.storage.database import make_engine

RECOMMEND = blending_pb.RecommendRequest(user_id="u042", page_size=5)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def _credentials(certs: Certificates, *, client: bool) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client_key.read_bytes() if client else None,
        certificate_chain=certs.client_cert.read_bytes() if client else None,
    )


def test_tls_serves_only_tls_callers(demo_database_url, certificates):
    with running_stack(
        demo_database_url,
        tls_cert_file=certificates.server_cert,
        tls_key_file=certificates.server_key,
        tls_ca_file=certificates.ca,
    ) as stack:
        front = stack.target(ServiceName.BLENDING)
        secure = _credentials(certificates, client=False)
        with BlendingClient(front, secure=secure) as client:
            # The front door reached retrieval and ranking over TLS too: nothing degraded.
            response = client.recommend(RECOMMEND)
        assert len(response.items) == 5
        assert not response.degraded
        with BlendingClient(front) as plaintext, pytest.raises(UnavailableError):
            plaintext.recommend(RECOMMEND, timeout=3)


def test_mutual_tls_needs_a_client_certificate_the_ca_signed(demo_database_url, certificates):
    with running_stack(
        demo_database_url,
        tls_cert_file=certificates.server_cert,
        tls_key_file=certificates.server_key,
        tls_ca_file=certificates.ca,
        tls_client_ca_file=certificates.ca,
    ) as stack:
        front = stack.target(ServiceName.BLENDING)
        with BlendingClient(front, secure=_credentials(certificates, client=True)) as client:
            response = client.recommend(RECOMMEND)
        assert len(response.items) == 5
        assert not response.degraded  # the front door presented its certificate to the stages
        without = _credentials(certificates, client=False)
        with BlendingClient(front, secure=without) as anonymous, pytest.raises(UnavailableError):
            anonymous.recommend(RECOMMEND, timeout=3)


@pytest.fixture
def token_stack(demo_database_url, tmp_path) -> Iterator[tuple[ServerStack, dict[str, str]]]:
    path = tmp_path / "tokens.json"
    tokens = {
        "reader": add_token(path, "reader", frozenset({Scope.READ})),
        "writer": add_token(path, "writer", frozenset({Scope.READ, Scope.WRITE})),
        "front-door": add_token(path, "front-door", frozenset({Scope.READ})),
    }
    assert all(token not in path.read_text() for token in tokens.values())
    with running_stack(
        demo_database_url, auth_tokens_file=path, stage_token=tokens["front-door"]
    ) as stack:
        yield stack, tokens


def test_tokens_and_scopes_decide_who_may_call_what(token_stack, capfd):
    stack, tokens = token_stack
    front = stack.target(ServiceName.BLENDING)
    catalog_target = stack.target(ServiceName.CATALOG)
    event = catalog_pb.Event(
        event_id="auth-1", user_id="u001", item_id="i0001", kind=catalog_pb.EVENT_KIND_CLICK
    )
    write = catalog_pb.LogEventsRequest(events=[event])

    with BlendingClient(front) as anonymous, pytest.raises(UnauthenticatedError):
        anonymous.recommend(RECOMMEND)
    with BlendingClient(front, token="not-a-token") as forged, pytest.raises(UnauthenticatedError):
        forged.recommend(RECOMMEND)
    with BlendingClient(front, token=tokens["reader"]) as reader:
        response = reader.recommend(RECOMMEND)
    assert len(response.items) == 5
    assert not response.degraded  # the front door's own token opened retrieval and ranking
    with CatalogClient(catalog_target, token=tokens["reader"]) as reader:
        with pytest.raises(PermissionDeniedError) as denied:
            reader.log_events(write)
        assert denied.value.reason == "MISSING_SCOPE"
        assert "write" in denied.value.message
    with CatalogClient(catalog_target, token=tokens["writer"]) as writer:
        assert writer.log_events(write).stored_count == 1

    # Probes need no token.
    with grpc.insecure_channel(front) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    # Logs name tokens, never show them.
    logged = "".join(capfd.readouterr())
    assert "MISSING_SCOPE" in logged or "reader" in logged
    for token in tokens.values():
        assert token not in logged


def test_ids_are_data_never_sql(demo_database_url):
    hostile = [
        "x'); DROP TABLE items; --",
        "u' OR '1'='1",
        'i" ; DELETE FROM events WHERE "1"="1',
        "\\'; TRUNCATE users CASCADE; --",
    ]
    engine = make_engine(demo_database_url, pool_size=1)
    with engine.connect() as connection:
        before = connection.execute(
            sa.text("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM events)")
        ).one()
    with (
        running_stack(demo_database_url, (ServiceName.CATALOG,)) as stack,
        CatalogClient(stack.target(ServiceName.CATALOG)) as catalog,
    ):
        catalog.upsert_items(
            catalog_pb.UpsertItemsRequest(
                items=[catalog_pb.Item(item_id=h, title=h, categories=[h]) for h in hostile]
            )
        )
        stored = catalog.log_events(
            catalog_pb.LogEventsRequest(
                events=[
                    catalog_pb.Event(
                        event_id=h, user_id=h, item_id=h, kind=catalog_pb.EVENT_KIND_CLICK
                    )
                    for h in hostile
                ]
            )
        )
        assert stored.stored_count == len(hostile)
        found = catalog.get_items(catalog_pb.GetItemsRequest(item_ids=hostile))
    assert sorted(item.item_id for item in found.items) == sorted(hostile)
    assert all(item.title == item.item_id for item in found.items)
    with engine.connect() as connection:
        after = connection.execute(
            sa.text("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM events)")
        ).one()
    engine.dispose()
    assert (after[0] - before[0], after[1] - before[1]) == (len(hostile), len(hostile))
