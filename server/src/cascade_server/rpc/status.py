"""Domain errors → ``google.rpc.Status`` with exactly one ``ErrorInfo`` (and ``BadRequest``)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from cascade_server.errors import ERROR_DOMAIN, CascadeError, InvalidArgumentError

REQUEST_ID_KEY = "x-request-id"
EXPERIMENTS_KEY = "x-cascade-experiments"
"""Call metadata with the request's experiment variants, ``experiment/variant`` comma-separated."""
"""Metadata key carrying the request id, in both directions."""

MAX_FIELD_VIOLATIONS = 50
"""Violations sent per error; trailing metadata is small, and the first ones say enough."""


def to_grpc_status(error: CascadeError, *, request_id: str = "") -> grpc.Status:
    """The status a client receives for ``error``: code, message, ErrorInfo, field violations."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    if request_id:
        info.metadata["requestId"] = request_id
    details = [_pack(info)]
    if isinstance(error, InvalidArgumentError):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations[:MAX_FIELD_VIOLATIONS]
                    ]
                )
            )
        )
    status = rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.Code.Value(error.status), message=error.message, details=details
        )
    )
    trailers = (*status.trailing_metadata, (REQUEST_ID_KEY, request_id)) if request_id else ()
    return _Status(status.code, status.details, trailers or status.trailing_metadata)


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
