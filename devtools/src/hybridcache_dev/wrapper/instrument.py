"""Request counting and fault injection for the public `/api` routes.

A plain ASGI middleware rather than a FastAPI dependency: a fault must act before the
route runs (and before authentication: a broken Wrapper does not check tokens), hang
without holding anything but its own task, and be able to drop the TCP connection without
an answer.

Dropping a connection needs the transport, which ASGI does not expose: `ConnectionRegistry`
is filled by an HTTP protocol subclass (see server.py) and keyed by the client address that
uvicorn puts in the scope. Without it (an in-process test client) a reset answers 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

HANG_SECONDS = 3600.0  # far beyond any client timeout; ends early when the client leaves
RECENT_PATHS = 1000  # raw request paths kept, newest last
_UNMATCHED = "(unmatched)"
TRACEPARENTS_KEPT = 100


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class RequestStats:
    """Request counts per route template and per (route template, tenant), and the last
    RECENT_PATHS request paths exactly as they arrived (not decoded, not normalised), so a
    test can see which path a client really asked for, and the W3C `traceparent` headers of
    the last requests (so a test sees a trace reach the Wrapper)."""

    def __init__(self) -> None:
        self._by_route: Counter[str] = Counter()
        self._by_tenant: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._recent: deque[str] = deque(maxlen=RECENT_PATHS)
        self._traceparents: deque[str] = deque(maxlen=TRACEPARENTS_KEPT)

    def count(
        self, route: str, tenant: str | None, raw_path: bytes = b"", traceparent: str | None = None
    ) -> None:
        self._by_route[route] += 1
        if tenant is not None:
            self._by_tenant[route][tenant] += 1
        if raw_path:
            self._recent.append(raw_path.decode("latin-1"))
        if traceparent is not None:
            self._traceparents.append(traceparent)

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": dict(sorted(self._by_route.items())),
            "byTenant": {r: dict(sorted(c.items())) for r, c in sorted(self._by_tenant.items())},
            "total": sum(self._by_route.values()),
            "recentPaths": list(self._recent),
            "traceparents": list(self._traceparents),
        }

    def reset(self) -> None:
        self._by_route.clear()
        self._by_tenant.clear()
        self._recent.clear()
        self._traceparents.clear()


@dataclass(frozen=True)
class Faults:
    """What to do to `/api` requests; the default does nothing."""

    latency_ms: int = 0
    fail_status: int | None = None
    hang: bool = False
    reset_connections: bool = False
    tenants: frozenset[str] | None = None  # None: all tenants
    routes: frozenset[str] | None = None  # route templates like "GET /api/tenants"; None: all

    def applies_to(self, route: str, tenant: str | None) -> bool:
        if self.routes is not None and route not in self.routes:
            return False
        return self.tenants is None or tenant in self.tenants


class FaultState:
    """The current faults (replaced whole by the admin endpoints), and a shutdown signal.

    `stopping` is set when the server starts shutting down: hung requests then answer at
    once instead of holding the graceful shutdown to its timeout.
    """

    def __init__(self) -> None:
        self.current = Faults()
        self.stopping = asyncio.Event()


class ConnectionRegistry:
    """Open transports by client address, so a fault can reset a connection."""

    def __init__(self) -> None:
        self._transports: dict[tuple[str, int], asyncio.Transport] = {}

    def add(self, client: tuple[str, int] | None, transport: asyncio.Transport) -> None:
        if client is not None:
            self._transports[client] = transport

    def discard(self, client: tuple[str, int] | None) -> None:
        if client is not None:
            self._transports.pop(client, None)

    def reset(self, client: tuple[str, int] | None) -> bool:
        """Close the connection with a TCP RST (SO_LINGER 0); False when unknown."""
        transport = self._transports.get(client) if client is not None else None
        if transport is None:
            return False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return True


class ApiInstrumentation:
    """Counts `/api` requests and applies the configured faults to them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        stats: RequestStats,
        faults: FaultState,
        connections: ConnectionRegistry | None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.stats = stats
        self.faults = faults
        self.connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/api" or path.startswith("/api/")):
            await self.app(scope, receive, send)
            return
        route, tenant = self._route_of(scope)
        raw_path = scope.get("raw_path") or path.encode("latin-1")
        self.stats.count(route, tenant, raw_path, _header(scope, b"traceparent"))
        faults = self.faults.current
        if not faults.applies_to(route, tenant):
            await self.app(scope, receive, send)
            return
        if faults.reset_connections:
            await self._reset(scope, receive, send)
            return
        if faults.hang:
            await self._hang(receive, send)
            return
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.fail_status is not None:
            await _error(send, faults.fail_status, "injected_fault", f"failStatus {faults.fail_status}")
            return
        await self.app(scope, receive, send)

    async def _reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if self.connections is not None and self.connections.reset(tuple(client) if client else None):
            # uvicorn sees the connection lost: returning without a response is then fine.
            await _until_disconnect(receive, timeout=5.0)
            return
        await _error(send, 502, "injected_fault", "connection reset is not available here")

    async def _hang(self, receive: Receive, send: Send) -> None:
        # Waits on this request's own receive(): other requests are not held up, and the
        # task ends as soon as the client gives up (or the server stops).
        left = asyncio.ensure_future(_until_disconnect(receive, timeout=HANG_SECONDS))
        stopping = asyncio.ensure_future(self.faults.stopping.wait())
        try:
            await asyncio.wait((left, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            stopping.cancel()
        if left.done() and not left.cancelled() and left.result():
            return
        if stopping.done() and not stopping.cancelled():
            await _error(send, 503, "injected_fault", "server stopping")
            return
        await _error(send, 504, "injected_fault", "hung request gave up")

    def _route_of(self, scope: Scope) -> tuple[str, str | None]:
        """`"GET /api/tenants/{tenantId}/..."` and the tenant, as the router will match them."""
        method: str = scope.get("method", "GET")
        partial: tuple[str, str | None] | None = None
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.NONE:
                continue
            template = f"{method} {getattr(route, 'path', _UNMATCHED)}"
            tenant = child.get("path_params", {}).get("tenantId")
            if match is Match.FULL:
                return template, tenant
            partial = partial or (template, tenant)  # method not allowed: still that route
        return partial or (f"{method} {_UNMATCHED}", None)


async def _until_disconnect(receive: Receive, *, timeout: float) -> bool:
    """Wait for the client to go away; True if it did within the timeout."""
    try:
        async with asyncio.timeout(timeout):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


async def _error(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
