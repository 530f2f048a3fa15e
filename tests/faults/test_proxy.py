"""The fault proxy itself, against a loopback echo server: each fault does what it says."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.history import wait_until
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.timeout(30)]


class EchoServer:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.received = 0
        self._stop = threading.Event()
        self.sock.settimeout(0.05)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.received += len(data)
                with contextlib.suppress(OSError):
                    conn.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(echo.port) as p:
        yield p


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=2)


def roundtrip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_forwards_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert roundtrip(sock, b"hello") == b"hello", "the proxy did not forward the echo"
    assert proxy.stats.accepted == 1


def test_latency_is_added_per_chunk(proxy: FaultProxy) -> None:
    proxy.latency(0.2, "down")
    with connect(proxy) as sock:
        started = time.monotonic()
        assert roundtrip(sock) == b"ping"
        took = time.monotonic() - started
    assert 0.2 <= took < 1.5, f"a 200 ms downstream latency gave a {took * 1000:.0f} ms round trip"


def test_drop_closes_with_fin(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert roundtrip(sock) == b"ping"
        assert proxy.drop() == 1
        assert sock.recv(10) == b"", "after drop() the client should read EOF (FIN)"


def test_reset_closes_with_rst(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert roundtrip(sock) == b"ping"
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):
            sock.recv(10)  # an RST, not an EOF


def test_blackhole_is_half_open_then_heal(proxy: FaultProxy, echo: EchoServer) -> None:
    old = connect(proxy)
    assert roundtrip(old) == b"ping"
    proxy.blackhole()
    before = echo.received
    old.settimeout(0.5)
    old.sendall(b"lost")
    with pytest.raises(TimeoutError):
        old.recv(10)  # no answer, and no FIN/RST either: recv would return b"" or raise reset
    new = connect(proxy)  # accepted, but black-holed too
    new.settimeout(0.5)
    new.sendall(b"also lost")
    with pytest.raises(TimeoutError):
        new.recv(10)
    assert echo.received == before, "a black-holed proxy forwarded bytes upstream"
    wait_until(lambda: proxy.stats.blackholed_bytes >= 13, timeout=2, what="the black hole reading its input")
    proxy.heal()
    old.settimeout(2)
    with pytest.raises(ConnectionResetError):
        old.recv(10)  # heal() resets the connections that lost bytes in the hole
    with connect(proxy) as healed:
        assert roundtrip(healed) == b"ping", "after heal() a new connection should work"
    old.close()
    new.close()


def test_bandwidth_cap(proxy: FaultProxy) -> None:
    proxy.bandwidth(100_000)  # bytes/s per direction
    payload = b"x" * 50_000
    with connect(proxy) as sock:
        sock.settimeout(10)
        started = time.monotonic()
        assert roundtrip(sock, payload) == payload
        took = time.monotonic() - started
    assert took >= 0.4, f"50 kB at 100 kB/s each way took only {took:.2f} s"
