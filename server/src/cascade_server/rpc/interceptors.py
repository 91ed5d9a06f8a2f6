"""The one server interceptor: bearer tokens, load shedding, request ids, access logs,
and error → status mapping.

With a tokens file, a call without a known bearer token is UNAUTHENTICATED and one whose
token lacks the method's scope PERMISSION_DENIED, before any work; log lines name the
token (never its value).

Past ``max_concurrent_calls`` calls in flight, a server refuses new calls at once with
RESOURCE_EXHAUSTED (reason ``OVERLOADED``) instead of queueing them until their
deadlines pass: overload costs the callers a fast error (the front door falls back)
rather than everyone's latency. Health checks and reflection are never refused nor
asked for a token.

Every log line of a call carries its request id and, when the front door sent them,
its experiment variants (``x-cascade-experiments``).

Servicers raise domain errors (``cascade_server.errors``); this interceptor turns
them into rich statuses. Anything else is a bug: it is logged with its stack trace
and the client gets INTERNAL with the request id and no internals.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import grpc
from grpc import aio

from cascade_server.errors import (
    CascadeError,
    FieldViolation,
    InvalidArgumentError,
    OverloadedError,
)
from cascade_server.logs import bind_request, get_logger
from cascade_server.metrics import CALLS_IN_FLIGHT, RPC_CALLS, RPC_SECONDS
from cascade_server.rpc.status import EXPERIMENTS_KEY, REQUEST_ID_KEY, to_grpc_status
from cascade_server.security import TokenStore

_request_id: ContextVar[str] = ContextVar("request_id", default="")
_log = get_logger("cascade.access")

Handler = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class ErrorInterceptor(aio.ServerInterceptor):
    """Wraps every unary-unary handler; streaming handlers (health, reflection) pass through."""

    def __init__(self, max_concurrent_calls: int = 0, tokens: TokenStore | None = None) -> None:
        self._gate = _Gate(max_concurrent_calls)
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        """Return the handler wrapped with request-id binding and error mapping."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        metadata = dict(handler_call_details.invocation_metadata or ())
        behaviour = cast(Handler, handler.unary_unary)
        exempt = method.startswith(_EXEMPT)
        wrapped = _wrap(
            behaviour,
            method,
            metadata.get(REQUEST_ID_KEY),
            metadata.get(EXPERIMENTS_KEY),
            None if exempt else self._gate,
            None if exempt or self._tokens is None else (self._tokens, metadata.get(_AUTH_KEY)),
        )
        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


@dataclass(frozen=True)
class _Undecodable:
    """What a request that is not a valid message of its type parses to: the handler
    answers INVALID_ARGUMENT (gRPC itself would answer UNKNOWN)."""

    reason: str


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:
            return _Undecodable(str(error))

    return parse


_EXEMPT = ("/grpc.health.", "/grpc.reflection.")
"""Never refused and never asked for a token: probes and debugging tools must work."""
_AUTH_KEY = "authorization"


class _Gate:
    """Counts the calls in flight (on the server's one event loop) against a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def enter(self) -> None:
        """Admit a call, or raise OverloadedError at the limit (0: no limit)."""
        if self.limit and self.in_flight >= self.limit:
            raise OverloadedError(self.limit)
        self.in_flight += 1
        CALLS_IN_FLIGHT.inc()

    def leave(self) -> None:
        """A call admitted by ``enter`` has finished."""
        self.in_flight -= 1
        CALLS_IN_FLIGHT.dec()


def _wrap(
    behaviour: Handler,
    method: str,
    given_request_id: object,
    experiments: object,
    gate: _Gate | None,
    auth: tuple[TokenStore, object] | None,
) -> Handler:
    async def handle(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        request_id = (
            given_request_id
            if isinstance(given_request_id, str) and 0 < len(given_request_id) <= 64
            else uuid.uuid4().hex
        )
        _request_id.set(request_id)
        bind_request(request_id=request_id, method=method)
        if isinstance(experiments, str) and experiments:
            bind_request(experiments=experiments[:1024])
        started = time.perf_counter()
        admitted = False
        code = "OK"
        try:
            if auth is not None:
                tokens, authorization = auth
                client = tokens.authorize(
                    method, authorization if isinstance(authorization, str) else None
                )
                bind_request(client=client)
            if gate is not None:
                gate.enter()
                admitted = True
            if isinstance(request, _Undecodable):
                raise InvalidArgumentError(
                    [FieldViolation("request", f"not a valid request message: {request.reason}")],
                    "the request is not a valid message of the method's request type; "
                    "send the message the method's .proto names",
                )
            response = await behaviour(request, context)
        except CascadeError as error:
            code = error.status
            # Refusals come in floods when they come: not a warning line each.
            log = _log.debug if isinstance(error, OverloadedError) else _log.warning
            log(
                "request failed",
                code=error.status,
                reason=error.reason,
                error=error.message,
                duration_ms=_ms(started),
            )
            status = to_grpc_status(error, request_id=request_id)
            await context.abort_with_status(status)
        except aio.AbortError:
            code = _code_name(context.code())
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"  # the caller gave up or its deadline passed
            raise
        except Exception:
            code = "INTERNAL"
            _log.exception("unexpected error", duration_ms=_ms(started))
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error (request id {request_id}); the server logs have the details",
            )
        finally:
            if admitted and gate is not None:
                gate.leave()
            RPC_SECONDS.labels(method).observe(time.perf_counter() - started)
            RPC_CALLS.labels(method, code).inc()
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        _log.debug("request served", code="OK", duration_ms=_ms(started))
        return response

    return handle


def _code_name(code: object) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def current_request_id() -> str:
    """The id of the call being served: from ``x-request-id`` metadata, or assigned."""
    return _request_id.get()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
