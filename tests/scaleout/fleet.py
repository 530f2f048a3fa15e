"""Fleet helpers for the scale-out tests: several `hybridcache serve` replicas, a proxy that
timestamps every HTTP request the fleet sends to the Wrapper, and a Redis Sentinel set
(master + replica + 3 sentinels) from the `redis-server` on PATH, all on loopback.

    replicas ──HTTP──► TimelineProxy ──► development Wrapper ──publish──► Redis (or Sentinel's master)
        └──────────────── subscribe (redis:// or redis+sentinel://) ──────────┘
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from hybridcache.server.ops.readiness import wait_serving
from hybridcache_dev.harness.serve_process import ServeProcess
from hybridcache_dev.harness.tcp_proxy import Forwarder, LoopThread, Tap
from hybridcache_dev.stack.redis_process import free_port
from tests.conftest import WRAPPER_TOKEN
from tests.redis_server import RedisServer

DEMO_TENANTS = ("acme", "globex", "initech")
SENTINEL_SERVICE = "main"


def wait_until(condition: Callable[[], object], timeout: float, what: str, *, poll: float = 0.02) -> float:
    """Poll `condition` until truthy; return the seconds it took; AssertionError naming `what`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)  # polling a condition with a deadline
    return time.monotonic() - start


# --- the Wrapper's request timeline


class TimelineProxy:
    """A TCP proxy to the Wrapper that records every HTTP request's start and end.

    The fleet only sends GETs (no bodies), so a request ends at each blank line
    (`\r\n\r\n`) of the client-to-Wrapper byte stream; keep-alive connections carry many,
    one at a time (no pipelining), so responses pair with requests in order. A response
    ends after its headers and `Content-Length` bytes of body (the Wrapper always sends it).
    `times` holds request starts; `spans` holds (start, end) of answered requests.
    Runs the shared forwarder on a `LoopThread` (an asyncio loop on a thread of the test process).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.times: list[float] = []  # monotonic; appended on the loop thread only
        self.spans: list[tuple[float, float]] = []
        self._forwarder = Forwarder(upstream_port, self._taps)
        self._loop: LoopThread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TimelineProxy:
        self._loop = LoopThread("timeline-proxy")
        self.port = self._loop.run(self._forwarder.start()).port
        return self

    def _taps(self) -> tuple[Tap, Tap]:
        """One connection's taps: request ends in, response ends out (paired in order)."""
        open_requests: collections.deque[float] = collections.deque()
        tail = [b""]  # the last bytes of the previous chunk: a blank line may straddle two

        def requests(data: bytes) -> None:
            joined = tail[0] + data
            now = time.monotonic()
            for _ in range(joined.count(b"\r\n\r\n")):
                self.times.append(now)
                open_requests.append(now)
            tail[0] = joined[-3:]

        pending = [b""]
        body_left: list[int | None] = [None]  # None: reading headers

        def responses(data: bytes) -> None:
            pending[0] += data
            while True:
                left = body_left[0]
                if left is None:  # a response's headers: they say how long its body is
                    head_end = pending[0].find(b"\r\n\r\n")
                    if head_end < 0:
                        return
                    head = pending[0][:head_end].lower()
                    pending[0] = pending[0][head_end + 4 :]
                    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
                    left = int(match.group(1)) if match else 0
                take = min(left, len(pending[0]))
                pending[0], left = pending[0][take:], left - take
                if left:
                    body_left[0] = left
                    return
                body_left[0] = None
                if open_requests:
                    self.spans.append((open_requests.popleft(), time.monotonic()))

        return requests, responses

    def in_flight_peak(self, since: float) -> int:
        """Most requests the Wrapper was working on at once, among those started after `since`."""
        edges = sorted(
            [(start, 1) for start, _ in self.spans if start >= since]
            + [(end, -1) for start, end in self.spans if start >= since]
        )
        level = best = 0
        for _, step in edges:
            level += step
            best = max(best, level)
        return best

    def latencies(self, since: float) -> list[float]:
        """Seconds from request to complete response, for requests started after `since`."""
        return sorted(end - start for start, end in list(self.spans) if start >= since)

    def count_since(self, since: float) -> int:
        times = list(self.times)
        return len(times) - bisect.bisect_left(times, since)

    def peak(self, window_s: float, since: float) -> int:
        """Most requests in any `window_s`-long interval after `since` (a sliding window)."""
        times = [t for t in list(self.times) if t >= since]
        best = 0
        for i, start in enumerate(times):
            best = max(best, bisect.bisect_right(times, start + window_s, lo=i) - i)
        return best

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.run(self._forwarder.close())
            self._loop.stop()
            self._loop = None

    def __enter__(self) -> TimelineProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- replicas


def replica_env(wrapper_url: str, redis_url: str, port: int, **overrides: str) -> dict[str, str]:
    env = {
        "HYBRIDCACHE_HOST": "127.0.0.1",
        "HYBRIDCACHE_PORT": str(port),
        "HYBRIDCACHE_WRAPPER_URL": wrapper_url,
        "HYBRIDCACHE_WRAPPER_TOKEN": WRAPPER_TOKEN,
        "HYBRIDCACHE_REDIS_URL": redis_url,
        "HYBRIDCACHE_INSECURE_DEV_MODE": "true",
        "HYBRIDCACHE_TENANTS": ",".join(DEMO_TENANTS),
        "HYBRIDCACHE_RESYNC_JITTER_S": "0",
        "HYBRIDCACHE_LOG_RPCS": "false",
        "HYBRIDCACHE_LOG_FORMAT": "json",
        "HYBRIDCACHE_LOG_LEVEL": "warning",
        "HYBRIDCACHE_GRACE_S": "1",
        "HYBRIDCACHE_WATCH_HEARTBEAT_S": "1",
    }
    env.update(overrides)
    return env


@contextlib.contextmanager
def replicas(
    count: int, workdir: Path, wrapper_url: str, redis_url: str, *, timeout: float = 60.0, **env: str
) -> Iterator[list[ServeProcess]]:
    """Start `count` `hybridcache serve` processes at once; wait until every one is SERVING."""
    started: list[ServeProcess] = []
    try:
        for _ in range(count):
            port = free_port()
            server = ServeProcess(
                replica_env(wrapper_url, redis_url, port, **env), workdir / f"replica-{port}.log"
            )
            started.append(server.start(wait=False))
        for server in started:
            wait_serving(server.target, timeout=timeout, alive=server.running)
        yield started
    finally:
        for server in started:
            server.stop(timeout=10)


def log_tail(server: ServeProcess, lines: int = 15) -> str:
    try:
        return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- Redis Sentinel


class SentinelSet:
    """A master, one replica and three sentinels (quorum 2) from the same redis-server binary."""

    def __init__(self, *, down_after_ms: int = 500, failover_timeout_ms: int = 3000) -> None:
        self.master = RedisServer()
        self.replica: RedisServer | None = None
        self.sentinels: list[RedisServer] = []
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}"

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(self.master.port))).start()
        conf = (
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
        )
        for _ in range(3):
            self.sentinels.append(RedisServer(config_text=conf, extra_args=("--sentinel",)).start())
        wait_until(self._settled, 30, "3 sentinels that know each other and the replica (link up)")
        return self

    def _sentinel_view(self, sentinel: RedisServer) -> dict[str, Any]:
        with sentinel.client(decode_responses=True) as client:
            raw = client.execute_command("SENTINEL", "MASTER", SENTINEL_SERVICE)
        if isinstance(raw, dict):
            return raw
        return dict(zip(raw[::2], raw[1::2], strict=True))

    def _settled(self) -> bool:
        assert self.replica is not None
        try:
            with self.replica.client(decode_responses=True) as client:
                if client.info("replication").get("master_link_status") != "up":
                    return False
            for sentinel in self.sentinels:
                view = self._sentinel_view(sentinel)
                if int(view["num-other-sentinels"]) != 2 or int(view["num-slaves"]) != 1:
                    return False
        except (redis.RedisError, OSError, KeyError):
            return False
        return True

    def master_port(self) -> int | None:
        """The master's port as a majority of the sentinels report it."""
        ports: list[int] = []
        for sentinel in self.sentinels:
            try:
                with sentinel.client(decode_responses=True) as client:
                    addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
            except (redis.RedisError, OSError):
                continue
            if addr:
                ports.append(int(addr[1]))
        for port in ports:
            if ports.count(port) >= 2:
                return port
        return None

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; return the server that should be promoted."""
        assert self.replica is not None
        self.master.kill()
        return self.replica

    def wait_promoted(self, timeout: float = 30.0) -> float:
        """Wait until the sentinels name the replica as master and it accepts writes."""
        assert self.replica is not None
        replica = self.replica

        def promoted() -> bool:
            if self.master_port() != replica.port:
                return False
            try:
                with replica.client(decode_responses=True) as client:
                    return client.info("replication").get("role") == "master"
            except (redis.RedisError, OSError):
                return False

        return wait_until(promoted, timeout, f"the replica on port {replica.port} promoted by the sentinels")

    def close(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            if server is not None:
                server.close()

    def __enter__(self) -> SentinelSet:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
