"""Change notifications: the Redis reader that keeps the cache current (docs/GUARANTEES.md §1).

    Redis ──► RedisSubscriber / RedisStreamReader ──► decode ──► EventIngestor ──► cache.apply
                 (reader thread)                                     │   └─► on_change(ChangeNotice)
                                                                     └─► RepairWorker thread:
                                                                         refetches, gap resyncs

Wiring (the service): `ChangeFeed(cache, on_change, FeedConfig.from_settings(settings))`.
"""

from hybridcache.server.events.decode import Action, DecoderConfig, Event, Rejection, decode
from hybridcache.server.events.feed import ChangeFeed, FeedConfig
from hybridcache.server.events.ingest import EventIngestor
from hybridcache.server.events.ports import ChangeCache, ChangeNotice, NoticeSink, Outcome
from hybridcache.server.events.reader import Freshness
from hybridcache.server.events.signing import sign
from hybridcache.server.events.stats import REJECTION_REASONS, EventStats, StatsSnapshot
from hybridcache.server.events.stream_reader import RedisStreamReader, stream_key
from hybridcache.server.events.subscriber import RedisSubscriber

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
    "Outcome",
    "RedisStreamReader",
    "RedisSubscriber",
    "Rejection",
    "StatsSnapshot",
    "decode",
    "sign",
    "stream_key",
]
