"""The development Wrapper's seed: same ids in every tenant, different values, deterministic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hybridcache.server.core.values import canonical_decimal
from hybridcache_dev.wrapper.seed import (
    FLAG_KEYS,
    OPERATION_CODES,
    ORG_UNIT_IDS,
    ROLE_IDS,
    TenantSeed,
    demo_tenants,
    scaled_tenants,
)


def _by_id(tenants: list[TenantSeed]) -> dict[str, TenantSeed]:
    return {t.tenant_id: t for t in tenants}


def test_demo_has_the_three_tenants() -> None:
    tenants = _by_id(demo_tenants())
    assert list(tenants) == ["acme", "globex", "initech"]
    assert tenants["acme"].name == "Acme Corp"
    assert len(tenants["acme"].users) == 50
    assert len(tenants["globex"].users) == 50
    assert 0 < len(tenants["initech"].users) < 50


def test_demo_has_the_named_operation_codes_roles_and_flags() -> None:
    acme = _by_id(demo_tenants())["acme"]
    codes = {c.operation_code for c in acme.credit_costs}
    assert len(codes) >= 20
    assert {"crm.leads.create", "crm.leads.read", "crm.contacts.export", "hrms.payroll.run"} <= codes
    assert "finance.invoice.create" in codes
    roles = {r.role_id: r.permissions for r in acme.roles}
    assert roles["admin"] == ("*",)
    assert roles["sales-manager"] == ("crm.*",)
    assert roles["sales-rep"] == ("crm.leads.read", "crm.leads.create", "crm.contacts.*")
    assert roles["hr"] == ("hrms.*",)
    assert roles["viewer"] == ("crm.leads.read",)
    assert {f.flag_key for f in acme.flags} == {
        "crm.ai-summaries",
        "crm.bulk-export",
        "hrms.self-service",
        "finance.multi-currency",
    }


def test_every_tenant_uses_the_same_ids() -> None:
    for tenant in demo_tenants():
        assert tuple(c.operation_code for c in tenant.credit_costs) == OPERATION_CODES
        assert tuple(r.role_id for r in tenant.roles) == ROLE_IDS
        assert tuple(f.flag_key for f in tenant.flags) == FLAG_KEYS
        assert tuple(u.org_unit_id for u in tenant.org_units) == ORG_UNIT_IDS
        assert [u.user_id for u in tenant.users] == [f"user-{i}" for i in range(1, len(tenant.users) + 1)]


def test_values_differ_between_tenants() -> None:
    tenants = _by_id(demo_tenants())
    acme, globex = tenants["acme"], tenants["globex"]
    # every single cost differs, so a cache key without its tenant cannot pass by luck
    for a, g in zip(acme.credit_costs, globex.credit_costs, strict=True):
        assert a.cost != g.cost
    assert acme.users[0] != globex.users[0]  # user-1: status or roles differ
    assert {u.user_id for u in acme.users if not u.active} != {
        u.user_id for u in globex.users if not u.active
    }
    assert sum(a != g for a, g in zip(acme.profiles, globex.profiles, strict=True)) == len(acme.profiles)
    assert acme.org_units[0].name != globex.org_units[0].name
    assert acme.flags != globex.flags
    assert acme.roles != globex.roles


def test_users_have_profiles_roles_and_some_are_inactive() -> None:
    for tenant in demo_tenants():
        units = {u.org_unit_id for u in tenant.org_units}
        assert [p.user_id for p in tenant.profiles] == [u.user_id for u in tenant.users]
        assert all(u.roles for u in tenant.users)
        assert any(not u.active for u in tenant.users)
        assert sum(u.active for u in tenant.users) > len(tenant.users) // 2
        for profile in tenant.profiles:
            assert profile.org_unit_id in units
            assert "@" in profile.email
            assert profile.display_name
            assert profile.phone


def test_org_tree_has_one_root_and_known_parents() -> None:
    for tenant in demo_tenants():
        ids = {u.org_unit_id for u in tenant.org_units}
        roots = [u for u in tenant.org_units if u.parent_id is None]
        assert [r.org_unit_id for r in roots] == ["org-root"]
        assert all(u.parent_id in ids for u in tenant.org_units if u.parent_id is not None)
        assert 8 <= len(ids) <= 12
        assert "org-sales-emea" in ids


def test_costs_are_canonical_exact_decimals() -> None:
    for tenant in demo_tenants():
        for row in tenant.credit_costs:
            assert canonical_decimal(row.cost) == row.cost
            assert Decimal(row.cost) > 0
    acme = _by_id(demo_tenants())["acme"]
    assert next(c.cost for c in acme.credit_costs if c.operation_code == "crm.leads.create") == "2.5"


def test_demo_is_deterministic() -> None:
    assert demo_tenants() == demo_tenants()


def test_scaled_tenants_have_the_requested_size() -> None:
    tenants = list(scaled_tenants(3, 120, 45))
    assert [t.tenant_id for t in tenants] == ["tenant-0001", "tenant-0002", "tenant-0003"]
    for tenant in tenants:
        assert len(tenant.users) == len(tenant.profiles) == 120
        assert len(tenant.credit_costs) == 45
        assert len({c.operation_code for c in tenant.credit_costs}) == 45
        assert tenant.credit_costs[0].operation_code == OPERATION_CODES[0]
        assert tenant.credit_costs[-1].operation_code == "bench.op00045.run"
    first, second = tenants[0], tenants[1]
    assert all(a.cost != b.cost for a, b in zip(first.credit_costs, second.credit_costs, strict=True))


def test_scaled_tenants_are_deterministic_and_small_sizes_work() -> None:
    assert list(scaled_tenants(2, 30, 5)) == list(scaled_tenants(2, 30, 5))
    (only,) = scaled_tenants(1, 1, 1)
    assert len(only.users) == 1
    assert [c.operation_code for c in only.credit_costs] == [OPERATION_CODES[0]]


@pytest.mark.parametrize(("tenants", "users", "operations"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_scaled_tenants_refuse_empty_sizes(tenants: int, users: int, operations: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next(scaled_tenants(tenants, users, operations))
