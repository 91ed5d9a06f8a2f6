"""Channels preconfigured for Cascade, and the per-method default timeouts.

``service_config.json`` (next to this module) is the single source of truth for call
timeouts and the retry policy. The retry policy and retry throttling are handed to
gRPC as the channel's service config. The ``timeout`` of each method is NOT handed
to gRPC: the clients in this package read it with :func:`default_timeout` and pass
it as the explicit ``timeout=`` of every call instead, for two reasons:

* gRPC uses the *smaller* of a call's own deadline and the service config timeout,
  so a caller could never give a call more time than the default; the clients
  promise that an explicit ``timeout=`` replaces the default.
* grpcio's core applies service config timeouts 1 to 2 seconds too early
  (https://github.com/grpc/grpc/issues/34547 and #40633), which makes a 1 s
  timeout fail every call at once.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, TypeAlias

import grpc
import grpc.aio

ChannelOption: TypeAlias = tuple[str, Any]
"""One gRPC channel argument: its name and its value."""

KEEPALIVE_TIME_MS = 30_000
"""How often the client pings an idle-looking connection that has calls in flight."""

KEEPALIVE_TIMEOUT_MS = 10_000
"""How long the client waits for a ping acknowledgement before closing the connection."""

MAX_RECEIVE_MESSAGE_LENGTH = 16 * 1024 * 1024
"""The largest response message the client accepts, in bytes (16 MiB)."""

_SERVICE_CONFIG_FILE = "service_config.json"


@cache
def _load_service_config() -> dict[str, Any]:
    text = resources.files("cascade_client").joinpath(_SERVICE_CONFIG_FILE).read_text("utf-8")
    config = json.loads(text)
    if not isinstance(config, dict):
        raise ValueError(f"{_SERVICE_CONFIG_FILE} must hold a JSON object")
    return config


def service_config() -> dict[str, Any]:
    """Return a copy of the service config in ``service_config.json``, timeouts included."""
    return copy.deepcopy(_load_service_config())


@cache
def _channel_service_config_json() -> str:
    config = service_config()
    for method_config in config.get("methodConfig", []):
        method_config.pop("timeout", None)
    return json.dumps(config, separators=(",", ":"))


def _parse_duration(value: str) -> float:
    """Parse a protobuf JSON duration such as ``"0.5s"`` into seconds."""
    if not value.endswith("s"):
        raise ValueError(f"not a protobuf JSON duration: {value!r}")
    seconds = float(value[:-1])
    if seconds <= 0:
        raise ValueError(f"a timeout must be positive: {value!r}")
    return seconds


@cache
def _timeouts() -> dict[str, float]:
    """Map ``/package.Service/Method`` (or ``/package.Service/`` for a whole service)
    to its timeout in seconds."""
    timeouts: dict[str, float] = {}
    for method_config in _load_service_config().get("methodConfig", []):
        if "timeout" not in method_config:
            continue
        seconds = _parse_duration(method_config["timeout"])
        for name in method_config["name"]:
            timeouts[f"/{name['service']}/{name.get('method', '')}"] = seconds
    return timeouts


def default_timeout(method: str) -> float:
    """Return the default timeout, in seconds, of a full method name.

    ``method`` is the gRPC path, for example
    ``"/cascade.blending.v1.BlendingService/Recommend"``. A method without an entry of
    its own uses its service's entry, when there is one. Raises ``KeyError`` when
    ``service_config.json`` has no timeout for the method.
    """
    timeouts = _timeouts()
    if method in timeouts:
        return timeouts[method]
    service = method.rsplit("/", 1)[0] + "/"
    if service in timeouts:
        return timeouts[service]
    raise KeyError(f"service_config.json has no timeout for {method!r}")


def resolve_timeout(method: str, timeout: float | None) -> float:
    """Return ``timeout`` when it is given, else the method's default timeout."""
    return default_timeout(method) if timeout is None else timeout


def channel_options(options: Sequence[ChannelOption] = ()) -> list[ChannelOption]:
    """Return Cascade's channel options, with ``options`` added (and winning on conflicts).

    The defaults enable retries with the retry policy of ``service_config.json``
    (without its timeouts, see the module docstring), ignore service configs from
    name resolution, set client keepalive (30 s, 10 s timeout) and accept responses
    of up to 16 MiB.
    """
    merged: dict[str, Any] = {
        "grpc.enable_retries": 1,
        "grpc.service_config": _channel_service_config_json(),
        "grpc.service_config_disable_resolution": 1,
        "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
        "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
        "grpc.max_receive_message_length": MAX_RECEIVE_MESSAGE_LENGTH,
    }
    merged.update(options)
    return list(merged.items())


def create_channel(
    target: str,
    *,
    secure: grpc.ChannelCredentials | None = None,
    options: Sequence[ChannelOption] = (),
    token: str | None = None,
) -> grpc.Channel:
    """Create a blocking channel to ``target`` with Cascade's channel options.

    The channel is a TLS channel when ``secure`` credentials are given and a
    plaintext one otherwise. ``options`` are extra channel arguments; they replace
    the defaults of the same name (see :func:`channel_options`). With ``token``,
    every call carries ``authorization: Bearer <token>`` (servers that check tokens
    need it).
    """
    merged = channel_options(options)
    if secure is None:
        channel = grpc.insecure_channel(target, options=merged)
    else:
        channel = grpc.secure_channel(target, secure, options=merged)
    if token is None:
        return channel
    return grpc.intercept_channel(channel, _BearerToken(token))


def create_aio_channel(
    target: str,
    *,
    secure: grpc.ChannelCredentials | None = None,
    options: Sequence[ChannelOption] = (),
    token: str | None = None,
) -> grpc.aio.Channel:
    """Create an asyncio channel to ``target`` with Cascade's channel options.

    Call it from inside the event loop that will use the channel. ``secure``,
    ``options`` and ``token`` work as in :func:`create_channel`.
    """
    merged = channel_options(options)
    interceptors = [_AsyncBearerToken(token)] if token is not None else None
    if secure is None:
        return grpc.aio.insecure_channel(target, options=merged, interceptors=interceptors)
    return grpc.aio.secure_channel(target, secure, options=merged, interceptors=interceptors)


def _with_token(metadata: Sequence[tuple[str, str | bytes]] | None, token: str) -> list[Any]:
    return [*(metadata or ()), ("authorization", f"Bearer {token}")]


class _BearerToken(grpc.UnaryUnaryClientInterceptor):
    """Adds the bearer token to every blocking call."""

    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(
            details._replace(metadata=_with_token(details.metadata, self._token)), request
        )


class _AsyncBearerToken(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the bearer token to every asyncio call."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(
            details._replace(metadata=_with_token(details.metadata, self._token)), request
        )
