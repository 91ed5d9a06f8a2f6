"""Typed Python client for Cascade's gRPC services.

One blocking and one asyncio client per service, each taking the generated request
message and returning the generated response message. Every call carries a deadline
(the method's default from ``service_config.json`` unless ``timeout=`` is given), is
retried on UNAVAILABLE only, and raises a :class:`CascadeError` subclass on failure.
"""

from cascade_client._call import Metadata
from cascade_client._channel import (
    ChannelOption,
    channel_options,
    create_aio_channel,
    create_channel,
    default_timeout,
)
from cascade_client.blending import AsyncBlendingClient, BlendingClient
from cascade_client.catalog import AsyncCatalogClient, CatalogClient
from cascade_client.errors import (
    CallCancelledError,
    CascadeError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnexpectedStatusError,
    from_rpc_error,
)
from cascade_client.ranking import AsyncRankingClient, RankingClient
from cascade_client.retrieval import AsyncRetrievalClient, RetrievalClient

__all__ = [
    "AsyncBlendingClient",
    "AsyncCatalogClient",
    "AsyncRankingClient",
    "AsyncRetrievalClient",
    "BlendingClient",
    "CallCancelledError",
    "CascadeError",
    "CatalogClient",
    "ChannelOption",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "Metadata",
    "NotFoundError",
    "PermissionDeniedError",
    "RankingClient",
    "ResourceExhaustedError",
    "RetrievalClient",
    "UnauthenticatedError",
    "UnavailableError",
    "UnexpectedStatusError",
    "channel_options",
    "create_aio_channel",
    "create_channel",
    "default_timeout",
    "from_rpc_error",
]
