"""Puts the HybridCache service on a `grpc.server`: the generated handler table, except that
WatchChanges sends the bytes `serve_watch` yields as they are, and every request arrives as
bytes and is parsed in the handler.

Why parse in the handler: with the generated deserializer, grpc parses before any of our
code runs, and a body that is not the method's message becomes INTERNAL "Exception
deserializing request!" plus an ERROR traceback per call, before authentication — anyone
could flood the logs. Here the gate (`gate.py`) authenticates first, then the body is parsed:
a malformed one gets INVALID_ARGUMENT `MALFORMED_REQUEST`, is counted (`on_malformed`, the
method name) and logged at most once a minute per method (values never logged). The health
service is registered the same way (`add_parsing_service`), ungated.

The stream's messages are serialized once per change for all subscribers
(`hybridcache.server.hub.wire`), which the generated registration cannot carry: it gives
every RPC `SerializeToString` as its response serializer. Rather than copy the generated
table (and drift from it), this runs the generated `add_HybridCacheServicer_to_server`
against a stand-in server, takes the table, and swaps the one WatchChanges entry. The gate
(`gate.py`) re-wraps handlers keeping their serializers, so the pass-through survives it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from hybridcache.client.reasons import Reason
from hybridcache.server.api.errors import abort
from hybridcache.server.events.ratelog import RateLimitedLog
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["HybridCache"].full_name

# serve_watch bound to its hub and settings: serialized WatchChangesResponse messages.
EncodedWatch = Callable[[pb.WatchChangesRequest, grpc.ServicerContext], Iterator[bytes]]


class _TableCapture:
    """Stands in for a grpc.Server while a generated registration runs."""

    def __init__(self, service_name: str) -> None:
        self.service_name = service_name
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, _handlers: Any) -> None:
        pass  # the same table also arrives through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        if service != self.service_name:
            raise RuntimeError(f"generated registration of an unexpected service {service!r}")
        self.handlers = dict(handlers)


def _generated_table(
    add_to_server: Callable[[Any, grpc.Server], None], servicer: Any, service_name: str
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    capture = _TableCapture(service_name)
    add_to_server(servicer, cast(grpc.Server, capture))
    if not capture.handlers:  # the generated code changed shape: fail at start
        raise RuntimeError(f"the generated registration of {service_name} registered nothing")
    return capture.handlers


_malformed_log = RateLimitedLog(
    logging.getLogger(__name__), "malformed request body for %s (%d since the last line; body not logged)"
)


def _parser(
    method: str, parse: Callable[[bytes], Any], on_malformed: Callable[[str], None] | None
) -> Callable[[bytes, grpc.ServicerContext], Any]:
    message_name = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    expected = message_name.full_name if message_name is not None else "request"

    def parsed(body: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return parse(body)
        except DecodeError:
            if on_malformed is not None:
                on_malformed(method)
            _malformed_log.note(method)
            abort(context, Reason.MALFORMED_REQUEST, f"the request body is not a valid {expected} message")

    return parsed


def _parsing(
    method: str, handler: Any, on_malformed: Callable[[str], None] | None
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` taking the request as bytes and parsing it itself (unary requests only: a
    client stream's messages still go through its deserializer)."""
    if handler.request_deserializer is None or handler.request_streaming:
        return cast("grpc.RpcMethodHandler[Any, Any]", handler)
    parse = _parser(method, handler.request_deserializer, on_malformed)
    if handler.unary_unary is not None:
        unary_behavior = handler.unary_unary

        def unary(body: bytes, context: grpc.ServicerContext) -> Any:
            return unary_behavior(parse(body, context), context)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=None, response_serializer=handler.response_serializer
        )
    stream_behavior = handler.unary_stream

    def stream(body: bytes, context: grpc.ServicerContext) -> Any:
        return stream_behavior(parse(body, context), context)

    return grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=None, response_serializer=handler.response_serializer
    )


def _register(
    server: grpc.Server, service_name: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, dict(handlers)),))
    server.add_registered_method_handlers(service_name, dict(handlers))


def add_parsing_service(
    server: grpc.Server,
    add_to_server: Callable[[Any, grpc.Server], None],
    servicer: Any,
    service_name: str,
    *,
    on_malformed: Callable[[str], None] | None = None,
) -> None:
    """Register a generated service (e.g. grpc.health.v1.Health) whose unary requests are
    parsed in the handler, so a malformed body is INVALID_ARGUMENT, not grpc's INTERNAL."""
    table = _generated_table(add_to_server, servicer, service_name)
    _register(server, service_name, {m: _parsing(m, h, on_malformed) for m, h in table.items()})


def add_hybridcache_service(
    server: grpc.Server,
    servicer: pb_grpc.HybridCacheServicer,
    watch: EncodedWatch,
    *,
    on_malformed: Callable[[str], None] | None = None,
) -> None:
    """Register `servicer`'s unary RPCs and `watch` as WatchChanges, each parsing its own
    request (`on_malformed(method)` counts the bodies that are not the method's message)."""
    handlers = _generated_table(pb_grpc.add_HybridCacheServicer_to_server, servicer, SERVICE_NAME)
    if "WatchChanges" not in handlers:  # the generated code changed shape: fail at start
        raise RuntimeError("the generated HybridCache handler table has no WatchChanges")
    handlers["WatchChanges"] = grpc.unary_stream_rpc_method_handler(
        watch,
        request_deserializer=pb.WatchChangesRequest.FromString,
        response_serializer=None,  # None: gRPC sends each yielded bytes object unchanged
    )
    _register(server, SERVICE_NAME, {m: _parsing(m, h, on_malformed) for m, h in handlers.items()})
