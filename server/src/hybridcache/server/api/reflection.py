"""gRPC server reflection under both of its names: `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

Current clients (grpcurl 1.9+, Postman, grpc_cli) ask v1 first; older ones only know v1alpha.
grpcio-reflection implements v1alpha alone. v1 is the same protocol under another package —
its messages are identical field for field, so they are the same bytes on the wire — so the
one v1alpha servicer answers calls to both names. A copy of the v1alpha file descriptor,
renamed to v1, joins the descriptor pool so that reflection can describe its v1 face too.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA = reflection.SERVICE_NAME  # "grpc.reflection.v1alpha.ServerReflection"
_V1ALPHA_PACKAGE = reflection_pb2.DESCRIPTOR.package
_V1_PACKAGE = "grpc.reflection.v1"
V1 = V1ALPHA.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE, 1)
_V1_FILE = "grpc/reflection/v1/reflection.proto"  # as grpc-proto names it


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection for `service_names` (and for itself, under both names) on `server`."""
    _add_v1_descriptor(descriptor_pool.Default())
    servicer = reflection.ReflectionServicer((*service_names, V1, V1ALPHA))
    for name in (V1, V1ALPHA):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(_V1_FILE)
        return  # added by an earlier server in this process (or by a library)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = _V1_PACKAGE
    proto.options.Clear()  # v1alpha's language options (Java package, ...) are not v1's

    def renamed(type_name: str) -> str:
        return type_name.replace(f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}.", 1)

    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # a message or enum field (scalars have none)
                field.type_name = renamed(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = renamed(method.input_type)
            method.output_type = renamed(method.output_type)
    pool.Add(proto)
