"""Domain errors. Each declares the gRPC status and the ``ErrorInfo.reason`` it maps to.

Domain code raises these; the one error interceptor in ``rpc`` turns them into a
``google.rpc.Status`` with exactly one ``ErrorInfo`` (and a ``BadRequest`` for field
violations). Nothing here imports grpc: the status is named by its canonical name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ERROR_DOMAIN = "cascade.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``events[3].kind``) and what is wrong."""

    field: str
    description: str


class CascadeError(Exception):
    """Root of every error Cascade raises on purpose."""

    status = "INTERNAL"
    reason = "INTERNAL"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgumentError(CascadeError):
    """The request is malformed; it is bad whatever the state of the system."""

    status = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation], message: str | None = None) -> None:
        if not violations:
            raise ValueError("an InvalidArgumentError needs at least one violation")
        self.violations = tuple(violations)
        first = self.violations[0]
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(
            message or f"invalid {first.field}: {first.description}{more}",
            metadata={"field": first.field, "violationCount": str(len(self.violations))},
        )


class NotFoundError(CascadeError):
    """A thing the caller named explicitly does not exist."""

    status = "NOT_FOUND"
    reason = "NOT_FOUND"

    def __init__(self, kind: str, identifier: str) -> None:
        super().__init__(
            f"{kind} {identifier!r} does not exist",
            metadata={"kind": kind, "id": identifier},
        )


class NotReadyError(CascadeError):
    """The server is up but cannot answer yet (data still loading) or any more."""

    status = "UNAVAILABLE"
    reason = "NOT_READY"


class StorageUnavailableError(CascadeError):
    """The database could not be reached; the call may be retried."""

    status = "UNAVAILABLE"
    reason = "STORAGE_UNAVAILABLE"


class OverloadedError(CascadeError):
    """The server is at its limit of calls in flight and refused this one at once (load
    shedding); retry after a short backoff, or lower the call rate."""

    status = "RESOURCE_EXHAUSTED"
    reason = "OVERLOADED"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the server is at its limit of {limit} calls in flight and refused this one; "
            "retry after a short backoff (CASCADE_MAX_CONCURRENT_CALLS sets the limit)",
            metadata={"limit": str(limit)},
        )


class UnauthenticatedError(CascadeError):
    """The call carried no bearer token, or one the server does not accept."""

    status = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDeniedError(CascadeError):
    """The caller's token lacks the scope the method needs."""

    status = "PERMISSION_DENIED"
    reason = "MISSING_SCOPE"

    def __init__(self, client: str, scope: str, method: str) -> None:
        super().__init__(
            f"token {client!r} lacks the {scope!r} scope that {method} needs; "
            "ask for a token with it (cascade auth add-token --scopes ...)",
            metadata={"scope": scope, "client": client},
        )


class DeadlineError(CascadeError):
    """The request's deadline passed before the work could finish."""

    status = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"


class CancelledWorkError(CascadeError):
    """The caller cancelled the request (or its deadline passed) while work was under way;
    the work stopped at its next check."""

    status = "CANCELLED"
    reason = "CANCELLED"


class ConfigurationError(CascadeError):
    """A setting or state on disk prevents Cascade from starting; the message says what to do."""

    status = "FAILED_PRECONDITION"
    reason = "MISCONFIGURED"
