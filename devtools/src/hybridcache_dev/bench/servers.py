"""Servers under test, each in its own spawned process pinned to the server core.

    sync-bare   grpc.server, ThreadPoolExecutor(4), the empty RPC only, no interceptor
    aio-bare    grpc.aio.server, the empty RPC only (an async handler), no interceptor
    sync-gate   grpc.server + the real Gate (insecure dev caller) + the empty RPC: a stand-in
                for the Service used only while the Service cannot be built
    service     the real Service (`create_service`) with the empty RPC added behind its gate

A child process rather than a thread: the server must not share a GIL (or a core) with
the code measuring it. The child reports its port over a pipe and serves until told to stop.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from hybridcache_dev.bench import cpus

if TYPE_CHECKING:
    from hybridcache.server.hub import HubEvent

BENCH_SERVICE = "hybridcache.bench.Bench"
EMPTY_METHOD = f"/{BENCH_SERVICE}/Empty"
APPLIED_METHOD = f"/{BENCH_SERVICE}/Applied"
BENCH_EVENT_ID_PREFIX = "bench-"  # event ids of the events the benchmarks publish
_READY_TIMEOUT_S = 60.0


def bench_handler(applied: dict[str, int] | None = None) -> Any:
    """The bench-only empty unary RPC: raw bytes in, zero bytes out (no proto involved).

    With `applied` (the Service only), also `Applied`: returns, as JSON, the
    {event id: CLOCK_MONOTONIC ns} of every bench event the cache applied since the last
    call, and forgets them (see `_recorder`)."""
    import grpc  # noqa: PLC0415

    methods: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Empty": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
    }
    if applied is not None:

        def take_applied(request: bytes, context: Any) -> bytes:
            taken = dict(applied)
            for event_id in taken:
                applied.pop(event_id, None)
            return json.dumps(taken).encode()

        methods["Applied"] = grpc.unary_unary_rpc_method_handler(take_applied)
    return grpc.method_handlers_generic_handler(BENCH_SERVICE, methods)


def _recorder(applied: dict[str, int]) -> Callable[[HubEvent], None]:
    """The Service's `on_change_applied` hook for the bench: timestamp each bench event as the
    cache applies it, inside this (bench-only) server process — "publish -> cache applied" at
    µs resolution, something no client can see (an event's `publishedAt` has ms resolution).
    CLOCK_MONOTONIC is system-wide, so the parent compares it with its own publish times."""

    def record(event: HubEvent) -> None:
        if event.event_id.startswith(BENCH_EVENT_ID_PREFIX):
            applied[event.event_id] = time.monotonic_ns()

    return record


def _serve_sync(conn: Connection, *, gate: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    import grpc  # noqa: PLC0415

    interceptors: list[Any] = []
    if gate:
        from hybridcache.server.api.auth import Authenticator  # noqa: PLC0415
        from hybridcache.server.api.capacity import Lanes, MessageWatch  # noqa: PLC0415
        from hybridcache.server.api.gate import CallerLimits, Gate  # noqa: PLC0415
        from hybridcache.server.ops.metrics import Metrics  # noqa: PLC0415

        limits = CallerLimits(rate_per_s=0.0, burst=200, max_in_flight=0)
        watch = MessageWatch()
        watch.start()
        interceptors.append(
            Gate(
                Authenticator([], insecure=True),
                Metrics(),
                limits_for=lambda caller: limits,
                service_prefix=BENCH_SERVICE,
                lanes=Lanes.build(unary_threads=4, unary_limit=1000, streams=1, reflection=1, health=1),
                watch=watch,
                log_rpcs=False,
            )
        )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=4),
        interceptors=interceptors,
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers((bench_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    conn.send(port)
    conn.recv()
    server.stop(1).wait()


def _serve_aio(conn: Connection) -> None:
    import asyncio  # noqa: PLC0415

    import grpc  # noqa: PLC0415

    async def empty(request: bytes, context: Any) -> bytes:
        return b""

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    BENCH_SERVICE, {"Empty": grpc.unary_unary_rpc_method_handler(empty)}
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        conn.send(port)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)
        await server.stop(1)

    asyncio.run(main())


def _serve_service(conn: Connection, env: Mapping[str, str]) -> None:
    from hybridcache.server.app import create_service  # noqa: PLC0415
    from hybridcache.server.config import load_settings  # noqa: PLC0415
    from hybridcache.server.ops.logs import configure_logging  # noqa: PLC0415

    settings = load_settings({"HYBRIDCACHE_HOST": "127.0.0.1", "HYBRIDCACHE_PORT": "0", **env})
    _stdout_to_a_reader()
    configure_logging(settings.log_format, settings.log_level, flush_interval_s=settings.log_flush_interval_s)
    applied: dict[str, int] = {}
    service = create_service(
        settings, extra_handlers=[bench_handler(applied)], on_change_applied=_recorder(applied)
    )
    conn.send(service.port)
    conn.recv()
    service.stop(1)


def _stdout_to_a_reader() -> None:
    """The Service's stdout (its log lines) into a pipe that a process on the load core reads
    and discards, as a container runtime reads a container's stdout: the server pays the
    writes, as deployed, and no line reaches the bench's terminal."""
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    cpus.pin(cpus.LOAD_CPU, reader.pid)
    assert reader.stdin is not None
    sys.stdout.flush()
    os.dup2(reader.stdin.fileno(), 1)
    reader.stdin.close()


def _child_main(kind: str, env: Mapping[str, str], conn: Connection) -> None:
    cpus.pin(cpus.SERVER_CPU)
    os.environ.update(env)
    try:
        if kind == "sync-bare":
            _serve_sync(conn, gate=False)
        elif kind == "sync-gate":
            _serve_sync(conn, gate=True)
        elif kind == "aio-bare":
            _serve_aio(conn)
        elif kind == "service":
            _serve_service(conn, env)
        else:
            raise ValueError(f"unknown server kind {kind!r}")
    except BaseException as exc:
        conn.send(exc)
        raise


class BenchServer:
    """A server under test in a child process. Use as a context manager; `.target` to call it."""

    def __init__(self, kind: str, env: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(kind, dict(env or {}), child), daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(_READY_TIMEOUT_S):
            self._proc.terminate()
            raise RuntimeError(f"{kind} server did not start within {_READY_TIMEOUT_S} s")
        answer = self._conn.recv()
        if isinstance(answer, BaseException):
            self._proc.join(5)
            raise RuntimeError(f"{kind} server failed to start: {answer!r}")
        self.port: int = answer
        self.target = f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def stop(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send("stop")
            self._proc.join(15)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
        self._conn.close()

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
