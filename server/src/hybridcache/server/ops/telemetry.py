"""Scrape-time metrics: read the parts' own counters when Prometheus asks, not per request.

The cache core, the change feed and the hub already count what they do; copying those
counts into Prometheus objects on every hit would put metrics on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hybridcache.server.events.stats import REFETCH_REASONS
from hybridcache.server.ops.metrics import counter, gauge
from hybridcache.server.wrapper.health import BreakerState

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
    yield counter(
        "hybridcache_cache_invalidations",
        "Invalidations by change notifications (invalidate-only events: on-demand kinds), by kind.",
        ["kind"],
        [([str(k)], s.invalidations) for k, s in kinds],
    )
    yield gauge("hybridcache_tenants_loaded", "Tenants whose replica this instance holds.", [],
                [([], stats.loaded_tenants)])  # fmt: skip
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
    yield counter(
        "hybridcache_repair_attempts",
        "Single-key refetches from the Wrapper for keys an event said changed, by outcome (ok: the "
        "Wrapper's value is held; error: retried after a backoff; not_found: the entity is gone).",
        ["outcome"],
        [(["ok"], events.refetched), (["error"], events.refetch_errors),
         (["not_found"], events.refetch_not_found)],
    )  # fmt: skip
    yield counter(
        "hybridcache_repairs_settled_by_events",
        "Pending repairs settled by a newer versioned change notification, before their refetch.", [],
        [([], events.refetches_settled_by_events)],
    )  # fmt: skip
    yield counter(
        "hybridcache_repair_overflows",
        "Refetch requests beyond the pending bound (10,000 keys), turned into a full resync.", [],
        [([], events.refetch_overflows)],
    )  # fmt: skip
    yield counter(
        "hybridcache_refetch_requests",
        "Keys sent to the Wrapper for their value, by why (an event without a trustworthy value).",
        ["reason"],
        [([reason], events.refetch_reasons.get(reason, 0)) for reason in REFETCH_REASONS],
    )
    feed = service.feed
    yield gauge("hybridcache_repairs_pending", "Keys awaiting a successful refetch (answers: REPAIRING).", [],
                [([], feed.pending_repair_count())])  # fmt: skip
    yield gauge(
        "hybridcache_repairs_oldest_pending_seconds",
        "Seconds since the oldest key still awaiting a refetch was first requested (0: none).", [],
        [([], feed.oldest_pending_repair_s())],
    )  # fmt: skip
    breakers = service.wrapper.health.breakers()
    yield gauge(
        "hybridcache_wrapper_breaker_open",
        "1 while the circuit breaker of a Wrapper endpoint kind is not closed: calls fail fast "
        "(but for one probe) and stale-eligible reads are answered stale at once; else 0.",
        ["endpoint"],
        [([b.endpoint], 0.0 if b.state is BreakerState.CLOSED else 1.0) for b in breakers],
    )
    yield gauge(
        "hybridcache_wrapper_breaker_state",
        "Circuit breaker per Wrapper endpoint kind: 0 closed, 1 half-open (probing), 2 open (failing fast).",
        ["endpoint"],
        [([b.endpoint], float(b.state)) for b in breakers],
    )
    yield counter(
        "hybridcache_wrapper_breaker_opened",
        "Times a Wrapper endpoint kind's breaker opened after failures in a row.",
        ["endpoint"],
        [([b.endpoint], b.opened_total) for b in breakers],
    )
    yield counter("hybridcache_resyncs", "Full replica resyncs after gaps or periodically.", [],
                  [([], events.resyncs)])  # fmt: skip
    yield counter(
        "hybridcache_resync_failures",
        "Tenant resyncs that failed (the Wrapper's snapshot could not be loaded): retried with "
        "backoff, and answers say DEGRADED until one succeeds.", [],
        [([], events.resync_failures)],
    )  # fmt: skip
    yield counter("hybridcache_subscription_gaps", "Times change notifications may have been missed.", [],
                  [([], events.gaps)])  # fmt: skip
    yield counter("hybridcache_redis_reconnects", "Times the Redis connection was lost and re-established.",
                  [], [([], events.reconnects)])  # fmt: skip
    yield counter(
        "hybridcache_event_handling_errors",
        "Change notifications a part of the service failed on (a bug; the key is refetched), by stage "
        "(apply: the cache raised; publish: the hub or the change hook raised after the change was applied).",
        ["stage"],
        [(["apply"], events.apply_errors), (["publish"], events.sink_errors)],
    )
    # Both from the reader's state, the one the answers' provenance reads (app.Service.freshness),
    # when Prometheus asks: nothing on the change path sets a gauge.
    freshness = service.freshness()
    yield gauge(
        "hybridcache_freshness_live", "1 while change notifications are flowing and resynced, else 0.", [],
        [([], 1.0 if freshness == "live" else 0.0)],
    )  # fmt: skip
    yield gauge(
        "hybridcache_freshness_degraded",
        "1 while answers say FRESHNESS_DEGRADED (change notifications not flowing, or the resync "
        "after a gap not finished), else 0.", [],
        [([], 1.0 if freshness == "degraded" else 0.0)],
    )  # fmt: skip
    yield gauge(
        "hybridcache_replica_age_seconds",
        "Seconds since the tenant's replica was last loaded from a Wrapper snapshot (its oldest kind).",
        ["tenant"],
        [([tenant], age) for tenant, age in sorted(service.cache.replica_ages().items())],
    )
    verified = service.verifier.stats
    yield counter(
        "hybridcache_antientropy_mismatches",
        "Keys found different from the Wrapper's digests and repaired from its answer, by kind.",
        ["kind"],
        # Every replicated kind from the start (0 until its first repair), so the label shows.
        [([str(k)], verified.repaired_by_kind.get(str(k), 0)) for k in service.verifier.config.kinds],
    )
    yield counter(
        "hybridcache_antientropy_checks",
        "Anti-entropy: tenant-kinds compared with the Wrapper's digests, found different, buckets "
        "re-read, passes cut short by a Wrapper failure, passes that found no digest endpoint "
        "(anti-entropy does nothing against that Wrapper).",
        ["outcome"],
        [(["compared"], verified.compared), (["mismatched"], verified.mismatched),
         (["buckets_reread"], verified.buckets_repaired), (["failed_passes"], verified.failures),
         (["unsupported_passes"], verified.unsupported)],
    )  # fmt: skip
    hub = service.hub.stats()
    yield gauge("hybridcache_stream_subscribers", "Open WatchChanges subscriptions.", [],
                [([], hub.subscribers)])  # fmt: skip
    yield gauge("hybridcache_stream_buffered_events", "Changes waiting in WatchChanges subscribers' buffers.",
                [], [([], hub.buffered)])  # fmt: skip
    yield counter(
        "hybridcache_stream_discarded_events",
        "Changes not delivered to a WatchChanges subscriber because it had fallen behind (it was "
        "told to resync instead).", [], [([], hub.discarded_total)],
    )  # fmt: skip
    yield counter(
        "hybridcache_stream_resync_required",
        "Times a WatchChanges subscriber fell behind and was told to resync.", [], [([], hub.lagged_total)],
    )  # fmt: skip
