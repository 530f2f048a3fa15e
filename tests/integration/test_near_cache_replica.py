"""NearCache as a full local replica over a real server: loaded by one snapshot, current by
the watch from its token, permission checks local and equal to the server's, reads served
with the server gone, and a server restart costing exactly one snapshot reload."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from hybridcache.client import ClientConfig, HybridCacheClient, NearCache, NotFound, WatchConfig
from hybridcache.server.app import Service
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import service_settings
from tests.helpers import wait_for
from tests.integration.test_list_snapshot import set_cost

pytestmark = pytest.mark.timeout(120)
WATCH = WatchConfig(idle_timeout=3.0, initial_backoff=0.05, max_backoff=0.5)


def wrapper_items(dev_wrapper: Any, tenant: str, path: str) -> list[dict[str, Any]]:
    url = f"{dev_wrapper.url}/api/tenants/{tenant}/snapshots/{path}"
    items: list[dict[str, Any]] = httpx.get(url, headers=dev_wrapper.headers, timeout=10).json()["items"]
    return items


def test_the_replica_is_the_wrappers_truth_and_decides_as_the_server(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    service = start_service(service_settings(dev_wrapper.url, redis_server.url, watch_heartbeat_s=0.5))
    config = ClientConfig(watch=WATCH)
    with HybridCacheClient(f"127.0.0.1:{service.port}", config) as client, NearCache(client, "acme") as near:
        assert near.wait_ready(15), f"the replica never became ready: {near.watch_error!r}"
        provenance = near.provenance()
        assert (provenance.mode, provenance.snapshot_loads, provenance.live) == ("replica", 1, True)
        assert provenance.position, "a ready replica has no position"

        costs = wrapper_items(dev_wrapper, "acme", "credit-costs")
        assert {c["operationCode"]: Decimal(c["cost"]) for c in costs} == near._credit_costs
        roles = wrapper_items(dev_wrapper, "acme", "role-permissions")
        assert roles, "the seed data has no roles"
        for role in roles:  # known without any change having been watched
            assert near.role_permissions(role["roleId"]) == frozenset(role["permissions"])
        users = [u["userId"] for u in wrapper_items(dev_wrapper, "acme", "user-status")]
        permissions = {p for role in roles for p in role["permissions"]}
        permissions |= {p.replace("*", "x") for p in permissions} | {"crm.nothing", "hrms.payroll.run"}
        server_says = {
            (user_id, permission): tuple(
                getattr(client.check_permission("acme", user_id, permission), field)
                for field in ("allowed", "reason", "granted_by_role", "matched_grant")
            )
            for user_id in [*users, "no-such-user"]
            for permission in sorted(permissions)
        }
        with pytest.raises(NotFound):
            near.credit_cost("crm.no-such-operation")  # absent in the replica: no call

        code = costs[0]["operationCode"]
        set_cost(dev_wrapper, "acme", code, "123.25")
        wait_for(
            lambda: near.credit_cost(code) == Decimal("123.25"), timeout=15, what="the change in the replica"
        )

        service.stop(0, drain_s=0)  # reads stay local: nothing blocks on the (gone) server
        assert near.credit_cost(code) == Decimal("123.25")
        for (user_id, permission), expected in server_says.items():  # evaluated here, not asked
            assert tuple(near.check_permission(user_id, permission)) == expected, (
                f"local and server disagree on {user_id} / {permission}"
            )
        wait_for(lambda: near.provenance().degraded, timeout=15, what="the replica to say it is degraded")


def test_a_server_restart_costs_one_snapshot_reload(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    service = start_service(service_settings(dev_wrapper.url, redis_server.url, watch_heartbeat_s=0.5))
    port = service.port
    with (
        HybridCacheClient(f"127.0.0.1:{port}", ClientConfig(watch=WATCH)) as client,
        NearCache(client, "acme") as near,
    ):
        assert near.wait_ready(15), f"the replica never became ready: {near.watch_error!r}"
        code = next(iter(near._credit_costs))
        service.stop(0, drain_s=0)
        set_cost(dev_wrapper, "acme", code, "77.5")  # while no server is up: only a reload can tell
        start_service(service_settings(dev_wrapper.url, redis_server.url, port=port, watch_heartbeat_s=0.5))
        wait_for(
            lambda: near.credit_cost(code) == Decimal("77.5"), timeout=30, what="the reload after the restart"
        )
        wait_for(lambda: near.provenance().live, timeout=15, what="the replica live again")
        assert near.provenance().snapshot_loads == 2, "a restart must cost exactly one snapshot reload"


def test_a_kind_the_server_serves_on_demand_is_read_per_key(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    settings = service_settings(
        dev_wrapper.url, redis_server.url, kind_policies='{"feature-flags": {"tier": "on-demand"}}'
    )
    service = start_service(settings)
    with (
        HybridCacheClient(f"127.0.0.1:{service.port}", ClientConfig(watch=WATCH)) as client,
        NearCache(client, "acme") as near,
    ):
        assert near.wait_ready(15), f"the replica never became ready: {near.watch_error!r}"
        flag = wrapper_items(dev_wrapper, "acme", "feature-flags")[0]
        assert near.feature_flag(flag["flagKey"]).enabled == flag["enabled"]  # asked of the server
        assert near._credit_costs, "the replicated kinds were not loaded"
        with pytest.raises(NotFound):
            near.credit_cost("crm.no-such-operation")


def test_a_client_of_several_replicas_loads_once_and_stays_on_one(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    # Pub/sub mode: resume tokens are bound to one process. With the client's round_robin,
    # ListSnapshot and the watch from its token went to two replicas, so every watch began
    # with RESYNC_REQUIRED and the replica reloaded in a loop (thousands of loads, never ready).
    services = [start_service(service_settings(dev_wrapper.url, redis_server.url)) for _ in range(3)]
    targets = [f"127.0.0.1:{service.port}" for service in services]
    with HybridCacheClient(targets, ClientConfig(watch=WATCH)) as client, NearCache(client, "acme") as near:
        assert near.wait_ready(15), f"never ready: {near.provenance()}"
        wait_for(lambda: near.provenance().live, timeout=15, what="the replica live")
        loads = near.provenance().snapshot_loads
        assert loads == 1, f"one snapshot load expected with three replicas behind the client, got {loads}"


def test_the_counters_tell_loads_changes_and_age(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    service = start_service(service_settings(dev_wrapper.url, redis_server.url, watch_heartbeat_s=0.5))
    with (
        HybridCacheClient(f"127.0.0.1:{service.port}", ClientConfig(watch=WATCH)) as client,
        NearCache(client, "acme") as near,
    ):
        assert near.wait_ready(15), f"the replica never became ready: {near.watch_error!r}"
        first = near.stats()
        assert first.snapshot_loads == 1, first
        assert first.items == near.stats().items > 0, first
        assert 0 < first.last_snapshot_s < 15, first
        assert first.resyncs == 0, first
        code = next(iter(near._credit_costs))
        set_cost(dev_wrapper, "acme", code, "12.5")
        wait_for(lambda: near.credit_cost(code) == Decimal("12.5"), timeout=10, what="the change applied")
        after = near.stats()
        assert after.changes_applied >= first.changes_applied + 1, after
        assert after.age_s < 5, after
