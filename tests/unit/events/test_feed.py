"""Wiring: FeedConfig from the service's settings, and the reader each mode builds."""

from __future__ import annotations

from hybridcache.server.config import Settings
from hybridcache.server.events.feed import ChangeFeed, FeedConfig
from hybridcache.server.events.reader import Freshness
from hybridcache.server.events.stream_reader import RedisStreamReader
from hybridcache.server.events.subscriber import RedisSubscriber

from .fakes import FakeCache, NoticeLog


def test_config_from_settings() -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        event_apps="crm,hrms",  # type: ignore[arg-type]
        event_mode="stream",
        event_max_bytes=4096,
        event_hmac_keys="k1,k2",  # type: ignore[arg-type]
        resync_jitter_s=0.5,
    )
    config = FeedConfig.from_settings(settings, ping_interval_s=2.0)
    assert config.apps == ("crm", "hrms")
    assert config.mode == "stream"
    assert config.hmac_keys == (b"k1", b"k2")
    assert (config.max_bytes, config.resync_jitter_s, config.ping_interval_s) == (4096, 0.5, 2.0)
    decoder = config.decoder()
    assert decoder.apps == frozenset({"crm", "hrms"})
    assert decoder.hmac_keys == (b"k1", b"k2")


def test_each_mode_builds_its_reader_and_starts_degraded() -> None:
    stream = ChangeFeed(FakeCache(), NoticeLog(), FeedConfig(redis_url="redis://x", mode="stream"))
    assert isinstance(stream.reader, RedisStreamReader)
    pubsub = ChangeFeed(FakeCache(), NoticeLog(), FeedConfig(redis_url="redis://x"))
    assert isinstance(pubsub.reader, RedisSubscriber)
    assert pubsub.freshness() is Freshness.DEGRADED  # not started: nothing is known fresh
    assert pubsub.stop(1)
