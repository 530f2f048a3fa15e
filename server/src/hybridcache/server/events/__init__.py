"""Change notifications: the Redis reader that keeps the cache current (docs/GUARANTEES.md §1).

    Redis ──► RedisSubscriber / RedisStreamReader ──► decode ──► EventIngestor ──► cache.apply
                 (reader thread)                                     │   └─► on_change(ChangeNotice)
                                                                     └─► RepairWorker thread:
                                                                         refetches, gap resyncs

Wiring (the service): `ChangeFeed(cache, on_change, FeedConfig.from_settings(settings))`.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybridcache.server.events.decode import Action, DecoderConfig, Event, Rejection
    from hybridcache.server.events.feed import ChangeFeed, FeedConfig
    from hybridcache.server.events.ingest import EventIngestor
    from hybridcache.server.events.ports import ChangeCache, ChangeNotice, NoticeSink
    from hybridcache.server.events.reader import Freshness
    from hybridcache.server.events.signing import sign
    from hybridcache.server.events.stats import REJECTION_REASONS, EventStats, StatsSnapshot
    from hybridcache.server.events.stream_reader import RedisStreamReader, stream_key
    from hybridcache.server.events.subscriber import RedisSubscriber

# Loaded on first use, not at import: the hub imports `events.ports` (ChangeNotice), and
# importing the package must not load redis-py and the readers for it (the in-memory hub,
# its tests and tools stay free of Redis). `events.decode` is the module (`decode()` in it).
_HOME = {
    "Action": "decode",
    "DecoderConfig": "decode",
    "Event": "decode",
    "Rejection": "decode",
    "ChangeFeed": "feed",
    "FeedConfig": "feed",
    "EventIngestor": "ingest",
    "ChangeCache": "ports",
    "ChangeNotice": "ports",
    "NoticeSink": "ports",
    "Freshness": "reader",
    "sign": "signing",
    "REJECTION_REASONS": "stats",
    "EventStats": "stats",
    "StatsSnapshot": "stats",
    "RedisStreamReader": "stream_reader",
    "stream_key": "stream_reader",
    "RedisSubscriber": "subscriber",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "REJECTION_REASONS",
    "Action",
    "ChangeCache",
    "ChangeFeed",
    "ChangeNotice",
    "DecoderConfig",
    "Event",
    "EventIngestor",
    "EventStats",
    "FeedConfig",
    "Freshness",
    "NoticeSink",
    "RedisStreamReader",
    "RedisSubscriber",
    "Rejection",
    "StatsSnapshot",
    "sign",
    "stream_key",
]
