"""The critical-data replica: every item of each replicated kind, per tenant.

Layout: `tenants[tenant_id].kinds[kind].map[key] -> Entry(value, stored_at)`. A hit is three
dict lookups and takes no lock: writers either set or delete one key of a map, or replace a
kind's whole map by assigning a new dict (a snapshot install), which readers see atomically —
a read holding the old map finishes on it, the next read gets the new one. Every write takes
`_lock`, a leaf lock (no Wrapper call and no wait happens while holding it).

No stale set, per tenant-kind:
  * An item fetch (refetch after an event, or a read of a suspect key) is a Flight in
    `_items`. A later write of that key (event, invalidation) or the start of a snapshot of
    the kind fences it: its value is returned to its callers but not stored.
  * A snapshot load is a Flight recorded in `KindReplica.loading`. While it runs, every write
    to that kind is recorded in `touched` (key -> the write's version, 0 if unknown). When
    the snapshot arrives, untouched keys take the snapshot's item; a touched key keeps what
    was written during the load unless the snapshot's version is newer (both known). A newer
    snapshot (resync) or invalidate_kind replaces/clears `loading`, and the older snapshot
    then does not install.
  * A tenant's first load journals events the same way into its not-yet-visible maps, so an
    event published after the Wrapper served the snapshot but received before the snapshot
    is installed is not lost (apply still reports NOT_LOADED: nothing is published for a
    tenant nobody could have read yet).

Invalidation of a replicated key (rare: events normally carry the new value) moves the entry
to `suspects`: the next read refetches it and serves the old value as STALE if the Wrapper is
down. `invalidate_kind` moves the whole map there and reloads the kind on the next read. An
event for a key not verified since its invalidation is kept only as such a fallback: it may be
a late one, older than what the Wrapper holds.
The state and its transitions live in `replica_state`; this module adds the lock, the flights
and the Wrapper calls.
Versions (when > 0) only move forward through events: a deletion with a known version leaves
a tombstone (bounded per tenant-kind) so that a late, older event cannot resurrect the key. A
deletion found without a version (a snapshot no longer listing the key, a refetch answering
NOT_FOUND) leaves none. An event without a version keeps the held version (its value is
stored with it), so it never moves the version backwards. An event whose version is beyond
the tenant-kind's high water (the highest version seen from snapshots, fetches and applied
events) plus `version_window` is IMPLAUSIBLE_VERSION: not applied, the caller refetches the
key. The Wrapper's own answer (an item fetch, a snapshot, an anti-entropy repair) always
wins: it is stored whatever version is held (`_write_locked(fetched=True)` for single keys,
`KindReplica.install` for snapshots), resetting the held version to the Wrapper's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace

from hybridcache.client.reasons import Reason
from hybridcache.server.core.authority import VerifyMark, WriteMarks, to_install
from hybridcache.server.core.digest import bucket_of
from hybridcache.server.core.errors import NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.permissions import Grants, PermissionDecision, decide
from hybridcache.server.core.replica_state import Entry, KindReplica, RoleEntry, make_entry, same_content
from hybridcache.server.core.results import MISSING, ApplyOutcome, Change, Read, Source, make_read
from hybridcache.server.core.singleflight import Flight, FlightTable
from hybridcache.server.core.source import Snapshot, WrapperSource
from hybridcache.server.core.stats import Counters, TenantCounters
from hybridcache.server.core.values import RolePermissions, UserStatus, Value

_MAX_UNKNOWN_TENANTS = 10_000  # bound on the negative cache of unknown tenant ids
DEFAULT_VERSION_WINDOW = 1_000  # how far past a tenant-kind's highest version an event may be


class TenantReplica:
    __slots__ = ("counters", "kinds", "loaded", "tenant_id")

    def __init__(
        self, tenant_id: str, kinds: dict[Kind, KindReplica], counters: Mapping[Kind, Counters]
    ) -> None:
        self.tenant_id = tenant_id
        self.kinds = kinds
        self.counters = counters  # this tenant's own (TenantCounters.of): a hit bumps them directly
        self.loaded = False  # False while the first load runs: maps hold only journaled events


class ReplicaSet:
    def __init__(
        self,
        source: WrapperSource,
        kinds: Sequence[Kind],
        counters: TenantCounters,
        *,
        clock: Callable[[], float],
        unknown_tenant_ttl_s: float,
        version_window: int = DEFAULT_VERSION_WINDOW,
    ) -> None:
        """`version_window` (0: no limit): an event's version may exceed the tenant-kind's high
        water by at most this much. Versions count each entity's changes, so a legitimate
        event is within a few of what was last seen; past the window it is forged or corrupt."""
        self._source = source
        self._version_window = version_window
        self._kinds = tuple(kinds)
        self._counters = counters
        self._clock = clock
        self._unknown_ttl_s = unknown_tenant_ttl_s
        self._lock = threading.Lock()
        self._tenants: dict[str, TenantReplica] = {}
        self._unknown: dict[str, float] = {}  # tenant id -> until when "unknown" is remembered
        self._loads: FlightTable[str, None] = FlightTable()
        self._snapshots: FlightTable[tuple[str, Kind], None] = FlightTable()
        self._items: FlightTable[tuple[str, Kind, str], Value | None] = FlightTable()
        self._marks = WriteMarks()  # open anti-entropy verifications (authority.py)

    # --- reads

    def tenant(self, tenant_id: str, deadline: float | None) -> TenantReplica:
        tenant = self._tenants.get(tenant_id)
        if tenant is not None and tenant.loaded:
            return tenant
        return self._load(tenant_id, deadline)

    def get(self, tenant_id: str, kind: Kind, key: str, deadline: float | None) -> Read:
        tenant = self._tenants.get(tenant_id)
        if tenant is None or not tenant.loaded:
            tenant = self._load(tenant_id, deadline)
        entry = tenant.kinds[kind].map.get(key)
        if entry is None:
            return self._miss(tenant, kind, key, deadline)
        tenant.counters[kind].hits += 1
        value = entry.value
        return make_read(value, Source.CACHE, self._clock() - entry.stored_at, value.version)

    def check_permission(
        self, tenant_id: str, user_id: str, permission: str, deadline: float | None
    ) -> PermissionDecision:
        tenant = self._tenants.get(tenant_id)
        if tenant is None or not tenant.loaded:
            tenant = self._load(tenant_id, deadline)
        entry = tenant.kinds[Kind.USER_STATUS].map.get(user_id)
        if entry is not None:
            tenant.counters[Kind.USER_STATUS].hits += 1
            status, age_s = entry.value, self._clock() - entry.stored_at
        else:
            try:
                read = self._miss(tenant, Kind.USER_STATUS, user_id, deadline)
            except NotFound:
                return decide(None, _no_grants, permission, 0.0)
            status, age_s = read.value, read.age_s
        assert isinstance(status, UserStatus)
        roles = tenant.kinds[Kind.ROLE_PERMISSIONS]

        def grants_of(role_id: str) -> Grants | None:
            entry = roles.map.get(role_id)
            if isinstance(entry, RoleEntry):
                return entry.grants
            if roles.verified(role_id):
                return None  # a role the replica does not hold grants nothing
            try:
                role = self._miss(tenant, Kind.ROLE_PERMISSIONS, role_id, deadline).value
            except NotFound:
                return None
            return Grants(role.permissions) if isinstance(role, RolePermissions) else None

        return decide(status, grants_of, permission, age_s)

    def _miss(self, tenant: TenantReplica, kind: Kind, key: str, deadline: float | None) -> Read:
        """Not in the map: absent (NotFound, no Wrapper call), or unverified after an invalidation."""
        replica = tenant.kinds[kind]
        tenant.counters[kind].misses += 1
        try:
            if replica.reload:
                self._snapshot_kinds(tenant, (kind,), deadline, supersede=False)
                entry = replica.map.get(key)
                if entry is not None:
                    return Read(entry.value, Source.WRAPPER, 0.0, entry.value.version)
            # Still unverified: invalidated, or the reload did not install (a resync superseded
            # it, or the kind was invalidated again): fetch this one key, from now.
            if not replica.verified(key):
                value = self._fetch_suspect(tenant, kind, key, deadline)
                if value is not None:
                    return Read(value, Source.WRAPPER, 0.0, value.version)
        except WrapperUnavailable:
            stale = replica.map.get(key) or replica.suspects.get(key)
            if stale is not None:
                tenant.counters[kind].stale += 1
                return Read(stale.value, Source.STALE, self._clock() - stale.stored_at, stale.value.version)
        raise NotFound(f"no {kind} with that key", reason=Reason.NOT_FOUND)

    # --- loading

    def _load(self, tenant_id: str, deadline: float | None) -> TenantReplica:
        now = self._clock()
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            if tenant is not None and tenant.loaded:
                return tenant
            until = self._unknown.get(tenant_id)
            if until is not None:
                if now < until:
                    raise NotFound("unknown tenant", reason=Reason.TENANT_NOT_FOUND)
                del self._unknown[tenant_id]
            flight, leader = self._loads.join_or_start(tenant_id)
            if leader:
                tenant = TenantReplica(
                    tenant_id,
                    {kind: KindReplica(tenant_id, kind, flight) for kind in self._kinds},
                    self._counters.of(tenant_id),
                )
                self._tenants[tenant_id] = tenant
        if not leader:
            flight.wait(deadline, self._clock)
            return self._tenants[tenant_id]  # loaded tenants are never removed
        assert tenant is not None
        try:
            built = self._fetch_snapshots(tenant_id, self._kinds, deadline)
        except BaseException as exc:
            with self._lock:
                self._loads.finish(tenant_id, flight)
                if self._tenants.get(tenant_id) is tenant:
                    del self._tenants[tenant_id]  # events journaled so far are moot: next load is fresh
                if isinstance(exc, NotFound):
                    self._remember_unknown_locked(tenant_id)
            flight.fail(exc)
            raise
        with self._lock:
            for kind in self._kinds:
                tenant.kinds[kind].install(flight, *built[kind], diff=False)
            tenant.loaded = True
            self._loads.finish(tenant_id, flight)
        flight.resolve(None)
        return tenant

    def _remember_unknown_locked(self, tenant_id: str) -> None:
        if self._unknown_ttl_s <= 0:
            return
        self._unknown[tenant_id] = self._clock() + self._unknown_ttl_s
        if len(self._unknown) > _MAX_UNKNOWN_TENANTS:
            del self._unknown[next(iter(self._unknown))]  # the oldest remembered

    def resync(self, tenant_id: str, deadline: float | None) -> list[Change]:
        tenant = self._tenants.get(tenant_id)
        if tenant is None or not tenant.loaded:
            self._load(tenant_id, deadline)
            return []  # a first load publishes nothing: nobody held the tenant's data
        return self._snapshot_kinds(tenant, self._kinds, deadline, supersede=True)

    def _snapshot_kinds(
        self,
        tenant: TenantReplica,
        kinds: Sequence[Kind],
        deadline: float | None,
        *,
        supersede: bool,
    ) -> list[Change]:
        """Reload `kinds` of a loaded tenant from snapshots, all or nothing; returns the diff.
        supersede=True starts new snapshots even if some are in flight (a resync must not reuse
        a load that began before the gap it repairs); False joins them (a read after
        invalidate_kind). A superseded or fenced snapshot does not install."""
        with self._lock:
            begun = {kind: self._begin_snapshot_locked(tenant, kind, supersede) for kind in kinds}
        mine = {kind: flight for kind, (flight, leader) in begun.items() if leader}
        try:
            built = self._fetch_snapshots(tenant.tenant_id, tuple(mine), deadline)
        except BaseException as exc:
            with self._lock:
                for kind, flight in mine.items():
                    self._end_snapshot_locked(tenant, kind, flight)
            for flight in mine.values():
                flight.fail(exc)
            raise
        changes: list[Change] = []
        with self._lock:
            for kind, flight in mine.items():
                changes += tenant.kinds[kind].install(flight, *built[kind], diff=True)
                self._end_snapshot_locked(tenant, kind, flight)
        for flight in mine.values():
            flight.resolve(None)
        for flight, leader in begun.values():
            if not leader:
                flight.wait(deadline, self._clock)
        return changes

    def _begin_snapshot_locked(
        self, tenant: TenantReplica, kind: Kind, supersede: bool
    ) -> tuple[Flight[None], bool]:
        tenant_id = tenant.tenant_id
        key = (tenant_id, kind)
        if supersede:
            flight, leader = self._snapshots.start(key), True
        else:
            flight, leader = self._snapshots.join_or_start(key)
        if leader:
            tenant.kinds[kind].begin_load(flight)
            self._marks.void(tenant_id, kind)
            # Item fetches that began before this snapshot may be older than it: never store them.
            self._items.fence_where(lambda k: k[0] == tenant_id and k[1] == kind)
        return flight, leader

    def _end_snapshot_locked(self, tenant: TenantReplica, kind: Kind, flight: Flight[None]) -> None:
        self._snapshots.finish((tenant.tenant_id, kind), flight)
        tenant.kinds[kind].end_load(flight)

    def _fetch_snapshots(
        self, tenant_id: str, kinds: Sequence[Kind], deadline: float | None
    ) -> dict[Kind, tuple[dict[str, Entry], int, float]]:
        """Fetch and build (outside the lock) the maps of `kinds`, each with its version high water
        and the time it was fetched (which its entries share as stored_at)."""
        built: dict[Kind, tuple[dict[str, Entry], int, float]] = {}
        tenant_counters = self._counters.of(tenant_id)
        for kind in kinds:
            counters = tenant_counters[kind]
            started = self._clock()
            try:
                snapshot = self._source.fetch_snapshot(tenant_id, kind, deadline)
            except BaseException as exc:
                counters.record_fetch(started, self._clock(), failed=not isinstance(exc, NotFound))
                raise
            stored_at = self._clock()
            counters.record_fetch(started, stored_at, failed=False)
            if kind is Kind.ROLE_PERMISSIONS:
                entries = {key: make_entry(value, stored_at) for key, value in snapshot.items.items()}
            else:
                entries = {key: Entry(value, stored_at) for key, value in snapshot.items.items()}
            built[kind] = (entries, _high_water(snapshot), stored_at)
        return built

    # --- writes

    def apply(
        self,
        tenant_id: str,
        kind: Kind,
        key: str,
        value: Value | None,
        *,
        version: int | None,
        expected_old: object,
    ) -> tuple[ApplyOutcome, Change | None]:
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            if tenant is None:
                return ApplyOutcome.NOT_LOADED, None
            replica = tenant.kinds[kind]
            held_version = replica.held_version(key)
            if version is None:
                version = value.version if value is not None else 0
            elif value is not None and value.version == 0 and version > 0:
                value = replace(value, version=version)
            if version > 0:
                if version <= held_version:
                    return ApplyOutcome.OLD_VERSION, None
                if self._version_window and version > replica.high_water + self._version_window:
                    return ApplyOutcome.IMPLAUSIBLE_VERSION, None
            elif held_version > 0:
                # No version (the design note's format): keep the held one, so provenance does not
                # go back to 0 and a delayed older versioned event is still refused.
                version = held_version
                if value is not None:
                    value = replace(value, version=held_version)
            if tenant.loaded and expected_old is not MISSING:
                held = replica.map.get(key)
                if not same_content(held.value if held is not None else None, expected_old):
                    return ApplyOutcome.OLD_VALUE_MISMATCH, None
            change = self._write_locked(tenant, kind, key, value, version, fetched=False)
        return (ApplyOutcome.APPLIED if tenant.loaded else ApplyOutcome.NOT_LOADED), change

    def _write_locked(
        self, tenant: TenantReplica, kind: Kind, key: str, value: Value | None, version: int, *, fetched: bool
    ) -> Change | None:
        self._items.fence((tenant.tenant_id, kind, key))
        self._marks.note(tenant.tenant_id, kind, key)
        change = tenant.kinds[kind].write(key, value, version, self._clock(), fetched=fetched)
        return change if tenant.loaded else None  # nothing is published before the first load

    def refetch(self, tenant_id: str, kind: Kind, key: str, deadline: float | None) -> Change | None:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return None  # not loaded: it will load fresh
        with self._lock:
            flight = self._items.start((tenant_id, kind, key))  # must begin after the caller's event
        return self._fetch_item(tenant, kind, key, flight, deadline)[1]

    def _fetch_suspect(
        self, tenant: TenantReplica, kind: Kind, key: str, deadline: float | None
    ) -> Value | None:
        with self._lock:
            flight, leader = self._items.join_or_start((tenant.tenant_id, kind, key))
        if leader:
            return self._fetch_item(tenant, kind, key, flight, deadline)[0]
        return flight.wait(deadline, self._clock)

    def _fetch_item(
        self,
        tenant: TenantReplica,
        kind: Kind,
        key: str,
        flight: Flight[Value | None],
        deadline: float | None,
    ) -> tuple[Value | None, Change | None]:
        """The leader's part of an item flight: fetch, store unless fenced, wake the waiters.
        Returns (the fetched value or None for not found, the change stored)."""
        tenant_id = tenant.tenant_id
        counters = tenant.counters[kind]
        started = self._clock()
        value: Value | None
        try:
            value = self._source.fetch_item(tenant_id, kind, key, deadline)
        except NotFound:
            value = None
        except BaseException as exc:
            counters.record_fetch(started, self._clock(), failed=True)
            with self._lock:
                self._items.finish((tenant_id, kind, key), flight)
            flight.fail(exc)
            raise
        counters.record_fetch(started, self._clock(), failed=False)
        with self._lock:
            self._items.finish((tenant_id, kind, key), flight)
            change = None
            # The Wrapper's answer wins over whatever version is held (unless fenced: then an
            # event or snapshot came after this fetch began, and is the newer of the two).
            if not flight.fenced and self._tenants.get(tenant_id) is tenant:
                version = value.version if value else 0
                change = self._write_locked(tenant, kind, key, value, version, fetched=True)
        flight.resolve(value)
        return value, change

    def invalidate(self, tenant_id: str, kind: Kind, key: str) -> None:
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            self._counters.of(tenant_id)[kind].invalidations += 1
            if tenant is None:
                return
            self._items.fence((tenant_id, kind, key))
            self._marks.note(tenant_id, kind, key)
            tenant.kinds[kind].invalidate(key)

    def invalidate_kind(self, tenant_id: str, kind: Kind) -> None:
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            self._counters.of(tenant_id)[kind].invalidations += 1
            if tenant is None:
                return
            self._items.fence_where(lambda k: k[0] == tenant_id and k[1] == kind)
            self._snapshots.fence((tenant_id, kind))
            self._marks.void(tenant_id, kind)
            tenant.kinds[kind].invalidate_all()

    # --- anti-entropy (the verifier: authority.py, digest.py)

    def settled_items(self, tenant_id: str, kind: Kind) -> list[tuple[str, Value]] | None:
        """The verified (key, value) pairs of a loaded tenant-kind, or None while there is nothing
        settled to compare (not loaded, a snapshot in flight, or invalidated whole)."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None or not tenant.loaded:
            return None
        replica = tenant.kinds[kind]
        if replica.loading is not None or replica.reload:
            return None
        return [(key, entry.value) for key, entry in list(replica.map.items())]

    def begin_verify(self, tenant_id: str, kind: Kind) -> VerifyMark:
        """Open a mark before reading the Wrapper: writes from now on are newer than its answer."""
        with self._lock:
            return self._marks.open(tenant_id, kind)

    def end_verify(self, mark: VerifyMark) -> None:
        with self._lock:
            self._marks.close(mark)

    def install_authority(
        self,
        mark: VerifyMark,
        bucket: int,
        bucket_count: int,
        truth: Mapping[str, Value],
        replica_keys: Sequence[str],
    ) -> list[Change]:
        """Make one bucket hold the Wrapper's `truth` (its items of that bucket), versions
        included, except keys written since `mark` opened; `replica_keys`: the replica's keys
        of the bucket when its digest was computed. Returns the changes made."""
        in_bucket = {k: v for k, v in truth.items() if bucket_of(k, bucket_count) == bucket}
        ours = [k for k in replica_keys if bucket_of(k, bucket_count) == bucket]
        scope = dict.fromkeys([*ours, *in_bucket])
        changes: list[Change] = []
        with self._lock:
            tenant = self._tenants.get(mark.tenant_id)
            if tenant is None or not tenant.loaded:
                return []
            replica = tenant.kinds[mark.kind]
            held = {k: e.value for k in scope if (e := replica.map.get(k)) is not None}
            for key, value in to_install(mark, held, in_bucket, scope):
                version = value.version if value is not None else 0
                change = self._write_locked(tenant, mark.kind, key, value, version, fetched=True)
                if change is not None:
                    changes.append(change)
        return changes

    # --- introspection

    def view(self, tenant_id: str, kinds: Sequence[Kind]) -> dict[Kind, dict[str, Entry]]:
        """A copy of the verified items of `kinds` of a loaded tenant, taken at one moment (the
        values are shared, not copied: a pointer per item). KeyError if it is not loaded."""
        with self._lock:
            tenant = self._tenants[tenant_id]
            if not tenant.loaded:
                raise KeyError(tenant_id)
            return {kind: dict(tenant.kinds[kind].map) for kind in kinds}

    def loaded_tenants(self) -> list[str]:
        return [tenant_id for tenant_id, tenant in list(self._tenants.items()) if tenant.loaded]

    def replica_ages(self) -> dict[str, float]:
        """Per loaded tenant, seconds since its oldest kind's installed snapshot was fetched (a
        snapshot superseded or fenced before it installed does not count)."""
        now = self._clock()
        ages: dict[str, float] = {}
        for tenant_id, tenant in list(self._tenants.items()):
            times = [k.loaded_at for k in tenant.kinds.values() if k.loaded_at is not None]
            if tenant.loaded and times:
                ages[tenant_id] = now - min(times)
        return ages

    def is_loaded(self, tenant_id: str) -> bool:
        tenant = self._tenants.get(tenant_id)
        return tenant is not None and tenant.loaded

    def entries(self, kind: Kind, tenants: Collection[str] | None = None) -> int:
        """Entries of `kind` held for `tenants` (None: every loaded tenant)."""
        held = list(self._tenants.values()) if tenants is None else [self._tenants.get(t) for t in tenants]
        return sum(len(t.kinds[kind].map) for t in held if t is not None and t.loaded)

    def flight_in_progress(self, tenant_id: str, kind: Kind | None = None, key: str | None = None) -> bool:
        """A joinable load (tenant), snapshot (kind) or item fetch (key) is in flight (for tests)."""
        if kind is None:
            return tenant_id in self._loads
        if key is None:
            return (tenant_id, kind) in self._snapshots
        return (tenant_id, kind, key) in self._items


def _high_water(snapshot: Snapshot) -> int:
    """The highest entity version a snapshot may hold: its revision (the tenant's change counter,
    never below an entity's version) when the Wrapper sends one, else found by a scan (about
    10 ms per 100,000 items, outside the lock). Too low a figure only costs refetches."""
    if snapshot.revision > 0:
        return snapshot.revision
    return max((value.version for value in snapshot.items.values()), default=0)


def _no_grants(_role_id: str) -> Grants | None:
    return None
