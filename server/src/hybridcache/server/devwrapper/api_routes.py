"""The public Wrapper HTTP API (`/api`), exactly as docs/CONTRACTS-INTERNAL.md states it.

Handlers answer with the store's JSON as is (a raw `Response`): the store already produces
the contract's shapes (unit-tested against the response models and the product's own
parser), and skipping per-request model validation keeps big snapshots cheap. The response
models still describe every answer in the OpenAPI document.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel

from hybridcache.server.core.kinds import Kind
from hybridcache.server.devwrapper.deps import NOT_FOUND, UNAUTHORIZED, Ctx, TenantId, require_token
from hybridcache.server.devwrapper.models import (
    CreditCostItem,
    FeatureFlagItem,
    OrgUnitItem,
    RoleItem,
    Snapshot,
    TenantList,
    UserProfileItem,
    UserStatusItem,
)

router = APIRouter(prefix="/api", tags=["api"], dependencies=[Depends(require_token)], responses=UNAUTHORIZED)


def _json(body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get("/tenants", response_model=TenantList)
async def list_tenants(ctx: Ctx) -> Response:
    """The tenants the Wrapper knows."""
    return _json({"tenants": ctx.store.tenants()})


_SNAPSHOT_MODELS: dict[Kind, type[BaseModel]] = {
    Kind.CREDIT_COSTS: CreditCostItem,
    Kind.ROLE_PERMISSIONS: RoleItem,
    Kind.USER_STATUS: UserStatusItem,
    Kind.FEATURE_FLAGS: FeatureFlagItem,
}


def _snapshot_endpoint(kind: Kind) -> Callable[[Ctx, TenantId], Awaitable[Response]]:
    async def endpoint(ctx: Ctx, tenant_id: TenantId) -> Response:
        return _json(ctx.store.snapshot(tenant_id, kind))

    endpoint.__doc__ = f"Every live {kind} item of a tenant, with the tenant's revision."
    return endpoint


# One route per kind (not /snapshots/{kind}): each gets its own response schema, and an
# unknown kind is a plain 404 `not_found`.
for _kind, _model in _SNAPSHOT_MODELS.items():
    router.add_api_route(
        f"/tenants/{{tenantId}}/snapshots/{_kind}",
        _snapshot_endpoint(_kind),
        methods=["GET"],
        response_model=Snapshot[_model],  # type: ignore[valid-type]
        responses=NOT_FOUND,
        name=f"get_{_kind.replace('-', '_')}_snapshot",
    )


@router.get(
    "/tenants/{tenantId}/credit-costs/{operationCode}", response_model=CreditCostItem, responses=NOT_FOUND
)
async def get_credit_cost(
    ctx: Ctx, tenant_id: TenantId, operation_code: Annotated[str, Path(alias="operationCode")]
) -> Response:
    return _json(ctx.store.item(tenant_id, Kind.CREDIT_COSTS, operation_code))


@router.get("/tenants/{tenantId}/roles/{roleId}", response_model=RoleItem, responses=NOT_FOUND)
async def get_role(ctx: Ctx, tenant_id: TenantId, role_id: Annotated[str, Path(alias="roleId")]) -> Response:
    return _json(ctx.store.item(tenant_id, Kind.ROLE_PERMISSIONS, role_id))


@router.get("/tenants/{tenantId}/users/{userId}/status", response_model=UserStatusItem, responses=NOT_FOUND)
async def get_user_status(
    ctx: Ctx, tenant_id: TenantId, user_id: Annotated[str, Path(alias="userId")]
) -> Response:
    return _json(ctx.store.item(tenant_id, Kind.USER_STATUS, user_id))


@router.get(
    "/tenants/{tenantId}/feature-flags/{flagKey}", response_model=FeatureFlagItem, responses=NOT_FOUND
)
async def get_feature_flag(
    ctx: Ctx, tenant_id: TenantId, flag_key: Annotated[str, Path(alias="flagKey")]
) -> Response:
    return _json(ctx.store.item(tenant_id, Kind.FEATURE_FLAGS, flag_key))


@router.get("/tenants/{tenantId}/users/{userId}/profile", response_model=UserProfileItem, responses=NOT_FOUND)
async def get_user_profile(
    ctx: Ctx, tenant_id: TenantId, user_id: Annotated[str, Path(alias="userId")]
) -> Response:
    """A user's profile (PII: fetched on demand, never logged)."""
    return _json(ctx.store.item(tenant_id, Kind.USER_PROFILES, user_id))


@router.get("/tenants/{tenantId}/org-units/{orgUnitId}", response_model=OrgUnitItem, responses=NOT_FOUND)
async def get_org_unit(
    ctx: Ctx, tenant_id: TenantId, org_unit_id: Annotated[str, Path(alias="orgUnitId")]
) -> Response:
    """An org unit with its ancestors (parent first, root last) and direct children."""
    return _json(ctx.store.item(tenant_id, Kind.ORG_UNITS, org_unit_id))
