"""The development Wrapper's HTTP app, in process (httpx's ASGI transport, no sockets).

A recording publisher stands in for Redis; the real publisher and the real server are
covered by tests/integration/test_devwrapper.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybridcache.server.codec import parse_item
from hybridcache.server.core.kinds import Kind
from hybridcache_dev.wrapper.app import create_app
from hybridcache_dev.wrapper.models import (
    CreditCostItem,
    FeatureFlagItem,
    OrgUnitItem,
    RoleItem,
    UserProfileItem,
    UserStatusItem,
)
from hybridcache_dev.wrapper.openapi import render_openapi, to_yaml
from hybridcache_dev.wrapper.publisher import Publisher
from hybridcache_dev.wrapper.seed import demo_tenants
from hybridcache_dev.wrapper.store import Store

TOKEN = "unit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[3]


class RecordingPublisher(Publisher):
    """Records (channel, message) instead of talking to Redis; can be told to fail."""

    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[tuple[str, str]] = []
        self.fail = False

    async def publish(self, channel: str, message: str) -> bool:
        if self.fail:
            return False
        self.sent.append((channel, message))
        return True


Scenario = Callable[[httpx.AsyncClient, Store, RecordingPublisher], Awaitable[None]]


def run(scenario: Scenario) -> None:
    """Run one scenario against a fresh seeded app, in one event loop."""
    store = Store()
    store.load(demo_tenants())
    publisher = RecordingPublisher()
    app = create_app(store, publisher, token=TOKEN)

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://wrapper") as client:
            await scenario(client, store, publisher)

    asyncio.run(main())
    store.close()


ITEM_ROUTES: list[tuple[str, type[Any], Kind]] = [
    ("credit-costs/crm.leads.create", CreditCostItem, Kind.CREDIT_COSTS),
    ("roles/sales-rep", RoleItem, Kind.ROLE_PERMISSIONS),
    ("users/user-1/status", UserStatusItem, Kind.USER_STATUS),
    ("feature-flags/crm.ai-summaries", FeatureFlagItem, Kind.FEATURE_FLAGS),
    ("users/user-1/profile", UserProfileItem, Kind.USER_PROFILES),
    ("org-units/org-sales-emea", OrgUnitItem, Kind.ORG_UNITS),
]


def test_every_get_answers_the_documented_shape_per_tenant() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        tenants = (await c.get("/api/tenants", headers=AUTH)).json()
        assert tenants == {"tenants": store.tenants()}
        for path, model, kind in ITEM_ROUTES:
            bodies = []
            for tenant in ("acme", "globex"):
                r = await c.get(f"/api/tenants/{tenant}/{path}", headers=AUTH)
                assert r.status_code == 200, (path, r.text)
                body = r.json()
                # exactly the model's fields, by their JSON names
                assert set(body) == {f.alias for f in model.model_fields.values()}, path
                model.model_validate(body)
                parse_item(kind, body)
                bodies.append(body)
            assert bodies[0] != bodies[1], path
        for snapshot_kind, model in [
            (Kind.CREDIT_COSTS, CreditCostItem),
            (Kind.ROLE_PERMISSIONS, RoleItem),
            (Kind.USER_STATUS, UserStatusItem),
            (Kind.FEATURE_FLAGS, FeatureFlagItem),
        ]:
            r = await c.get(f"/api/tenants/globex/snapshots/{snapshot_kind}", headers=AUTH)
            snap = r.json()
            assert (snap["tenantId"], snap["kind"], snap["revision"]) == ("globex", snapshot_kind, 1)
            assert len(snap["items"]) > 3
            for item in snap["items"]:
                model.model_validate(item)
                parse_item(snapshot_kind, item)

    run(scenario)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}],
)
def test_requests_without_the_token_get_401(headers: dict[str, str]) -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        for method, path in [
            ("GET", "/api/tenants"),
            ("GET", "/api/tenants/acme/users/user-1/profile"),
            ("GET", "/admin/stats"),
            ("PUT", "/admin/tenants/acme/credit-costs/crm.leads.create"),
        ]:
            r = await c.request(method, path, headers=headers, json={"cost": "1"})
            assert r.status_code == 401, path
            assert r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert store.item("acme", Kind.CREDIT_COSTS, "crm.leads.create")["cost"] == "2.5"

    run(scenario)


def test_404_codes() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        for path, code in [
            ("/api/tenants/nobody/credit-costs/crm.leads.create", "tenant_not_found"),
            ("/api/tenants/nobody/snapshots/credit-costs", "tenant_not_found"),
            ("/api/tenants/nobody/org-units/org-root", "tenant_not_found"),
            ("/api/tenants/acme/credit-costs/no.such.op", "not_found"),
            ("/api/tenants/acme/roles/no-role", "not_found"),
            ("/api/tenants/acme/users/user-999/status", "not_found"),
            ("/api/tenants/acme/users/user-999/profile", "not_found"),
            ("/api/tenants/acme/feature-flags/nope", "not_found"),
            ("/api/tenants/acme/org-units/org-nope", "not_found"),
            ("/api/tenants/acme/snapshots/user-profiles", "not_found"),
            ("/api/nothing-here", "not_found"),
        ]:
            r = await c.get(path, headers=AUTH)
            assert r.status_code == 404, path
            body = r.json()
            assert body["error"] == code, path
            assert set(body) == {"error", "detail"}
        r = await c.put("/admin/tenants/nobody/credit-costs/x", headers=AUTH, json={"cost": "1"})
        assert (r.status_code, r.json()["error"]) == (404, "tenant_not_found")
        r = await c.delete("/admin/tenants/acme/roles/no-role", headers=AUTH)
        assert (r.status_code, r.json()["error"]) == (404, "not_found")

    run(scenario)


def test_admin_put_changes_the_answer_and_publishes() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        r = await c.put(
            "/admin/tenants/acme/credit-costs/crm.leads.create", headers=AUTH, json={"cost": "3.0"}
        )
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["published"] is True
        assert result["item"] == {"operationCode": "crm.leads.create", "cost": "3", "version": 2}
        assert (result["version"], result["revision"], result["tenantId"]) == (2, 2, "acme")
        got = (await c.get("/api/tenants/acme/credit-costs/crm.leads.create", headers=AUTH)).json()
        assert got["cost"] == "3"
        assert (await c.get("/api/tenants/globex/credit-costs/crm.leads.create", headers=AUTH)).json()[
            "cost"
        ] == "5.05"
        ((channel, message),) = pub.sent
        assert channel == "crm:acme:credit-config-changed"
        body = json.loads(message, parse_float=Decimal)
        assert body["eventId"] == result["eventIds"][0]
        assert body["data"]["newValue"] == Decimal(3)
        assert body["data"]["oldValue"] == Decimal("2.5")

    run(scenario)


def test_every_admin_write() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        writes: list[tuple[str, str, dict[str, Any] | None, str]] = [
            ("PUT", "roles/auditor", {"permissions": ["finance.*"]}, "role-permissions-changed"),
            ("DELETE", "roles/auditor", None, "role-permissions-changed"),
            ("PUT", "users/user-9/status", {"active": False, "roles": ["viewer"]}, "user-status-changed"),
            ("DELETE", "users/user-9/status", None, "user-status-changed"),
            (
                "PUT",
                "feature-flags/crm.bulk-export",
                {"enabled": True, "value": "10"},
                "feature-flag-changed",
            ),
            ("DELETE", "feature-flags/crm.bulk-export", None, "feature-flag-changed"),
            ("DELETE", "credit-costs/crm.leads.read", None, "credit-config-changed"),
            ("PATCH", "users/user-2/profile", {"title": "Lead"}, "user-profile-changed"),
            ("PATCH", "org-units/org-hr", {"name": "People"}, "org-unit-changed"),
        ]
        for method, path, body, event_type in writes:
            pub.sent.clear()
            r = await c.request(method, f"/admin/tenants/globex/{path}", headers=AUTH, json=body)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["published"] is True
            assert [ch for ch, _ in pub.sent] == [f"crm:globex:{event_type}"], path
        assert (await c.get("/api/tenants/globex/roles/auditor", headers=AUTH)).status_code == 404
        profile = (await c.get("/api/tenants/globex/users/user-2/profile", headers=AUTH)).json()
        assert (profile["title"], profile["version"]) == ("Lead", 2)
        unit = (await c.get("/api/tenants/globex/org-units/org-hr", headers=AUTH)).json()
        assert unit["name"] == "People"
        snap = (await c.get("/api/tenants/globex/snapshots/credit-costs", headers=AUTH)).json()
        assert snap["revision"] == 1 + len(writes)
        assert store.revision("acme") == 1

    run(scenario)


def test_profile_notification_has_no_profile_data() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        r = await c.patch(
            "/admin/tenants/acme/users/user-4/profile",
            headers=AUTH,
            json={"displayName": "Secret Name", "phone": "+1-555-000"},
        )
        assert r.status_code == 200
        ((_, message),) = pub.sent
        assert json.loads(message)["data"] == {"userId": "user-4", "changedFields": ["displayName", "phone"]}
        assert "Secret" not in message

    run(scenario)


def test_publish_false_and_include_value_false() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        r = await c.put(
            "/admin/tenants/acme/feature-flags/crm.ai-summaries?publish=false",
            headers=AUTH,
            json={"enabled": False, "value": ""},
        )
        assert r.json()["published"] is False
        assert r.json()["eventIds"] == []
        assert pub.sent == []
        assert store.item("acme", Kind.FEATURE_FLAGS, "crm.ai-summaries")["enabled"] is False
        r = await c.put(
            "/admin/tenants/acme/feature-flags/crm.ai-summaries?include_value=false",
            headers=AUTH,
            json={"enabled": True, "value": "v2"},
        )
        assert r.json()["published"] is True
        data = json.loads(pub.sent[0][1])["data"]
        assert "newValue" not in data
        assert data["version"] == 3

    run(scenario)


def test_a_failed_publish_still_commits() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        pub.fail = True
        r = await c.put("/admin/tenants/acme/credit-costs/crm.leads.create", headers=AUTH, json={"cost": "9"})
        assert r.status_code == 200
        assert r.json()["published"] is False
        assert len(r.json()["eventIds"]) == 1
        assert store.item("acme", Kind.CREDIT_COSTS, "crm.leads.create")["cost"] == "9"

    run(scenario)


def test_invalid_bodies_get_422_without_echoing_values() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        base = "/admin/tenants/acme"
        for method, path, body in [
            ("PUT", "credit-costs/crm.leads.create", {"cost": 2.5}),  # a float is not exact
            ("PUT", "credit-costs/crm.leads.create", {"cost": "two"}),
            ("PUT", "credit-costs/crm.leads.create", {"cost": "-1"}),
            ("PUT", "credit-costs/crm.leads.create", {"cost": "1", "extra": 1}),
            ("PUT", "roles/viewer", {"permissions": "crm.*"}),
            ("PUT", "users/user-1/status", {"active": "yes", "roles": []}),
            ("PATCH", "users/user-1/profile", {"ssn": "123-45-6789"}),
            ("PATCH", "users/user-1/profile", {}),
            ("PATCH", "users/user-1/profile", {"email": None}),
            ("PATCH", "org-units/org-sales", {"parentId": "org-sales-apac"}),
        ]:
            r = await c.request(method, f"{base}/{path}", headers=AUTH, json=body)
            assert r.status_code == 422, (path, body, r.text)
            assert r.json()["error"] in {"invalid_request", "invalid_change"}
            assert "123-45-6789" not in r.text
        r = await c.put(f"{base}/credit-costs/crm.leads.create", headers=AUTH, json={"cost": 4})
        assert r.status_code == 200  # integers are exact
        assert len(pub.sent) == 1
        assert store.revision("acme") == 2

    run(scenario)


def test_publish_raw_sends_the_text_as_is() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        raw = '{"eventId": 1, not json'
        r = await c.post("/admin/publish-raw", headers=AUTH, json={"channel": "crm:acme:x", "message": raw})
        assert r.json() == {"published": True}
        assert pub.sent == [("crm:acme:x", raw)]

    run(scenario)


def test_stats_count_api_requests_by_route_and_tenant() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        for tenant, user in [("acme", "user-1"), ("acme", "user-2"), ("globex", "user-1")]:
            await c.get(f"/api/tenants/{tenant}/users/{user}/profile", headers=AUTH)
        await c.get("/api/tenants", headers=AUTH)
        await c.get("/api/tenants", headers={})  # unauthenticated requests count too
        await c.get("/admin/faults", headers=AUTH)  # admin requests do not
        stats = (await c.get("/admin/stats", headers=AUTH)).json()
        profile = "GET /api/tenants/{tenantId}/users/{userId}/profile"
        assert stats["requests"] == {profile: 3, "GET /api/tenants": 2}
        assert stats["byTenant"] == {profile: {"acme": 2, "globex": 1}}
        assert stats["total"] == 5
        reset = (await c.post("/admin/stats/reset", headers=AUTH)).json()
        assert reset == {"requests": {}, "byTenant": {}, "total": 0, "recentPaths": [], "traceparents": []}

    run(scenario)


@pytest.mark.timeout(30)
def test_faults_fail_delay_filter_and_clear() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        r = await c.put("/admin/faults", headers=AUTH, json={"failStatus": 503, "tenants": ["globex"]})
        assert r.json()["failStatus"] == 503
        assert (await c.get("/api/tenants/acme/roles/admin", headers=AUTH)).status_code == 200
        failed = await c.get("/api/tenants/globex/roles/admin", headers=AUTH)
        assert failed.status_code == 503
        assert failed.json()["error"] == "injected_fault"
        assert (await c.get("/admin/stats", headers=AUTH)).status_code == 200  # admin unaffected

        # 1 s of latency: a route outside the filter answering in less tells them apart even
        # when a loaded host stalls an in-process call for a while.
        await c.put("/admin/faults", headers=AUTH, json={"latencyMs": 1000, "routes": ["GET /api/tenants"]})
        started = time.monotonic()
        assert (await c.get("/api/tenants", headers=AUTH)).status_code == 200
        assert time.monotonic() - started >= 1.0
        started = time.monotonic()
        await c.get("/api/tenants/acme/roles/admin", headers=AUTH)
        assert time.monotonic() - started < 1.0

        # without uvicorn's transports (in process), a reset is answered with 502
        await c.put("/admin/faults", headers=AUTH, json={"resetConnections": True})
        assert (await c.get("/api/tenants", headers=AUTH)).status_code == 502

        cleared = (await c.delete("/admin/faults", headers=AUTH)).json()
        assert cleared == {
            "latencyMs": 0,
            "failStatus": None,
            "hang": False,
            "resetConnections": False,
            "tenants": None,
            "routes": None,
        }
        assert (await c.get("/api/tenants", headers=AUTH)).status_code == 200
        bad = await c.put("/admin/faults", headers=AUTH, json={"failStatus": 200})
        assert bad.status_code == 422

    run(scenario)


@pytest.mark.timeout(30)
def test_hang_holds_only_its_own_request() -> None:
    async def scenario(c: httpx.AsyncClient, store: Store, pub: RecordingPublisher) -> None:
        await c.put("/admin/faults", headers=AUTH, json={"hang": True, "tenants": ["globex"]})
        hung = asyncio.ensure_future(c.get("/api/tenants/globex/roles/admin", headers=AUTH))
        for _ in range(20):  # other requests go on meanwhile
            assert (await c.get("/api/tenants/acme/roles/admin", headers=AUTH)).status_code == 200
        assert not hung.done()
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung

    run(scenario)


def test_openapi_document_is_committed_and_current() -> None:
    committed = (REPO / "docs" / "wrapper-api.yaml").read_text(encoding="utf-8")
    assert committed == render_openapi(), (
        "docs/wrapper-api.yaml is stale: run "
        "`.venv/bin/python -m hybridcache_dev.wrapper --write-openapi docs/wrapper-api.yaml`"
    )


def test_openapi_document_covers_api_and_admin() -> None:
    doc = create_app(Store(), None).openapi()
    paths = doc["paths"]
    assert doc["openapi"].startswith("3.1")
    for path in [
        "/api/tenants",
        "/api/tenants/{tenantId}/snapshots/credit-costs",
        "/api/tenants/{tenantId}/snapshots/role-permissions",
        "/api/tenants/{tenantId}/snapshots/user-status",
        "/api/tenants/{tenantId}/snapshots/feature-flags",
        "/api/tenants/{tenantId}/credit-costs/{operationCode}",
        "/api/tenants/{tenantId}/roles/{roleId}",
        "/api/tenants/{tenantId}/users/{userId}/status",
        "/api/tenants/{tenantId}/feature-flags/{flagKey}",
        "/api/tenants/{tenantId}/users/{userId}/profile",
        "/api/tenants/{tenantId}/org-units/{orgUnitId}",
        "/admin/tenants/{tenantId}/credit-costs/{operationCode}",
        "/admin/publish-raw",
        "/admin/stats",
        "/admin/faults",
    ]:
        assert path in paths, path
    schemas = doc["components"]["schemas"]
    assert set(schemas["CreditCostItem"]["properties"]) == {"operationCode", "cost", "version"}
    assert schemas["CreditCostItem"]["properties"]["cost"]["type"] == "string"
    assert "bearer" in json.dumps(doc["components"]["securitySchemes"]).lower()


def test_to_yaml_quotes_what_needs_quoting() -> None:
    text = to_yaml({"a": [1, {"b": None, "on": True}], "/x": {}, "e": [], "s": 'q"'})
    assert text == 'a:\n- 1\n- b: null\n  "on": true\n"/x": {}\ne: []\ns: "q\\""\n'
