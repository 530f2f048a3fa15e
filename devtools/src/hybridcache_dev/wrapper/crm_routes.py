"""A second Wrapper API shape (`--api-shape crm`), like the design note's platform Wrapper.

It serves the same store as `api_routes`, but as a platform that never heard of
hybridcache would: the tenant in an `X-Tenant-Id` header, `GET /api/credits/config/{code}`
and `GET /api/users/{userId}` with their own field names, lists in pages (cursor paging
for credit costs, offset paging for user status), and its own error body
`{"error": {"code": "NOT_FOUND" | "TENANT_UNKNOWN", "message": ...}}`.
docs/examples/wrapper-map-crm.yaml maps it onto the kinds; tests run the service over both
shapes to show that one mapping file is all it takes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import JSONResponse

from hybridcache.server.codec import KEY_FIELD
from hybridcache.server.core.kinds import Kind
from hybridcache_dev.wrapper.deps import Ctx, require_token
from hybridcache_dev.wrapper.store import StoreError, TenantNotFoundError

router = APIRouter(prefix="/api", tags=["crm"], dependencies=[Depends(require_token)])
Tenant = Annotated[str, Header(alias="X-Tenant-Id", min_length=1, max_length=128)]
MAX_PAGE = 1000


def _json(body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


def _error(exc: StoreError) -> JSONResponse:
    code = "TENANT_UNKNOWN" if isinstance(exc, TenantNotFoundError) else "NOT_FOUND"
    return JSONResponse({"error": {"code": code, "message": exc.detail}}, status_code=404)


def _credit(item: dict[str, Any]) -> dict[str, Any]:
    return {"code": item["operationCode"], "credits": item["cost"], "meta": {"version": item["version"]}}


def _status(item: dict[str, Any]) -> dict[str, Any]:
    return {"id": item["userId"], "active": item["active"], "roles": item["roles"], "rev": item["version"]}


def _profile(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": {
            "id": item["userId"],
            "name": item["displayName"],
            "contact": {"email": item["email"], "phone": item["phone"]},
            "jobTitle": item["title"],
            "department": item["department"],
            "orgUnitId": item["orgUnitId"],
            "version": item["version"],
        }
    }


def _same(item: dict[str, Any]) -> dict[str, Any]:
    return item


def _sorted_items(ctx: Ctx, tenant: str, kind: Kind) -> tuple[int, list[dict[str, Any]]]:
    snapshot = ctx.store.snapshot(tenant, kind)
    items = sorted(snapshot["items"], key=lambda item: str(item[KEY_FIELD[kind]]))
    return int(snapshot["revision"]), items


@router.get("/credits/config")
async def list_credit_config(
    ctx: Ctx,
    tenant: Tenant,
    cursor: Annotated[str, Query()] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Response:
    """Cursor paging: the cursor is the last code of the previous page."""
    try:
        revision, items = _sorted_items(ctx, tenant, Kind.CREDIT_COSTS)
    except StoreError as exc:
        return _error(exc)
    page = [item for item in items if not cursor or item["operationCode"] > cursor][:limit]
    more = bool(page) and page[-1] is not items[-1]
    return _json(
        {
            "data": [_credit(item) for item in page],
            "paging": {"next": page[-1]["operationCode"] if more else None},
            "revision": revision,
        }
    )


@router.get("/user-status")
async def list_user_status(
    ctx: Ctx,
    tenant: Tenant,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Response:
    """Offset paging, with the total count."""
    try:
        revision, items = _sorted_items(ctx, tenant, Kind.USER_STATUS)
    except StoreError as exc:
        return _error(exc)
    page = items[offset : offset + limit]
    return _json({"results": [_status(item) for item in page], "total": len(items), "revision": revision})


def _list_all(kind: Kind) -> Callable[..., Any]:
    async def endpoint(ctx: Ctx, tenant: Tenant) -> Response:
        try:
            revision, items = _sorted_items(ctx, tenant, kind)
        except StoreError as exc:
            return _error(exc)
        return _json({"items": items, "revision": revision})

    return endpoint


def _fetch(kind: Kind, shape: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
    async def endpoint(ctx: Ctx, tenant: Tenant, key: str) -> Response:
        try:
            return _json(shape(ctx.store.item(tenant, kind, key)))
        except StoreError as exc:
            return _error(exc)

    return endpoint


# Fetch routes: (path, kind, answer shape). `/users/{key}/status` before `/users/{key}`.
_FETCH = (
    ("/credits/config/{key}", Kind.CREDIT_COSTS, _credit),
    ("/users/{key}/status", Kind.USER_STATUS, _status),
    ("/users/{key}", Kind.USER_PROFILES, _profile),
    ("/roles/{key}", Kind.ROLE_PERMISSIONS, _same),
    ("/flags/{key}", Kind.FEATURE_FLAGS, _same),
    ("/org-units/{key}", Kind.ORG_UNITS, _same),
)
for _path, _kind, _shape in _FETCH:
    router.add_api_route(_path, _fetch(_kind, _shape), methods=["GET"], name=f"crm_get_{_kind}")
for _path, _kind in (("/roles", Kind.ROLE_PERMISSIONS), ("/flags", Kind.FEATURE_FLAGS)):
    router.add_api_route(_path, _list_all(_kind), methods=["GET"], name=f"crm_list_{_kind}")
