"""The reference (on-demand) cache: one bounded LRU over every tenant, a TTL per kind.

    get(tenant, kind, key)
      │ fresh entry? ─ yes ─► LRU touch ─► CACHE (a remembered NOT_FOUND raises NotFound)
      │                       └─ in the last `refresh_ahead` of its TTL? submit ONE background refresh
      no (absent or expired)
      ▼
    single-flight fetch ─ value ──────────► store unless fenced ─► WRAPPER
                        ├ NotFound ───────► remember for negative_ttl_s ─► NotFound
                        └ WrapperUnavailable ─► SERVE_STALE and expired < max_stale_s ago? ─► STALE
                                                else ─► WrapperUnavailable

An invalidation removes the entry (it is not kept for stale serving: it is known to be
outdated) and fences the fetch in flight for the key, so that fetch cannot store a value
read before the invalidation (see `singleflight`).

Related entries: an org unit's cached answer names other units (its parent chain in
`ancestors`, its direct `children`), so a change to one unit outdates every cached unit
that names it. `_named_by` indexes, per (tenant, kind, named id), the cached keys whose
value names it; invalidating a unit also removes those entries, and fences every org-unit
fetch of the tenant in flight (one of them may be of a unit naming it; org-unit changes
are rare, a refetch is cheap).

Known down: when `wrapper_known_down(kind)` says the Wrapper's endpoint is failing (its
circuit breaker is open), an expired entry that may be served stale is answered STALE at
once, instead of its reader waiting for the Wrapper to fail; entries with nothing to serve
still ask (and fail fast). Meanwhile a background refresh of a stale-served key starts at
most every `REVALIDATE_EVERY_S` per kind: while the breaker is open it fails at once, so
its only use is to be the breaker's probe when one is due, and a refresh per read would
only cost the readers CPU.

Locking: a fresh hit takes no lock. `OrderedDict.get` and `move_to_end` are single C calls,
atomic under the GIL; a key dropped between the two raises KeyError, which the hit path
ignores. Every mutation takes `_lock`, a leaf lock: no Wrapper call, wait or `submit` happens
while holding it. Iterations copy the keys first (`list(od)` is one C call) because readers
reorder the dict concurrently.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from contextlib import suppress

from hybridcache.client.reasons import Reason
from hybridcache.server.core.errors import CacheError, NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind, WhenWrapperDown
from hybridcache.server.core.policy import KindPolicy
from hybridcache.server.core.results import Read, Source, make_read
from hybridcache.server.core.singleflight import Flight, FlightTable
from hybridcache.server.core.source import WrapperSource
from hybridcache.server.core.stats import AdaptiveTtl, TenantCounters
from hybridcache.server.core.values import OrgUnit, Value

RefKey = tuple[str, Kind, str]
Submit = Callable[[Callable[[], None]], object]


REVALIDATE_EVERY_S = 0.1  # while the Wrapper is known down: background refreshes per kind, at most


class _Ref:
    __slots__ = ("expires_at", "refresh_at", "refreshing", "stored_at", "value")

    def __init__(self, value: Value | None, stored_at: float, expires_at: float, refresh_at: float) -> None:
        self.value = value  # None: a remembered NOT_FOUND
        self.stored_at = stored_at
        self.expires_at = expires_at
        self.refresh_at = refresh_at  # a hit from here on submits a background refresh
        self.refreshing = False  # set once: at most one background refresh per stored entry


def _names(value: Value | None) -> tuple[str, ...]:
    """The ids of the other entities of its kind a cached value names (empty for most kinds)."""
    if not isinstance(value, OrgUnit):
        return ()
    named = {ref.org_unit_id for ref in value.ancestors} | {ref.org_unit_id for ref in value.children}
    if value.parent_id:
        named.add(value.parent_id)
    named.discard(value.org_unit_id)
    return tuple(named)


def _not_found(kind: Kind) -> NotFound:
    return NotFound(f"no {kind} with that key", reason=Reason.NOT_FOUND)


class ReferenceCache:
    def __init__(
        self,
        source: WrapperSource,
        policies: Mapping[Kind, KindPolicy],
        counters: TenantCounters,
        *,
        max_entries: int,
        clock: Callable[[], float],
        submit: Submit | None,
        wrapper_known_down: Callable[[Kind], bool] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_reference_entries must be >= 1")
        self._source = source
        self._policies = dict(policies)
        self._counters = counters
        self._ttl = {kind: AdaptiveTtl(policy) for kind, policy in policies.items()}
        self._max_entries = max_entries
        self._clock = clock
        self._submit = submit
        self._known_down = wrapper_known_down
        self._lock = threading.Lock()
        self._entries: OrderedDict[RefKey, _Ref] = OrderedDict()
        self._named_by: dict[RefKey, set[str]] = {}  # (tenant, kind, named id) -> keys naming it
        self._revalidate_at = dict.fromkeys(policies, 0.0)  # kind -> next background refresh (down)
        self._flights: FlightTable[RefKey, Value] = FlightTable()
        self._per_kind = dict.fromkeys(policies, 0)
        self._per_tenant_kind: dict[tuple[str, Kind], int] = {}
        self._next_adapt = clock() + AdaptiveTtl.ADAPT_INTERVAL_S

    # --- reads

    def get(self, tenant_id: str, kind: Kind, key: str, deadline: float | None) -> Read:
        now = self._clock()
        ref_key = (tenant_id, kind, key)
        entry = self._entries.get(ref_key)
        if entry is not None and now < entry.expires_at:
            # Not contextlib.suppress: on this path it costs more than the rest of the hit.
            try:  # noqa: SIM105
                self._entries.move_to_end(ref_key)
            except KeyError:
                pass  # dropped concurrently: the entry was current when it was read
            self._counters.of(tenant_id)[kind].hits += 1
            if now >= entry.refresh_at:
                self._refresh_in_background(ref_key, entry)
            if now >= self._next_adapt:  # a kind that only hits must still get its TTL evaluated
                with self._lock:
                    self._adapt_locked(now)
            value = entry.value
            if value is None:
                raise _not_found(kind)
            return make_read(value, Source.CACHE, now - entry.stored_at, value.version)
        return self._miss(ref_key, deadline)

    def _miss(self, ref_key: RefKey, deadline: float | None) -> Read:
        self._counters.of(ref_key[0])[ref_key[1]].misses += 1
        if self._known_down is not None and self._known_down(ref_key[1]):
            stale = self._fallback(ref_key)
            if stale is not None:
                self._revalidate_in_background(ref_key)
                return stale
        with self._lock:
            flight, leader = self._flights.join_or_start(ref_key)
        try:
            value = self._fetch(ref_key, flight, deadline) if leader else flight.wait(deadline, self._clock)
        except WrapperUnavailable:
            fallback = self._fallback(ref_key)
            if fallback is None:
                raise
            return fallback
        return Read(value, Source.WRAPPER, 0.0, value.version)

    def _fallback(self, ref_key: RefKey) -> Read | None:
        """What may still be served when the Wrapper could not answer."""
        kind = ref_key[1]
        policy = self._policies[kind]
        entry = self._entries.get(ref_key)
        if policy.when_down is not WhenWrapperDown.SERVE_STALE or entry is None or entry.value is None:
            return None
        now = self._clock()
        if now < entry.expires_at:  # stored by someone else meanwhile: fresh after all
            return Read(entry.value, Source.CACHE, now - entry.stored_at, entry.value.version)
        if now - entry.expires_at > policy.max_stale_s:
            return None
        self._counters.of(ref_key[0])[kind].stale += 1
        return Read(entry.value, Source.STALE, now - entry.stored_at, entry.value.version)

    # --- fetching

    def _fetch(self, ref_key: RefKey, flight: Flight[Value], deadline: float | None) -> Value:
        """The leader's part of a flight: call the Wrapper, store, wake the waiters."""
        tenant_id, kind, key = ref_key
        counters = self._counters.of(tenant_id)[kind]
        started = self._clock()
        try:
            value = self._source.fetch_item(tenant_id, kind, key, deadline)
        except NotFound as exc:
            counters.record_fetch(started, self._clock(), failed=False)
            self._store(ref_key, flight, None)
            flight.fail(exc)
            raise
        except BaseException as exc:
            counters.record_fetch(started, self._clock(), failed=True)
            with self._lock:
                self._flights.finish(ref_key, flight)
            flight.fail(exc)
            raise
        counters.record_fetch(started, self._clock(), failed=False)
        self._store(ref_key, flight, value)
        flight.resolve(value)
        return value

    def _refresh_in_background(self, ref_key: RefKey, entry: _Ref) -> None:
        if entry.refreshing or self._submit is None:
            return
        with self._lock:
            if entry.refreshing or self._entries.get(ref_key) is not entry:
                return
            entry.refreshing = True
            flight, leader = self._flights.join_or_start(ref_key)
        if leader:
            self._fetch_in_background(ref_key, flight)

    def _revalidate_in_background(self, ref_key: RefKey) -> None:
        """An expired entry served stale while the Wrapper is known down: one fetch per key at a
        time (while the breaker is open it fails at once; the one let through is its probe)."""
        now = self._clock()
        kind = ref_key[1]
        if self._submit is None or now < self._revalidate_at[kind]:
            return
        with self._lock:
            if ref_key in self._flights or now < self._revalidate_at[kind]:
                return
            self._revalidate_at[kind] = now + REVALIDATE_EVERY_S
            flight, _ = self._flights.join_or_start(ref_key)
        self._fetch_in_background(ref_key, flight)

    def _fetch_in_background(self, ref_key: RefKey, flight: Flight[Value]) -> None:
        assert self._submit is not None

        def refresh() -> None:
            with suppress(CacheError):  # counted in fetch_errors; the entry stays until it expires
                self._fetch(ref_key, flight, None)

        try:
            self._submit(refresh)
        except Exception as exc:  # e.g. the executor is shutting down: the next miss fetches
            with self._lock:
                self._flights.finish(ref_key, flight)
            flight.fail(WrapperUnavailable(f"background refresh not started: {exc}"))

    # --- writes (all under _lock)

    def _store(self, ref_key: RefKey, flight: Flight[Value], value: Value | None) -> None:
        now = self._clock()
        kind = ref_key[1]
        policy = self._policies[kind]
        with self._lock:
            self._flights.finish(ref_key, flight)
            if flight.fenced:
                return  # an invalidation came after this fetch started: its value may be older
            held = self._entries.get(ref_key)
            if value is None:
                if policy.negative_ttl_s <= 0:
                    self._remove_locked(ref_key)
                    return
                entry = _Ref(None, now, now + policy.negative_ttl_s, math.inf)
            else:
                if held is not None and held.value is not None and 0 < value.version < held.value.version:
                    return  # versions only move forward
                ttl = self._ttl[kind].ttl_s
                refresh_at = (
                    now + ttl * (1.0 - policy.refresh_ahead)
                    if self._submit is not None and policy.refresh_ahead > 0
                    else math.inf
                )
                entry = _Ref(value, now, now + ttl, refresh_at)
            if held is None:
                self._count_locked(ref_key, 1)
            else:
                self._unindex_locked(ref_key, held)
            self._index_locked(ref_key, entry)
            self._entries[ref_key] = entry
            self._entries.move_to_end(ref_key)
            self._counters.of(ref_key[0])[kind].stores += 1
            while len(self._entries) > self._max_entries:
                evicted, gone = self._entries.popitem(last=False)
                self._count_locked(evicted, -1)
                self._unindex_locked(evicted, gone)
            self._adapt_locked(now)

    def _remove_locked(self, ref_key: RefKey) -> _Ref | None:
        entry = self._entries.pop(ref_key, None)
        if entry is not None:
            self._count_locked(ref_key, -1)
            self._unindex_locked(ref_key, entry)
        return entry

    def _count_locked(self, ref_key: RefKey, delta: int) -> None:
        """Keep the entry counts per kind and per (tenant, kind) in step with `_entries`."""
        self._per_kind[ref_key[1]] += delta
        tenant_kind = (ref_key[0], ref_key[1])
        left = self._per_tenant_kind.get(tenant_kind, 0) + delta
        if left:
            self._per_tenant_kind[tenant_kind] = left
        else:
            del self._per_tenant_kind[tenant_kind]

    def _index_locked(self, ref_key: RefKey, entry: _Ref) -> None:
        tenant_id, kind, key = ref_key
        for named in _names(entry.value):
            self._named_by.setdefault((tenant_id, kind, named), set()).add(key)

    def _unindex_locked(self, ref_key: RefKey, entry: _Ref) -> None:
        tenant_id, kind, key = ref_key
        for named in _names(entry.value):
            keys = self._named_by.get((tenant_id, kind, named))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._named_by[(tenant_id, kind, named)]

    def invalidate(self, tenant_id: str, kind: Kind, key: str) -> tuple[str, ...]:
        """Drop the entry, and every cached entry of the kind that names it (org units); returns
        the keys of those related entries dropped."""
        now = self._clock()
        ref_key = (tenant_id, kind, key)
        counters = self._counters.of(tenant_id)[kind]
        with self._lock:
            self._flights.fence(ref_key)
            related = self._named_by.get(ref_key)
            if kind is Kind.ORG_UNITS:
                # A fetch in flight may be of a unit naming this one: none of them may store.
                self._flights.fence_where(lambda k: k[0] == tenant_id and k[1] == kind)
            others = tuple(sorted(related or ()))
            counters.invalidations += 1
            for gone_key in (ref_key, *((tenant_id, kind, other) for other in others)):
                entry = self._remove_locked(gone_key)
                if entry is not None and entry.value is not None and now < entry.expires_at:
                    counters.live_invalidations += 1
            self._adapt_locked(now)
        return others

    def invalidate_kind(self, tenant_id: str, kind: Kind) -> None:
        """Drop every entry of one tenant's kind. O(entries): a scan, under the lock."""
        now = self._clock()
        counters = self._counters.of(tenant_id)[kind]
        with self._lock:
            self._flights.fence_where(lambda k: k[0] == tenant_id and k[1] == kind)
            counters.invalidations += 1
            for ref_key in [k for k in list(self._entries) if k[0] == tenant_id and k[1] == kind]:
                entry = self._remove_locked(ref_key)
                if entry is not None and entry.value is not None and now < entry.expires_at:
                    counters.live_invalidations += 1
            self._adapt_locked(now)

    def clear(self) -> None:
        """Forget every entry and fence every fetch in flight (after a notification gap)."""
        with self._lock:
            self._flights.fence_all()
            self._entries.clear()
            self._named_by.clear()
            self._per_kind = dict.fromkeys(self._per_kind, 0)
            self._per_tenant_kind.clear()

    def _adapt_locked(self, now: float) -> None:
        if now < self._next_adapt:
            return
        self._next_adapt = now + AdaptiveTtl.ADAPT_INTERVAL_S
        for kind, ttl in self._ttl.items():
            ttl.evaluate(self._counters.total(kind))

    # --- introspection

    def ttl_s(self, kind: Kind) -> float:
        return self._ttl[kind].ttl_s

    def entries(self, kind: Kind, tenants: Collection[str] | None = None) -> int:
        """Entries of `kind` held (None: of every tenant)."""
        if tenants is None:
            return self._per_kind[kind]
        return sum(self._per_tenant_kind.get((tenant, kind), 0) for tenant in tenants)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def capacity(self) -> int:
        return self._max_entries

    def flight_in_progress(self, tenant_id: str, kind: Kind, key: str) -> bool:
        """A fetch for this key is in flight and joinable (tests use this to stay deterministic)."""
        return (tenant_id, kind, key) in self._flights
