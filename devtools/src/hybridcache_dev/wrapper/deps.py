"""What the route modules share: the app's context, the bearer check, API errors."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hybridcache_dev.wrapper.defaults import DEFAULT_APP, DEFAULT_TOKEN
from hybridcache_dev.wrapper.instrument import FaultState, RequestStats
from hybridcache_dev.wrapper.models import ErrorBody
from hybridcache_dev.wrapper.publisher import Publisher
from hybridcache_dev.wrapper.store import Store


@dataclass
class WrapperContext:
    """Everything a request handler needs; one per app, on `app.state.wrapper`."""

    store: Store
    publisher: Publisher | None
    token: str = DEFAULT_TOKEN
    app_name: str = DEFAULT_APP
    stats: RequestStats = field(default_factory=RequestStats)
    faults: FaultState = field(default_factory=FaultState)
    # Held from the SQLite commit to the end of the publish, so that notifications leave
    # in commit order (as a single-threaded Wrapper publisher would send them).
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ApiError(Exception):
    """An error answer in the API's shape: {"error": code, "detail": text}."""

    def __init__(self, status: int, code: str, detail: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def context(request: Request) -> WrapperContext:
    ctx: WrapperContext = request.app.state.wrapper
    return ctx


_bearer = HTTPBearer(auto_error=False, description="the Wrapper's token (`--token`)")


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    expected = context(request).token
    given = credentials.credentials if credentials is not None else ""
    # Constant-time compare: the dev Wrapper is still an example of how to check a token.
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "a valid bearer token is required")


Ctx = Annotated[WrapperContext, Depends(context)]
TenantId = Annotated[str, Path(alias="tenantId", examples=["acme"])]

# Documented error answers (the OpenAPI document is generated from these).
_ERROR = {"model": ErrorBody}
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {**_ERROR, "description": "missing or wrong bearer token (`unauthorized`)"}
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {**_ERROR, "description": "invalid request (`invalid_request`) or change (`invalid_change`)"}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {**_ERROR, "description": "`tenant_not_found`, or `not_found` for an absent item"},
    **INVALID,  # FastAPI would otherwise document its own 422 shape for routes with parameters
}
