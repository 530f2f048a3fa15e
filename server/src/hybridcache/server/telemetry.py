"""Scrape-time metrics: read the parts' own counters when Prometheus asks, not per request.

The cache core, the change feed and the hub already count what they do; copying those
counts into Prometheus objects on every hit would put metrics on the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hybridcache.server.metrics import counter, gauge

if TYPE_CHECKING:
    from hybridcache.server.app import Service


def register_collectors(service: Service) -> None:
    service.metrics.add_collector(lambda: _collect(service))


def _collect(service: Service) -> Iterator[Any]:
    stats = service.cache.stats()
    kinds = stats.kinds.items()
    yield counter(
        "hybridcache_cache_requests",
        "Reads by kind and result (hit: from memory; miss: needed the Wrapper; stale: served stale).",
        ["kind", "result"],
        [([str(k), "hit"], s.hits) for k, s in kinds]
        + [([str(k), "miss"], s.misses) for k, s in kinds]
        + [([str(k), "stale"], s.stale) for k, s in kinds],
    )
    yield gauge(
        "hybridcache_cache_entries",
        "Entries held, by kind.",
        ["kind"],
        [([str(k)], s.entries) for k, s in kinds],
    )
    yield gauge(
        "hybridcache_cache_ttl_seconds", "Current (adaptive) TTL of on-demand kinds.", ["kind"],
        [([str(k)], s.ttl_s) for k, s in kinds if s.ttl_s],
    )  # fmt: skip
    events = service.feed.stats.snapshot()
    yield counter(
        "hybridcache_events",
        "Change notifications, by outcome.",
        ["outcome"],
        [(["applied"], events.applied), (["invalidated"], events.invalidated),
         (["refetched"], events.refetched), (["not_loaded"], events.not_loaded),
         (["received"], events.received)],
    )  # fmt: skip
    yield counter(
        "hybridcache_events_rejected",
        "Change notifications rejected, by reason.",
        ["reason"],
        [([reason], count) for reason, count in sorted(events.rejected.items())],
    )
    yield counter("hybridcache_resyncs", "Full replica resyncs after gaps or periodically.", [],
                  [([], events.resyncs)])  # fmt: skip
    yield counter("hybridcache_subscription_gaps", "Times change notifications may have been missed.", [],
                  [([], events.gaps)])  # fmt: skip
    yield gauge(
        "hybridcache_freshness_live", "1 while change notifications are flowing and resynced, else 0.", [],
        [([], 1.0 if service.freshness() == "live" else 0.0)],
    )  # fmt: skip
    now = time.time()
    yield gauge(
        "hybridcache_replica_age_seconds",
        "Seconds since the tenant's replica was last loaded from a Wrapper snapshot.",
        ["tenant"],
        [([tenant], now - at) for tenant, at in sorted(service.synced_at.items())],
    )
    hub = service.hub.stats()
    yield gauge("hybridcache_stream_subscribers", "Open WatchChanges subscriptions.", [],
                [([], hub.subscribers)])  # fmt: skip
    yield counter(
        "hybridcache_stream_resync_required",
        "Times a WatchChanges subscriber fell behind and was told to resync.", [], [([], hub.lagged_total)],
    )  # fmt: skip
