"""Build and run one stage's gRPC server: servicer, health, reflection, background refresh.

``build_server`` is the one wiring path, used by ``cascade serve <stage>`` and by the
tests (which pass port 0). Health reports NOT_SERVING until the stage's data is
loaded, and again from the moment shutdown begins.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import sqlalchemy as sa
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from threadpoolctl import threadpool_limits

from cascade_server import heap
from cascade_server.errors import ConfigurationError
from cascade_server.logs import get_logger
from cascade_server.metrics import MetricsEndpoint
from cascade_server.rpc.executor import BlockingRunner
from cascade_server.rpc.interceptors import ErrorInterceptor
from cascade_server.rpc.reflection import enable_reflection
from cascade_server.security import TlsFiles, TokenStore, read_tls
from cascade_server.settings import ServiceName, Settings

_log = get_logger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
]


Background = Callable[[asyncio.Event, Callable[[], None]], Coroutine[Any, Any, None]]
"""A task that keeps a stage's data current until the event is set; it calls the
callback once its first load is done (the server is SERVING once every task did)."""


@dataclass
class Binding:
    """What a stage adds to a server: its servicer, its background loaders, its cleanup."""

    service_name: str
    register: Callable[[aio.Server], None]
    background: list[Background] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    warm: Callable[[], None] | None = None
    """Fills the stage's per-snapshot and per-release caches (blocking); run before the
    server reports SERVING, so the first request does not pay for them."""


class CascadeServer:
    """One stage's server. ``start`` binds the port; ``stop`` drains calls and cleans up."""

    def __init__(
        self,
        settings: Settings,
        binding: Binding,
        port: int,
        *,
        share_port: bool = False,
        metrics_port: int | None = None,
        runner: BlockingRunner,
    ) -> None:
        self.settings = settings
        self.binding = binding
        # The warm-up runs on the requests' runner: its thread is idle afterwards and
        # takes the first request, which then finds that thread's scratch state
        # (per-thread arrays, the scorer's thread-local state) already made.
        self._runner = runner
        # SO_REUSEPORT: several processes of one stage serve one port, and the kernel
        # spreads their callers' connections over them.
        self._share_port = share_port
        self._tls = read_tls(settings)
        self.health = health.aio.HealthServicer()
        self._requested_port = port
        self._metrics_port = metrics_port
        self.metrics: MetricsEndpoint | None = None
        self._server: aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self.port = 0

    @property
    def address(self) -> str:
        """``host:port`` of the bound server."""
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> int:
        """Register services, bind, start serving, and begin loading the stage's data."""
        address = f"{self.settings.host}:{self._requested_port}"
        try:
            # Probe first, so a taken port fails before any gRPC server exists: an
            # unstarted gRPC server left for the garbage collector is best avoided. (A
            # shared port is taken by design: its siblings bound it first.)
            if not self._share_port:
                ensure_free(self.settings.host, self._requested_port)
        except OSError as error:
            await self._release()
            raise _cannot_listen(address, error.strerror or str(error)) from error
        options = [*_SERVER_OPTIONS, ("grpc.so_reuseport", int(self._share_port))]
        tokens = (
            TokenStore.load(self.settings.auth_tokens_file)
            if self.settings.auth_tokens_file
            else None
        )
        server = aio.server(
            interceptors=[ErrorInterceptor(self.settings.max_concurrent_calls, tokens)],
            options=options,
        )
        self._server = server
        self.binding.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [self.binding.service_name, health.SERVICE_NAME]
        if self.settings.reflection:
            enable_reflection(names, server)
        for name in ("", self.binding.service_name):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            if self._tls is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, _server_credentials(self._tls))
        except RuntimeError as error:  # taken between the probe and the bind
            await self._release()
            raise _cannot_listen(address, str(error)) from error
        await server.start()
        if self._metrics_port is not None:
            try:
                self.metrics = MetricsEndpoint(self.settings.host, self._metrics_port)
            except OSError as error:
                await server.stop(None)
                await self._release()
                raise ConfigurationError(
                    f"cannot serve metrics on {self.settings.host}:{self._metrics_port} "
                    f"({error.strerror or error}); set a different CASCADE_*_METRICS_PORT, "
                    "or CASCADE_METRICS=false"
                ) from error
        waiting = len(self.binding.background)

        def loaded() -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0:
                self._tasks.append(asyncio.create_task(self._mark_ready()))

        if waiting == 0:
            await self._mark_ready()
        for task in self.binding.background:
            self._tasks.append(asyncio.create_task(task(self._stopping, loaded)))
        _log.info(
            "listening",
            address=self.address,
            service=self.binding.service_name,
            metrics_port=self.metrics.port if self.metrics else None,
        )
        return self.port

    async def _mark_ready(self) -> None:
        if self.binding.warm is not None:
            try:
                await self._runner.run(self.binding.warm)
            except Exception:
                _log.exception("warm-up failed; serving cold", service=self.binding.service_name)
        heap.collect_and_freeze()  # nothing is served yet: the pause costs no request
        for name in ("", self.binding.service_name):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._ready.set()
        _log.info("serving", service=self.binding.service_name)

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until health reports SERVING."""
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight ones finish, then clean up."""
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.settings.grace_seconds if grace_s is None else grace_s)
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.metrics is not None:
            self.metrics.close()
        await self._release()
        _log.info("stopped", service=self.binding.service_name)

    async def _release(self) -> None:
        """Close what the binding opened (clients, worker threads)."""
        for close in self.binding.closers:
            result = close()
            if result is not None:
                await result

    async def serve_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        await stop.wait()
        _log.info("shutting down", grace_s=self.settings.grace_seconds)
        await self.stop()


def _server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(tls.key, tls.certificate)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None,
    )


def _cannot_listen(address: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot listen on {address} ({why}); is another server using the port? "
        "Set a different CASCADE_*_PORT"
    )


def ensure_free(host: str, port: int) -> None:
    """OSError when ``host:port`` cannot be bound (port 0 always can)."""
    if port == 0:
        return
    for family, kind, proto, _, address in socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)


def build_server(
    settings: Settings, service: ServiceName, engine: sa.Engine, *, port: int | None = None
) -> CascadeServer:
    """The server for ``service``, not yet started. ``port`` overrides the settings (0: any)."""
    from cascade_server.rpc import bindings

    # Requests do many small matrix products on several threads at once: one BLAS
    # thread each is faster than BLAS spreading every tiny product over the cores.
    threadpool_limits(limits=1, user_api="blas")
    runner = BlockingRunner(settings.workers, service.value)
    factory = {
        ServiceName.RETRIEVAL: bindings.retrieval,
        ServiceName.RANKING: bindings.ranking,
        ServiceName.BLENDING: bindings.blending,
        ServiceName.CATALOG: bindings.catalog,
    }[service]
    binding = factory(settings, engine, runner)
    binding.closers.append(runner.close)
    return CascadeServer(
        settings,
        binding,
        settings.port(service) if port is None else port,
        share_port=settings.processes(service) > 1,
        metrics_port=settings.metrics_port(service) if settings.metrics else None,
        runner=runner,
    )
