"""The change feed: decoder + ingestor + one Redis reader, assembled from configuration.

`ChangeFeed(cache, on_change, FeedConfig.from_settings(settings))`, then `start()` (before
the replica loads, so nothing published during the load is lost), `freshness()` ("live" |
"degraded"), `stats.snapshot()` (counters for /metrics), `stop()`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from hybridcache.server.core.kinds import Kind
from hybridcache.server.events.connection import SocketOptions
from hybridcache.server.events.decode import DEFAULT_MAX_BYTES, DecoderConfig
from hybridcache.server.events.ingest import REPLICA_KINDS, EventIngestor
from hybridcache.server.events.ports import ChangeCache, NoticeSink
from hybridcache.server.events.reader import Freshness, RedisReader
from hybridcache.server.events.repair import PendingRefetch, Slot
from hybridcache.server.events.signing import DEFAULT_WINDOW_MS
from hybridcache.server.events.stats import EventStats
from hybridcache.server.events.stream_reader import PositionSink, RedisStreamReader
from hybridcache.server.events.subscriber import RedisSubscriber

if TYPE_CHECKING:
    from hybridcache.server.config import Settings


@dataclass(frozen=True, slots=True)
class FeedConfig:
    redis_url: str
    apps: tuple[str, ...] = ("crm",)
    mode: Literal["pubsub", "stream"] = "pubsub"
    patterns: tuple[str, ...] | None = None  # pubsub: None = `{app}:*:{eventType}` per type
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed_tenants: frozenset[str] | None = None
    hmac_keys: tuple[bytes, ...] = ()
    signature_window_ms: int = DEFAULT_WINDOW_MS
    resync_jitter_s: float = 1.0
    replica_kinds: tuple[Kind, ...] = REPLICA_KINDS
    dedupe_capacity: int = 100_000
    dedupe_window_s: float = 120.0
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 3.0
    stream_block_ms: int = 500
    connect_timeout_s: float = 2.0
    backoff_max_s: float = 0.25  # reconnect attempts: why so short, see reader.py
    jitter_per_instance_s: float = 0.2  # resync jitter per instance ahead in the queue (reader.py)
    log_interval_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> FeedConfig:
        """The HYBRIDCACHE_* settings that exist; `overrides` sets any other field."""
        config = cls(
            redis_url=settings.redis_url,
            apps=tuple(settings.event_apps),
            mode=settings.event_mode,
            max_bytes=settings.event_max_bytes,
            hmac_keys=tuple(key.get_secret_value().encode() for key in settings.event_hmac_keys),
            resync_jitter_s=settings.resync_jitter_s,
        )
        return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]

    def decoder(self) -> DecoderConfig:
        return DecoderConfig(
            apps=frozenset(self.apps),
            max_bytes=self.max_bytes,
            allowed_tenants=self.allowed_tenants,
            hmac_keys=self.hmac_keys,
            signature_window_ms=self.signature_window_ms,
        )


class ChangeFeed:
    def __init__(
        self,
        cache: ChangeCache,
        on_change: NoticeSink,
        config: FeedConfig,
        *,
        on_lag: Callable[[float], None] | None = None,
        stats: EventStats | None = None,
        positions: PositionSink | None = None,
    ) -> None:
        """`positions`: told the stream position of each entry (durable mode only; fleet
        resume tokens, hub/tokens.py)."""
        self.config = config
        self.ingestor = EventIngestor(
            cache,
            on_change,
            decoder=config.decoder(),
            stats=stats,
            dedupe_capacity=config.dedupe_capacity,
            dedupe_window_s=config.dedupe_window_s,
            resync_jitter_s=config.resync_jitter_s,
            replica_kinds=config.replica_kinds,
            on_lag=on_lag,
            log_interval_s=config.log_interval_s,
        )
        options = SocketOptions(connect_timeout_s=config.connect_timeout_s)
        self.reader: RedisReader
        if config.mode == "stream":
            self.reader = RedisStreamReader(
                config.redis_url,
                self.ingestor,
                apps=config.apps,
                block_ms=config.stream_block_ms,
                ping_timeout_s=config.ping_timeout_s,
                socket_options=options,
                backoff_max_s=config.backoff_max_s,
                log_interval_s=config.log_interval_s,
                positions=positions,
            )
        else:
            self.reader = RedisSubscriber(
                config.redis_url,
                self.ingestor,
                apps=config.apps,
                patterns=config.patterns,
                ping_interval_s=config.ping_interval_s,
                ping_timeout_s=config.ping_timeout_s,
                socket_options=options,
                backoff_max_s=config.backoff_max_s,
                jitter_per_instance_s=config.jitter_per_instance_s,
                log_interval_s=config.log_interval_s,
            )

    @property
    def stats(self) -> EventStats:
        return self.ingestor.stats

    # --- the face the composition root and the telemetry use (not the parts behind it)

    @property
    def apply_order(self) -> threading.Lock:
        """Held while one change is applied and published: a snapshot taken under it sees both or neither."""
        return self.ingestor.order

    @property
    def pending_repairs(self) -> Mapping[Slot, PendingRefetch]:
        """The keys awaiting a successful refetch (their answers say REPAIRING): a live view."""
        return self.ingestor.worker.pending

    def pending_repair_count(self) -> int:
        return self.ingestor.worker.pending_refetches()

    def oldest_pending_repair_s(self) -> float:
        """Seconds since the oldest pending key was first requested (0.0: none pending)."""
        return self.ingestor.worker.oldest_pending_age_s()

    def request_resync(self) -> None:
        """A full resync of every loaded tenant, soon (the periodic refresh)."""
        self.ingestor.worker.request_resync()

    def start(self) -> ChangeFeed:
        self.ingestor.start()
        self.reader.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop reading, then the repair worker. True if both threads ended in time."""
        reader_done = self.reader.stop(timeout)
        return self.ingestor.stop(timeout) and reader_done

    def freshness(self) -> Freshness:
        return self.reader.freshness()

    @property
    def last_message_at(self) -> float | None:
        return self.reader.last_message_at
