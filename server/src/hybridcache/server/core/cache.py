"""`HybridCache`: the cache core's one entry point, routing each kind to its tier.

    REPLICA kinds   -> ReplicaSet      (replica.py)    full per-tenant copy, events keep it current
    ON_DEMAND kinds -> ReferenceCache  (reference.py)  bounded LRU + adaptive TTL

No I/O of its own: the Wrapper is reached only through the injected `WrapperSource`, time
only through the injected `clock`, background refreshes only through the injected `submit`.

Threads: gRPC worker threads call the reads (get, get_many, check_permission) concurrently;
the event thread calls apply / refetch / invalidate / resync. Hits take no lock. Lock order:
there is none to get wrong — each store has one leaf lock (`ReplicaSet._lock`,
`ReferenceCache._lock`); they are never held together, and never held across a Wrapper call,
a wait on another thread's fetch, or `submit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence

from hybridcache.client.reasons import Reason
from hybridcache.server.core.authority import VerifyMark
from hybridcache.server.core.errors import InvalidRequest, NotFound
from hybridcache.server.core.kinds import Kind, Tier
from hybridcache.server.core.permissions import Grants, PermissionDecision, PermissionReason, decide
from hybridcache.server.core.policy import DEFAULT_POLICIES, KindPolicy
from hybridcache.server.core.reference import ReferenceCache, Submit
from hybridcache.server.core.replica import DEFAULT_VERSION_WINDOW, ReplicaSet
from hybridcache.server.core.replica_state import Entry
from hybridcache.server.core.results import MISSING, ApplyOutcome, Change, Read, Source
from hybridcache.server.core.source import WrapperSource
from hybridcache.server.core.stats import CacheStats, KindStats, TenantCounters, kind_stats
from hybridcache.server.core.values import RolePermissions, UserStatus, Value

__all__ = [
    "MISSING",
    "ApplyOutcome",
    "CacheStats",
    "Change",
    "HybridCache",
    "KindStats",
    "PermissionDecision",
    "PermissionReason",
    "Read",
    "Source",
]


Reader = Callable[[str, Kind, str, float | None], Read]


class HybridCache:
    def __init__(
        self,
        source: WrapperSource,
        policies: Mapping[Kind, KindPolicy] = DEFAULT_POLICIES,
        *,
        max_reference_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        submit: Submit | None = None,
        version_window: int = DEFAULT_VERSION_WINDOW,
        wrapper_known_down: Callable[[Kind], bool] | None = None,
    ) -> None:
        """`submit` runs a background refresh (stale-while-revalidate), e.g. a ThreadPoolExecutor's
        `submit`; None: no refresh-ahead, entries are refetched when they expire.
        `version_window`: how far past a tenant-kind's highest seen version an event may be
        before it is IMPLAUSIBLE_VERSION (0: no limit). `wrapper_known_down(kind)`: True while
        the Wrapper's endpoint for the kind is known to be failing (its circuit breaker is
        open): then an expired on-demand entry within max_stale_s is served STALE at once and
        refreshed in the background, instead of its reader waiting on the Wrapper."""
        for kind, policy in policies.items():
            if policy.kind is not kind:
                raise ValueError(f"the policy filed under {kind} is for {policy.kind}")
        self._policies = dict(policies)
        self._counters = TenantCounters(self._policies)
        replicated = [p for p in self._policies.values() if p.tier is Tier.REPLICA]
        self._replica = ReplicaSet(
            source,
            [p.kind for p in replicated],
            self._counters,
            clock=clock,
            unknown_tenant_ttl_s=min((p.negative_ttl_s for p in replicated), default=0.0),
            version_window=version_window,
        )
        self._reference = ReferenceCache(
            source,
            {k: p for k, p in self._policies.items() if p.tier is Tier.ON_DEMAND},
            self._counters,
            max_entries=max_reference_entries,
            clock=clock,
            submit=submit,
            wrapper_known_down=wrapper_known_down,
        )
        self._readers: dict[Kind, Reader] = {
            kind: self._replica.get if policy.tier is Tier.REPLICA else self._reference.get
            for kind, policy in self._policies.items()
        }
        self._has_replica = bool(replicated)
        self._replicated_permissions = all(
            kind in self._policies and self._policies[kind].tier is Tier.REPLICA
            for kind in (Kind.USER_STATUS, Kind.ROLE_PERMISSIONS)
        )

    def _tier(self, kind: Kind) -> Tier:
        policy = self._policies.get(kind)
        if policy is None:
            raise InvalidRequest(f"kind {kind} is not configured", reason=Reason.KIND_NOT_CONFIGURED)
        return policy.tier

    # --- reads

    def get(self, tenant_id: str, kind: Kind, key: str, deadline: float | None = None) -> Read:
        """One entity. Replica kinds: loads the tenant on first use, then a dict lookup (absent:
        NotFound without a Wrapper call). On-demand kinds: LRU + TTL, single-flight fetch on a
        miss, NOT_FOUND remembered, stale served within max_stale_s when the Wrapper is down."""
        reader = self._readers.get(kind)
        if reader is None:
            raise InvalidRequest(f"kind {kind} is not configured", reason=Reason.KIND_NOT_CONFIGURED)
        return reader(tenant_id, kind, key, deadline)

    def get_many(
        self, tenant_id: str, kind: Kind, keys: Sequence[str], deadline: float | None = None
    ) -> tuple[dict[str, Read], list[str]]:
        """(found by key, keys not found). An unknown tenant raises NotFound for the whole batch."""
        if self._tier(kind) is Tier.REPLICA:
            self._replica.tenant(tenant_id, deadline)
        found: dict[str, Read] = {}
        missing: list[str] = []
        for key in keys:
            try:
                found[key] = self.get(tenant_id, kind, key, deadline)
            except NotFound as exc:
                if exc.reason is Reason.TENANT_NOT_FOUND:
                    raise
                missing.append(key)
        return found, missing

    def check_permission(
        self, tenant_id: str, user_id: str, permission: str, deadline: float | None = None
    ) -> PermissionDecision:
        """May `user_id` do `permission`? The first of the user's roles (in their order) with a
        matching grant decides; see `permissions` for the grant syntax."""
        if self._replicated_permissions:
            return self._replica.check_permission(tenant_id, user_id, permission, deadline)
        # Some operator made user status or roles on-demand: same rule, through get().
        try:
            read = self.get(tenant_id, Kind.USER_STATUS, user_id, deadline)
        except NotFound as exc:
            if exc.reason is Reason.TENANT_NOT_FOUND:
                raise
            return decide(None, lambda _: None, permission, 0.0)
        status = read.value
        assert isinstance(status, UserStatus)

        def grants_of(role_id: str) -> Grants | None:
            try:
                role = self.get(tenant_id, Kind.ROLE_PERMISSIONS, role_id, deadline).value
            except NotFound:
                return None
            return Grants(role.permissions) if isinstance(role, RolePermissions) else None

        return decide(status, grants_of, permission, read.age_s)

    # --- tenants

    def ensure_tenant(self, tenant_id: str, deadline: float | None = None) -> None:
        """Load every replica kind of the tenant once (single-flight). NotFound for an unknown
        tenant, remembered for the replica kinds' negative_ttl_s."""
        if self._has_replica:
            self._replica.tenant(tenant_id, deadline)

    def is_replicated(self, kind: Kind) -> bool:
        policy = self._policies.get(kind)
        return policy is not None and policy.tier is Tier.REPLICA

    def replica_view(self, tenant_id: str, kinds: Sequence[Kind]) -> dict[Kind, dict[str, Entry]]:
        """The verified items of replicated `kinds` of a loaded tenant (`ensure_tenant` first),
        copied at one moment. InvalidRequest for a kind this server does not replicate."""
        for kind in kinds:
            if self._tier(kind) is not Tier.REPLICA:
                raise InvalidRequest(
                    f"kind {kind} is not replicated by this server", reason=Reason.KIND_NOT_REPLICATED
                )
        return self._replica.view(tenant_id, kinds)

    def loaded_tenants(self) -> list[str]:
        return self._replica.loaded_tenants()

    def replica_ages(self) -> dict[str, float]:
        """Per loaded tenant, seconds since its replica's oldest installed snapshot was fetched."""
        return self._replica.replica_ages()

    def is_loaded(self, tenant_id: str) -> bool:
        return self._replica.is_loaded(tenant_id)

    def resync_tenant(self, tenant_id: str, deadline: float | None = None) -> list[Change]:
        """Reload every replica kind from fresh snapshots, swapping each kind's map atomically,
        all kinds or none; returns the key-level diff. A tenant not yet loaded is loaded (diff [])."""
        if not self._has_replica:
            return []
        return self._replica.resync(tenant_id, deadline)

    # --- writes (events)

    def apply(
        self,
        tenant_id: str,
        kind: Kind,
        key: str,
        value: Value | None,
        *,
        version: int | None = None,
        expected_old: object = MISSING,
    ) -> tuple[ApplyOutcome, Change | None]:
        """Apply an event's new value (None: deleted). Replica kinds: NOT_LOADED if the tenant is
        not loaded; OLD_VERSION if `version` (default: value.version) is not newer than held;
        IMPLAUSIBLE_VERSION if it is beyond the tenant-kind's highest seen + the window (then
        call refetch: the Wrapper's answer wins); no version (0): the held version is kept;
        OLD_VALUE_MISMATCH if `expected_old` (a Value, or None: "did not exist") differs from
        what is held, versions aside — then call refetch. On-demand kinds: invalidate."""
        if self._tier(kind) is Tier.ON_DEMAND:
            self._reference.invalidate(tenant_id, kind, key)
            return ApplyOutcome.INVALIDATED, None
        return self._replica.apply(tenant_id, kind, key, value, version=version, expected_old=expected_old)

    def refetch(self, tenant_id: str, kind: Kind, key: str, deadline: float | None = None) -> Change | None:
        """Fetch one key of a replica kind again and store it (unless an event or snapshot
        overtook the fetch), whatever version is held: the Wrapper's answer wins and its version
        becomes the held one. Returns the Change if the held value changed. On-demand kinds:
        invalidates (the next read fetches)."""
        if self._tier(kind) is Tier.ON_DEMAND:
            self._reference.invalidate(tenant_id, kind, key)
            return None
        return self._replica.refetch(tenant_id, kind, key, deadline)

    def invalidate(self, tenant_id: str, kind: Kind, key: str) -> tuple[str, ...]:
        """On-demand: drop the entry, and every cached entry that names it (org units: the
        parent, the descendants); returns those related keys. Replica: the held value becomes
        a suspect — the next read refetches it (and serves it as STALE if the Wrapper is down);
        returns ()."""
        if self._tier(kind) is Tier.ON_DEMAND:
            return self._reference.invalidate(tenant_id, kind, key)
        self._replica.invalidate(tenant_id, kind, key)
        return ()

    def invalidate_kind(self, tenant_id: str, kind: Kind) -> None:
        """On-demand: drop the tenant's entries of the kind. Replica: reload the kind on next read."""
        if self._tier(kind) is Tier.ON_DEMAND:
            self._reference.invalidate_kind(tenant_id, kind)
        else:
            self._replica.invalidate_kind(tenant_id, kind)

    def drop_reference(self) -> None:
        """Forget every on-demand entry and fence fetches in flight (after a notification gap)."""
        self._reference.clear()

    # --- anti-entropy (the verifier compares replicas with the Wrapper's digests)

    def settled_items(self, tenant_id: str, kind: Kind) -> list[tuple[str, Value]] | None:
        """A replica kind's verified (key, value) pairs, or None while it has nothing settled
        to compare (tenant not loaded, a snapshot in flight, the kind invalidated)."""
        if self._tier(kind) is not Tier.REPLICA:
            return None
        return self._replica.settled_items(tenant_id, kind)

    def begin_verify(self, tenant_id: str, kind: Kind) -> VerifyMark:
        """Call before reading the Wrapper; pass the mark to install_authority, then end_verify."""
        return self._replica.begin_verify(tenant_id, kind)

    def end_verify(self, mark: VerifyMark) -> None:
        self._replica.end_verify(mark)

    def install_authority(
        self,
        mark: VerifyMark,
        bucket: int,
        bucket_count: int,
        truth: Mapping[str, Value],
        replica_keys: Sequence[str],
    ) -> list[Change]:
        """The Wrapper's items of one digest bucket replace the replica's (values and versions,
        whatever the held version), except keys an event wrote since `mark`; the changes made."""
        return self._replica.install_authority(mark, bucket, bucket_count, truth, replica_keys)

    # --- monitoring

    def stats(self, tenants: Collection[str] | None = None) -> CacheStats:
        """Counters and entries of every tenant, or only of `tenants` (what a caller bound to
        them may see: nothing in it depends on another tenant's activity, except the adaptive
        TTL, which every tenant's churn moves)."""
        kinds: dict[Kind, KindStats] = {}
        for kind, policy in self._policies.items():
            if policy.tier is Tier.REPLICA:
                entries, ttl_s = self._replica.entries(kind, tenants), 0.0
            else:
                entries, ttl_s = self._reference.entries(kind, tenants), self._reference.ttl_s(kind)
            counters = self._counters.total(kind, tenants)
            kinds[kind] = kind_stats(kind, policy.tier, counters, entries, ttl_s)
        loaded = self._replica.loaded_tenants()
        if tenants is not None:
            loaded = [t for t in loaded if t in tenants]
        return CacheStats(
            kinds=kinds,
            loaded_tenants=len(loaded),
            reference_entries=len(self._reference)
            if tenants is None
            else sum(
                self._reference.entries(kind, tenants)
                for kind, p in self._policies.items()
                if p.tier is Tier.ON_DEMAND
            ),
            reference_capacity=self._reference.capacity,
        )
