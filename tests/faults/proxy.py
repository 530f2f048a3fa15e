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

Built on the one asyncio forwarder (`hybridcache_dev.harness.tcp_proxy`), each connection
a `Link` reading the proxy's current faults per chunk, run on a loop thread (`LoopThread`)
so the scenarios stay synchronous; `drop`/`reset`/`heal` close connections on that thread
and return once done. A bandwidth cap holds each chunk for its size's worth of time before
forwarding it (the rate is kept; within a chunk it is bursty). Everything binds 127.0.0.1
only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from hybridcache_dev.harness.tcp_proxy import Connection, Forwarder, Link, LoopThread, Side

Direction = Literal["up", "down", "both"]
DownFilter = Callable[[bytes], bytes]


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
    closed_by_client: int = 0  # the client end sent FIN (how a peer's "I give up" shows)
    dropped: int = 0
    reset: int = 0
    blackholed_bytes: int = 0
    forwarded_up: int = 0
    forwarded_down: int = 0


class _FaultLink(Link):
    """One connection through the fault proxy: the proxy's current faults, applied per chunk."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.blackholed = False
        self.down_filter = proxy.down_filter() if proxy.down_filter is not None else None

    def wants_upstream(self) -> bool:
        self.blackholed = self.proxy.faults.blackhole  # born in a black hole: no upstream at all
        return not self.blackholed

    def opened(self, connection: Connection) -> None:
        super().opened(connection)
        self.proxy.stats.accepted += 1
        self.proxy._links.add(self)

    def refused(self) -> None:
        self.proxy.stats.upstream_failures += 1

    async def forward(self, side: Side, data: bytes) -> bytes | None:
        faults, stats = self.proxy.faults, self.proxy.stats
        if faults.blackhole or self.blackholed:
            self.blackholed = True
            stats.blackholed_bytes += len(data)
            return None
        if side == "down" and self.down_filter is not None:
            data = self.down_filter(data)
        delay = faults.latency_up_s if side == "up" else faults.latency_down_s
        if delay > 0:
            await asyncio.sleep(delay)
        if faults.bandwidth_bps:
            await asyncio.sleep(len(data) / faults.bandwidth_bps)
        if side == "up":
            stats.forwarded_up += len(data)
        else:
            stats.forwarded_down += len(data)
        return data

    def ended(self, side: Side, *, by_peer: bool) -> bool:
        if side == "up" and by_peer:
            self.proxy.stats.closed_by_client += 1
        # The upstream went away behind a black hole: the client must see nothing at all.
        return not (self.blackholed and side == "down")

    def closed(self) -> None:
        self.proxy._links.discard(self)


class FaultProxy:
    """Forward 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, with switchable faults."""

    def __init__(
        self, upstream_port: int, *, port: int = 0, down_filter: Callable[[], DownFilter] | None = None
    ) -> None:
        self.upstream_port = upstream_port
        self.down_filter = down_filter
        self.stats = ProxyStats()
        self.faults = Faults()
        self._links: set[_FaultLink] = set()  # touched on the loop's thread only
        self._forwarder = Forwarder(upstream_port, links=lambda: _FaultLink(self), port=port)
        self._loop: LoopThread | None = None
        self.port = port

    @property
    def url(self) -> str:
        """A redis:// URL through the proxy (for a Redis upstream)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._loop = LoopThread("faultproxy")
        self.port = self._loop.run(self._forwarder.start()).port
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._close_all("rst")
        self._loop.run(self._forwarder.close())
        self._loop.stop()
        self._loop = None

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
        count = self._close_all("fin")
        self.stats.dropped += count
        return count

    def reset(self) -> int:
        """Close every open connection with an RST; returns how many."""
        count = self._close_all("rst")
        self.stats.reset += count
        return count

    def heal(self) -> None:
        """No faults any more; black-holed connections (which lost bytes) are reset."""
        self.faults = Faults()
        self._close_all("rst", only_blackholed=True)

    # --- state

    def _close_all(self, how: Literal["fin", "rst"], *, only_blackholed: bool = False) -> int:
        def close() -> int:
            chosen = [
                link
                for link in self._links
                if not link.connection.closed and (link.blackholed or not only_blackholed)
            ]
            for link in chosen:
                link.connection.close(how)
            return len(chosen)

        return self._on_loop(close)

    def _on_loop(self, fn: Callable[[], int]) -> int:
        if self._loop is None:
            return 0
        return self._loop.call(fn)
