"""The HybridCache gRPC service: request checks, caller checks, then one call into the core.

Each unary handler follows the same steps, in this order so that nothing is revealed to a
caller that has not proved who it is:

    [gate: authenticate (UNAUTHENTICATED), rate limits (RESOURCE_EXHAUSTED)]
      -> validate fields (INVALID_ARGUMENT) -> authorise tenant (PERMISSION_DENIED)
      -> cache core (NOT_FOUND / UNAVAILABLE) -> response

Domain errors become statuses in one table (`errors.py`); the caller's deadline is passed
down so a Wrapper fetch never outlives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import grpc

from hybridcache.client.reasons import Reason
from hybridcache.server import convert
from hybridcache.server.api.auth import Caller
from hybridcache.server.api.errors import abort, abort_with
from hybridcache.server.api.gate import current_caller
from hybridcache.server.api.snapshot import SnapshotLister
from hybridcache.server.api.validation import (
    check_batch,
    check_key,
    check_permission,
    check_tenant_id,
    check_user_id,
)
from hybridcache.server.core import HybridCache, PermissionReason, Read
from hybridcache.server.core.errors import CacheError
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import CreditCost, FeatureFlag, OrgUnit, UserProfile, UserStatus
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc

# Fills the event counters of a GetCacheStats answer: of these tenants only (None: of all).
StatsExtra = Callable[[pb.GetCacheStatsResponse, frozenset[str] | None], None]
Repairing = Mapping[tuple[str, Kind, str], object]  # keys whose refetch is pending
_NOT_REPAIRING: Repairing = {}


# Work for a call must end a little before the caller's deadline, so the caller receives our
# UNAVAILABLE (with its reason) rather than its own DEADLINE_EXCEEDED: 20% of the time left,
# at most 100 ms (the answer still has to be sent, and a loaded 2-core host stalls threads
# for tens of milliseconds).
_DEADLINE_MARGIN_FRACTION = 0.2
_DEADLINE_MARGIN_MAX_S = 0.1


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """When work for this call must be done, on the monotonic clock (None: the caller set none)."""
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + remaining - min(_DEADLINE_MARGIN_MAX_S, remaining * _DEADLINE_MARGIN_FRACTION)


class HybridCacheServicer(pb_grpc.HybridCacheServicer):
    def __init__(
        self,
        cache: HybridCache,
        *,
        freshness: Callable[[], str],
        stats_extra: StatsExtra | None = None,
        repairing: Repairing = _NOT_REPAIRING,
        snapshots: SnapshotLister | None = None,
    ) -> None:
        """`repairing`: a live view of the keys awaiting a refetch (the repair worker's); their
        answers say FRESHNESS_REPAIRING."""
        self._cache = cache
        self._freshness = freshness
        self._stats_extra = stats_extra
        self._repairing = repairing
        self._snapshots = snapshots

    # --- shared steps

    def _tenant(self, context: grpc.ServicerContext, raw_tenant: str) -> tuple[Caller, str]:
        caller = current_caller()
        try:
            tenant = check_tenant_id(raw_tenant)
        except CacheError as exc:
            abort_with(context, exc)
        if not caller.may_read(tenant):
            abort(
                context, Reason.TENANT_NOT_ALLOWED, f"caller {caller.name!r} may not read tenant {tenant!r}"
            )
        return caller, tenant

    def _read(
        self,
        context: grpc.ServicerContext,
        raw_tenant: str,
        kind: Kind,
        raw_key: str,
        check: Callable[[str], str],
    ) -> tuple[Read, str]:
        """The read and the freshness its provenance reports."""
        _, tenant = self._tenant(context, raw_tenant)
        try:
            key = check(raw_key)
            read = self._cache.get(tenant, kind, key, deadline_of(context))
        except CacheError as exc:
            abort_with(context, exc)
        return read, self._freshness_of(tenant, kind, key)

    def _freshness_of(self, tenant: str, kind: Kind, key: str) -> str:
        # On every read: one truthiness check while nothing is pending (measured 0.2-0.6 µs over
        # freshness() alone, timeit on the loaded 2-core VM; an RPC costs ~240 µs).
        repairing = self._repairing
        if repairing and (tenant, kind, key) in repairing:
            return "repairing"
        return self._freshness()

    def _freshness_of_any(self, tenant: str, kind: Kind, keys: Iterable[str]) -> str:
        repairing = self._repairing
        if repairing and any((tenant, kind, key) in repairing for key in keys):
            return "repairing"
        return self._freshness()

    def _provenance(self, read: Read, freshness: str, into: pb.Provenance) -> None:
        convert.provenance(read.source, read.age_s, read.version, freshness, into)

    # --- unary reads

    def GetCreditCost(
        self, request: pb.GetCreditCostRequest, context: grpc.ServicerContext
    ) -> pb.GetCreditCostResponse:
        read, freshness = self._read(
            context, request.tenant_id, Kind.CREDIT_COSTS, request.operation_code, _operation_code
        )
        assert isinstance(read.value, CreditCost)
        response = pb.GetCreditCostResponse()
        convert.credit_cost(read.value, response.credit_cost)
        self._provenance(read, freshness, response.provenance)
        return response

    def BatchGetCreditCosts(
        self, request: pb.BatchGetCreditCostsRequest, context: grpc.ServicerContext
    ) -> pb.BatchGetCreditCostsResponse:
        _, tenant = self._tenant(context, request.tenant_id)
        try:
            codes = check_batch(list(request.operation_codes), "operation_codes")
            found, missing = self._cache.get_many(tenant, Kind.CREDIT_COSTS, codes, deadline_of(context))
        except CacheError as exc:
            abort_with(context, exc)
        response = pb.BatchGetCreditCostsResponse(missing_operation_codes=missing)
        oldest: Read | None = None
        for code in codes:
            read = found.get(code)
            if read is None:
                continue
            assert isinstance(read.value, CreditCost)
            convert.credit_cost(read.value, response.credit_costs.add())
            if oldest is None or read.age_s > oldest.age_s:
                oldest = read
        if oldest is not None:
            freshness = self._freshness_of_any(tenant, Kind.CREDIT_COSTS, found)
            convert.provenance(oldest.source, oldest.age_s, 0, freshness, response.provenance)
        return response

    def CheckPermission(
        self, request: pb.CheckPermissionRequest, context: grpc.ServicerContext
    ) -> pb.CheckPermissionResponse:
        _, tenant = self._tenant(context, request.tenant_id)
        try:
            user_id = check_user_id(request.user_id)
            permission = check_permission(request.permission)
            decision = self._cache.check_permission(tenant, user_id, permission, deadline_of(context))
        except CacheError as exc:
            abort_with(context, exc)
        response = pb.CheckPermissionResponse(
            allowed=decision.allowed,
            reason=_PERMISSION_REASON[decision.reason],
            granted_by_role=decision.role_id,
            matched_grant=decision.matched_grant,
        )
        freshness = self._freshness_of(tenant, Kind.USER_STATUS, user_id)
        if decision.role_id and freshness != "repairing":
            freshness = self._freshness_of(tenant, Kind.ROLE_PERMISSIONS, decision.role_id)
        convert.provenance("cache", decision.age_s, decision.version, freshness, response.provenance)
        return response

    def GetUserStatus(
        self, request: pb.GetUserStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetUserStatusResponse:
        read, freshness = self._read(
            context, request.tenant_id, Kind.USER_STATUS, request.user_id, check_user_id
        )
        assert isinstance(read.value, UserStatus)
        response = pb.GetUserStatusResponse()
        convert.user_status(read.value, response.user_status)
        self._provenance(read, freshness, response.provenance)
        return response

    def GetFeatureFlag(
        self, request: pb.GetFeatureFlagRequest, context: grpc.ServicerContext
    ) -> pb.GetFeatureFlagResponse:
        read, freshness = self._read(
            context, request.tenant_id, Kind.FEATURE_FLAGS, request.flag_key, _flag_key
        )
        assert isinstance(read.value, FeatureFlag)
        response = pb.GetFeatureFlagResponse()
        convert.feature_flag(read.value, response.feature_flag)
        self._provenance(read, freshness, response.provenance)
        return response

    def GetUserProfile(
        self, request: pb.GetUserProfileRequest, context: grpc.ServicerContext
    ) -> pb.GetUserProfileResponse:
        read, freshness = self._read(
            context, request.tenant_id, Kind.USER_PROFILES, request.user_id, check_user_id
        )
        assert isinstance(read.value, UserProfile)
        response = pb.GetUserProfileResponse()
        convert.user_profile(read.value, response.user_profile)
        self._provenance(read, freshness, response.provenance)
        return response

    def GetOrgUnit(
        self, request: pb.GetOrgUnitRequest, context: grpc.ServicerContext
    ) -> pb.GetOrgUnitResponse:
        read, freshness = self._read(
            context, request.tenant_id, Kind.ORG_UNITS, request.org_unit_id, _org_unit_id
        )
        assert isinstance(read.value, OrgUnit)
        response = pb.GetOrgUnitResponse()
        convert.org_unit(read.value, response.org_unit)
        self._provenance(read, freshness, response.provenance)
        return response

    def GetCacheStats(
        self, request: pb.GetCacheStatsRequest, context: grpc.ServicerContext
    ) -> pb.GetCacheStatsResponse:
        caller = current_caller()
        # A caller bound to tenants sees their figures only: a sum over all tenants would tell
        # it how busy the others are. A caller allowed every tenant ("*") sees the whole server.
        tenants = None if caller.all_tenants else caller.tenants
        stats = self._cache.stats(tenants)
        response = pb.GetCacheStatsResponse(
            freshness=convert.FRESHNESS_TO_PROTO[self._freshness()],
            # Only the tenants this caller may read: tenant names are not everyone's business.
            loaded_tenant_ids=[t for t in self._cache.loaded_tenants() if caller.may_read(t)],
        )
        for kind, kind_stats in stats.kinds.items():
            response.kinds.append(
                pb.KindStats(
                    kind=convert.KIND_TO_PROTO[kind],
                    tier=str(kind_stats.tier),
                    hits=kind_stats.hits,
                    misses=kind_stats.misses,
                    stale=kind_stats.stale,
                    fetches=kind_stats.fetches,
                    fetch_errors=kind_stats.fetch_errors,
                    fetch_latency_ms_mean=kind_stats.fetch_latency_ms_mean,
                    entries=kind_stats.entries,
                    ttl_ms=int(kind_stats.ttl_s * 1000),
                    invalidations=kind_stats.invalidations,
                )
            )
        if self._stats_extra is not None:
            self._stats_extra(response, tenants)
        return response

    def ListSnapshot(
        self, request: pb.ListSnapshotRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ListSnapshotResponse]:
        """Paged, at one position of the change stream (`snapshot.py`)."""
        _, tenant = self._tenant(context, request.tenant_id)
        if self._snapshots is None:
            abort(context, Reason.NOT_ENABLED, "ListSnapshot is not enabled")
        try:
            pages = self._snapshots.pages(tenant, request, deadline_of(context))
        except CacheError as exc:
            abort_with(context, exc)
        yield from pages

    def WatchChanges(
        self, request: pb.WatchChangesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchChangesResponse]:
        """Never registered: `registration.add_hybridcache_service` puts `watch.serve_watch`
        in its place (its messages leave pre-serialized). Defined because the generated base
        class declares it."""
        abort(context, Reason.NOT_ENABLED, "WatchChanges is served elsewhere")


# The key checks of the single reads, by field name (one function each, not a lambda per call).
def _operation_code(value: str) -> str:
    return check_key(value, "operation_code")


def _flag_key(value: str) -> str:
    return check_key(value, "flag_key")


def _org_unit_id(value: str) -> str:
    return check_key(value, "org_unit_id")


# Keyed by member, not by `.name`: that property cost ~0.15 µs a call, 4x the lookup.
_PERMISSION_REASON: dict[PermissionReason, pb.PermissionReason.ValueType] = {
    PermissionReason.GRANTED: pb.PERMISSION_REASON_GRANTED,
    PermissionReason.USER_INACTIVE: pb.PERMISSION_REASON_USER_INACTIVE,
    PermissionReason.UNKNOWN_USER: pb.PERMISSION_REASON_UNKNOWN_USER,
    PermissionReason.NO_ROLE_GRANTS: pb.PERMISSION_REASON_NO_ROLE_GRANTS,
}
