"""Every read RPC end to end: real gRPC server, real development Wrapper over HTTP, real Redis.

The expected answers are read from the Wrapper's own HTTP API, so the tests check that the
service returns the Wrapper's data for the right tenant, whatever the seed holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from tests.conftest import WRAPPER_TOKEN

TENANTS = ("acme", "globex")
pytestmark = pytest.mark.timeout(60)


def wrapper_get(dev_wrapper: Any, path: str) -> Any:
    response = httpx.get(
        f"{dev_wrapper.url}{path}", headers={"Authorization": f"Bearer {WRAPPER_TOKEN}"}, timeout=5
    )
    response.raise_for_status()
    return response.json()


def error_reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError(f"no ErrorInfo on {error.code()}: {error.details()}")


@pytest.mark.parametrize("tenant", TENANTS)
def test_credit_cost_is_the_wrappers_for_that_tenant(
    stub: pb_grpc.HybridCacheStub, dev_wrapper: Any, tenant: str
) -> None:
    truth = wrapper_get(dev_wrapper, f"/api/tenants/{tenant}/credit-costs/crm.leads.create")
    reply = stub.GetCreditCost(
        pb.GetCreditCostRequest(tenant_id=tenant, operation_code="crm.leads.create"), timeout=5
    )
    from decimal import Decimal

    assert Decimal(reply.credit_cost.cost.value) == Decimal(truth["cost"])
    assert reply.credit_cost.operation_code == "crm.leads.create"
    assert reply.provenance.source == pb.SOURCE_CACHE, "a replicated kind is answered from the replica"
    assert reply.provenance.version == truth["version"]


def test_tenants_differ(stub: pb_grpc.HybridCacheStub) -> None:
    """Same user id, two tenants: the answers must be each tenant's own."""
    answers = {
        t: stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id=t, user_id="user-1"), timeout=5)
        for t in TENANTS
    }
    assert answers["acme"].user_profile != answers["globex"].user_profile


def test_batch_credit_costs(stub: pb_grpc.HybridCacheStub, dev_wrapper: Any) -> None:
    snapshot = wrapper_get(dev_wrapper, "/api/tenants/acme/snapshots/credit-costs")
    codes = [item["operationCode"] for item in snapshot["items"]][:5]
    asked = [*codes, "no.such.operation", codes[0]]
    reply = stub.BatchGetCreditCosts(
        pb.BatchGetCreditCostsRequest(tenant_id="acme", operation_codes=asked), timeout=5
    )
    assert [c.operation_code for c in reply.credit_costs] == codes, "each code once, in the order asked"
    assert list(reply.missing_operation_codes) == ["no.such.operation"]


def test_user_status_and_permission(stub: pb_grpc.HybridCacheStub, dev_wrapper: Any) -> None:
    users = wrapper_get(dev_wrapper, "/api/tenants/acme/snapshots/user-status")["items"]
    roles = {
        r["roleId"]: r
        for r in wrapper_get(dev_wrapper, "/api/tenants/acme/snapshots/role-permissions")["items"]
    }
    active = next(u for u in users if u["active"] and u["roles"])
    inactive = next(u for u in users if not u["active"])

    status = stub.GetUserStatus(
        pb.GetUserStatusRequest(tenant_id="acme", user_id=active["userId"]), timeout=5
    )
    assert status.user_status.active is True
    assert list(status.user_status.role_ids) == active["roles"]

    grant = (
        next(p for p in roles[active["roles"][0]]["permissions"] if "*" not in p)
        if any("*" not in p for p in roles[active["roles"][0]]["permissions"])
        else "crm.leads.read"
    )
    allowed = stub.CheckPermission(
        pb.CheckPermissionRequest(tenant_id="acme", user_id=active["userId"], permission=grant), timeout=5
    )
    assert allowed.allowed, f"{active['userId']} with roles {active['roles']} should hold {grant}"
    assert allowed.reason == pb.PERMISSION_REASON_GRANTED

    denied = stub.CheckPermission(
        pb.CheckPermissionRequest(tenant_id="acme", user_id=inactive["userId"], permission=grant), timeout=5
    )
    assert not denied.allowed
    assert denied.reason == pb.PERMISSION_REASON_USER_INACTIVE

    unknown = stub.CheckPermission(
        pb.CheckPermissionRequest(tenant_id="acme", user_id="nobody", permission=grant), timeout=5
    )
    assert (unknown.allowed, unknown.reason) == (False, pb.PERMISSION_REASON_UNKNOWN_USER)


def test_feature_flag(stub: pb_grpc.HybridCacheStub, dev_wrapper: Any) -> None:
    truth = wrapper_get(dev_wrapper, "/api/tenants/globex/feature-flags/crm.ai-summaries")
    reply = stub.GetFeatureFlag(
        pb.GetFeatureFlagRequest(tenant_id="globex", flag_key="crm.ai-summaries"), timeout=5
    )
    assert (reply.feature_flag.enabled, reply.feature_flag.value) == (truth["enabled"], truth["value"])


def test_profile_is_fetched_once_then_cached(stub: pb_grpc.HybridCacheStub, dev_wrapper: Any) -> None:
    truth = wrapper_get(dev_wrapper, "/api/tenants/acme/users/user-7/profile")
    first = stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id="acme", user_id="user-7"), timeout=5)
    second = stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id="acme", user_id="user-7"), timeout=5)
    assert first.user_profile.display_name == truth["displayName"]
    assert first.user_profile.email == truth["email"]
    assert first.provenance.source == pb.SOURCE_WRAPPER
    assert second.provenance.source == pb.SOURCE_CACHE
    assert second.user_profile == first.user_profile


def test_org_unit_with_parents_and_children(stub: pb_grpc.HybridCacheStub, dev_wrapper: Any) -> None:
    truth = wrapper_get(dev_wrapper, "/api/tenants/acme/org-units/org-sales")
    reply = stub.GetOrgUnit(pb.GetOrgUnitRequest(tenant_id="acme", org_unit_id="org-sales"), timeout=5)
    assert reply.org_unit.name == truth["name"]
    assert [a.org_unit_id for a in reply.org_unit.ancestors] == [a["orgUnitId"] for a in truth["ancestors"]]
    assert [c.org_unit_id for c in reply.org_unit.children] == [c["orgUnitId"] for c in truth["children"]]


def test_cache_stats(stub: pb_grpc.HybridCacheStub) -> None:
    stub.GetCreditCost(
        pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create"), timeout=5
    )
    reply = stub.GetCacheStats(pb.GetCacheStatsRequest(), timeout=5)
    kinds = {k.kind: k for k in reply.kinds}
    assert kinds[pb.KIND_CREDIT_COSTS].tier == "replica"
    assert kinds[pb.KIND_CREDIT_COSTS].hits >= 1
    assert kinds[pb.KIND_USER_PROFILES].tier == "on-demand"
    assert set(reply.loaded_tenant_ids) >= {"acme", "globex"}


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (
            pb.GetCreditCostRequest(tenant_id="", operation_code="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_REQUIRED",
        ),
        (
            pb.GetCreditCostRequest(tenant_id="a" * 65, operation_code="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_TOO_LONG",
        ),
        (
            pb.GetCreditCostRequest(tenant_id="acme/../x", operation_code="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        ),
        (
            pb.GetCreditCostRequest(tenant_id="acme", operation_code=""),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_REQUIRED",
        ),
        (
            pb.GetCreditCostRequest(tenant_id="acme", operation_code="x" * 129),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_TOO_LONG",
        ),
        (
            pb.GetCreditCostRequest(tenant_id="acme", operation_code="no.such.op"),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            pb.GetCreditCostRequest(tenant_id="nosuchtenant", operation_code="x"),
            grpc.StatusCode.NOT_FOUND,
            "TENANT_NOT_FOUND",
        ),
    ],
)
def test_bad_input_gets_a_clear_status(
    stub: pb_grpc.HybridCacheStub, request_: pb.GetCreditCostRequest, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetCreditCost(request_, timeout=5)
    assert caught.value.code() == code, caught.value.details()
    assert error_reason(caught.value) == reason
    # ... and the server still answers good requests afterwards.
    stub.GetCreditCost(
        pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create"), timeout=5
    )


def test_other_bad_inputs(stub: pb_grpc.HybridCacheStub) -> None:
    cases: list[tuple[Callable[..., Any], Any]] = [
        (stub.BatchGetCreditCosts, pb.BatchGetCreditCostsRequest(tenant_id="acme")),
        (
            stub.BatchGetCreditCosts,
            pb.BatchGetCreditCostsRequest(tenant_id="acme", operation_codes=["a"] * 1001),
        ),
        (stub.CheckPermission, pb.CheckPermissionRequest(tenant_id="acme", user_id="user-1", permission="")),
        (stub.CheckPermission, pb.CheckPermissionRequest(tenant_id="acme", user_id="u s", permission="a")),
        (stub.GetUserProfile, pb.GetUserProfileRequest(tenant_id="acme", user_id="x" * 200)),
        (stub.GetOrgUnit, pb.GetOrgUnitRequest(tenant_id="acme", org_unit_id="a\nb")),
        (stub.GetFeatureFlag, pb.GetFeatureFlagRequest(tenant_id="acme")),
    ]
    for method, request in cases:
        with pytest.raises(grpc.RpcError) as caught:
            method(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, caught.value.details())
    stats_before = stub.GetCacheStats(pb.GetCacheStatsRequest(), timeout=5)
    assert "nosuchtenant" not in stats_before.loaded_tenant_ids


def test_wrapper_down_gives_unavailable_within_the_deadline(start_service: Any, redis_server: Any) -> None:
    from hybridcache_dev.stack.redis_process import free_port
    from tests.conftest import service_settings

    dead_wrapper = f"http://127.0.0.1:{free_port()}"
    service: Service = start_service(service_settings(dead_wrapper, redis_server.url, tenants=[]))
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        calls: list[tuple[Callable[..., Any], Any]] = [
            (stub.GetUserProfile, pb.GetUserProfileRequest(tenant_id="acme", user_id="user-1")),
            (
                stub.GetCreditCost,
                pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create"),
            ),
        ]
        for call, request in calls:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                call(request, timeout=1.0)
            elapsed = time.monotonic() - started
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
            assert elapsed < 1.0, f"answered after {elapsed:.3f} s, past the 1 s deadline"
            assert error_reason(caught.value).startswith("WRAPPER_")


def test_hanging_wrapper_gives_unavailable_before_the_deadline(
    stub: pb_grpc.HybridCacheStub, dev_wrapper: Any
) -> None:
    admin = WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN)
    admin.set_faults(hang=True)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id="acme", user_id="user-33"), timeout=0.5)
        elapsed = time.monotonic() - started
    finally:
        admin.clear_faults()
        admin.close()
    # UNAVAILABLE (not DEADLINE_EXCEEDED) is the proof that the server answered before the
    # 0.5 s deadline; the client's own clock adds the trip back, so only a hang is timed here.
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    assert elapsed < 0.5 + 2.0, f"answered after {elapsed:.3f} s"
