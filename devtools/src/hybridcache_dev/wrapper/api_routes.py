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

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel

from hybridcache.server.core import digest as digests
from hybridcache.server.core.kinds import Kind
from hybridcache_dev.wrapper.deps import NOT_FOUND, UNAUTHORIZED, ApiError, Ctx, TenantId, require_token
from hybridcache_dev.wrapper.models import (
    BucketSnapshot,
    CreditCostItem,
    Digest,
    DigestBuckets,
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


# ---- anti-entropy digests (docs/CONTRACTS-INTERNAL.md, "Digests")

BucketCount = Annotated[
    int,
    Query(
        alias="bucketCount",
        description=f"a power of two, 1..{digests.MAX_BUCKETS}",
        examples=[digests.DEFAULT_BUCKETS],
    ),
]


def _check_bucket_count(count: int) -> None:
    if not digests.valid_bucket_count(count):
        raise ApiError(
            422, "invalid_request", f"bucketCount must be a power of two in 1..{digests.MAX_BUCKETS}"
        )


def _digest_body(ctx: Ctx, tenant_id: str, kind: Kind, bucket_count: int, *, buckets: bool) -> Response:
    _check_bucket_count(bucket_count)
    revision, digest = ctx.store.digest(tenant_id, kind, bucket_count)
    body: dict[str, Any] = {
        "tenantId": tenant_id,
        "kind": str(kind),
        "revision": revision,
        "algorithm": digests.ALGORITHM,
        "bucketCount": digest.bucket_count,
        "count": digest.count,
        "digest": digest.top,
    }
    if buckets:
        body["buckets"] = list(digest.buckets)
    return _json(body)


def _digest_endpoints(kind: Kind) -> tuple[Callable[..., Awaitable[Response]], ...]:
    async def top(
        ctx: Ctx, tenant_id: TenantId, bucket_count: BucketCount = digests.DEFAULT_BUCKETS
    ) -> Response:
        return _digest_body(ctx, tenant_id, kind, bucket_count, buckets=False)

    async def buckets(
        ctx: Ctx, tenant_id: TenantId, bucket_count: BucketCount = digests.DEFAULT_BUCKETS
    ) -> Response:
        return _digest_body(ctx, tenant_id, kind, bucket_count, buckets=True)

    async def bucket_items(
        ctx: Ctx,
        tenant_id: TenantId,
        bucket: Annotated[int, Path(ge=0, lt=digests.MAX_BUCKETS)],
        bucket_count: BucketCount = digests.DEFAULT_BUCKETS,
    ) -> Response:
        _check_bucket_count(bucket_count)
        if bucket >= bucket_count:
            raise ApiError(422, "invalid_request", "bucket must be below bucketCount")
        return _json(ctx.store.bucket_snapshot(tenant_id, kind, bucket_count, bucket))

    top.__doc__ = f"The top digest of a tenant's {kind}: compare it before asking for buckets."
    buckets.__doc__ = f"The top digest and every bucket digest of a tenant's {kind}."
    bucket_items.__doc__ = f"The {kind} items of one digest bucket (a snapshot of that bucket only)."
    return top, buckets, bucket_items


for _kind, _model in _SNAPSHOT_MODELS.items():
    _top, _buckets, _items = _digest_endpoints(_kind)
    _name = _kind.replace("-", "_")
    router.add_api_route(
        f"/tenants/{{tenantId}}/digests/{_kind}",
        _top,
        methods=["GET"],
        response_model=Digest,
        responses=NOT_FOUND,
        name=f"get_{_name}_digest",
    )
    router.add_api_route(
        f"/tenants/{{tenantId}}/digests/{_kind}/buckets",
        _buckets,
        methods=["GET"],
        response_model=DigestBuckets,
        responses=NOT_FOUND,
        name=f"get_{_name}_digest_buckets",
    )
    router.add_api_route(
        f"/tenants/{{tenantId}}/snapshots/{_kind}/buckets/{{bucket}}",
        _items,
        methods=["GET"],
        response_model=BucketSnapshot[_model],  # type: ignore[valid-type]
        responses=NOT_FOUND,
        name=f"get_{_name}_bucket_snapshot",
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
