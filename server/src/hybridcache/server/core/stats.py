"""Per-tenant, per-kind counters, the snapshot of them that `HybridCache.stats()` returns, and
adaptive TTL.

Counters are kept per tenant so that a caller bound to some tenants can be shown the figures
of those tenants only: summed over all tenants, a count would tell acme how busy globex is.
The whole-server view (a `*` caller, metrics, adaptive TTL) is their sum.

Counters are bumped without a lock (`counters.hits += 1`): on the hot path a lock would cost
more than the lookup it counts. Under the GIL a thread switch between the read and the write
of one `+=` can lose an increment now and then; these are monitoring figures and inputs to a
coarse TTL rule, so an occasional lost count is the right trade.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from hybridcache.server.core.kinds import Kind, Tier
from hybridcache.server.core.policy import KindPolicy


class Counters:
    __slots__ = (
        "fetch_errors",
        "fetch_time_s",
        "fetches",
        "hits",
        "invalidations",
        "live_invalidations",
        "misses",
        "stale",
        "stores",
    )

    def __init__(self) -> None:
        self.hits = 0  # answered from what the core holds
        self.misses = 0  # not held (or expired): fetched, or NOT_FOUND for a replica kind
        self.stale = 0  # answered with Source.STALE
        self.fetches = 0  # Wrapper calls (items and snapshots)
        self.fetch_errors = 0  # Wrapper calls that raised WrapperUnavailable
        self.fetch_time_s = 0.0  # total time spent in Wrapper calls
        self.invalidations = 0  # invalidate / invalidate_kind calls, applies to on-demand kinds
        self.live_invalidations = 0  # invalidations that dropped a still-fresh on-demand entry
        self.stores = 0  # on-demand fetch results kept (values and NOT_FOUNDs)

    def record_fetch(self, started: float, ended: float, *, failed: bool) -> None:
        self.fetches += 1
        self.fetch_time_s += ended - started
        if failed:
            self.fetch_errors += 1

    @classmethod
    def summed(cls, parts: Iterable[Counters]) -> Counters:
        total = cls()
        for part in parts:
            for name in cls.__slots__:
                setattr(total, name, getattr(total, name) + getattr(part, name))
        return total


# Tenants with counters of their own; beyond it (a caller allowed every tenant naming made-up
# ones) new tenants share one unattributed set, counted in the totals only.
MAX_COUNTED_TENANTS = 10_000


class TenantCounters:
    """`Counters` per tenant and kind. `of(tenant)` is the tenant's own {kind: Counters}."""

    def __init__(self, kinds: Iterable[Kind], *, max_tenants: int = MAX_COUNTED_TENANTS) -> None:
        self._kinds = tuple(kinds)
        self._max_tenants = max_tenants
        self._lock = threading.Lock()  # only to create a tenant's set; bumps take none
        self._by_tenant: dict[str, dict[Kind, Counters]] = {}
        self._unattributed = self._fresh()

    def _fresh(self) -> dict[Kind, Counters]:
        return {kind: Counters() for kind in self._kinds}

    def of(self, tenant_id: str) -> Mapping[Kind, Counters]:
        found = self._by_tenant.get(tenant_id)
        if found is not None:
            return found
        with self._lock:
            found = self._by_tenant.get(tenant_id)
            if found is None:
                if len(self._by_tenant) >= self._max_tenants:
                    return self._unattributed
                found = self._by_tenant[tenant_id] = self._fresh()
        return found

    def total(self, kind: Kind, tenants: Collection[str] | None = None) -> Counters:
        """`kind`'s counters summed over `tenants` (None: every tenant, unattributed included)."""
        if tenants is None:
            sets = [*list(self._by_tenant.values()), self._unattributed]
        else:
            sets = [found for t in tenants if (found := self._by_tenant.get(t)) is not None]
        return Counters.summed(counters[kind] for counters in sets)


@dataclass(frozen=True, slots=True)
class KindStats:
    kind: Kind
    tier: Tier
    hits: int
    misses: int
    stale: int
    fetches: int
    fetch_errors: int
    fetch_latency_ms_mean: float
    entries: int  # replica: held over the tenants asked about; on-demand: their entries in the LRU
    ttl_s: float  # on-demand: the current (adaptive) TTL; 0.0 for replica kinds (no expiry)
    invalidations: int


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of every tenant, or of the tenants asked for (`HybridCache.stats(tenants)`)."""

    kinds: Mapping[Kind, KindStats]
    loaded_tenants: int
    reference_entries: int
    reference_capacity: int


def kind_stats(kind: Kind, tier: Tier, counters: Counters, entries: int, ttl_s: float) -> KindStats:
    fetches = counters.fetches
    return KindStats(
        kind=kind,
        tier=tier,
        hits=counters.hits,
        misses=counters.misses,
        stale=counters.stale,
        fetches=fetches,
        fetch_errors=counters.fetch_errors,
        fetch_latency_ms_mean=(counters.fetch_time_s * 1000.0 / fetches) if fetches else 0.0,
        entries=entries,
        ttl_s=ttl_s,
        invalidations=counters.invalidations,
    )


class AdaptiveTtl:
    """The TTL of one on-demand kind, adjusted from what the kind's entries live through.

    The seed's `adjustCacheStrategy` extends the TTL when misses dominate. Here the signal is
    *churn*: the share of entries stored since the last evaluation that an invalidation then
    dropped while still fresh. Invalidations arrive by pub/sub, which is at-most-once, so the
    TTL is what bounds staleness when one is lost; a kind whose data changes within its TTL
    therefore gets a shorter one, and a kind that is read but rarely changes gets a longer one
    (fewer Wrapper calls, little risk):

        every ADAPT_INTERVAL_S, once at least MIN_READS reads were seen since the last change:
            churn = live invalidations / max(stores, 1)
            churn >= SHRINK_AT  ->  ttl = max(lo, ttl * SHRINK)
            churn <= GROW_AT    ->  ttl = min(hi, ttl * GROW)
            otherwise           ->  unchanged

    (lo, hi) is `KindPolicy.ttl_bounds`. A new TTL applies to entries stored after it.
    """

    ADAPT_INTERVAL_S = 60.0
    MIN_READS = 20
    SHRINK_AT = 0.25
    GROW_AT = 0.05
    SHRINK = 0.5
    GROW = 1.5

    __slots__ = ("_base_invalidations", "_base_reads", "_base_stores", "_hi", "_lo", "enabled", "ttl_s")

    def __init__(self, policy: KindPolicy) -> None:
        self.ttl_s = policy.ttl_s
        self.enabled = policy.adaptive_ttl
        self._lo, self._hi = policy.ttl_bounds
        self._base_reads = self._base_invalidations = self._base_stores = 0

    def evaluate(self, counters: Counters) -> None:
        if not self.enabled:
            return
        reads = counters.hits + counters.misses
        if reads - self._base_reads < self.MIN_READS:
            return  # too little evidence: keep accumulating
        stores = counters.stores - self._base_stores
        churn = (counters.live_invalidations - self._base_invalidations) / max(stores, 1)
        if churn >= self.SHRINK_AT:
            self.ttl_s = max(self._lo, self.ttl_s * self.SHRINK)
        elif churn <= self.GROW_AT:
            self.ttl_s = min(self._hi, self.ttl_s * self.GROW)
        self._base_reads = reads
        self._base_stores = counters.stores
        self._base_invalidations = counters.live_invalidations
