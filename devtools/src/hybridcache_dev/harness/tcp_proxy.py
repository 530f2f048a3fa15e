"""The one asyncio TCP forwarder behind every test and bench proxy: 127.0.0.1 in,
127.0.0.1:`upstream_port` out.

Two ways to look at the bytes:

- taps (the bench's byte counter, the scale-out fleet's request timeline): each direction's
  chunks shown to a callable before they are forwarded, unchanged;
- links (the fault proxy, tests/faults/proxy.py): one `Link` per connection decides what of
  each chunk is forwarded and when (latency, pacing, swallowing), whether an upstream is
  opened at all (a black hole), and whether one side ending closes the other; the
  `Connection` it is given can be closed from any thread, with a FIN or an RST, while open.

`LoopThread` runs a forwarder (or anything asyncio) for synchronous tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

CHUNK = 65536
Side = Literal["up", "down"]  # up: client -> upstream; down: upstream -> client
Tap = Callable[[bytes], None]  # sees every chunk of one direction, in order, before it is forwarded
# Per connection: (tap of client -> upstream, tap of upstream -> client).
TapsFactory = Callable[[], tuple[Tap | None, Tap | None]]
T = TypeVar("T")


class Connection:
    """One forwarded connection's two ends. `close()` is for the loop's thread; from another
    thread, `LoopThread.call(conn.close, how)`."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.closed = False

    def close(self, how: Literal["fin", "rst"] = "fin") -> None:
        """End both sides: a FIN (a clean close) or an RST (SO_LINGER 0, then abort)."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            if how == "rst":
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()


class Link:
    """One connection's hooks; this base forwards everything unchanged. Runs on the loop."""

    connection: Connection

    def wants_upstream(self) -> bool:
        """False: accept the client but open no upstream (everything it sends is offered to
        `forward("up", ...)`, and nothing is sent back)."""
        return True

    def opened(self, connection: Connection) -> None:
        self.connection = connection

    def refused(self) -> None:
        """The upstream could not be reached; the client is closed with a FIN."""

    async def forward(self, side: Side, data: bytes) -> bytes | None:
        """What of `data` to forward (None or b"": nothing); may wait first (latency, pacing)."""
        return data

    def ended(self, side: Side, *, by_peer: bool) -> bool:
        """`side`'s sender stopped (`by_peer`: a clean EOF, else an error or a close of ours).
        True closes the connection; False leaves the other side open."""
        return True

    def closed(self) -> None:
        """The connection is gone (both pumps ended)."""


class _Taps(Link):
    def __init__(self, up: Tap | None, down: Tap | None) -> None:
        self._taps = {"up": up, "down": down}

    async def forward(self, side: Side, data: bytes) -> bytes | None:
        tap = self._taps[side]
        if tap is not None:
            tap(data)
        return data


class Forwarder:
    """Forward each connection to 127.0.0.1:`upstream_port` from 127.0.0.1:`port` (0: a free
    one). Per connection, `taps()` gives its (up, down) taps, or `links()` its `Link`. Runs
    on the caller's event loop."""

    def __init__(
        self,
        upstream_port: int,
        taps: TapsFactory | None = None,
        *,
        links: Callable[[], Link] | None = None,
        port: int = 0,
    ) -> None:
        if taps is not None and links is not None:
            raise ValueError("Forwarder: taps or links, not both")
        self.upstream_port = upstream_port
        self._links = links or self._taps_link(taps)
        self._connections: set[asyncio.Task[object]] = set()
        self._server: asyncio.Server | None = None
        self.port = port

    @staticmethod
    def _taps_link(taps: TapsFactory | None) -> Callable[[], Link]:
        if taps is None:
            return Link
        return lambda: _Taps(*taps())

    async def start(self) -> Forwarder:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        link = self._links()
        conn = Connection(client_writer)
        link.opened(conn)
        try:
            pumps: list[Awaitable[None]] = []
            if link.wants_upstream():
                try:
                    up_reader, conn.upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                except OSError:
                    link.refused()
                    conn.close("fin")
                    return
                pumps.append(self._pump(link, "down", up_reader, client_writer))
            pumps.append(self._pump(link, "up", client_reader, conn.upstream))
            await asyncio.gather(*pumps)
        finally:
            conn.close("fin")
            link.closed()
            if task is not None:
                self._connections.discard(task)

    @staticmethod
    async def _pump(
        link: Link, side: Side, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
    ) -> None:
        by_peer = False
        try:
            while data := await reader.read(CHUNK):
                out = await link.forward(side, data)
                if out and writer is not None and not link.connection.closed:
                    writer.write(out)
                    await writer.drain()
            by_peer = True
        except (ConnectionError, OSError):
            pass
        if link.ended(side, by_peer=by_peer):
            link.connection.close("fin")

    async def close(self) -> None:
        """Stop accepting and end the open connections (their sockets closed, nothing leaked)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)


class LoopThread:
    """An event loop on a daemon thread, for synchronous callers: `run(coro)` and
    `call(fn, *args)` wait for the result on the caller's thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        async def call() -> T:
            return fn(*args)

        return self.run(call(), timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
