"""CheckPermission: grant syntax, reasons, role order, and the replica staying current."""

from __future__ import annotations

import pytest

from hybridcache.server.core import (
    DEFAULT_POLICIES,
    HybridCache,
    Kind,
    KindPolicy,
    NotFound,
    PermissionReason,
    Tier,
)
from hybridcache.server.core.permissions import Grants
from tests.unit.core.fakes import FakeClock, FakeWrapper, role, user

pytestmark = pytest.mark.timeout(30)

T = "acme"
RP = Kind.ROLE_PERMISSIONS
US = Kind.USER_STATUS


@pytest.mark.parametrize(
    ("grants", "permission", "matched"),
    [
        (["crm.leads.read"], "crm.leads.read", "crm.leads.read"),
        (["crm.leads.read"], "crm.leads.readx", None),
        (["*"], "anything.at.all", "*"),
        (["crm.leads.*"], "crm.leads.create", "crm.leads.*"),
        (["crm.leads.*"], "crm.leads.x.y", "crm.leads.*"),
        (["crm.leads.*"], "crm.leads", None),
        (["crm.leads.*"], "crm.leadsx", None),
        (["crm.leads.*"], "crm.leads.", None),
        (["crm.*", "crm.leads.*"], "crm.leads.create", "crm.leads.*"),  # most specific prefix
        (["crm.*", "crm.leads.create"], "crm.leads.create", "crm.leads.create"),  # exact first
        (["*", "crm.*"], "crm.x", "crm.*"),
        (["crm.*.read"], "crm.leads.read", None),  # only trailing wildcards
        ([], "crm.leads.read", None),
    ],
)
def test_grant_matching(grants: list[str], permission: str, matched: str | None) -> None:
    assert Grants(grants).match(permission) == matched


@pytest.fixture
def wrapper() -> FakeWrapper:
    w = FakeWrapper()
    w.put(T, RP, "viewer", role("viewer", "crm.leads.read"))
    w.put(T, RP, "sales", role("sales", "crm.leads.*", "crm.deals.read"))
    w.put(T, RP, "admin", role("admin", "*"))
    w.put(T, US, "ann", user("ann", "viewer", "sales", version=4))
    w.put(T, US, "bob", user("bob", "ghost-role", "viewer"))
    w.put(T, US, "cid", user("cid", "admin", active=False, version=2))
    w.put(T, US, "dee", user("dee"))
    return w


def test_granted_by_the_first_matching_role_in_order(cache: HybridCache, clock: FakeClock) -> None:
    cache.ensure_tenant(T)
    clock.advance(3.0)
    decision = cache.check_permission(T, "ann", "crm.leads.read")
    assert decision.allowed
    assert decision.reason is PermissionReason.GRANTED
    assert (decision.role_id, decision.matched_grant) == ("viewer", "crm.leads.read")
    assert (decision.age_s, decision.version) == (3.0, 4)
    decision = cache.check_permission(T, "ann", "crm.leads.create")
    assert (decision.role_id, decision.matched_grant) == ("sales", "crm.leads.*")


def test_reasons(cache: HybridCache) -> None:
    unknown = cache.check_permission(T, "zed", "crm.leads.read")
    assert (unknown.allowed, unknown.reason, unknown.version) == (False, PermissionReason.UNKNOWN_USER, 0)
    inactive = cache.check_permission(T, "cid", "crm.leads.read")
    assert (inactive.allowed, inactive.reason, inactive.version) == (False, PermissionReason.USER_INACTIVE, 2)
    none = cache.check_permission(T, "ann", "finance.pay")
    assert (none.allowed, none.reason, none.role_id, none.matched_grant) == (
        False,
        PermissionReason.NO_ROLE_GRANTS,
        "",
        "",
    )
    assert cache.check_permission(T, "dee", "x").reason is PermissionReason.NO_ROLE_GRANTS


def test_a_role_missing_from_the_replica_grants_nothing(cache: HybridCache, wrapper: FakeWrapper) -> None:
    decision = cache.check_permission(T, "bob", "crm.leads.read")
    assert decision.role_id == "viewer"
    calls = wrapper.total_calls
    assert not cache.check_permission(T, "bob", "crm.leads.create").allowed
    assert wrapper.total_calls == calls  # no Wrapper call for the unknown role


def test_unknown_tenant_is_not_found(cache: HybridCache) -> None:
    with pytest.raises(NotFound):
        cache.check_permission("nobody", "ann", "crm.leads.read")


def test_events_change_decisions(cache: HybridCache, wrapper: FakeWrapper) -> None:
    cache.ensure_tenant(T)
    cache.apply(T, RP, "viewer", role("viewer", "crm.*", version=2))
    assert cache.check_permission(T, "ann", "crm.deals.close").matched_grant == "crm.*"
    cache.apply(T, US, "ann", user("ann", "viewer", active=False, version=5))
    assert cache.check_permission(T, "ann", "crm.deals.close").reason is PermissionReason.USER_INACTIVE
    cache.apply(T, RP, "viewer", None, version=3)
    cache.apply(T, US, "ann", user("ann", "viewer", version=6))
    assert cache.check_permission(T, "ann", "crm.deals.close").reason is PermissionReason.NO_ROLE_GRANTS
    # An invalidated role is refetched when a check needs it.
    wrapper.put(T, RP, "sales", role("sales", "hr.*", version=2))
    cache.invalidate(T, RP, "sales")
    cache.apply(T, US, "ann", user("ann", "sales", version=7))
    assert cache.check_permission(T, "ann", "hr.review").matched_grant == "hr.*"


def test_same_rule_when_user_status_is_on_demand(wrapper: FakeWrapper, clock: FakeClock) -> None:
    policies = dict(DEFAULT_POLICIES)
    policies[US] = KindPolicy(US, Tier.ON_DEMAND)
    cache = HybridCache(wrapper, policies, clock=clock)
    assert cache.check_permission(T, "ann", "crm.leads.create").role_id == "sales"
    assert cache.check_permission(T, "bob", "crm.leads.create").reason is PermissionReason.NO_ROLE_GRANTS
    assert cache.check_permission(T, "zed", "x").reason is PermissionReason.UNKNOWN_USER
    assert cache.check_permission(T, "cid", "x").reason is PermissionReason.USER_INACTIVE
    with pytest.raises(NotFound):
        cache.check_permission("nobody", "ann", "x")
