"""The one asyncio forwarder (hybridcache_dev.harness.tcp_proxy) over real loopback sockets:
bytes arrive unchanged both ways, each direction's tap sees exactly them; the fleet's
request timeline built on it pairs every HTTP request with its response; a per-connection
link decides what is forwarded and can reset its connection."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from hybridcache_dev.harness.tcp_proxy import Connection, Forwarder, Link, LoopThread, Side
from tests.scaleout.fleet import TimelineProxy

pytestmark = pytest.mark.timeout(30)


def test_forwarded_bytes_arrive_unchanged_and_each_tap_sees_them() -> None:
    seen: dict[str, bytearray] = {"up": bytearray(), "down": bytearray()}

    async def scenario() -> bytes:
        echoed = asyncio.Event()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data.upper())
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
                echoed.set()

        upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
        upstream_port = upstream.sockets[0].getsockname()[1]
        proxy = await Forwarder(upstream_port, lambda: (seen["up"].extend, seen["down"].extend)).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"hello " * 20_000)  # more than one read's worth
        await writer.drain()
        # (No half-close: an end from either side closes both, as HTTP keep-alive needs no more.)
        answer = await asyncio.wait_for(reader.readexactly(120_000), timeout=10)
        writer.close()
        await writer.wait_closed()
        await proxy.close()
        await asyncio.wait_for(echoed.wait(), timeout=10)
        upstream.close()
        await upstream.wait_closed()
        return answer

    answer = asyncio.run(scenario())
    assert answer == b"HELLO " * 20_000, f"{len(answer)} bytes came back, not the 120,000 sent, upper-cased"
    assert bytes(seen["up"]) == b"hello " * 20_000, "the upstream tap did not see exactly what was sent"
    assert bytes(seen["down"]) == answer, "the downstream tap did not see exactly what came back"


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: several requests on one connection

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_timeline_pairs_each_request_with_its_response(http_upstream: int) -> None:
    with TimelineProxy(http_upstream) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as http:
        for _ in range(5):
            assert http.get("/api/x").json() == {"ok": True}
        spans = list(proxy.spans)
    assert proxy.count_since(0) == 5, f"{proxy.count_since(0)} requests timed, 5 sent"
    assert len(spans) == 5, f"{len(spans)} responses paired with requests, 5 answered"
    assert all(end >= start for start, end in spans), spans


class _Strip(Link):
    """Removes b"NOISE" from what goes up; remembers each link's connection for the test."""

    opened_links: ClassVar[list[_Strip]] = []

    def opened(self, connection: Connection) -> None:
        super().opened(connection)
        self.opened_links.append(self)

    async def forward(self, side: Side, data: bytes) -> bytes | None:
        return data.replace(b"NOISE", b"") if side == "up" else data


def test_a_link_decides_what_is_forwarded_and_can_reset_its_connection(http_upstream: int) -> None:
    loop = LoopThread("test-forwarder")
    forwarder = loop.run(Forwarder(http_upstream, links=_Strip).start())
    try:
        with socket.create_connection(("127.0.0.1", forwarder.port), timeout=5) as sock:
            sock.sendall(b"NOISEGET /x HTTP/1.1\r\nHost: x\r\n\r\n")  # the upstream would refuse the noise
            assert sock.recv(65536).startswith(b"HTTP/1.1 200"), "the forwarded request was not answered"
            (link,) = _Strip.opened_links
            loop.call(link.connection.close, "rst")
            with pytest.raises(ConnectionResetError):
                sock.recv(10)  # an RST, not an EOF
    finally:
        loop.run(forwarder.close())
        loop.stop()
