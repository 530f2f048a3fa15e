"""Admin endpoints (`/admin`): change data, publish notifications, inject faults, count.

Every write commits to SQLite first and then publishes; a failed publish is reported as
`"published": false` with HTTP 200, because the data did change (the product must catch up
by resync). `?publish=false` changes the data silently, for the tests of that resync path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from hybridcache.server.core.kinds import Kind
from hybridcache_dev.wrapper.deps import (
    INVALID,
    NOT_FOUND,
    UNAUTHORIZED,
    Ctx,
    TenantId,
    WrapperContext,
    require_token,
)
from hybridcache_dev.wrapper.events import event_for
from hybridcache_dev.wrapper.instrument import Faults
from hybridcache_dev.wrapper.models import (
    CreditCostBody,
    CreditCostItem,
    FaultsBody,
    FeatureFlagBody,
    FeatureFlagItem,
    OrgUnitItem,
    OrgUnitPatch,
    ProfilePatch,
    PublishRawBody,
    PublishResult,
    RoleBody,
    RoleItem,
    StatsBody,
    UserProfileItem,
    UserStatusBody,
    UserStatusItem,
    WriteResult,
)
from hybridcache_dev.wrapper.store import Change

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_token)], responses=UNAUTHORIZED
)

Publish = Annotated[bool, Query(description="false: change the data without a notification")]
IncludeValue = Annotated[
    bool, Query(description="false: leave newValue/oldValue out of the notification (consumers refetch)")
]
OperationCode = Annotated[str, Path(alias="operationCode")]
RoleId = Annotated[str, Path(alias="roleId")]
UserId = Annotated[str, Path(alias="userId")]
FlagKey = Annotated[str, Path(alias="flagKey")]
OrgUnitId = Annotated[str, Path(alias="orgUnitId")]


async def _write(
    ctx: WrapperContext,
    apply: Callable[[], Change | list[Change]],
    *,
    publish: bool,
    include_value: bool = True,
) -> dict[str, Any]:
    """Apply a store write, then publish one notification per changed entity."""
    async with ctx.write_lock:
        result = apply()
        changes = result if isinstance(result, list) else [result]
        events = [event_for(change, include_value=include_value) for change in changes] if publish else []
        published = False
        if events and ctx.publisher is not None:
            # Publish every event even after a failure: each one that gets out helps.
            outcomes = [
                await ctx.publisher.publish(event.channel(ctx.app_name), event.message()) for event in events
            ]
            published = all(outcomes)
    main = changes[0]
    return {
        "tenantId": main.tenant_id,
        "item": main.new,
        "version": main.version,
        "revision": main.revision,
        "published": published,
        "eventIds": [event.event_id for event in events],
    }


@router.put(
    "/tenants/{tenantId}/credit-costs/{operationCode}",
    response_model=WriteResult[CreditCostItem],
    responses=NOT_FOUND,
)
async def put_credit_cost(
    ctx: Ctx,
    tenant_id: TenantId,
    operation_code: OperationCode,
    body: CreditCostBody,
    publish: Publish = True,
) -> dict[str, Any]:
    """Create or update a credit cost; notifies `credit-config-changed`."""
    return await _write(
        ctx, lambda: ctx.store.put_credit_cost(tenant_id, operation_code, body.cost), publish=publish
    )


@router.delete(
    "/tenants/{tenantId}/credit-costs/{operationCode}",
    response_model=WriteResult[CreditCostItem],
    responses=NOT_FOUND,
)
async def delete_credit_cost(
    ctx: Ctx, tenant_id: TenantId, operation_code: OperationCode, publish: Publish = True
) -> dict[str, Any]:
    """Delete a credit cost; notifies with newValue null and deleted true."""
    return await _write(
        ctx, lambda: ctx.store.delete(tenant_id, Kind.CREDIT_COSTS, operation_code), publish=publish
    )


@router.put("/tenants/{tenantId}/roles/{roleId}", response_model=WriteResult[RoleItem], responses=NOT_FOUND)
async def put_role(
    ctx: Ctx,
    *,
    tenant_id: TenantId,
    role_id: RoleId,
    body: RoleBody,
    publish: Publish = True,
    include_value: IncludeValue = True,
) -> dict[str, Any]:
    """Create or replace a role's permissions; notifies `role-permissions-changed`."""
    return await _write(
        ctx,
        lambda: ctx.store.put_role(tenant_id, role_id, body.permissions),
        publish=publish,
        include_value=include_value,
    )


@router.delete(
    "/tenants/{tenantId}/roles/{roleId}", response_model=WriteResult[RoleItem], responses=NOT_FOUND
)
async def delete_role(
    ctx: Ctx, tenant_id: TenantId, role_id: RoleId, publish: Publish = True
) -> dict[str, Any]:
    return await _write(
        ctx, lambda: ctx.store.delete(tenant_id, Kind.ROLE_PERMISSIONS, role_id), publish=publish
    )


@router.put(
    "/tenants/{tenantId}/users/{userId}/status",
    response_model=WriteResult[UserStatusItem],
    responses=NOT_FOUND,
)
async def put_user_status(
    ctx: Ctx,
    *,
    tenant_id: TenantId,
    user_id: UserId,
    body: UserStatusBody,
    publish: Publish = True,
    include_value: IncludeValue = True,
) -> dict[str, Any]:
    """Create or update a user's status; notifies `user-status-changed`."""
    return await _write(
        ctx,
        lambda: ctx.store.put_user_status(tenant_id, user_id, body.active, body.roles),
        publish=publish,
        include_value=include_value,
    )


@router.delete(
    "/tenants/{tenantId}/users/{userId}/status",
    response_model=WriteResult[UserStatusItem],
    responses=NOT_FOUND,
)
async def delete_user_status(
    ctx: Ctx, tenant_id: TenantId, user_id: UserId, publish: Publish = True
) -> dict[str, Any]:
    return await _write(ctx, lambda: ctx.store.delete(tenant_id, Kind.USER_STATUS, user_id), publish=publish)


@router.put(
    "/tenants/{tenantId}/feature-flags/{flagKey}",
    response_model=WriteResult[FeatureFlagItem],
    responses=NOT_FOUND,
)
async def put_feature_flag(
    ctx: Ctx,
    *,
    tenant_id: TenantId,
    flag_key: FlagKey,
    body: FeatureFlagBody,
    publish: Publish = True,
    include_value: IncludeValue = True,
) -> dict[str, Any]:
    """Create or update a feature flag; notifies `feature-flag-changed`."""
    return await _write(
        ctx,
        lambda: ctx.store.put_feature_flag(tenant_id, flag_key, body.enabled, body.value),
        publish=publish,
        include_value=include_value,
    )


@router.delete(
    "/tenants/{tenantId}/feature-flags/{flagKey}",
    response_model=WriteResult[FeatureFlagItem],
    responses=NOT_FOUND,
)
async def delete_feature_flag(
    ctx: Ctx, tenant_id: TenantId, flag_key: FlagKey, publish: Publish = True
) -> dict[str, Any]:
    return await _write(
        ctx, lambda: ctx.store.delete(tenant_id, Kind.FEATURE_FLAGS, flag_key), publish=publish
    )


@router.patch(
    "/tenants/{tenantId}/users/{userId}/profile",
    response_model=WriteResult[UserProfileItem],
    responses=NOT_FOUND,
)
async def patch_user_profile(
    ctx: Ctx, tenant_id: TenantId, user_id: UserId, body: ProfilePatch, publish: Publish = True
) -> dict[str, Any]:
    """Change some profile fields; notifies `user-profile-changed` with the field names only."""
    fields = body.model_dump(by_alias=True, include=body.model_fields_set)
    return await _write(ctx, lambda: ctx.store.patch_profile(tenant_id, user_id, fields), publish=publish)


@router.patch(
    "/tenants/{tenantId}/org-units/{orgUnitId}", response_model=WriteResult[OrgUnitItem], responses=NOT_FOUND
)
async def patch_org_unit(
    ctx: Ctx, tenant_id: TenantId, org_unit_id: OrgUnitId, body: OrgUnitPatch, publish: Publish = True
) -> dict[str, Any]:
    """Rename, move or re-manage an org unit; notifies `org-unit-changed` (a move: also for
    the old and the new parent, whose children changed)."""
    fields = body.model_dump(by_alias=True, include=body.model_fields_set)
    return await _write(
        ctx, lambda: ctx.store.patch_org_unit(tenant_id, org_unit_id, fields), publish=publish
    )


@router.post("/publish-raw", response_model=PublishResult, responses=INVALID)
async def publish_raw(ctx: Ctx, body: PublishRawBody) -> dict[str, Any]:
    """Publish any text on any channel (and/or the stream, per the publish mode)."""
    published = False
    if ctx.publisher is not None:
        async with ctx.write_lock:
            published = await ctx.publisher.publish(body.channel, body.message)
    return {"published": published}


@router.get("/stats", response_model=StatsBody)
async def get_stats(ctx: Ctx) -> dict[str, Any]:
    """Counts of `/api` requests per route template and per (route template, tenant)."""
    return ctx.stats.snapshot()


@router.post("/stats/reset", response_model=StatsBody)
async def reset_stats(ctx: Ctx) -> dict[str, Any]:
    ctx.stats.reset()
    return ctx.stats.snapshot()


def _faults_body(faults: Faults) -> dict[str, Any]:
    return {
        "latencyMs": faults.latency_ms,
        "failStatus": faults.fail_status,
        "hang": faults.hang,
        "resetConnections": faults.reset_connections,
        "tenants": sorted(faults.tenants) if faults.tenants is not None else None,
        "routes": sorted(faults.routes) if faults.routes is not None else None,
    }


@router.get("/faults", response_model=FaultsBody)
async def get_faults(ctx: Ctx) -> dict[str, Any]:
    return _faults_body(ctx.faults.current)


@router.put("/faults", response_model=FaultsBody, responses=INVALID)
async def put_faults(ctx: Ctx, body: FaultsBody) -> dict[str, Any]:
    """Replace the faults applied to `/api` requests (latency, a failing status, a hang, or a
    connection reset), optionally only for some tenants or route templates."""
    ctx.faults.current = Faults(
        latency_ms=body.latency_ms,
        fail_status=body.fail_status,
        hang=body.hang,
        reset_connections=body.reset_connections,
        tenants=frozenset(body.tenants) if body.tenants is not None else None,
        routes=frozenset(body.routes) if body.routes is not None else None,
    )
    return _faults_body(ctx.faults.current)


@router.delete("/faults", response_model=FaultsBody)
async def clear_faults(ctx: Ctx) -> dict[str, Any]:
    ctx.faults.current = Faults()
    return _faults_body(ctx.faults.current)
