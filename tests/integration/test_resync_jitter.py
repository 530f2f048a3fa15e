"""The resync jitter after a gap is the reader's place among the instances resubscribing
(reader.py), and reconnecting after an outage is quick (the backoff stops at 0.25 s)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from hybridcache.server.events.connection import SocketOptions
from hybridcache.server.events.stats import EventStats
from hybridcache.server.events.subscriber import RedisSubscriber
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)


@dataclass
class GapSink:
    """Records the jitter each gap asks for."""

    stats: EventStats = field(default_factory=EventStats)
    resync_outstanding: bool = False
    gaps: list[float | None] = field(default_factory=list)

    def process(self, channel: bytes | str, data: bytes | str) -> object:
        return None

    def reject(self, reason: str) -> None:
        pass

    def on_gap(self, reason: str, jitter_max_s: float | None = None) -> None:
        self.gaps.append(jitter_max_s)


def test_jitter_grows_with_the_fleet_and_reconnect_is_prompt(own_redis: RedisProcess) -> None:
    sinks = [GapSink() for _ in range(3)]
    readers = [
        RedisSubscriber(own_redis.url, sink, socket_options=SocketOptions(connect_timeout_s=1.0))
        for sink in sinks
    ]
    try:
        for reader in readers:
            reader.start()

            def subscribed(r: RedisSubscriber = reader) -> bool:
                return r.live

            wait_for(subscribed, timeout=10, what="a reader to subscribe")
        assert [s.gaps for s in sinks] == [
            [pytest.approx(0.2)],
            [pytest.approx(0.4)],
            [pytest.approx(0.6)],
        ], "each reader's jitter is its place among the instances subscribed, itself included"
        with own_redis.client() as probe:
            named = [c for c in probe.client_list() if c.get("name") == "hybridcache-events"]
        assert len(named) == 3, f"one connection per reader once subscribed: {named}"
        own_redis.kill()
        wait_for(lambda: not any(r.live for r in readers), timeout=10, what="the readers to see Redis gone")
        time.sleep(3.0)  # an outage long enough for the old 5 s backoff to grow past 1 s
        own_redis.start()
        back = time.monotonic()
        wait_for(lambda: all(r.live for r in readers), timeout=10, what="every reader to resubscribe")
        took = time.monotonic() - back
        assert took < 1.0, f"resubscribing took {took:.2f} s after Redis came back (backoff cap 0.25 s)"
        places = sorted(round(s.gaps[-1] / 0.2) for s in sinks if s.gaps[-1] is not None)
        # After a shared restart the readers queue up, one slot each (two reconnecting in the
        # same few milliseconds may share a place).
        assert places[0] == 1, places
        assert places[-1] >= 2, places
        assert places[-1] <= 3, places
    finally:
        for reader in readers:
            reader.stop()


def test_without_client_list_the_configured_jitter_applies(own_redis: RedisProcess) -> None:
    with own_redis.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "reader", "on", ">pw", "+@pubsub", "+ping", "+client|setname", "&*"
        )
    url = own_redis.url.replace("redis://", "redis://reader:pw@")
    sink = GapSink()
    reader = RedisSubscriber(url, sink)
    try:
        reader.start()
        wait_for(lambda: reader.live, timeout=10, what="the reader to subscribe")
        assert sink.gaps == [None]
    finally:
        reader.stop()
