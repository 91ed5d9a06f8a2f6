"""Promise: no request, however wrong, gets INTERNAL or crashes a server.

Hypothesis builds random requests for every RPC of every service from the message
descriptors (random strings with control characters, out-of-range numbers, NaN,
unknown enum values, long lists, nested messages), sends raw bytes that are no
message at all, and messages over the size limit. Each answer is OK or a clear
client-side status; INVALID_ARGUMENT comes with field violations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings, strategies as st
from support.stack import ServerStack, running_stack

from cascade.blending.v1 import blending_service_pb2
from cascade.catalog.v1 import catalog_service_pb2
from cascade.ranking.v1 import ranking_service_pb2
from cascade.retrieval.v1 import retrieval_service_pb2
from cascade_server.settings import ServiceName

SERVICES = {
    ServiceName.BLENDING: blending_service_pb2.DESCRIPTOR.services_by_name["BlendingService"],
    ServiceName.RETRIEVAL: retrieval_service_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
    ServiceName.RANKING: ranking_service_pb2.DESCRIPTOR.services_by_name["RankingService"],
    ServiceName.CATALOG: catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"],
}
METHODS = [
    (service, method) for service, descriptor in SERVICES.items() for method in descriptor.methods
]
CLIENT_ERRORS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
_IDS = st.one_of(
    _TEXT,
    st.sampled_from(["u042", "i0001", "i0002", "c01", "x" * 129, "", " ", "\x00", "\ufeff"]),
)
_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: _IDS,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=40),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_ENUM: st.integers(-3, 12),
}


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(field.message_type, depth + 1)
    return _SCALARS[field.type]


def _message(descriptor: Any, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random messages of ``descriptor``'s type: any subset of fields, any values."""
    cls = GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for field in descriptor.fields:
            if depth > 3 or not draw(st.booleans()):
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                key, value = (
                    field.message_type.fields_by_name["key"],
                    field.message_type.fields_by_name["value"],
                )
                entries = draw(
                    st.dictionaries(_value(key, depth), _value(value, depth), max_size=4)
                )
                target = getattr(message, field.name)
                for k, v in entries.items():
                    if value.type == FieldDescriptor.TYPE_MESSAGE:
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif field.is_repeated:
                size = draw(st.one_of(st.integers(0, 6), st.sampled_from([51, 2001, 5001])))
                items = draw(st.lists(_value(field, depth), min_size=min(size, 6), max_size=6))
                items = (items * (size // max(len(items), 1) + 1))[:size] if items else []
                target = getattr(message, field.name)
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in items:
                        target.add().CopyFrom(item)
                else:
                    target.extend(items)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(message, field.name).CopyFrom(draw(_value(field, depth)))
            else:
                setattr(message, field.name, draw(_value(field, depth)))
        return message

    return build()


@pytest.fixture(scope="module")
def stack(shared_demo_database_url: str) -> Iterator[ServerStack]:
    with running_stack(shared_demo_database_url) as servers:
        yield servers


@pytest.fixture(scope="module")
def channels(stack: ServerStack) -> Iterator[dict[ServiceName, grpc.Channel]]:
    opened = {service: grpc.insecure_channel(stack.target(service)) for service in SERVICES}
    yield opened
    for channel in opened.values():
        channel.close()


def _call(channel: grpc.Channel, method: MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    """Send ``payload`` as the request; return the status (OK for an answer)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
    failure: grpc.Call | None = None
    try:
        call(payload, timeout=20)
    except grpc.RpcError as error:
        failure = error  # type: ignore[assignment]
    if failure is None:
        return grpc.StatusCode.OK
    code = failure.code()
    assert code in CLIENT_ERRORS, f"{path}: {code}: {failure.details()}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        status = rpc_status.from_call(failure)
        assert status is not None, f"{path}: INVALID_ARGUMENT without details"
        request = error_details_pb2.BadRequest()
        assert any(d.Unpack(request) for d in status.details), "no field violations"
        assert request.field_violations
    return code


@pytest.mark.parametrize(
    ("service", "method"), METHODS, ids=[f"{s.value}.{m.name}" for s, m in METHODS]
)
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_requests_get_an_answer_or_a_clear_client_error(channels, service, method, data):
    request = data.draw(_message(method.input_type), label="request")
    _call(channels[service], method, request.SerializeToString())


@pytest.mark.parametrize(
    ("service", "method"), METHODS, ids=[f"{s.value}.{m.name}" for s, m in METHODS]
)
@settings(max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=1, max_size=200))
def test_bytes_that_are_no_message_are_invalid_argument(channels, service, method, payload):
    code = _call(channels[service], method, payload)
    # Some byte strings happen to parse (as unknown fields, say): those may be answered.
    assert code in CLIENT_ERRORS


@pytest.mark.parametrize(("service", "method"), METHODS[:1] + METHODS[-1:])
def test_an_oversized_message_is_resource_exhausted(channels, service, method):
    payload = bytes(9 * 2**20)  # over the 8 MiB limit: refused before it is parsed
    assert _call(channels[service], method, payload) == grpc.StatusCode.RESOURCE_EXHAUSTED
