"""A small TCP fault proxy of the project's own (Toxiproxy-style), for the fault scenarios.

    FaultProxy(upstream_port).start()      # listens on 127.0.0.1:proxy.port
      client ──► 127.0.0.1:proxy.port ──► 127.0.0.1:upstream_port

Switchable faults, applied to connections already open and to new ones:

* `latency(seconds, direction=...)` — sleep before forwarding each chunk ("up": client to
  upstream, "down": upstream to client, "both");
* `bandwidth(bytes_per_s)` — cap each direction of each connection;
* `drop()` — close every open connection with a FIN (a clean close);
* `reset()` — close every open connection with an RST (SO_LINGER 0);
* `blackhole()` — accept and read, never forward, never answer, never close: a half-open
  peer. New connections are accepted and black-holed too (no upstream connection at all);
* `heal()` — remove every fault. Connections that were black-holed have lost bytes, so
  they are reset on heal (a real half-open connection never comes back either).

`down_filter`: a factory of per-connection filters (bytes in, bytes out) applied to what
the upstream sends before it is forwarded, for faults that need the protocol (e.g.
`resp_filter.DeliveryChaos`: eat or reorder some pub/sub deliveries).

Threads: one acceptor, and two pump threads per connection. Pumps wake every
`POLL_S` to notice a fault switch; nothing here sleeps to wait for readiness. Everything
binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

POLL_S = 0.05
CHUNK = 65536
Direction = Literal["up", "down", "both"]


@dataclass(frozen=True)
class Faults:
    latency_up_s: float = 0.0
    latency_down_s: float = 0.0
    bandwidth_bps: float | None = None
    blackhole: bool = False


@dataclass
class ProxyStats:
    accepted: int = 0
    upstream_failures: int = 0  # upstream refused / unreachable: the client was closed
    closed_by_client: int = 0  # the client end sent FIN/RST (how a peer's "I give up" shows)
    dropped: int = 0
    reset: int = 0
    blackholed_bytes: int = 0
    forwarded_up: int = 0
    forwarded_down: int = 0


def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _fin(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Connection:
    _ids = itertools.count(1)

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket | None) -> None:
        self.id = next(self._ids)
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self.blackholed = upstream is None  # born in a black hole: never forwards
        self.down_filter = proxy.down_filter() if proxy.down_filter is not None else None
        self._lock = threading.Lock()

    def start(self) -> None:
        for name, src, dst, direction in (
            ("up", self.client, self.upstream, "up"),
            ("down", self.upstream, self.client, "down"),
        ):
            if src is None:
                continue
            threading.Thread(
                target=self._pump,
                args=(src, dst, direction),
                name=f"faultproxy-{self.id}-{name}",
                daemon=True,
            ).start()

    def close(self, how: Literal["fin", "rst"]) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                (_rst if how == "rst" else _fin)(sock)
        self.proxy._forget(self)

    @staticmethod
    def _send(dst: socket.socket, data: bytes, bandwidth_bps: float | None) -> bool:
        """Forward `data`; with a bandwidth cap, in slices of 50 ms worth, each paid for first."""
        try:
            if not bandwidth_bps:
                dst.sendall(data)
                return True
            step = max(1, int(bandwidth_bps * POLL_S))
            for offset in range(0, len(data), step):
                piece = data[offset : offset + step]
                time.sleep(len(piece) / bandwidth_bps)
                dst.sendall(piece)
        except OSError:
            return False
        return True

    def _filtered(self, data: bytes, direction: str) -> bytes:
        if direction == "down" and self.down_filter is not None:
            return self.down_filter(data)
        return data

    def _pump(self, src: socket.socket, dst: socket.socket | None, direction: str) -> None:
        stats = self.proxy.stats
        while not self.closed.is_set():
            try:
                readable, _, _ = select.select([src], [], [], POLL_S)
                if not readable:
                    continue
                data = src.recv(CHUNK)
            except (OSError, ValueError):  # ValueError: the socket was closed under us
                break
            if not data:
                if src is self.client:
                    stats.closed_by_client += 1
                break
            faults = self.proxy.faults
            if faults.blackhole or self.blackholed or dst is None:
                self.blackholed = True
                stats.blackholed_bytes += len(data)
                continue
            data = self._filtered(data, direction)
            if not data:
                continue
            delay = faults.latency_up_s if direction == "up" else faults.latency_down_s
            if delay > 0:
                time.sleep(delay)
            if not self._send(dst, data, faults.bandwidth_bps):
                break
            if direction == "up":
                stats.forwarded_up += len(data)
            else:
                stats.forwarded_down += len(data)
        # One side ended (or a fault closed us): end both, cleanly, unless in a black hole,
        # where the client must see nothing at all.
        if self.blackholed and not self.closed.is_set() and src is not self.client:
            return  # the upstream went away behind the black hole: the client is not told
        self.close("fin")


class FaultProxy:
    """Forward 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, with switchable faults."""

    def __init__(
        self,
        upstream_port: int,
        *,
        port: int = 0,
        down_filter: Callable[[], Callable[[bytes], bytes]] | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.down_filter = down_filter
        self.stats = ProxyStats()
        self.faults = Faults()
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(128)
        self._listener.settimeout(POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)

    @property
    def url(self) -> str:
        """A redis:// URL through the proxy (for a Redis upstream)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()
        for conn in self.connections():
            conn.close("rst")

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- faults

    def latency(self, seconds: float, direction: Direction = "both") -> None:
        up = seconds if direction in ("up", "both") else self.faults.latency_up_s
        down = seconds if direction in ("down", "both") else self.faults.latency_down_s
        self.faults = Faults(up, down, self.faults.bandwidth_bps, self.faults.blackhole)

    def bandwidth(self, bytes_per_s: float | None) -> None:
        f = self.faults
        self.faults = Faults(f.latency_up_s, f.latency_down_s, bytes_per_s, f.blackhole)

    def blackhole(self) -> None:
        f = self.faults
        self.faults = Faults(f.latency_up_s, f.latency_down_s, f.bandwidth_bps, True)

    def drop(self) -> int:
        """Close every open connection with a FIN; returns how many."""
        conns = self.connections()
        for conn in conns:
            conn.close("fin")
        self.stats.dropped += len(conns)
        return len(conns)

    def reset(self) -> int:
        """Close every open connection with an RST; returns how many."""
        conns = self.connections()
        for conn in conns:
            conn.close("rst")
        self.stats.reset += len(conns)
        return len(conns)

    def heal(self) -> None:
        """No faults any more; black-holed connections (which lost bytes) are reset."""
        self.faults = Faults()
        for conn in self.connections():
            if conn.blackholed:
                conn.close("rst")

    # --- state

    def connections(self) -> list[_Connection]:
        with self._lock:
            return list(self._connections)

    def open_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.stats.accepted += 1
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream: socket.socket | None = None
            if not self.faults.blackhole:
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2.0)
                    upstream.settimeout(None)
                    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    self.stats.upstream_failures += 1
                    _fin(client)
                    continue
            conn = _Connection(self, client, upstream)
            with self._lock:
                self._connections.add(conn)
            conn.start()
