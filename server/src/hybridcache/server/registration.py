"""Puts the HybridCache service on a `grpc.server`: the generated handler table, except that
WatchChanges sends the bytes `serve_watch` yields as they are, and every request arrives as
bytes and is parsed in the handler.

Why parse in the handler: with the generated deserializer, grpc parses before any of our
code runs, and a body that is not the method's message becomes INTERNAL "Exception
deserializing request!" plus an ERROR traceback per call, before authentication — anyone
could flood the logs. Here the gate (`gate.py`) authenticates first, then the body is parsed:
a malformed one gets INVALID_ARGUMENT `MALFORMED_REQUEST`, is counted (`on_malformed`, the
method name) and logged at most once a minute per method (values never logged).

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

from hybridcache.server.errors import abort
from hybridcache.server.events.ratelog import RateLimitedLog
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
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request body is not a valid {expected} message",
                "MALFORMED_REQUEST",
            )

    return parsed


def _parsing_unary(
    method: str, handler: Any, on_malformed: Callable[[str], None] | None
) -> grpc.RpcMethodHandler:
    behavior = handler.unary_unary
    parse = _parser(method, handler.request_deserializer, on_malformed)

    def unary(body: bytes, context: grpc.ServicerContext) -> Any:
        return behavior(parse(body, context), context)

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=None, response_serializer=handler.response_serializer
    )


def add_hybridcache_service(
    server: grpc.Server,
    servicer: pb_grpc.HybridCacheServicer,
    watch: EncodedWatch,
    *,
    on_malformed: Callable[[str], None] | None = None,
) -> None:
    """Register `servicer`'s unary RPCs and `watch` as WatchChanges, each parsing its own
    request (`on_malformed(method)` counts the bodies that are not the method's message)."""
    capture = _TableCapture()
    pb_grpc.add_HybridCacheServicer_to_server(servicer, cast(grpc.Server, capture))
    handlers = capture.handlers
    if "WatchChanges" not in handlers:  # the generated code changed shape: fail at start
        raise RuntimeError("the generated HybridCache handler table has no WatchChanges")
    for method, handler in list(handlers.items()):
        if method == "WatchChanges":
            continue
        if handler.unary_unary is None:
            raise RuntimeError(f"the generated HybridCache method {method} is not unary")
        handlers[method] = _parsing_unary(method, handler, on_malformed)
    parse_watch = _parser("WatchChanges", pb.WatchChangesRequest.FromString, on_malformed)

    def watch_stream(body: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        return watch(parse_watch(body, context), context)

    handlers["WatchChanges"] = grpc.unary_stream_rpc_method_handler(
        watch_stream,
        request_deserializer=None,  # parsed in the handler, after the gate
        response_serializer=None,  # None: gRPC sends each yielded bytes object unchanged
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
