from __future__ import annotations

import dataclasses

import pytest

from hybridcache.server.core.kinds import Kind
from hybridcache.server.hub import (
    ANY_TENANT,
    AllowedTenants,
    TenantNotAllowedError,
    WatchFilter,
    resolve_tenants,
)
from tests.unit.hub.hub_support import event, only


def test_tenant_kind_and_prefix() -> None:
    flt = only("t1", "t2", kinds=[Kind.CREDIT_COSTS], prefix="crm.")
    assert flt.matches(event("t1", Kind.CREDIT_COSTS, "crm.leads"))
    assert flt.matches(event("t2", Kind.CREDIT_COSTS, "crm.x"))
    assert not flt.matches(event("t3", Kind.CREDIT_COSTS, "crm.leads"))
    assert not flt.matches(event("t1", Kind.FEATURE_FLAGS, "crm.leads"))
    assert not flt.matches(event("t1", Kind.CREDIT_COSTS, "hrms.leave"))


def test_empty_kinds_and_prefix_mean_everything() -> None:
    flt = only("t1")
    for kind in Kind:
        assert flt.matches(event("t1", kind, "anything"))


def test_wildcard_tenant() -> None:
    flt = only(ANY_TENANT)
    assert flt.all_tenants
    assert flt.matches(event("whoever"))


def test_resync_event_matches_any_prefix() -> None:
    flt = only("t1", prefix="crm.")
    assert flt.matches(event("t1", resync=True))
    assert not only("t1", kinds=[Kind.USER_STATUS], prefix="crm.").matches(event("t1", resync=True))


def test_any_key_of_a_multi_key_event_matches() -> None:
    multi = dataclasses.replace(event("t1"), keys=("hrms.a", "crm.b"))
    assert only("t1", prefix="crm.").matches(multi)


def test_a_filter_names_at_least_one_tenant() -> None:
    with pytest.raises(ValueError, match="at least one tenant"):
        WatchFilter(frozenset())


def test_resolve_requested_tenants() -> None:
    allowed = AllowedTenants(all=False, tenants=frozenset({"a", "b"}))
    assert resolve_tenants(["a"], allowed) == {"a"}
    assert resolve_tenants(["a", "a", "b"], allowed) == {"a", "b"}
    with pytest.raises(TenantNotAllowedError, match="'c'"):
        resolve_tenants(["a", "c"], allowed)


def test_resolve_empty_request_to_what_the_caller_may_read() -> None:
    assert resolve_tenants([], AllowedTenants(all=False, tenants=frozenset({"a"}))) == {"a"}
    assert resolve_tenants([], AllowedTenants(all=True)) == {ANY_TENANT}
    assert resolve_tenants(["z"], AllowedTenants(all=True)) == {"z"}
    with pytest.raises(TenantNotAllowedError, match="any tenant"):
        resolve_tenants([], AllowedTenants(all=False))
