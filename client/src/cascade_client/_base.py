"""Channel ownership shared by every client: build from a target or borrow a channel."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self

import grpc
import grpc.aio

from cascade_client._channel import ChannelOption, create_aio_channel, create_channel

_NEED_ONE = "pass either a target or a channel"


def _check_borrowed(
    target: str | None,
    secure: grpc.ChannelCredentials | None,
    options: Sequence[ChannelOption],
    token: str | None,
) -> None:
    if target is not None:
        raise ValueError(f"{_NEED_ONE}, not both")
    if secure is not None or options or token is not None:
        raise ValueError("secure, options and token apply only when the client creates its channel")


class SyncClient:
    """Base of the blocking clients: holds a ``grpc.Channel`` and closes it if it made it.

    Pass ``target`` (``"host:port"``) to have the client create a channel with
    :func:`~cascade_client.create_channel` (``secure``, ``options`` and ``token``, a
    bearer token sent with every call, are passed on);
    the client then owns the channel and :meth:`close` closes it. Pass ``channel``
    to share an existing channel; :meth:`close` then leaves it open.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.Channel | None = None,
        secure: grpc.ChannelCredentials | None = None,
        options: Sequence[ChannelOption] = (),
        token: str | None = None,
    ) -> None:
        self._owns_channel = channel is None
        if channel is None:
            if target is None:
                raise ValueError(_NEED_ONE)
            channel = create_channel(target, secure=secure, options=options, token=token)
        else:
            _check_borrowed(target, secure, options, token)
        self._channel = channel
        self._bind(channel)

    def _bind(self, channel: grpc.Channel) -> None:
        """Create the client's stubs on ``channel``; subclasses override this."""

    @property
    def channel(self) -> grpc.Channel:
        """The channel the client calls through."""
        return self._channel

    def close(self) -> None:
        """Close the channel if the client created it; a borrowed channel stays open."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        """Return the client itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the client (see :meth:`close`)."""
        self.close()


class AsyncClient:
    """Base of the asyncio clients: holds a ``grpc.aio.Channel`` and closes it if it made it.

    Construct it inside the event loop that will use it. ``target``, ``channel``,
    ``secure`` and ``options`` work as for the blocking clients, with
    :func:`~cascade_client.create_aio_channel` creating the channel.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        secure: grpc.ChannelCredentials | None = None,
        options: Sequence[ChannelOption] = (),
        token: str | None = None,
    ) -> None:
        self._owns_channel = channel is None
        if channel is None:
            if target is None:
                raise ValueError(_NEED_ONE)
            channel = create_aio_channel(target, secure=secure, options=options, token=token)
        else:
            _check_borrowed(target, secure, options, token)
        self._channel = channel
        self._bind(channel)

    def _bind(self, channel: grpc.aio.Channel) -> None:
        """Create the client's stubs on ``channel``; subclasses override this."""

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel the client calls through."""
        return self._channel

    async def close(self, grace: float | None = None) -> None:
        """Close the channel if the client created it; a borrowed channel stays open.

        ``grace`` is how long calls in flight may take to finish; ``None`` cancels
        them at once.
        """
        if self._owns_channel:
            await self._channel.close(grace)

    async def __aenter__(self) -> Self:
        """Return the client itself."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the client (see :meth:`close`)."""
        await self.close()
