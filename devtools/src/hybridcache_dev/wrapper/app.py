"""The development Wrapper's ASGI app: routes, errors in the contract's shape, instrumentation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hybridcache_dev.wrapper import admin_routes, api_routes, crm_routes
from hybridcache_dev.wrapper.defaults import DEFAULT_APP, DEFAULT_TOKEN
from hybridcache_dev.wrapper.deps import ApiError, WrapperContext
from hybridcache_dev.wrapper.instrument import ApiInstrumentation, ConnectionRegistry
from hybridcache_dev.wrapper.publisher import Publisher
from hybridcache_dev.wrapper.store import InvalidChangeError, Store, StoreError

API_VERSION = "1.0.0"  # of the HTTP API, not of the package: docs/wrapper-api.yaml must not churn

_DESCRIPTION = """\
The Wrapper's HTTP API as hybridcache calls it (`/api`), served by the development Wrapper
over SQLite, plus the development Wrapper's own admin endpoints (`/admin`) that change data
and publish change notifications on Redis (channel `{app}:{tenantId}:{eventType}`).

Every `/api` and `/admin` request needs `Authorization: Bearer <token>`. Errors are
`{"error": "<code>", "detail": "<text>"}`. Costs are exact decimal strings.
"""


def create_app(
    store: Store,
    publisher: Publisher | None,
    *,
    token: str = DEFAULT_TOKEN,
    app_name: str = DEFAULT_APP,
    connections: ConnectionRegistry | None = None,
    api_shape: str = "contract",
) -> FastAPI:
    """Build the app over a store; `publisher=None` never publishes ("published": false)."""
    context = WrapperContext(store=store, publisher=publisher, token=token, app_name=app_name)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if publisher is not None:
            await publisher.aclose()

    app = FastAPI(
        title="hybridcache development Wrapper",
        version=API_VERSION,
        description=_DESCRIPTION,
        lifespan=lifespan,
        # operationId = the handler's name: stable and readable in generated clients
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.wrapper = context
    api = crm_routes.router if api_shape == "crm" else api_routes.router  # (crm_routes.py)
    app.include_router(api)
    app.include_router(admin_routes.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _install_error_handlers(app)
    app.add_middleware(
        ApiInstrumentation,
        # The /api router's own routes carry their full paths; the app's route list holds
        # FastAPI's lazily included router objects instead.
        routes=api.routes,
        stats=context.stats,
        faults=context.faults,
        connections=connections,
    )
    return app


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.detail, headers)

    async def store_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StoreError)
        return _error(422 if isinstance(exc, InvalidChangeError) else 404, exc.code, exc.detail)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Location and message only: pydantic's `input` may be a profile field (PII).
        problems = "; ".join(
            ".".join(str(part) for part in error.get("loc", ())) + ": " + str(error.get("msg", ""))
            for error in exc.errors()
        )
        return _error(422, "invalid_request", problems)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
