"""Freshness figures of the change-notification pipeline: counters and lag observations.

Two threads write them (the reader and the repair worker), so increments take a lock; at
the rates involved (tens of thousands of events per second at most) that costs nothing
measurable. `snapshot()` gives a consistent copy for the metrics exporter, which maps the
fields to Prometheus counters, gauges and a lag histogram (see `on_lag` in the ingestor
for per-observation hooks).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

# Every reason an event is not applied. A fixed, small set: the values become metric labels.
REJECTION_REASONS: tuple[str, ...] = (
    "oversized",
    "malformed-json",
    "bad-channel",
    "schema",
    "tenant-mismatch",
    "type-mismatch",
    "tenant-not-allowed",
    "unknown-event-type",
    "bad-signature",
    "duplicate",
    "old-version",
)

# Why a key was sent to the Wrapper for its value (labels of the refetch-request metric).
REFETCH_REASONS: tuple[str, ...] = (
    "old-value-mismatch",  # the event's oldValue is not what is held
    "no-new-value",  # "changed" without a usable newValue
    "implausible-version",  # a version beyond the tenant-kind's highest seen + the window
    "apply-error",  # cache.apply raised (a bug): ask the Wrapper instead
)


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    received: int
    applied: int
    invalidated: int
    rejected: dict[str, int]
    not_loaded: int
    mismatches: int
    refetched: int
    refetch_errors: int
    refetch_not_found: int
    refetch_attempts: int
    refetch_overflows: int
    refetch_reasons: dict[str, int]
    refetches_settled_by_events: int
    apply_errors: int
    sink_errors: int
    gaps: int
    resyncs: int
    resync_failures: int
    reconnects: int
    lag_count: int
    lag_sum_s: float
    lag_max_s: float
    # Applied + invalidated, and rejected after decoding (duplicate, old-version), per tenant:
    # what a caller bound to some tenants may be shown (GetCacheStats).
    changes_by_tenant: dict[str, int] = field(default_factory=dict)
    rejected_by_tenant: dict[str, int] = field(default_factory=dict)

    @property
    def duplicate(self) -> int:
        return self.rejected.get("duplicate", 0)

    @property
    def old_version(self) -> int:
        return self.rejected.get("old-version", 0)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(slots=True)
class EventStats:
    """Thread-safe counters. Field meanings:

    received      messages read from Redis (pub/sub messages or stream entries)
    applied       events whose change the cache applied (a ChangeNotice was published)
    invalidated   invalidate-only events handled (profiles, org units)
    rejected      events not applied, by reason (REJECTION_REASONS)
    not_loaded    events for tenants this instance does not hold (ignored, not an error)
    mismatches    events whose oldValue did not match the held value (the key was refetched)
    refetch_attempts  Wrapper fetches of single keys because an event said "changed" without a
                  trustworthy new value (refetch_reasons: why, per request; a pending key
                  is attempted until one succeeds)
    refetched     attempts that succeeded (the Wrapper's value is held)
    refetch_errors / refetch_not_found   attempts that failed (the key stays pending and is
                  retried) / found the entity gone (the key is dropped: repaired)
    refetch_overflows  requests beyond the pending bound (turned into a full resync)
    refetches_settled_by_events  pending keys repaired by an event at least as new as every
                  request for them (repair.py `event_applied`), not by a refetch
    apply_errors  cache.apply raised (a bug; the key is refetched)
    sink_errors   on_change raised (a bug downstream; the change itself was applied)
    gaps          times messages may have been missed (subscribe, reconnect, trim, overflow)
    resyncs       completed resync runs (one run covers every loaded tenant)
    resync_failures  tenant resyncs that failed (retried with backoff)
    reconnects    times the Redis connection was lost and re-established
    lag_*         publish -> applied latency, for events that carry publishedAt
    """

    _lock: threading.Lock = field(default_factory=threading.Lock)
    received: int = 0
    applied: int = 0
    invalidated: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    not_loaded: int = 0
    mismatches: int = 0
    refetched: int = 0
    refetch_errors: int = 0
    refetch_not_found: int = 0
    refetch_attempts: int = 0
    refetch_overflows: int = 0
    refetch_reasons: Counter[str] = field(default_factory=Counter)
    refetches_settled_by_events: int = 0
    apply_errors: int = 0
    sink_errors: int = 0
    gaps: int = 0
    resyncs: int = 0
    resync_failures: int = 0
    reconnects: int = 0
    lag_count: int = 0
    lag_sum_s: float = 0.0
    lag_max_s: float = 0.0
    changes_by_tenant: Counter[str] = field(default_factory=Counter)
    rejected_by_tenant: Counter[str] = field(default_factory=Counter)

    def add(self, name: str, n: int = 1, *, tenant: str | None = None) -> None:
        """Bump `name`; with `tenant`, an applied or invalidated change counted for it too."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)
            if tenant is not None:
                _count_for(self.changes_by_tenant, tenant, n)

    def reject(self, reason: str, *, tenant: str | None = None) -> None:
        with self._lock:
            self.rejected[reason] += 1
            if tenant is not None:
                _count_for(self.rejected_by_tenant, tenant, 1)

    def refetch_requested(self, reason: str) -> None:
        with self._lock:
            self.refetch_reasons[reason] += 1

    def observe_lag(self, seconds: float) -> None:
        with self._lock:
            self.lag_count += 1
            self.lag_sum_s += seconds
            self.lag_max_s = max(self.lag_max_s, seconds)

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                received=self.received,
                applied=self.applied,
                invalidated=self.invalidated,
                rejected=dict(self.rejected),
                not_loaded=self.not_loaded,
                mismatches=self.mismatches,
                refetched=self.refetched,
                refetch_errors=self.refetch_errors,
                refetch_not_found=self.refetch_not_found,
                refetch_attempts=self.refetch_attempts,
                refetch_overflows=self.refetch_overflows,
                refetch_reasons=dict(self.refetch_reasons),
                refetches_settled_by_events=self.refetches_settled_by_events,
                apply_errors=self.apply_errors,
                sink_errors=self.sink_errors,
                gaps=self.gaps,
                resyncs=self.resyncs,
                resync_failures=self.resync_failures,
                reconnects=self.reconnects,
                lag_count=self.lag_count,
                lag_sum_s=self.lag_sum_s,
                lag_max_s=self.lag_max_s,
                changes_by_tenant=dict(self.changes_by_tenant),
                rejected_by_tenant=dict(self.rejected_by_tenant),
            )


# Tenants counted on their own; events of further ones (a publisher inventing tenant ids)
# still count in the totals, just not per tenant.
MAX_COUNTED_TENANTS = 10_000


def _count_for(counts: Counter[str], tenant: str, n: int) -> None:
    if tenant in counts or len(counts) < MAX_COUNTED_TENANTS:
        counts[tenant] += n
