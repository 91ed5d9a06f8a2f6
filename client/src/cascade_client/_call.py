"""The one way every client method calls gRPC: with a deadline, and typed errors.

Every call gets an explicit ``timeout=``: the caller's when given, else the method's
default from ``service_config.json``. A ``grpc.RpcError`` is re-raised as the
matching :class:`~cascade_client.errors.CascadeError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias, TypeVar

import grpc
import grpc.aio
from google.protobuf.descriptor import FileDescriptor

from cascade_client._channel import resolve_timeout
from cascade_client.errors import from_rpc_error

Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]
"""Call metadata: ``(key, value)`` pairs; keys are lowercase, ``-bin`` keys take bytes."""

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def method_path(file: FileDescriptor, service: str, method: str) -> str:
    """Return the gRPC path (``/package.Service/Method``) of a method of a generated service.

    Looking the method up in the generated descriptors makes a renamed service or
    RPC fail at import time instead of at call time.
    """
    descriptor = file.services_by_name[service]
    return f"/{descriptor.full_name}/{descriptor.methods_by_name[method].name}"


def call_unary(
    rpc: grpc.UnaryUnaryMultiCallable[_Request, _Response],
    method: str,
    request: _Request,
    *,
    timeout: float | None,
    metadata: Metadata,
) -> _Response:
    """Call a blocking unary RPC with an explicit timeout, raising CascadeError on failure."""
    try:
        return rpc(request, timeout=resolve_timeout(method, timeout), metadata=tuple(metadata))
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error


async def call_unary_async(
    rpc: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
    method: str,
    request: _Request,
    *,
    timeout: float | None,
    metadata: Metadata,
) -> _Response:
    """Call an asyncio unary RPC with an explicit timeout, raising CascadeError on failure."""
    try:
        return await rpc(request, timeout=resolve_timeout(method, timeout), metadata=metadata)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error
