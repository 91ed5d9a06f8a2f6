"""Server reflection that carries the protos' comments, so ``grpcurl describe`` shows docs.

gRPC's reflection servicer rebuilds each file descriptor from the runtime pool, which
holds no comments. This servicer answers the same requests, but replaces each of
Cascade's files with the copy in ``descriptors.binpb`` (written by
``protos/generate.py`` with source info), which has them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from importlib import resources

from google.protobuf import descriptor_pb2
from grpc import aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer


@functools.cache
def documented_files() -> Mapping[str, bytes]:
    """Cascade's serialized file descriptors with comments, by file name."""
    files = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files("cascade").joinpath("descriptors.binpb").read_bytes()
    )
    return {file.name: file.SerializeToString() for file in files.file}


class DocumentedReflectionServicer(ReflectionServicer):
    """The standard reflection service, answering with documented descriptors."""

    def __init__(self, service_names: Iterable[str], documented: Mapping[str, bytes]) -> None:
        super().__init__(service_names)
        self._documented = documented

    def _with_docs(
        self, response: reflection_pb2.ServerReflectionResponse
    ) -> reflection_pb2.ServerReflectionResponse:
        if response.HasField("file_descriptor_response"):
            files = response.file_descriptor_response.file_descriptor_proto
            for i, raw in enumerate(files):
                name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                files[i] = self._documented.get(name, raw)
        return response

    def _file_by_filename(
        self, request: reflection_pb2.ServerReflectionRequest, filename: str
    ) -> reflection_pb2.ServerReflectionResponse:
        return self._with_docs(super()._file_by_filename(request, filename))  # type: ignore[misc]

    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        found = super()._file_containing_symbol(request, fully_qualified_name)  # type: ignore[misc]
        return self._with_docs(found)


def enable_reflection(service_names: Iterable[str], server: aio.Server) -> None:
    """Serve reflection for ``service_names`` (and reflection itself) on ``server``."""
    servicer = DocumentedReflectionServicer(
        [*service_names, reflection.SERVICE_NAME], documented_files()
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
