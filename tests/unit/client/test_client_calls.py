"""Calls through every Cascade client against a real in-process gRPC server.

The test servicers record the deadline and metadata each call arrived with, and
behave as the ``x-test-mode`` call metadata asks: answer, fail with UNAVAILABLE a
number of times first, fail with INVALID_ARGUMENT, or take longer than the deadline.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status  # type: ignore[import-untyped, unused-ignore]

from cascade.blending.v1 import (
    blending_service_pb2 as blending_pb,
    blending_service_pb2_grpc as blending_grpc,
)
from cascade.catalog.v1 import (
    catalog_service_pb2 as catalog_pb,
    catalog_service_pb2_grpc as catalog_grpc,
)
from cascade.common.v1 import candidate_pb2, context_pb2
from cascade.ranking.v1 import (
    ranking_service_pb2 as ranking_pb,
    ranking_service_pb2_grpc as ranking_grpc,
)
from cascade.retrieval.v1 import (
    retrieval_service_pb2 as retrieval_pb,
    retrieval_service_pb2_grpc as retrieval_grpc,
)
from cascade_client import (
    AsyncBlendingClient,
    AsyncCatalogClient,
    AsyncRankingClient,
    AsyncRetrievalClient,
    BlendingClient,
    CatalogClient,
    DeadlineExceededError,
    InvalidArgumentError,
    RankingClient,
    RetrievalClient,
    UnavailableError,
    create_channel,
    default_timeout,
)

MODE = "x-test-mode"
ITEM_IDS = ("a", "b", "c", "d", "e")
USER_IDS = ("u1", "u2", "u3")
# How far the deadline the server sees may be from the timeout the client sent: it is
# measured a little later, and the grpc-timeout header rounds it up slightly.
SLACK = 0.25


@dataclass(frozen=True)
class Seen:
    """One call as the server saw it."""

    method: str
    time_remaining: float
    metadata: dict[str, str]
    request: Any


def _rich_status(code: grpc.StatusCode, message: str, reason: str) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="cascade.dev"))
    details = [info]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="page_size", description="x")
                ]
            )
        )
        details.append(bad_request)
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result


class Recorder:
    """Records calls and applies the behaviour their ``x-test-mode`` metadata asks for."""

    def __init__(self) -> None:
        self.calls: list[Seen] = []
        self._lock = threading.Lock()

    def handle(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self._lock:
            self.calls.append(Seen(method, context.time_remaining(), metadata, request))
            attempt = sum(1 for call in self.calls if call.method == method)
        mode = metadata.get(MODE, "ok")
        if mode.startswith("unavailable-"):
            if attempt <= int(mode.removeprefix("unavailable-")):
                context.abort_with_status(
                    _rich_status(grpc.StatusCode.UNAVAILABLE, "loading", "NOT_READY")
                )
        elif mode == "invalid":
            context.abort_with_status(
                _rich_status(grpc.StatusCode.INVALID_ARGUMENT, "bad page_size", "INVALID_ARGUMENT")
            )
        elif mode.startswith("sleep-"):
            time.sleep(float(mode.removeprefix("sleep-")))
        elif mode == "hang":
            while context.is_active():
                time.sleep(0.005)

    def of(self, method: str) -> list[Seen]:
        """Return the calls of one method (its short name, for example ``"Recommend"``)."""
        return [call for call in self.calls if call.method == method]


class Blending(blending_grpc.BlendingServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def Recommend(
        self, request: blending_pb.RecommendRequest, context: grpc.ServicerContext
    ) -> blending_pb.RecommendResponse:
        self.recorder.handle("Recommend", request, context)
        return blending_pb.RecommendResponse(
            items=[blending_pb.RecommendedItem(item_id="a", score=1.0)],
            request_id=request.request_id or "assigned",
        )

    def BlendCandidates(
        self, request: blending_pb.BlendCandidatesRequest, context: grpc.ServicerContext
    ) -> blending_pb.BlendCandidatesResponse:
        self.recorder.handle("BlendCandidates", request, context)
        return blending_pb.BlendCandidatesResponse(
            items=[blending_pb.RecommendedItem(item_id=c.item_id) for c in request.candidates]
        )


class Retrieval(retrieval_grpc.RetrievalServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def RetrieveCandidates(
        self, request: retrieval_pb.RetrieveCandidatesRequest, context: grpc.ServicerContext
    ) -> retrieval_pb.RetrieveCandidatesResponse:
        self.recorder.handle("RetrieveCandidates", request, context)
        return retrieval_pb.RetrieveCandidatesResponse(
            candidates=[candidate_pb2.Candidate(item_id=i) for i in ITEM_IDS], release_id="r1"
        )


class Ranking(ranking_grpc.RankingServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def RankCandidates(
        self, request: ranking_pb.RankCandidatesRequest, context: grpc.ServicerContext
    ) -> ranking_pb.RankCandidatesResponse:
        self.recorder.handle("RankCandidates", request, context)
        return ranking_pb.RankCandidatesResponse(
            candidates=[
                candidate_pb2.ScoredCandidate(item_id=item_id, score=-n)
                for n, item_id in enumerate(request.item_ids)
            ],
            release_id="r1",
        )


def _page(ids: tuple[str, ...], page_size: int, token: str) -> tuple[tuple[str, ...], str]:
    start = int(token or "0")
    end = start + (page_size or 100)
    return ids[start:end], (str(end) if end < len(ids) else "")


class Catalog(catalog_grpc.CatalogServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def UpsertItems(
        self, request: catalog_pb.UpsertItemsRequest, context: grpc.ServicerContext
    ) -> catalog_pb.UpsertItemsResponse:
        self.recorder.handle("UpsertItems", request, context)
        return catalog_pb.UpsertItemsResponse(created_count=len(request.items))

    def UpsertUsers(
        self, request: catalog_pb.UpsertUsersRequest, context: grpc.ServicerContext
    ) -> catalog_pb.UpsertUsersResponse:
        self.recorder.handle("UpsertUsers", request, context)
        return catalog_pb.UpsertUsersResponse(created_count=len(request.users))

    def GetItems(
        self, request: catalog_pb.GetItemsRequest, context: grpc.ServicerContext
    ) -> catalog_pb.GetItemsResponse:
        self.recorder.handle("GetItems", request, context)
        return catalog_pb.GetItemsResponse(
            items=[catalog_pb.Item(item_id=i) for i in request.item_ids if i in ITEM_IDS],
            missing_item_ids=[i for i in request.item_ids if i not in ITEM_IDS],
        )

    def ListItems(
        self, request: catalog_pb.ListItemsRequest, context: grpc.ServicerContext
    ) -> catalog_pb.ListItemsResponse:
        self.recorder.handle("ListItems", request, context)
        ids, token = _page(ITEM_IDS, request.page_size, request.page_token)
        return catalog_pb.ListItemsResponse(
            items=[catalog_pb.Item(item_id=i) for i in ids], next_page_token=token
        )

    def ListUsers(
        self, request: catalog_pb.ListUsersRequest, context: grpc.ServicerContext
    ) -> catalog_pb.ListUsersResponse:
        self.recorder.handle("ListUsers", request, context)
        ids, token = _page(USER_IDS, request.page_size, request.page_token)
        return catalog_pb.ListUsersResponse(
            users=[catalog_pb.User(user_id=i) for i in ids], next_page_token=token
        )

    def LogEvents(
        self, request: catalog_pb.LogEventsRequest, context: grpc.ServicerContext
    ) -> catalog_pb.LogEventsResponse:
        self.recorder.handle("LogEvents", request, context)
        return catalog_pb.LogEventsResponse(stored_count=len(request.events))


@dataclass(frozen=True)
class Server:
    """A running test server: where to reach it and what it saw."""

    target: str
    recorder: Recorder


@pytest.fixture
def server() -> Iterator[Server]:
    """Serve the four test servicers on a free local port."""
    recorder = Recorder()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    blending_grpc.add_BlendingServiceServicer_to_server(Blending(recorder), grpc_server)
    retrieval_grpc.add_RetrievalServiceServicer_to_server(Retrieval(recorder), grpc_server)
    ranking_grpc.add_RankingServiceServicer_to_server(Ranking(recorder), grpc_server)
    catalog_grpc.add_CatalogServiceServicer_to_server(Catalog(recorder), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        yield Server(f"127.0.0.1:{port}", recorder)
    finally:
        grpc_server.stop(grace=None).wait()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _path(service: str, method: str) -> str:
    return f"/{service}/{method}"


BLENDING = "cascade.blending.v1.BlendingService"
RETRIEVAL = "cascade.retrieval.v1.RetrievalService"
RANKING = "cascade.ranking.v1.RankingService"
CATALOG = "cascade.catalog.v1.CatalogService"
RANK_REQUEST = ranking_pb.RankCandidatesRequest(
    context=context_pb2.RequestContext(user_id="u1"), item_ids=["a", "b"]
)

# (method, service, call on a blocking client set). Covers every RPC of every service.
SyncCall = Callable[[dict[str, Any]], Any]
SYNC_CALLS: list[tuple[str, str, SyncCall]] = [
    (
        "Recommend",
        BLENDING,
        lambda c: c["blending"].recommend(blending_pb.RecommendRequest(user_id="u1")),
    ),
    (
        "BlendCandidates",
        BLENDING,
        lambda c: c["blending"].blend_candidates(blending_pb.BlendCandidatesRequest()),
    ),
    (
        "RetrieveCandidates",
        RETRIEVAL,
        lambda c: c["retrieval"].retrieve_candidates(retrieval_pb.RetrieveCandidatesRequest()),
    ),
    (
        "RankCandidates",
        RANKING,
        lambda c: c["ranking"].rank_candidates(RANK_REQUEST),
    ),
    (
        "UpsertItems",
        CATALOG,
        lambda c: c["catalog"].upsert_items(catalog_pb.UpsertItemsRequest()),
    ),
    (
        "UpsertUsers",
        CATALOG,
        lambda c: c["catalog"].upsert_users(catalog_pb.UpsertUsersRequest()),
    ),
    (
        "GetItems",
        CATALOG,
        lambda c: c["catalog"].get_items(catalog_pb.GetItemsRequest(item_ids=["a"])),
    ),
    (
        "ListItems",
        CATALOG,
        lambda c: c["catalog"].list_items(catalog_pb.ListItemsRequest()),
    ),
    (
        "ListUsers",
        CATALOG,
        lambda c: c["catalog"].list_users(catalog_pb.ListUsersRequest()),
    ),
    (
        "LogEvents",
        CATALOG,
        lambda c: c["catalog"].log_events(catalog_pb.LogEventsRequest()),
    ),
]


def _assert_deadline(seen: Seen, expected: float) -> None:
    assert expected - SLACK < seen.time_remaining < expected + 0.1


def test_every_blocking_call_carries_the_default_deadline(server: Server) -> None:
    with (
        BlendingClient(server.target) as blending,
        RetrievalClient(server.target) as retrieval,
        RankingClient(server.target) as ranking,
        CatalogClient(server.target) as catalog,
    ):
        clients = {
            "blending": blending,
            "retrieval": retrieval,
            "ranking": ranking,
            "catalog": catalog,
        }
        for method, service, call in SYNC_CALLS:
            call(clients)
            [seen] = server.recorder.of(method)
            _assert_deadline(seen, default_timeout(_path(service, method)))
    assert default_timeout("/cascade.blending.v1.BlendingService/Recommend") == 1.0


def test_every_async_call_carries_the_default_deadline(server: Server) -> None:
    async def main() -> None:
        async with (
            AsyncBlendingClient(server.target) as blending,
            AsyncRetrievalClient(server.target) as retrieval,
            AsyncRankingClient(server.target) as ranking,
            AsyncCatalogClient(server.target) as catalog,
        ):
            calls: list[tuple[str, str, Callable[[], Awaitable[Any]]]] = [
                (
                    "Recommend",
                    BLENDING,
                    lambda: blending.recommend(blending_pb.RecommendRequest()),
                ),
                (
                    "BlendCandidates",
                    BLENDING,
                    lambda: blending.blend_candidates(blending_pb.BlendCandidatesRequest()),
                ),
                (
                    "RetrieveCandidates",
                    RETRIEVAL,
                    lambda: retrieval.retrieve_candidates(retrieval_pb.RetrieveCandidatesRequest()),
                ),
                ("RankCandidates", RANKING, lambda: ranking.rank_candidates(RANK_REQUEST)),
                (
                    "UpsertItems",
                    CATALOG,
                    lambda: catalog.upsert_items(catalog_pb.UpsertItemsRequest()),
                ),
                (
                    "UpsertUsers",
                    CATALOG,
                    lambda: catalog.upsert_users(catalog_pb.UpsertUsersRequest()),
                ),
                ("GetItems", CATALOG, lambda: catalog.get_items(catalog_pb.GetItemsRequest())),
                ("ListItems", CATALOG, lambda: catalog.list_items(catalog_pb.ListItemsRequest())),
                ("ListUsers", CATALOG, lambda: catalog.list_users(catalog_pb.ListUsersRequest())),
                ("LogEvents", CATALOG, lambda: catalog.log_events(catalog_pb.LogEventsRequest())),
            ]
            for method, service, call in calls:
                await call()
                [seen] = server.recorder.of(method)
                _assert_deadline(seen, default_timeout(_path(service, method)))

    asyncio.run(main())


def test_explicit_timeout_replaces_the_default_in_both_directions(server: Server) -> None:
    with BlendingClient(server.target) as client:
        client.recommend(blending_pb.RecommendRequest(), timeout=0.2)
        client.recommend(blending_pb.RecommendRequest(), timeout=3.0)
    shorter, longer = server.recorder.of("Recommend")
    _assert_deadline(shorter, 0.2)
    _assert_deadline(longer, 3.0)


def test_explicit_timeout_longer_than_the_default_is_not_cut_short(server: Server) -> None:
    # BlendCandidates defaults to 0.5 s; the server takes 0.7 s. With timeouts in the
    # channel's service config gRPC would end the call at 0.5 s (or earlier).
    with BlendingClient(server.target) as client:
        response = client.blend_candidates(
            blending_pb.BlendCandidatesRequest(
                candidates=[candidate_pb2.ScoredCandidate(item_id="a")]
            ),
            timeout=2.0,
            metadata=[(MODE, "sleep-0.7")],
        )
    assert [item.item_id for item in response.items] == ["a"]


def test_async_explicit_timeout_and_metadata_reach_the_server(server: Server) -> None:
    async def main() -> retrieval_pb.RetrieveCandidatesResponse:
        async with AsyncRetrievalClient(server.target) as client:
            return await client.retrieve_candidates(
                retrieval_pb.RetrieveCandidatesRequest(seed_item_ids=["a"]),
                timeout=0.3,
                metadata=[("x-request-id", "req-7")],
            )

    response = asyncio.run(main())
    assert response.release_id == "r1"
    [seen] = server.recorder.of("RetrieveCandidates")
    _assert_deadline(seen, 0.3)
    assert seen.metadata["x-request-id"] == "req-7"
    assert list(seen.request.seed_item_ids) == ["a"]


def test_unavailable_is_retried_until_it_succeeds(server: Server) -> None:
    with RankingClient(server.target) as client:
        response = client.rank_candidates(RANK_REQUEST, metadata=[(MODE, "unavailable-2")])
    assert [c.item_id for c in response.candidates] == ["a", "b"]
    assert len(server.recorder.of("RankCandidates")) == 3


def test_async_unavailable_is_retried_until_it_succeeds(server: Server) -> None:
    async def main() -> catalog_pb.LogEventsResponse:
        async with AsyncCatalogClient(server.target) as client:
            request = catalog_pb.LogEventsRequest(events=[catalog_pb.Event(event_id="e1")])
            return await client.log_events(request, metadata=[(MODE, "unavailable-2")])

    assert asyncio.run(main()).stored_count == 1
    assert len(server.recorder.of("LogEvents")) == 3


def test_unavailable_gives_up_after_three_attempts(server: Server) -> None:
    with RankingClient(server.target) as client, pytest.raises(UnavailableError) as caught:
        client.rank_candidates(RANK_REQUEST, metadata=[(MODE, "unavailable-5")])
    assert caught.value.reason == "NOT_READY"
    assert len(server.recorder.of("RankCandidates")) == 3


def test_invalid_argument_is_not_retried(server: Server) -> None:
    with CatalogClient(server.target) as client, pytest.raises(InvalidArgumentError) as caught:
        client.list_items(catalog_pb.ListItemsRequest(), metadata=[(MODE, "invalid")])
    assert caught.value.field_violations[0].field == "page_size"
    assert len(server.recorder.of("ListItems")) == 1


def test_closed_port_fails_fast_with_unavailable() -> None:
    target = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with RankingClient(target) as client, pytest.raises(UnavailableError) as caught:
        client.rank_candidates(RANK_REQUEST, timeout=5.0)
    assert time.monotonic() - started < 2.0
    assert caught.value.reason == ""
    assert isinstance(caught.value.__cause__, grpc.RpcError)


def test_async_closed_port_fails_fast_with_unavailable() -> None:
    async def main() -> None:
        async with AsyncRankingClient(f"127.0.0.1:{_closed_port()}") as client:
            with pytest.raises(UnavailableError):
                await client.rank_candidates(RANK_REQUEST, timeout=5.0)

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 2.0


def test_a_slow_server_gives_deadline_exceeded(server: Server) -> None:
    with RetrievalClient(server.target) as client, pytest.raises(DeadlineExceededError) as caught:
        client.retrieve_candidates(
            retrieval_pb.RetrieveCandidatesRequest(), timeout=0.05, metadata=[(MODE, "hang")]
        )
    assert caught.value.reason == ""
    assert len(server.recorder.of("RetrieveCandidates")) == 1


def test_async_slow_server_gives_deadline_exceeded(server: Server) -> None:
    async def main() -> None:
        async with AsyncRankingClient(server.target) as client:
            with pytest.raises(DeadlineExceededError):
                await client.rank_candidates(RANK_REQUEST, timeout=0.05, metadata=[(MODE, "hang")])

    asyncio.run(main())


def test_iter_items_follows_page_tokens(server: Server) -> None:
    request = catalog_pb.ListItemsRequest(page_size=2, category="books")
    with CatalogClient(server.target) as client:
        items = [item.item_id for item in client.iter_items(request)]
    assert items == list(ITEM_IDS)
    pages = server.recorder.of("ListItems")
    assert [call.request.page_token for call in pages] == ["", "2", "4"]
    assert {call.request.category for call in pages} == {"books"}
    assert request.page_token == ""


def test_iter_users_starts_at_the_given_page_token(server: Server) -> None:
    with CatalogClient(server.target) as client:
        users = list(client.iter_users(catalog_pb.ListUsersRequest(page_size=1, page_token="1")))
    assert [user.user_id for user in users] == ["u2", "u3"]


def test_async_iter_items_and_users_follow_page_tokens(server: Server) -> None:
    async def main() -> tuple[list[str], list[str]]:
        async with AsyncCatalogClient(server.target) as client:
            items = [
                item.item_id
                async for item in client.iter_items(catalog_pb.ListItemsRequest(page_size=2))
            ]
            users = [
                user.user_id
                async for user in client.iter_users(catalog_pb.ListUsersRequest(page_size=2))
            ]
            return items, users

    items, users = asyncio.run(main())
    assert items == list(ITEM_IDS)
    assert users == list(USER_IDS)
    assert len(server.recorder.of("ListItems")) == 3
    assert len(server.recorder.of("ListUsers")) == 2


def test_a_borrowed_channel_stays_open_and_an_owned_one_is_closed(server: Server) -> None:
    channel = create_channel(server.target)
    try:
        with RankingClient(channel=channel) as borrowed:
            borrowed.rank_candidates(RANK_REQUEST)
        with RankingClient(channel=channel) as again:
            again.rank_candidates(RANK_REQUEST)
    finally:
        channel.close()
    owned = RankingClient(server.target)
    owned.rank_candidates(RANK_REQUEST)
    owned.close()
    with pytest.raises(ValueError, match="closed channel"):
        owned.rank_candidates(RANK_REQUEST)


def test_async_client_on_a_borrowed_channel(server: Server) -> None:
    async def main() -> None:
        async with grpc.aio.insecure_channel(server.target) as channel:
            async with AsyncRankingClient(channel=channel) as client:
                await client.rank_candidates(RANK_REQUEST)
            # The client did not close the channel it borrowed.
            await AsyncRankingClient(channel=channel).rank_candidates(RANK_REQUEST)

    asyncio.run(main())
    seen = server.recorder.of("RankCandidates")
    assert len(seen) == 2
    _assert_deadline(seen[0], 0.5)


def test_clients_need_exactly_one_of_target_and_channel(server: Server) -> None:
    with pytest.raises(ValueError, match="target or a channel"):
        RankingClient()
    channel = create_channel(server.target)
    try:
        with pytest.raises(ValueError, match="not both"):
            RankingClient(server.target, channel=channel)
        with pytest.raises(ValueError, match="creates its channel"):
            RankingClient(channel=channel, options=[("grpc.primary_user_agent", "x")])
    finally:
        channel.close()
