"""Error translation: gRPC errors, with and without rich status, to the CascadeError tree.

A real in-process RankingService fails as ``context.user_id`` of the request asks,
the way the Cascade servers do (``abort_with_status`` with ErrorInfo and BadRequest
details), and both the blocking and the asyncio client must raise the same thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status  # type: ignore[import-untyped, unused-ignore]

from cascade.common.v1 import context_pb2
from cascade.ranking.v1 import (
    ranking_service_pb2 as ranking_pb,
    ranking_service_pb2_grpc as ranking_grpc,
)
from cascade_client import (
    AsyncRankingClient,
    CallCancelledError,
    CascadeError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RankingClient,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnexpectedStatusError,
    from_rpc_error,
)
from cascade_client.errors import ERROR_DOMAIN, error_class

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _cascade_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: dict[str, str],
    violations: tuple[tuple[str, str], ...] = (),
    request_id: str | None = None,
) -> grpc.Status:
    """Build the status a Cascade server aborts with: ErrorInfo, plus BadRequest if any."""
    details = [
        _packed(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    ]
    if violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violations
            ]
        )
        details.append(_packed(bad_request))
    proto = status_pb2.Status(code=code.value[0], message=message, details=details)
    status: grpc.Status = rpc_status.to_status(proto)
    if request_id is None:
        return status
    trailers = (*status.trailing_metadata, ("x-request-id", request_id))
    return _Status(status.code, status.details, trailers)


INVALID = _cascade_status(
    grpc.StatusCode.INVALID_ARGUMENT,
    "invalid item_ids[1]: must not be empty (and 1 more)",
    "INVALID_ARGUMENT",
    {"field": "item_ids[1]", "violationCount": "2"},
    (("item_ids[1]", "must not be empty"), ("max_results", "must be at most 2000")),
    request_id="req-42",
)

# user_id -> the status the server aborts with.
STATUSES: dict[str, grpc.Status] = {
    "invalid": INVALID,
    "not-found": _cascade_status(
        grpc.StatusCode.NOT_FOUND,
        "item 'x' does not exist",
        "NOT_FOUND",
        {"kind": "item", "id": "x"},
    ),
    "not-ready": _cascade_status(
        grpc.StatusCode.UNAVAILABLE, "release is loading", "NOT_READY", {}
    ),
    "storage": _cascade_status(
        grpc.StatusCode.UNAVAILABLE, "database down", "STORAGE_UNAVAILABLE", {}
    ),
    "deadline": _cascade_status(
        grpc.StatusCode.DEADLINE_EXCEEDED, "out of time", "DEADLINE_EXCEEDED", {}
    ),
    "misconfigured": _cascade_status(
        grpc.StatusCode.FAILED_PRECONDITION, "no release", "MISCONFIGURED", {"setting": "x"}
    ),
    "internal": _cascade_status(grpc.StatusCode.INTERNAL, "boom", "INTERNAL", {}),
    # A status proto whose code disagrees with the call's: the details are not trusted.
    "mismatch": _Status(
        grpc.StatusCode.INTERNAL,
        "boom",
        (
            (
                STATUS_DETAILS_KEY,
                status_pb2.Status(
                    code=grpc.StatusCode.NOT_FOUND.value[0],
                    message="boom",
                    details=[_packed(error_details_pb2.ErrorInfo(reason="NOT_FOUND"))],
                ).SerializeToString(),
            ),
        ),
    ),
    "garbage": _Status(grpc.StatusCode.INTERNAL, "boom", ((STATUS_DETAILS_KEY, b"\xff\xff"),)),
}

# user_id -> a plain status code, as gRPC itself or a proxy would send it (no details).
PLAIN: dict[str, grpc.StatusCode] = {
    "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "denied": grpc.StatusCode.PERMISSION_DENIED,
    "cancelled": grpc.StatusCode.CANCELLED,
    "unimplemented": grpc.StatusCode.UNIMPLEMENTED,
    "unknown": grpc.StatusCode.UNKNOWN,
}


class FailingRanking(ranking_grpc.RankingServiceServicer):
    def RankCandidates(
        self, request: ranking_pb.RankCandidatesRequest, context: grpc.ServicerContext
    ) -> ranking_pb.RankCandidatesResponse:
        user_id = request.context.user_id
        if user_id in STATUSES:
            context.abort_with_status(STATUSES[user_id])
        if user_id in PLAIN:
            context.abort(PLAIN[user_id], f"plain {user_id}")
        return ranking_pb.RankCandidatesResponse()


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    """Serve FailingRanking on a free local port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ranking_grpc.add_RankingServiceServicer_to_server(FailingRanking(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


def _request(user_id: str) -> ranking_pb.RankCandidatesRequest:
    return ranking_pb.RankCandidatesRequest(
        context=context_pb2.RequestContext(user_id=user_id), item_ids=["a"]
    )


def _sync_error(target: str, user_id: str) -> CascadeError:
    with RankingClient(target) as client, pytest.raises(CascadeError) as caught:
        client.rank_candidates(_request(user_id))
    return caught.value


def _async_error(target: str, user_id: str) -> CascadeError:
    async def main() -> CascadeError:
        async with AsyncRankingClient(target) as client:
            with pytest.raises(CascadeError) as caught:
                await client.rank_candidates(_request(user_id))
            return caught.value

    return asyncio.run(main())


def test_invalid_argument_carries_error_info_and_field_violations(target: str) -> None:
    for error in (_sync_error(target, "invalid"), _async_error(target, "invalid")):
        assert type(error) is InvalidArgumentError
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.message == "invalid item_ids[1]: must not be empty (and 1 more)"
        assert error.reason == "INVALID_ARGUMENT"
        assert error.domain == "cascade.dev"
        assert error.metadata == {"field": "item_ids[1]", "violationCount": "2"}
        assert error.field_violations == (
            FieldViolation("item_ids[1]", "must not be empty"),
            FieldViolation("max_results", "must be at most 2000"),
        )
        assert error.request_id == "req-42"
        assert isinstance(error.__cause__, grpc.RpcError)
        assert str(error) == "INVALID_ARGUMENT: invalid item_ids[1]: must not be empty (and 1 more)"


@pytest.mark.parametrize(
    ("user_id", "cls", "reason", "metadata"),
    [
        ("not-found", NotFoundError, "NOT_FOUND", {"kind": "item", "id": "x"}),
        ("not-ready", UnavailableError, "NOT_READY", {}),
        ("storage", UnavailableError, "STORAGE_UNAVAILABLE", {}),
        ("deadline", DeadlineExceededError, "DEADLINE_EXCEEDED", {}),
        ("misconfigured", FailedPreconditionError, "MISCONFIGURED", {"setting": "x"}),
        ("internal", InternalError, "INTERNAL", {}),
    ],
)
@pytest.mark.parametrize("client", ["sync", "async"])
def test_cascade_statuses_map_to_their_class_with_reason(
    target: str,
    client: str,
    user_id: str,
    cls: type[CascadeError],
    reason: str,
    metadata: dict[str, str],
) -> None:
    error = (_sync_error if client == "sync" else _async_error)(target, user_id)
    assert type(error) is cls
    assert error.code == cls.code
    assert error.reason == reason
    assert error.domain == ERROR_DOMAIN
    assert error.metadata == metadata
    assert error.field_violations == ()
    assert error.request_id is None


@pytest.mark.parametrize(
    ("user_id", "cls"),
    [
        ("exhausted", ResourceExhaustedError),
        ("unauthenticated", UnauthenticatedError),
        ("denied", PermissionDeniedError),
        ("cancelled", CallCancelledError),
        ("unimplemented", UnexpectedStatusError),
        ("unknown", UnexpectedStatusError),
    ],
)
@pytest.mark.parametrize("client", ["sync", "async"])
def test_statuses_without_details_map_by_code(
    target: str, client: str, user_id: str, cls: type[CascadeError]
) -> None:
    error = (_sync_error if client == "sync" else _async_error)(target, user_id)
    assert type(error) is cls
    assert error.code == PLAIN[user_id]
    assert error.message == f"plain {user_id}"
    assert (error.reason, error.domain, error.metadata) == ("", "", {})
    assert str(error) == f"{PLAIN[user_id].name}: plain {user_id}"


@pytest.mark.parametrize("user_id", ["mismatch", "garbage"])
@pytest.mark.parametrize("client", ["sync", "async"])
def test_untrustworthy_details_are_ignored(target: str, client: str, user_id: str) -> None:
    error = (_sync_error if client == "sync" else _async_error)(target, user_id)
    assert type(error) is InternalError
    assert error.message == "boom"
    assert error.reason == ""


def test_the_cause_is_the_original_grpc_error(target: str) -> None:
    # Blocking errors are grpc.Call objects too (typed as object: the stubs' RpcError and
    # Call cannot be combined).
    sync_cause: object = _sync_error(target, "not-found").__cause__
    assert isinstance(sync_cause, grpc.Call)
    assert isinstance(_sync_error(target, "not-found").__cause__, grpc.RpcError)
    async_error = _async_error(target, "not-found")
    assert isinstance(async_error.__cause__, grpc.aio.AioRpcError)


def test_an_rpc_error_that_is_not_a_call_is_unexpected() -> None:
    error = from_rpc_error(grpc.RpcError("odd"))
    assert type(error) is UnexpectedStatusError
    assert error.code == grpc.StatusCode.UNKNOWN
    assert error.message == "odd"


def test_an_aio_error_is_parsed_from_its_trailing_metadata() -> None:
    status = INVALID
    aio_error = grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )
    error = from_rpc_error(aio_error)
    assert type(error) is InvalidArgumentError
    assert error.reason == "INVALID_ARGUMENT"
    assert len(error.field_violations) == 2
    assert error.request_id == "req-42"
    assert error.__cause__ is aio_error


def test_errors_can_be_built_directly_and_describe_themselves() -> None:
    error = UnavailableError("release is loading", reason="NOT_READY", metadata={"a": "b"})
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert str(error) == "UNAVAILABLE (NOT_READY): release is loading"
    assert repr(error) == (
        "UnavailableError(code=UNAVAILABLE, reason='NOT_READY', message='release is loading')"
    )
    assert isinstance(error, CascadeError)
    assert error_class(grpc.StatusCode.DATA_LOSS) is UnexpectedStatusError
    assert error_class(grpc.StatusCode.CANCELLED) is CallCancelledError
