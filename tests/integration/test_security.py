"""Caller authentication, tenant isolation and per-caller limits, on the real server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridcache.server.api.auth import token_sha256
from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from tests.conftest import service_settings
from tests.integration.test_rpcs import error_reason

pytestmark = pytest.mark.timeout(90)

ACME_TOKEN = "acme-only-token"
GLOBEX_TOKEN = "globex-only-token"
ADMIN_TOKEN = "all-tenants-token"
LIMITED_TOKEN = "rate-limited-token"
CALLERS: list[dict[str, Any]] = [
    {"name": "crm-acme", "token_sha256": token_sha256(ACME_TOKEN), "tenants": ["acme"]},
    {"name": "crm-globex", "token_sha256": token_sha256(GLOBEX_TOKEN), "tenants": ["globex"]},
    {"name": "ops", "token_sha256": token_sha256(ADMIN_TOKEN), "tenants": ["*"]},
    {
        "name": "limited",
        "token_sha256": token_sha256(LIMITED_TOKEN),
        "tenants": ["acme"],
        "rate_per_s": 5,
        "burst": 5,
    },
]


@pytest.fixture
def secure_service(start_service: Callable[..., Service], dev_wrapper: Any, redis_server: Any) -> Service:
    return start_service(
        service_settings(dev_wrapper.url, redis_server.url, insecure_dev_mode=False, callers=CALLERS)
    )


@pytest.fixture
def secure_stub(secure_service: Service) -> Iterator[pb_grpc.HybridCacheStub]:
    with grpc.insecure_channel(f"127.0.0.1:{secure_service.port}") as channel:
        yield pb_grpc.HybridCacheStub(channel)


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def every_rpc(stub: pb_grpc.HybridCacheStub, tenant: str) -> list[tuple[str, Callable[..., Any]]]:
    """One call of every tenant-scoped RPC for `tenant`, as (name, call(metadata))."""
    return [
        ("GetCreditCost", lambda md: stub.GetCreditCost(
            pb.GetCreditCostRequest(tenant_id=tenant, operation_code="crm.leads.create"),
            metadata=md, timeout=5)),
        ("BatchGetCreditCosts", lambda md: stub.BatchGetCreditCosts(
            pb.BatchGetCreditCostsRequest(tenant_id=tenant, operation_codes=["crm.leads.create"]),
            metadata=md, timeout=5)),
        ("CheckPermission", lambda md: stub.CheckPermission(
            pb.CheckPermissionRequest(tenant_id=tenant, user_id="user-1", permission="crm.leads.read"),
            metadata=md, timeout=5)),
        ("GetUserStatus", lambda md: stub.GetUserStatus(
            pb.GetUserStatusRequest(tenant_id=tenant, user_id="user-1"), metadata=md, timeout=5)),
        ("GetFeatureFlag", lambda md: stub.GetFeatureFlag(
            pb.GetFeatureFlagRequest(tenant_id=tenant, flag_key="crm.ai-summaries"), metadata=md, timeout=5)),
        ("GetUserProfile", lambda md: stub.GetUserProfile(
            pb.GetUserProfileRequest(tenant_id=tenant, user_id="user-1"), metadata=md, timeout=5)),
        ("GetOrgUnit", lambda md: stub.GetOrgUnit(
            pb.GetOrgUnitRequest(tenant_id=tenant, org_unit_id="org-sales"), metadata=md, timeout=5)),
        ("WatchChanges", lambda md: next(iter(stub.WatchChanges(
            pb.WatchChangesRequest(tenant_ids=[tenant]), metadata=md, timeout=5)))),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("metadata", "code", "reason"),
    [
        ([], grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS"),
        (auth("wrong-token"), grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"),
        ([("authorization", "Basic abc")], grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"),
        (auth(ACME_TOKEN), grpc.StatusCode.PERMISSION_DENIED, "TENANT_NOT_ALLOWED"),
    ],
    ids=["no-token", "wrong-token", "wrong-scheme", "other-tenant"],
)
def test_every_rpc_refuses(
    secure_stub: pb_grpc.HybridCacheStub, metadata: list[tuple[str, str]], code: grpc.StatusCode, reason: str
) -> None:
    for name, call in every_rpc(secure_stub, "globex"):
        with pytest.raises(grpc.RpcError) as caught:
            call(metadata)
        assert caught.value.code() == code, f"{name}: {caught.value.code()} {caught.value.details()}"
        assert error_reason(caught.value) == reason, name


def test_every_rpc_allows_its_own_tenant(secure_stub: pb_grpc.HybridCacheStub) -> None:
    for name, call in every_rpc(secure_stub, "acme"):
        try:
            call(auth(ACME_TOKEN))
        except grpc.RpcError as exc:  # pragma: no cover - reported below
            pytest.fail(f"{name} refused its own tenant: {exc.code()} {exc.details()}")


def test_stats_name_only_readable_tenants(secure_stub: pb_grpc.HybridCacheStub) -> None:
    reply = secure_stub.GetCacheStats(pb.GetCacheStatsRequest(), metadata=auth(ACME_TOKEN), timeout=5)
    assert set(reply.loaded_tenant_ids) <= {"acme"}


def test_health_and_reflection_stay_open(secure_service: Service) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{secure_service.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user=st.sampled_from([f"user-{i}" for i in range(1, 60)] + ["nobody", "x@y"]),
    tenant=st.sampled_from(["acme", "globex"]),
    token=st.sampled_from([ACME_TOKEN, GLOBEX_TOKEN]),
)
def test_no_cross_tenant_answers(
    secure_stub: pb_grpc.HybridCacheStub,
    ops_truth: dict[str, dict[str, Any]],
    user: str,
    tenant: str,
    token: str,
) -> None:
    own = {ACME_TOKEN: "acme", GLOBEX_TOKEN: "globex"}[token]
    try:
        reply = secure_stub.GetUserStatus(
            pb.GetUserStatusRequest(tenant_id=tenant, user_id=user), metadata=auth(token), timeout=5
        )
    except grpc.RpcError as exc:
        if tenant != own:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
        else:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
            assert user not in ops_truth[tenant]
        return
    assert tenant == own, f"caller for {own} read {tenant}"
    assert reply.user_status == ops_truth[tenant][user], "answer differs from the tenant's own data"


@pytest.fixture
def ops_truth(secure_stub: pb_grpc.HybridCacheStub) -> dict[str, dict[str, Any]]:
    """Each tenant's user statuses as the all-tenants caller sees them."""
    truth: dict[str, dict[str, Any]] = {}
    for tenant in ("acme", "globex"):
        truth[tenant] = {}
        for i in range(1, 60):
            try:
                reply = secure_stub.GetUserStatus(
                    pb.GetUserStatusRequest(tenant_id=tenant, user_id=f"user-{i}"),
                    metadata=auth(ADMIN_TOKEN),
                    timeout=5,
                )
            except grpc.RpcError:
                continue
            truth[tenant][f"user-{i}"] = reply.user_status
    return truth


def test_rate_limit_refuses_one_caller_not_another(secure_stub: pb_grpc.HybridCacheStub) -> None:
    request = pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create")
    codes = []
    for _ in range(20):
        try:
            secure_stub.GetCreditCost(request, metadata=auth(LIMITED_TOKEN), timeout=5)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert error_reason(exc) == "RATE_LIMITED"
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 10, codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    # Another caller is unaffected.
    for _ in range(20):
        secure_stub.GetCreditCost(request, metadata=auth(ACME_TOKEN), timeout=5)


def test_in_flight_cap_refuses_one_caller_not_another(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: Any, wrapper_admin: WrapperAdmin
) -> None:
    callers = [
        {**CALLERS[0], "max_in_flight": 2},
        CALLERS[1],
    ]
    service = start_service(
        service_settings(
            dev_wrapper.url,
            redis_server.url,
            insecure_dev_mode=False,
            callers=callers,
            tenants=["acme", "globex"],
        )
    )
    results: list[grpc.StatusCode] = []
    with wrapper_admin.faults(latencyMs=400), grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)

        def slow_miss(i: int) -> None:
            try:
                stub.GetUserProfile(
                    pb.GetUserProfileRequest(tenant_id="acme", user_id=f"user-{i}"),
                    metadata=auth(ACME_TOKEN),
                    timeout=5,
                )
                results.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                results.append(exc.code())

        threads = [threading.Thread(target=slow_miss, args=(i,)) for i in range(10, 16)]
        for t in threads:
            t.start()
        # While acme's caller is saturated, globex's caller is served from the replica.
        stub.GetCreditCost(
            pb.GetCreditCostRequest(tenant_id="globex", operation_code="crm.leads.create"),
            metadata=auth(GLOBEX_TOKEN),
            timeout=5,
        )
        for t in threads:
            t.join(10)
    assert results.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1, results
    assert results.count(grpc.StatusCode.OK) >= 2, results
