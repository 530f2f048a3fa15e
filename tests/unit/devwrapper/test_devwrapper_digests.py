"""The development Wrapper's digest endpoints: the contract's hash over what snapshots serve."""

from __future__ import annotations

import httpx
import pytest

from hybridcache.server.codec import parse_items
from hybridcache.server.core.digest import bucket_of, digest_of
from hybridcache.server.core.kinds import Kind
from hybridcache_dev.wrapper.store import SNAPSHOT_KINDS, Store
from tests.unit.devwrapper.test_devwrapper_app import AUTH, run

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS)
def test_digest_buckets_and_bucket_items_agree_with_the_snapshot(kind: Kind) -> None:
    async def scenario(client: httpx.AsyncClient, store: Store, _: object) -> None:
        snapshot = (await client.get(f"/api/tenants/acme/snapshots/{kind}", headers=AUTH)).json()
        items = parse_items(kind, snapshot["items"])
        expected = digest_of(items.items(), 8)
        top = await client.get(f"/api/tenants/acme/digests/{kind}?bucketCount=8", headers=AUTH)
        assert top.status_code == 200, top.text
        body = top.json()
        assert body["digest"] == expected.top
        assert body["count"] == len(items)
        assert body["algorithm"] == "sha256-xor-v1"
        assert "buckets" not in body, "the top answer stays small"
        listed = (
            await client.get(f"/api/tenants/acme/digests/{kind}/buckets?bucketCount=8", headers=AUTH)
        ).json()
        assert tuple(listed["buckets"]) == expected.buckets
        seen: dict[str, object] = {}
        for bucket in range(8):
            answer = await client.get(
                f"/api/tenants/acme/snapshots/{kind}/buckets/{bucket}?bucketCount=8", headers=AUTH
            )
            assert answer.status_code == 200, answer.text
            part = parse_items(kind, answer.json()["items"])
            assert all(bucket_of(key, 8) == bucket for key in part)
            seen.update(part)
        assert seen == items, "the buckets together are the snapshot"

    run(scenario)


def test_digest_changes_with_a_write_and_bad_requests_are_refused() -> None:
    async def scenario(client: httpx.AsyncClient, store: Store, _: object) -> None:
        url = "/api/tenants/acme/digests/credit-costs"
        before = (await client.get(url, headers=AUTH)).json()
        assert before["bucketCount"] == 256, "the default bucket count"
        await client.put(
            "/admin/tenants/acme/credit-costs/crm.leads.create?publish=false",
            json={"cost": "9.5"},
            headers=AUTH,
        )
        after = (await client.get(url, headers=AUTH)).json()
        assert after["digest"] != before["digest"]
        assert after["revision"] > before["revision"]
        for bad in ("?bucketCount=3", "?bucketCount=0", "?bucketCount=8192", "?bucketCount=x"):
            answer = await client.get(url + bad, headers=AUTH)
            assert answer.status_code == 422, (bad, answer.text)
            assert answer.json()["error"] == "invalid_request"
        beyond = await client.get(
            "/api/tenants/acme/snapshots/credit-costs/buckets/8?bucketCount=8", headers=AUTH
        )
        assert beyond.status_code == 422
        unknown = await client.get("/api/tenants/nobody/digests/credit-costs", headers=AUTH)
        assert (unknown.status_code, unknown.json()["error"]) == (404, "tenant_not_found")
        assert (await client.get(url)).status_code == 401

    run(scenario)
