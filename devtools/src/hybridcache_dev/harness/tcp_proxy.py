"""The one asyncio TCP forwarder behind the measuring proxies (the bench's byte counter, the
scale-out fleet's request timeline): 127.0.0.1 in, 127.0.0.1:`upstream_port` out, each
direction shown to a tap before it is forwarded. (The fault proxy, tests/faults/proxy.py,
is a different tool: thread-pumped so faults can switch under open connections.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

Tap = Callable[[bytes], None]  # sees every chunk of one direction, in order, before it is forwarded
# Per connection: (tap of client -> upstream, tap of upstream -> client).
TapsFactory = Callable[[], tuple[Tap | None, Tap | None]]


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tap: Tap | None = None) -> None:
    """Copy `reader` to `writer` until either side ends; then close `writer`."""
    try:
        while data := await reader.read(65536):
            if tap is not None:
                tap(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


class Forwarder:
    """Forward each connection to 127.0.0.1:`upstream_port` from a free 127.0.0.1 port;
    `taps()` gives each connection its (up, down) taps. Runs on the caller's event loop."""

    def __init__(self, upstream_port: int, taps: TapsFactory | None = None) -> None:
        self.upstream_port = upstream_port
        self._taps = taps
        self._connections: set[asyncio.Task[object]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Forwarder:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                client_writer.close()
                return
            up_tap, down_tap = self._taps() if self._taps is not None else (None, None)
            await asyncio.gather(
                pipe(client_reader, up_writer, up_tap), pipe(up_reader, client_writer, down_tap)
            )
        finally:
            if task is not None:
                self._connections.discard(task)

    async def close(self) -> None:
        """Stop accepting and end the open connections (their sockets closed, nothing leaked)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
