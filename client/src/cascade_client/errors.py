"""Typed exceptions for failed Cascade calls.

Every client method turns a ``grpc.RpcError`` into a :class:`CascadeError` subclass
chosen by the status code, with the server's rich status unpacked: the
``google.rpc.ErrorInfo`` detail gives ``reason``, ``domain`` and ``metadata``, and
``google.rpc.BadRequest`` details give ``field_violations``. Errors that gRPC itself
raises (connection failures, expired deadlines, ...) carry no details, so their
``reason`` and ``domain`` are empty. The original gRPC error is the ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status  # type: ignore[import-untyped, unused-ignore]

ERROR_DOMAIN = "cascade.dev"
"""The ``ErrorInfo.domain`` of every error the Cascade servers return on purpose."""

REQUEST_ID_METADATA_KEY = "x-request-id"
"""The trailing metadata key that, when present, gives :attr:`CascadeError.request_id`."""

_STATUS_DETAILS_METADATA_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (for example ``events[3].kind``) and the problem."""

    field: str
    description: str


class CascadeError(Exception):
    """Root of every error the Cascade clients raise for a failed call.

    ``code`` is the gRPC status code and ``message`` the status message. ``reason``,
    ``domain`` and ``metadata`` come from the ``google.rpc.ErrorInfo`` detail and
    ``field_violations`` from ``google.rpc.BadRequest`` details; they are empty when
    the error has no such detail. ``request_id`` is the ``x-request-id`` trailing
    metadata value, or ``None``.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.request_id = request_id

    def __str__(self) -> str:
        """Return ``CODE: message``, with the reason when it differs from the code's name."""
        name = self.code.name
        if self.reason and self.reason != name:
            return f"{name} ({self.reason}): {self.message}"
        return f"{name}: {self.message}"

    def __repr__(self) -> str:
        """Return the class name, code, reason and message."""
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r})"
        )


class InvalidArgumentError(CascadeError):
    """The request is malformed (INVALID_ARGUMENT); see ``field_violations``. Do not retry."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(CascadeError):
    """A thing the request named explicitly does not exist (NOT_FOUND)."""

    code = grpc.StatusCode.NOT_FOUND


class UnavailableError(CascadeError):
    """The server could not be reached or cannot answer now (UNAVAILABLE).

    ``reason`` is ``NOT_READY`` or ``STORAGE_UNAVAILABLE`` when the server said so,
    and empty when gRPC could not reach the server. On channels made by
    ``create_channel``/``create_aio_channel`` (the clients' default) gRPC has already
    retried the call, up to three attempts in all, before this is raised.
    """

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(CascadeError):
    """The call's deadline passed before an answer arrived (DEADLINE_EXCEEDED)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhaustedError(CascadeError):
    """A quota or size limit was hit (RESOURCE_EXHAUSTED), for example a message too large."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(CascadeError):
    """The system is not in a state to serve the call (FAILED_PRECONDITION), e.g. MISCONFIGURED."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class UnauthenticatedError(CascadeError):
    """The call carried no valid credentials (UNAUTHENTICATED)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(CascadeError):
    """The caller may not make this call (PERMISSION_DENIED)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InternalError(CascadeError):
    """The server failed unexpectedly (INTERNAL)."""

    code = grpc.StatusCode.INTERNAL


class CallCancelledError(CascadeError):
    """The call was cancelled before it finished (CANCELLED)."""

    code = grpc.StatusCode.CANCELLED


class UnexpectedStatusError(CascadeError):
    """A status code with no class of its own: UNKNOWN, UNIMPLEMENTED, ABORTED, and so on."""

    code = grpc.StatusCode.UNKNOWN


_ERROR_CLASSES: dict[grpc.StatusCode, type[CascadeError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        UnavailableError,
        DeadlineExceededError,
        ResourceExhaustedError,
        FailedPreconditionError,
        UnauthenticatedError,
        PermissionDeniedError,
        InternalError,
        CallCancelledError,
    )
}


def error_class(code: grpc.StatusCode) -> type[CascadeError]:
    """Return the :class:`CascadeError` subclass raised for a status code."""
    return _ERROR_CLASSES.get(code, UnexpectedStatusError)


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]], key: str) -> str | bytes | None:
    for name, value in metadata:
        if name == key:
            return value
    return None


def _status_from_trailers(
    code: grpc.StatusCode, message: str, trailers: Iterable[tuple[str, str | bytes]]
) -> status_pb2.Status | None:
    """Parse ``grpc-status-details-bin`` like ``rpc_status.from_call`` does, for aio errors.

    Returns a ``google.rpc.Status``, or ``None`` when there is none or when its code or
    message disagree with the call's (``rpc_status.from_call`` rejects those too).
    """
    raw = _metadata_value(trailers, _STATUS_DETAILS_METADATA_KEY)
    if not isinstance(raw, bytes):
        return None
    status = status_pb2.Status.FromString(raw)
    if status.code != code.value[0] or status.message != message:
        return None
    return status


def _parse(
    error: grpc.RpcError,
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...], status_pb2.Status | None]:
    """Return the code, message, trailing metadata and rich status of a gRPC error."""
    if isinstance(error, grpc.aio.AioRpcError):
        # AioRpcError is not a grpc.Call, and rpc_status.aio.from_call wants a live
        # aio call object; the error already holds everything, so parse it here.
        code, message = error.code(), error.details() or ""
        trailers = tuple(error.trailing_metadata() or ())
        try:
            return code, message, trailers, _status_from_trailers(code, message, trailers)
        except DecodeError:
            return code, message, trailers, None
    # Blocking-API errors are also grpc.Call objects; the stubs declare RpcError and Call
    # with clashing signatures, so mypy needs to see the object as a plain object first.
    call: object = error
    if isinstance(call, grpc.Call):
        code, message = call.code(), call.details() or ""
        trailers = tuple(call.trailing_metadata() or ())
        try:
            return code, message, trailers, rpc_status.from_call(call)
        except (ValueError, DecodeError):
            return code, message, trailers, None
    return grpc.StatusCode.UNKNOWN, str(error), (), None


def from_rpc_error(error: grpc.RpcError) -> CascadeError:
    """Translate a gRPC error (blocking or asyncio) into the matching :class:`CascadeError`.

    The subclass follows the status code (:func:`error_class`). The first
    ``ErrorInfo`` detail fills ``reason``, ``domain`` and ``metadata``, and every
    ``BadRequest`` detail adds to ``field_violations``. ``error`` becomes the
    returned exception's ``__cause__``.
    """
    code, message, trailers, status = _parse(error)
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    seen_error_info = False
    for detail in status.details if status is not None else ():
        # Any.Unpack returns False, leaving the message empty, when the type differs.
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        if not seen_error_info and detail.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            seen_error_info = True
        elif detail.Unpack(bad_request):
            violations.extend(
                FieldViolation(field=v.field, description=v.description)
                for v in bad_request.field_violations
            )
    request_id = _metadata_value(trailers, REQUEST_ID_METADATA_KEY)
    if isinstance(request_id, bytes):
        request_id = request_id.decode("utf-8", errors="replace")
    exception = error_class(code)(
        message,
        code=code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        request_id=request_id,
    )
    exception.__cause__ = error
    exception.__suppress_context__ = True
    return exception
