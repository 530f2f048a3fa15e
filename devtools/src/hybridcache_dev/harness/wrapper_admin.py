"""The one client of the development Wrapper's admin API (and of its truth, the /api reads)
for tests, benchmarks and scripts: writes that publish their notification, faults, request
counts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx


class WrapperAdmin:
    """The development Wrapper's admin and API endpoints over HTTP, called directly (never
    through a proxy). Writes commit, then publish their change notification."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> WrapperAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any endpoint; its JSON body. A status other than 2xx fails with what was asked."""
        response = self.http.request(method, path, **kwargs)
        if not response.is_success:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def _ok(self, response: httpx.Response) -> dict[str, Any]:
        if not response.is_success:
            request = response.request
            raise AssertionError(
                f"{request.method} {request.url.path}: {response.status_code} {response.text}"
            )
        body: dict[str, Any] = response.json()
        return body

    # --- writes (each commits, then publishes its notification)

    def put_cost(self, tenant: str, code: str, cost: str, *, publish: bool = True) -> dict[str, Any]:
        return self._ok(
            self.http.put(
                f"/admin/tenants/{tenant}/credit-costs/{code}",
                json={"cost": cost},
                params={"publish": str(publish).lower()},
            )
        )

    def put_flag(
        self, tenant: str, key: str, enabled: bool, value: str, *, include_value: bool = True
    ) -> dict[str, Any]:
        """`include_value=False`: the notification leaves the value out (the service refetches)."""
        return self._ok(
            self.http.put(
                f"/admin/tenants/{tenant}/feature-flags/{key}",
                json={"enabled": enabled, "value": value},
                params={} if include_value else {"include_value": "false"},
            )
        )

    def put_user_status(self, tenant: str, user: str, active: bool, roles: list[str]) -> dict[str, Any]:
        return self._ok(
            self.http.put(
                f"/admin/tenants/{tenant}/users/{user}/status", json={"active": active, "roles": roles}
            )
        )

    def put_role(self, tenant: str, role: str, permissions: list[str]) -> dict[str, Any]:
        return self._ok(
            self.http.put(f"/admin/tenants/{tenant}/roles/{role}", json={"permissions": permissions})
        )

    def patch_profile(self, tenant: str, user: str, **fields: str) -> dict[str, Any]:
        return self._ok(self.http.patch(f"/admin/tenants/{tenant}/users/{user}/profile", json=fields))

    def patch_org_unit(self, tenant: str, unit: str, **fields: str) -> dict[str, Any]:
        return self._ok(self.http.patch(f"/admin/tenants/{tenant}/org-units/{unit}", json=fields))

    def publish_raw(self, channel: str, message: str) -> bool:
        return bool(
            self._ok(self.http.post("/admin/publish-raw", json={"channel": channel, "message": message}))[
                "published"
            ]
        )

    # --- faults and counts

    def set_faults(self, **body: Any) -> dict[str, Any]:
        return self._ok(self.http.put("/admin/faults", json=body))

    def clear_faults(self) -> None:
        self._ok(self.http.delete("/admin/faults"))

    @contextmanager
    def faults(self, **body: Any) -> Iterator[None]:
        """`set_faults(**body)` (e.g. latencyMs=400, failStatus=503) for the block; cleared after."""
        self.set_faults(**body)
        try:
            yield
        finally:
            self.clear_faults()

    def stats(self) -> dict[str, Any]:
        return self._ok(self.http.get("/admin/stats"))

    def reset_stats(self) -> None:
        self._ok(self.http.post("/admin/stats/reset"))

    def requests_made(self) -> int:
        """API requests for data the Wrapper answered since the last reset. Anti-entropy —
        the verifier's digest comparisons and the bucket re-reads a mismatch leads to — runs on
        its own clock (every ~30 s, in every service sharing this Wrapper) and is not caused by
        reads, so it is left out."""
        by_route: dict[str, int] = self.stats()["requests"]
        return sum(count for route, count in by_route.items() if not _anti_entropy(route))

    # --- the truth (the API, as the service reads it)

    def item(self, path: str) -> dict[str, Any]:
        """GET /api/tenants/{path}."""
        return self._ok(self.http.get(f"/api/tenants/{path}"))

    def cost(self, tenant: str, code: str) -> Decimal:
        return Decimal(self.item(f"{tenant}/credit-costs/{code}")["cost"])


def _anti_entropy(route: str) -> bool:
    """A digest route, or a bucket re-read (`/snapshots/{kind}/buckets/{bucket}`)."""
    return "/digests/" in route or ("/snapshots/" in route and "/buckets/" in route)
