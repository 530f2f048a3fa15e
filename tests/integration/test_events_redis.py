"""Change notifications against a real redis-server: latency, a 10,000-message fuzz, Redis
killed and restarted, pub/sub clients killed, a paused (black-holed) server, durable
stream mode across reconnects and trims, and the test helper RedisServer itself.

The cache is `FakeCache` (tests/unit/events/fakes.py), which records every call; every
wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import CreditCost
from hybridcache.server.events.decode import DecoderConfig
from hybridcache.server.events.feed import ChangeFeed, FeedConfig
from hybridcache.server.events.ingest import EventIngestor
from hybridcache.server.events.reader import Freshness, RedisReader
from hybridcache.server.events.signing import sign
from hybridcache.server.events.stream_reader import RedisStreamReader, stream_key
from hybridcache.server.events.subscriber import RedisSubscriber
from tests.redis_server import RedisServer
from tests.unit.events.fakes import FakeCache, NoticeLog, wait_until

# Short liveness settings so fault tests finish quickly; the bound scales with them.
PUBSUB_FAST: dict[str, Any] = {
    "ping_interval_s": 0.3,
    "ping_timeout_s": 0.3,
    "poll_interval_s": 0.05,
    "backoff_initial_s": 0.02,
    "backoff_max_s": 0.2,
}
STREAM_FAST: dict[str, Any] = {
    "block_ms": 100,
    "ping_timeout_s": 0.5,
    "backoff_initial_s": 0.02,
    "backoff_max_s": 0.2,
}
STREAM = stream_key("crm")
SCHEDULING_SLACK_S = 0.3  # thread wake-ups on a loaded 2-core machine, on top of a stated bound


def credit_body(
    event_id: str, key: str, cost: Any, *, tenant: str = "acme", version: int | None = None
) -> str:
    data: dict[str, Any] = {"operationCode": key, "changedFields": ["credit_cost"], "newValue": cost}
    if version is not None:
        data["version"] = version
    return json.dumps(
        {"eventId": event_id, "eventType": "credit-config-changed", "tenantId": tenant, "data": data},
        separators=(",", ":"),
    )


class Feed:
    """Fake cache + real ingestor + a real reader on the given Redis."""

    def __init__(
        self,
        url: str,
        *,
        mode: str = "pubsub",
        decoder: DecoderConfig | None = None,
        tenants: tuple[str, ...] = ("acme", "globex"),
        **reader_kwargs: Any,
    ) -> None:
        self.cache = FakeCache(tenants)
        self.notices = NoticeLog()
        self.ingestor = EventIngestor(self.cache, self.notices, decoder=decoder, resync_jitter_s=0.0)
        self.reader: RedisReader
        if mode == "pubsub":
            self.reader = RedisSubscriber(url, self.ingestor, **{**PUBSUB_FAST, **reader_kwargs})
        else:
            self.reader = RedisStreamReader(url, self.ingestor, **{**STREAM_FAST, **reader_kwargs})
        self.ingestor.start()
        self.reader.start()

    @property
    def stats(self) -> Any:
        return self.ingestor.stats.snapshot()

    def wait_live(self, timeout: float = 5.0) -> float:
        return wait_until(lambda: self.reader.freshness() is Freshness.LIVE, timeout, "freshness live")

    def wait_degraded(self, timeout: float = 5.0) -> float:
        return wait_until(
            lambda: self.reader.freshness() is Freshness.DEGRADED, timeout, "freshness degraded"
        )

    def resyncs(self, tenant: str = "acme") -> int:
        return self.cache.count("resync_tenant", tenant)

    def close(self) -> None:
        assert self.reader.stop(5), "reader thread did not stop"
        assert self.ingestor.stop(5), "repair thread did not stop"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


@pytest.fixture
def publisher(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def feeds() -> Iterator[list[Feed]]:
    made: list[Feed] = []
    yield made
    for feed in made:
        feed.close()


def _client_id(client: redis.Redis, name: str = "hybridcache-events") -> int:
    for entry in client.client_list():
        if entry.get("name") == name:
            return int(entry["id"])
    raise AssertionError(f"no client named {name} connected")


# --- pub/sub: the happy path


@pytest.mark.timeout(30)
def test_published_changes_are_applied_promptly(server: RedisServer, publisher: redis.Redis) -> None:
    """Each of 50 events applied (a condition, 5 s each: a loaded 2-core host stalls threads
    for tens of ms now and then), the median within 100 ms (~1 ms when the host is quiet)."""
    cache, notices = FakeCache(["acme"]), NoticeLog()
    feed = ChangeFeed(cache, notices, FeedConfig(redis_url=server.url, resync_jitter_s=0.0)).start()
    try:
        wait_until(lambda: feed.freshness() is Freshness.LIVE, 5, "the feed to become live")
        latencies = []
        for i in range(50):
            start = time.monotonic()
            assert publisher.publish("crm:acme:credit-config-changed", credit_body(f"e-{i}", "op.a", i)) == 1

            def applied(n: int = i + 1) -> bool:
                return cache.count("apply") == n

            cache.wait_for(applied, 5.0, f"event {i} applied")
            latencies.append(time.monotonic() - start)
        assert cache.store[("acme", Kind.CREDIT_COSTS, "op.a")] == CreditCost("op.a", "49", 0)
        assert len(notices.notices) == 50 + 4  # 50 changes + one resync marker per replicated kind
        assert feed.last_message_at is not None
        latencies.sort()
        print(f"publish->applied: p50 {latencies[25] * 1e3:.2f} ms, max {latencies[-1] * 1e3:.2f} ms")
        assert latencies[25] <= 0.1, f"publish->applied median {latencies[25] * 1e3:.1f} ms (bound 100 ms)"
    finally:
        assert feed.stop(5)


@pytest.mark.timeout(30)
def test_only_subscribed_event_types_are_received(
    server: RedisServer, publisher: redis.Redis, feeds: list[Feed]
) -> None:
    feed = Feed(server.url)  # default patterns: crm:*:<eventType> for each known type
    feeds.append(feed)
    feed.wait_live()
    for i in range(10):
        publisher.publish("crm:acme:lead-created", f'{{"eventId":"x-{i}"}}')  # someone else's traffic
    publisher.publish("crm:acme:credit-config-changed", credit_body("e-1", "op.a", 1))
    feed.cache.wait_for(lambda: feed.cache.count("apply") == 1, 2, "the credit event")
    assert feed.stats.received == 1  # Redis filtered the rest server-side


@pytest.mark.timeout(30)
def test_unix_socket_url(feeds: list[Feed]) -> None:
    with RedisServer(unix_socket=True) as server, server.client() as publisher:
        feed = Feed(server.unix_url)
        feeds.append(feed)
        feed.wait_live()
        publisher.publish("crm:acme:credit-config-changed", credit_body("e-1", "op.a", "1.25"))
        feed.cache.wait_for(lambda: feed.cache.count("apply") == 1, 2, "the event over a unix socket")
        feed.close()
        feeds.remove(feed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["pubsub", "stream"])
def test_sentinel_url(server: RedisServer, publisher: redis.Redis, feeds: list[Feed], mode: str) -> None:
    conf = f"sentinel monitor main 127.0.0.1 {server.port} 1\n"
    with RedisServer(config_text=conf, extra_args=("--sentinel",)) as sentinel:
        feed = Feed(f"redis+sentinel://127.0.0.1:{sentinel.port}/main", mode=mode)
        feeds.append(feed)
        feed.wait_live()
        body = credit_body("e-1", "op.a", 1)
        if mode == "pubsub":
            publisher.publish("crm:acme:credit-config-changed", body)
        else:
            publisher.xadd(STREAM, {"channel": "crm:acme:credit-config-changed", "message": body})
        feed.cache.wait_for(lambda: feed.cache.count("apply") == 1, 2, "an event via the sentinel's master")
        server.kill()  # the master dies and comes back: one more gap for pub/sub
        server.restart()
        feed.wait_live(10)
        assert feed.resyncs() == 2
        feed.close()
        feeds.remove(feed)


@pytest.mark.timeout(30)
def test_signed_events_through_redis(server: RedisServer, publisher: redis.Redis, feeds: list[Feed]) -> None:
    key = b"test-signing-key"
    feed = Feed(server.url, decoder=DecoderConfig(hmac_keys=(key,)))
    feeds.append(feed)
    feed.wait_live()
    now_ms = time.time_ns() // 1_000_000
    publisher.publish("crm:acme:credit-config-changed", credit_body("e-1", "op.a", 1))  # unsigned
    publisher.publish("crm:acme:credit-config-changed", sign(credit_body("e-2", "op.a", 2), key, now_ms))
    wait_until(lambda: feed.stats.received == 2, 2, "both messages read")
    assert feed.cache.count("apply") == 1
    assert feed.stats.rejected == {"bad-signature": 1}


# --- pub/sub: 10,000 messages, most of them bad


@dataclass
class Fuzz:
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    expected: Counter[str] = field(default_factory=Counter)
    latest: dict[tuple[str, str], tuple[int, str]] = field(
        default_factory=dict
    )  # (tenant, key) -> version, cost
    valid: list[tuple[str, bytes]] = field(default_factory=list)
    invalidations: int = 0


def _fuzz_messages(count: int, seed: int) -> Fuzz:
    rng = random.Random(seed)
    fuzz = Fuzz()
    versions: dict[tuple[str, str], int] = {}
    serial = 0

    def next_id() -> str:
        nonlocal serial
        serial += 1
        return f"ev-{serial}"

    def add(channel: str, body: str | bytes, outcome: str) -> None:
        fuzz.messages.append((channel, body.encode() if isinstance(body, str) else body))
        fuzz.expected[outcome] += 1

    def valid_credit() -> None:
        tenant = rng.choice(["acme", "globex"])
        key = f"op.{rng.randrange(40)}"
        version = versions.get((tenant, key), 0) + rng.randint(1, 3)
        versions[(tenant, key)] = version
        cost = f"{rng.randrange(1000)}.{rng.randrange(100):02d}".rstrip("0").rstrip(".")
        channel = f"crm:{tenant}:credit-config-changed"
        body = credit_body(next_id(), key, cost, tenant=tenant, version=version)
        fuzz.latest[(tenant, key)] = (version, cost)
        fuzz.valid.append((channel, body.encode()))
        add(channel, body, "applied")

    def valid_profile() -> None:
        body = json.dumps(
            {
                "eventId": next_id(),
                "eventType": "user-profile-changed",
                "tenantId": "acme",
                "data": {"userId": f"user-{rng.randrange(100)}", "changedFields": ["title"]},
            }
        )
        fuzz.valid.append(("crm:acme:user-profile-changed", body.encode()))
        fuzz.invalidations += 1
        add("crm:acme:user-profile-changed", body, "invalidated")

    def duplicate() -> None:
        if not fuzz.valid:
            return valid_credit()
        channel, body = rng.choice(fuzz.valid)
        return add(channel, body, "duplicate")

    def out_of_order() -> None:
        candidates = [k for k, v in versions.items() if v >= 2]
        if not candidates:
            return valid_credit()
        tenant, key = rng.choice(candidates)
        old = rng.randint(1, versions[(tenant, key)])  # <= the newest applied: ignored
        body = credit_body(next_id(), key, "999", tenant=tenant, version=old)
        return add(f"crm:{tenant}:credit-config-changed", body, "old-version")

    good = credit_body("template", "op.t", 1)
    kinds: list[tuple[float, Any]] = [
        (0.30, valid_credit),
        (0.05, valid_profile),
        (0.08, duplicate),
        (0.07, out_of_order),
        (
            0.08,
            lambda: add(
                "crm:acme:credit-config-changed",
                rng.choice(["{", "not json", good[: rng.randrange(1, len(good) - 1)], "\xff"]).encode(
                    "utf-8", "surrogateescape"
                )
                if rng.random() < 0.9
                else b"\xff\xfe{",
                "malformed-json",
            ),
        ),
        (
            0.005,
            lambda: add("crm:acme:credit-config-changed", "x" * (65_537 + rng.randrange(1000)), "oversized"),
        ),
        (
            0.07,
            lambda: add(
                "crm:acme:credit-config-changed",
                credit_body(next_id(), "op.a", 1, tenant="globex"),
                "tenant-mismatch",
            ),
        ),
        (
            0.07,
            lambda: add("crm:acme:feature-flag-changed", credit_body(next_id(), "op.a", 1), "type-mismatch"),
        ),
        (
            0.07,
            lambda: add(
                rng.choice(
                    [
                        "crm:acme:x:credit-config-changed",
                        "crm:ac$me:credit-config-changed",
                        "crm:" + "t" * 65 + ":credit-config-changed",
                    ]
                ),
                credit_body(next_id(), "op.a", 1),
                "bad-channel",
            ),
        ),
        (0.07, lambda: add("crm:acme:lead-created", credit_body(next_id(), "op.a", 1), "unknown-event-type")),
        (
            0.07,
            lambda: add(
                "crm:initech:credit-config-changed",
                credit_body(next_id(), "op.a", 1, tenant="initech"),
                "tenant-not-allowed",
            ),
        ),
        (
            0.075,
            lambda: add(
                "crm:acme:credit-config-changed",
                rng.choice(
                    [
                        credit_body(next_id(), "op.a", -1),
                        credit_body(next_id(), "op a", 1),
                        credit_body(next_id(), "op.a", {"x": 1}),
                        credit_body(next_id(), "op.a", "1e999999"),
                        json.dumps({"eventType": "credit-config-changed", "tenantId": "acme", "data": {}}),
                    ]
                ),
                "schema",
            ),
        ),
    ]
    weights = [w for w, _ in kinds]
    while len(fuzz.messages) < count:
        rng.choices(kinds, weights)[0][1]()
    return fuzz


@pytest.mark.timeout(120)
def test_fuzz_10000_messages_exact_counts(
    server: RedisServer, publisher: redis.Redis, feeds: list[Feed]
) -> None:
    fuzz = _fuzz_messages(10_000, seed=20240601)
    feed = Feed(
        server.url,
        decoder=DecoderConfig(allowed_tenants=frozenset({"acme", "globex"})),
        patterns=("crm:*",),  # the wide form, so bad channels and unknown types reach us too
        ping_interval_s=5.0,
        ping_timeout_s=3.0,
    )
    feeds.append(feed)
    feed.wait_live()
    assert feed.ingestor.wait_idle(5)

    pipe = publisher.pipeline(transaction=False)
    for i, (channel, body) in enumerate(fuzz.messages, 1):
        pipe.publish(channel, body)
        if i % 500 == 0:
            assert all(n == 1 for n in pipe.execute()), "a message found no subscriber"
    pipe.execute()

    wait_until(lambda: feed.stats.received == 10_000, 60, "all 10,000 messages read")
    assert feed.reader.is_alive()
    stats = feed.stats
    expected_rejected = {r: n for r, n in fuzz.expected.items() if r not in ("applied", "invalidated")}
    assert stats.rejected == expected_rejected
    assert stats.applied == fuzz.expected["applied"]
    assert stats.invalidated == fuzz.expected["invalidated"]
    assert (stats.gaps, stats.reconnects, stats.apply_errors, stats.sink_errors) == (1, 0, 0, 0)
    # Only the valid events changed the cache: exactly the newest value of every key.
    assert feed.cache.count("apply") == fuzz.expected["applied"] + fuzz.expected["old-version"]
    assert feed.cache.count("invalidate") == fuzz.invalidations
    held = {
        (t, k): (feed.cache.versions[(t, kind, k)], v.cost) for (t, kind, k), v in feed.cache.store.items()
    }  # type: ignore[union-attr]
    assert held == fuzz.latest
    print(f"fuzz outcome counts: {dict(fuzz.expected)}")


# --- pub/sub: faults


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_redis_killed_and_restarted(server: RedisServer, feeds: list[Feed]) -> None:
    feed = Feed(server.url)
    feeds.append(feed)
    feed.wait_live()
    assert feed.resyncs() == 1  # the first subscription is a gap too

    server.kill()
    took = feed.wait_degraded(2)
    assert not feed.reader.live
    print(f"killed redis -> degraded in {took * 1e3:.1f} ms")
    wait_until(lambda: feed.stats.reconnects == 1, 2, "the lost connection counted")

    server.restart()
    took = feed.wait_live(5)
    print(f"restarted redis -> live again in {took * 1e3:.1f} ms")
    assert feed.resyncs("acme") == 2
    assert feed.resyncs("globex") == 2
    assert feed.stats.gaps == 2
    assert feed.cache.count("drop_reference") == 2

    with server.client() as publisher:
        publisher.publish("crm:acme:credit-config-changed", credit_body("after", "op.a", 5))
    feed.cache.wait_for(lambda: feed.cache.count("apply") == 1, 2, "an event after the restart")


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_client_kill_type_pubsub(server: RedisServer, publisher: redis.Redis, feeds: list[Feed]) -> None:
    feed = Feed(server.url)
    feeds.append(feed)
    feed.wait_live()
    gate = feed.cache.resync_gate = __import__("threading").Event()  # hold the next resync

    assert publisher.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
    feed.wait_degraded(2)
    feed.cache.wait_for(lambda: feed.stats.gaps == 2, 5, "the re-subscription reported as a gap")
    assert feed.reader.live  # subscribed again...
    assert feed.reader.freshness() is Freshness.DEGRADED  # ...but not fresh until the resync is done
    gate.set()
    feed.wait_live(5)
    assert feed.resyncs() == 2
    assert feed.stats.reconnects == 1


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_a_silent_connection_is_detected_within_the_bound(
    server: RedisServer, publisher: redis.Redis, feeds: list[Feed]
) -> None:
    feed = Feed(server.url)
    feeds.append(feed)
    feed.wait_live()
    bound = feed.reader.detection_bound_s  # type: ignore[attr-defined]

    # CLIENT PAUSE ALL: Redis keeps the connection open but answers nothing (not even PING),
    # which is what a black-holed peer looks like from here.
    start = time.monotonic()
    publisher.execute_command("CLIENT", "PAUSE", "2500", "ALL")
    wait_until(lambda: feed.stats.reconnects == 1, bound + 1.0, "the dead connection detected")
    detected = time.monotonic() - start
    print(f"paused redis -> detected dead in {detected * 1e3:.0f} ms (bound {bound * 1e3:.0f} ms)")
    assert detected <= bound + SCHEDULING_SLACK_S
    assert feed.reader.freshness() is Freshness.DEGRADED

    feed.wait_live(10)  # the pause ends, the reader re-subscribes, resyncs
    assert feed.resyncs() == 2


# --- durable mode (streams)


@pytest.mark.timeout(60)
def test_stream_mode_applies_entries(server: RedisServer, publisher: redis.Redis, feeds: list[Feed]) -> None:
    publisher.xadd(
        STREAM, {"channel": "crm:acme:credit-config-changed", "message": credit_body("old", "op.a", 1)}
    )
    feed = Feed(server.url, mode="stream")
    feeds.append(feed)
    feed.wait_live()
    assert feed.resyncs() == 1  # first start: `$` + resync; the entry before it is not replayed
    for i in range(3):
        publisher.xadd(
            STREAM, {"channel": "crm:acme:credit-config-changed", "message": credit_body(f"e-{i}", "op.a", i)}
        )
    publisher.xadd(STREAM, {"message": b"{}"})  # no channel field
    feed.cache.wait_for(lambda: feed.cache.count("apply") == 3, 2, "three stream entries applied")
    wait_until(lambda: feed.stats.rejected == {"bad-channel": 1}, 2, "the entry without channel rejected")


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_stream_reconnect_resumes_without_resync(
    server: RedisServer, publisher: redis.Redis, feeds: list[Feed]
) -> None:
    feed = Feed(server.url, mode="stream")
    feeds.append(feed)
    feed.wait_live()
    publisher.xadd(
        STREAM, {"channel": "crm:acme:credit-config-changed", "message": credit_body("e-0", "op.a", 0)}
    )
    feed.cache.wait_for(lambda: feed.cache.count("apply") == 1, 2, "the first entry")

    # Kill the reader's connection and write while it is gone, in one round trip: the
    # entries are added before the reader can possibly be back.
    pipe = publisher.pipeline(transaction=False)
    pipe.execute_command("CLIENT", "KILL", "ID", _client_id(publisher))
    for i in range(1, 6):
        pipe.xadd(
            STREAM, {"channel": "crm:acme:credit-config-changed", "message": credit_body(f"e-{i}", "op.a", i)}
        )
    pipe.execute()

    feed.cache.wait_for(lambda: feed.cache.count("apply") == 6, 5, "the entries written while disconnected")
    wait_until(lambda: feed.stats.reconnects == 1, 2, "the reconnect counted")
    assert feed.resyncs() == 1, "a reconnect without trimming must not resync"
    assert feed.stats.gaps == 1
    assert feed.cache.store[("acme", Kind.CREDIT_COSTS, "op.a")] == CreditCost("op.a", "5", 0)


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_stream_trimmed_past_our_position_resyncs(
    server: RedisServer, publisher: redis.Redis, feeds: list[Feed]
) -> None:
    feed = Feed(server.url, mode="stream")
    feeds.append(feed)
    feed.wait_live()
    pipe = publisher.pipeline(transaction=False)
    pipe.execute_command("CLIENT", "KILL", "ID", _client_id(publisher))
    for i in range(10):
        message = credit_body(f"e-{i}", f"op.{i}", i)
        pipe.xadd(
            STREAM,
            {"channel": "crm:acme:credit-config-changed", "message": message},
            maxlen=3,
            approximate=False,
        )
    pipe.execute()

    feed.cache.wait_for(lambda: feed.resyncs() == 2, 5, "a resync after entries were trimmed unread")
    feed.cache.wait_for(lambda: feed.cache.count("apply") == 3, 5, "the three entries that remain")
    assert feed.stats.gaps == 2
    feed.wait_live()


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_stream_lost_with_a_redis_restart_resyncs(server: RedisServer, feeds: list[Feed]) -> None:
    with server.client() as publisher:
        for i in range(3):
            publisher.xadd(
                STREAM,
                {"channel": "crm:acme:credit-config-changed", "message": credit_body(f"a-{i}", "op.a", i)},
            )
    feed = Feed(server.url, mode="stream")
    feeds.append(feed)
    feed.wait_live()
    server.kill()
    feed.wait_degraded(3)
    server.restart()  # no persistence: the stream is gone, new IDs restart below our position
    feed.wait_live(5)
    assert feed.resyncs() == 2
    with server.client() as publisher:
        publisher.xadd(
            STREAM, {"channel": "crm:acme:credit-config-changed", "message": credit_body("b-1", "op.a", 9)}
        )
    feed.cache.wait_for(lambda: feed.cache.count("apply") == 1, 2, "an entry of the new stream")


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_stream_silent_connection_detected(
    server: RedisServer, publisher: redis.Redis, feeds: list[Feed]
) -> None:
    feed = Feed(server.url, mode="stream")
    feeds.append(feed)
    feed.wait_live()
    bound = feed.reader.detection_bound_s  # type: ignore[attr-defined]
    start = time.monotonic()
    publisher.execute_command("CLIENT", "PAUSE", "2500", "ALL")
    wait_until(lambda: feed.stats.reconnects == 1, bound + 1.0, "the dead stream connection detected")
    detected = time.monotonic() - start
    print(f"paused redis -> stream reader detected in {detected * 1e3:.0f} ms (bound {bound * 1e3:.0f} ms)")
    assert detected <= bound + SCHEDULING_SLACK_S
    feed.wait_live(10)
    assert feed.resyncs() == 1  # nothing was trimmed: no resync


@pytest.mark.faults
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["pubsub", "stream"])
def test_redis_down_at_start_then_up(mode: str, feeds: list[Feed]) -> None:
    server = RedisServer()  # not started yet
    try:
        feed = Feed(server.url, mode=mode)
        feeds.append(feed)
        assert feed.reader.freshness() is Freshness.DEGRADED
        server.start()  # meanwhile the reader's attempts fail (refused) and back off
        feed.wait_live(5)
        assert feed.resyncs() == 1
    finally:
        for feed in feeds:
            feed.close()
        feeds.clear()
        server.close()


# --- the helper itself


@pytest.mark.timeout(30)
def test_redis_server_helper_kill_restart_same_port() -> None:
    with RedisServer() as server:
        port = server.port
        with server.client() as client:
            client.set("k", "v")
        server.kill()
        assert not server.running
        with server.client(retry=None) as client, pytest.raises(redis.ConnectionError):
            client.ping()
        server.restart()
        assert server.port == port
        with server.client() as client:
            assert client.get("k") is None  # nothing persisted
    assert not server.running


@pytest.mark.timeout(30)
def test_redis_server_helper_reports_a_failed_start() -> None:
    with (
        pytest.raises(RuntimeError, match="exited at start"),
        RedisServer(extra_args=("--no-such-option", "1")),
    ):
        pass
