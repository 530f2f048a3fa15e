"""Puts the HybridCache service on a `grpc.server`: the generated handler table, except that
WatchChanges sends the bytes `serve_watch` yields as they are.

The stream's messages are serialized once per change for all subscribers
(`hybridcache.server.hub.wire`), which the generated registration cannot carry: it gives
every RPC `SerializeToString` as its response serializer. Rather than copy the generated
table (and drift from it), this runs the generated `add_HybridCacheServicer_to_server`
against a stand-in server, takes the table, and swaps the one WatchChanges entry. The gate
(`gate.py`) re-wraps handlers keeping their serializers, so the pass-through survives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import grpc

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["HybridCache"].full_name

# serve_watch bound to its hub and settings: serialized WatchChangesResponse messages.
EncodedWatch = Callable[[pb.WatchChangesRequest, grpc.ServicerContext], Iterator[bytes]]


class _TableCapture:
    """Stands in for a grpc.Server while the generated registration runs."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers: Any) -> None:
        pass  # the same table also arrives through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        if service != SERVICE_NAME:
            raise RuntimeError(f"generated registration of an unexpected service {service!r}")
        self.handlers = dict(handlers)


def add_hybridcache_service(
    server: grpc.Server, servicer: pb_grpc.HybridCacheServicer, watch: EncodedWatch
) -> None:
    """Register `servicer`'s unary RPCs as generated and `watch` as WatchChanges."""
    capture = _TableCapture()
    pb_grpc.add_HybridCacheServicer_to_server(servicer, cast(grpc.Server, capture))
    handlers = capture.handlers
    if "WatchChanges" not in handlers:  # the generated code changed shape: fail at start
        raise RuntimeError("the generated HybridCache handler table has no WatchChanges")
    handlers["WatchChanges"] = grpc.unary_stream_rpc_method_handler(
        watch,
        request_deserializer=pb.WatchChangesRequest.FromString,
        response_serializer=None,  # None: gRPC sends each yielded bytes object unchanged
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
