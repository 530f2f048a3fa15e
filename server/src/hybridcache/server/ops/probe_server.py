"""grpc.health.v1 Check on a port of its own (`HYBRIDCACHE_HEALTH_PORT`), served by grpc.aio.

Health on the main port runs on threads of its own, but it is open to anyone: a flood of
idle health calls (HEADERS, no message) fills that lane, since the sync server holds a
thread per call until its message arrives. Here a call waiting for its message is only a
coroutine, so no flood of idle streams takes the answer away from a probe. It answers
from the same HealthServicer as the main port (its Check only reads a dict under a lock,
so calling it on the event loop never blocks). Plain text: Kubernetes' gRPC probe speaks
no TLS, and the answer is only SERVING / NOT_SERVING.

    kubelet ──► :HEALTH_PORT  (asyncio thread: grpc.aio server, Check only)
                      │ reads
               HealthServicer ◄── set by the Service (warm-up, drain)
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class ProbeServer:
    def __init__(
        self, servicer: health.HealthServicer, host: str, port: int, *, max_streams: int, reuse_port: bool
    ) -> None:
        self._servicer = servicer
        self._reuse_port = reuse_port  # as the main port: shared only by HYBRIDCACHE_WORKERS on purpose
        self._address = f"{host}:{port}"
        self._max_streams = max_streams
        self._loop = asyncio.new_event_loop()
        self._server: grpc.aio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="hybridcache-probe", daemon=True)
        self.port = 0

    def start(self) -> ProbeServer:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> int:
        servicer = self._servicer

        async def check(
            request: health_pb2.HealthCheckRequest, context: Any
        ) -> health_pb2.HealthCheckResponse:
            reply: health_pb2.HealthCheckResponse = servicer.Check(request, context)
            return reply

        handler = grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    check,
                    request_deserializer=health_pb2.HealthCheckRequest.FromString,
                    response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                )
            },
        )
        options = [
            ("grpc.max_concurrent_streams", self._max_streams),
            ("grpc.so_reuseport", 1 if self._reuse_port else 0),
        ]
        self._server = grpc.aio.server(options=options)
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port(self._address)
        await self._server.start()
        return int(port)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
