"""The development Wrapper's SQLite store, without HTTP.

Item shapes are checked with the product's own parser (`codec.parse_item`): what the
Wrapper serves is what the Wrapper client accepts.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hybridcache.server.codec import parse_item
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import CreditCost, OrgUnit, UserProfile, UserStatus
from hybridcache_dev.wrapper.seed import demo_tenants
from hybridcache_dev.wrapper.store import (
    SNAPSHOT_KINDS,
    InvalidChangeError,
    NotFoundError,
    Store,
    TenantNotFoundError,
)


@pytest.fixture
def store() -> Store:
    s = Store()
    s.load(demo_tenants())
    return s


def test_tenants_are_listed(store: Store) -> None:
    assert store.tenants() == [
        {"tenantId": "acme", "name": "Acme Corp"},
        {"tenantId": "globex", "name": "Globex Corporation"},
        {"tenantId": "initech", "name": "Initech"},
    ]


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS)
def test_snapshots_have_the_contract_shape(store: Store, kind: Kind) -> None:
    snap = store.snapshot("acme", kind)
    assert set(snap) == {"tenantId", "kind", "revision", "items"}
    assert (snap["tenantId"], snap["kind"], snap["revision"]) == ("acme", str(kind), 1)
    assert snap["items"]
    for item in snap["items"]:
        assert parse_item(kind, item).version == 1


def test_items_have_the_contract_shape(store: Store) -> None:
    cost = store.item("acme", Kind.CREDIT_COSTS, "crm.leads.create")
    assert cost == {"operationCode": "crm.leads.create", "cost": "2.5", "version": 1}
    assert parse_item(Kind.CREDIT_COSTS, cost) == CreditCost("crm.leads.create", "2.5", 1)
    status = parse_item(Kind.USER_STATUS, store.item("acme", Kind.USER_STATUS, "user-1"))
    assert status == UserStatus("user-1", True, ("admin",), 1)
    profile = store.item("acme", Kind.USER_PROFILES, "user-1")
    assert set(profile) == {
        "userId",
        "displayName",
        "email",
        "title",
        "department",
        "orgUnitId",
        "phone",
        "version",
    }
    assert isinstance(parse_item(Kind.USER_PROFILES, profile), UserProfile)
    unit = store.item("acme", Kind.ORG_UNITS, "org-sales-emea")
    assert set(unit) == {
        "orgUnitId",
        "name",
        "parentId",
        "managerUserId",
        "ancestors",
        "children",
        "version",
    }
    parsed = parse_item(Kind.ORG_UNITS, unit)
    assert isinstance(parsed, OrgUnit)
    assert [a.org_unit_id for a in parsed.ancestors] == ["org-sales", "org-root"]  # parent first
    root = store.item("acme", Kind.ORG_UNITS, "org-root")
    assert root["parentId"] is None
    assert root["ancestors"] == []
    assert {c["orgUnitId"] for c in root["children"]} == {
        "org-sales",
        "org-hr",
        "org-finance",
        "org-engineering",
    }


def test_same_keys_different_values_per_tenant(store: Store) -> None:
    for kind, key in [
        (Kind.CREDIT_COSTS, "crm.leads.create"),
        (Kind.USER_STATUS, "user-1"),
        (Kind.USER_PROFILES, "user-1"),
        (Kind.ORG_UNITS, "org-root"),
        (Kind.FEATURE_FLAGS, "crm.ai-summaries"),
        (Kind.ROLE_PERMISSIONS, "sales-rep"),
    ]:
        assert store.item("acme", kind, key) != store.item("globex", kind, key), (kind, key)


def test_missing_tenant_and_item_are_told_apart(store: Store) -> None:
    for kind in Kind:
        with pytest.raises(TenantNotFoundError):
            store.item("nobody", kind, "x")
        with pytest.raises(NotFoundError):
            store.item("acme", kind, "no-such-key")
    with pytest.raises(TenantNotFoundError):
        store.snapshot("nobody", Kind.CREDIT_COSTS)
    with pytest.raises(TenantNotFoundError):
        store.put_credit_cost("nobody", "crm.leads.create", "1")
    with pytest.raises(NotFoundError):
        store.snapshot("acme", Kind.USER_PROFILES)  # reference kinds have no snapshot


def test_put_credit_cost_bumps_version_and_revision(store: Store) -> None:
    change = store.put_credit_cost("acme", "crm.leads.create", "3.0")
    assert (change.version, change.revision) == (2, 2)
    assert change.old == {"operationCode": "crm.leads.create", "cost": "2.5", "version": 1}
    assert change.new == {"operationCode": "crm.leads.create", "cost": "3", "version": 2}
    assert change.changed_fields == ("credit_cost",)
    assert change.config_id == "cfg-101"
    assert store.item("acme", Kind.CREDIT_COSTS, "crm.leads.create")["cost"] == "3"
    assert store.snapshot("acme", Kind.CREDIT_COSTS)["revision"] == 2
    assert store.revision("globex") == 1  # other tenants untouched
    again = store.put_credit_cost("acme", "crm.leads.create", "0.10")
    assert (again.version, again.revision, again.new and again.new["cost"]) == (3, 3, "0.1")
    assert again.config_id == "cfg-101"  # the config id stays with the entity


def test_put_credit_cost_creates_and_checks_the_decimal(store: Store) -> None:
    change = store.put_credit_cost("acme", "crm.new.thing", "1E+1")
    assert change.old is None
    assert change.new == {"operationCode": "crm.new.thing", "cost": "10", "version": 1}
    assert change.config_id == "cfg-acme-crm.new.thing"
    with pytest.raises(ValueError, match="decimal"):
        store.put_credit_cost("acme", "crm.new.thing", "abc")
    with pytest.raises(InvalidChangeError):
        store.put_credit_cost("acme", "crm.new.thing", "-1")


def test_delete_is_a_tombstone_and_versions_keep_rising(store: Store) -> None:
    deleted = store.delete("acme", Kind.CREDIT_COSTS, "crm.leads.read")
    assert deleted.deleted
    assert deleted.new is None
    assert deleted.old is not None
    assert deleted.version == 2
    assert "crm.leads.read" not in {
        i["operationCode"] for i in store.snapshot("acme", Kind.CREDIT_COSTS)["items"]
    }
    with pytest.raises(NotFoundError):
        store.item("acme", Kind.CREDIT_COSTS, "crm.leads.read")
    with pytest.raises(NotFoundError):
        store.delete("acme", Kind.CREDIT_COSTS, "crm.leads.read")
    back = store.put_credit_cost("acme", "crm.leads.read", "0.2")
    assert back.old is None
    assert back.version == 3
    for kind, key in [
        (Kind.ROLE_PERMISSIONS, "viewer"),
        (Kind.USER_STATUS, "user-2"),
        (Kind.FEATURE_FLAGS, "crm.bulk-export"),
    ]:
        assert store.delete("acme", kind, key).version == 2
        with pytest.raises(NotFoundError):
            store.item("acme", kind, key)


def test_changed_fields_name_what_differs(store: Store) -> None:
    before = store.item("acme", Kind.USER_STATUS, "user-2")
    change = store.put_user_status("acme", "user-2", not before["active"], before["roles"])
    assert change.changed_fields == ("active",)
    change = store.put_user_status("acme", "user-2", not before["active"], ["viewer"])
    assert change.changed_fields == ("roles",)
    created = store.put_user_status("acme", "user-999", True, ["viewer"])
    assert created.changed_fields == ("active", "roles")
    flag = store.put_feature_flag("acme", "crm.bulk-export", False, "limit=1")
    assert flag.changed_fields == ("value",)
    role = store.put_role("acme", "viewer", ["crm.leads.read", "crm.contacts.read"])
    assert role.changed_fields == ("permissions",)
    assert store.item("acme", Kind.ROLE_PERMISSIONS, "viewer")["permissions"] == [
        "crm.leads.read",
        "crm.contacts.read",
    ]


def test_patch_profile(store: Store) -> None:
    change = store.patch_profile("acme", "user-3", {"title": "VP Sales", "department": "Sales"})
    assert change.changed_fields == ("title", "department")
    assert change.version == 2
    assert change.new is not None
    assert change.new["title"] == "VP Sales"
    assert store.item("acme", Kind.USER_PROFILES, "user-3")["title"] == "VP Sales"
    assert store.item("globex", Kind.USER_PROFILES, "user-3")["title"] != "VP Sales"
    with pytest.raises(InvalidChangeError):
        store.patch_profile("acme", "user-3", {"salary": "lots"})
    with pytest.raises(InvalidChangeError):
        store.patch_profile("acme", "user-3", {})
    with pytest.raises(NotFoundError):
        store.patch_profile("acme", "user-404", {"title": "x"})


def test_patch_org_unit_rename(store: Store) -> None:
    (change,) = store.patch_org_unit("acme", "org-sales-emea", {"name": "Europe"})
    assert change.changed_fields == ("name",)
    assert change.version == 2
    sales = store.item("acme", Kind.ORG_UNITS, "org-sales")
    assert {"orgUnitId": "org-sales-emea", "name": "Europe"} in sales["children"]


def test_patch_org_unit_move_touches_both_parents(store: Store) -> None:
    changes = store.patch_org_unit("acme", "org-sales-emea", {"parentId": "org-hr"})
    assert [(c.key, c.changed_fields) for c in changes] == [
        ("org-sales-emea", ("parentId",)),
        ("org-sales", ("children",)),
        ("org-hr", ("children",)),
    ]
    assert len({c.revision for c in changes}) == 1  # one write, one revision
    moved = store.item("acme", Kind.ORG_UNITS, "org-sales-emea")
    assert [a["orgUnitId"] for a in moved["ancestors"]] == ["org-hr", "org-root"]
    hr = store.item("acme", Kind.ORG_UNITS, "org-hr")
    assert hr["version"] == 2
    assert "org-sales-emea" in {c["orgUnitId"] for c in hr["children"]}


def test_patch_org_unit_refuses_cycles_and_unknown_parents(store: Store) -> None:
    with pytest.raises(InvalidChangeError, match="descendants"):
        store.patch_org_unit("acme", "org-sales", {"parentId": "org-sales-emea"})
    with pytest.raises(InvalidChangeError, match="descendants"):
        store.patch_org_unit("acme", "org-sales", {"parentId": "org-sales"})
    with pytest.raises(InvalidChangeError, match="parent"):
        store.patch_org_unit("acme", "org-sales", {"parentId": "org-nowhere"})
    with pytest.raises(InvalidChangeError):
        store.patch_org_unit("acme", "org-sales", {"color": "red"})
    assert store.revision("acme") == 1  # nothing half-applied


def test_file_database_persists_and_is_not_reseeded(tmp_path: Path) -> None:
    path = str(tmp_path / "wrapper.db")
    first = Store(path)
    assert first.is_empty()
    first.load(demo_tenants())
    first.put_credit_cost("globex", "hrms.payroll.run", "99.99")
    first.close()
    second = Store(path)
    assert not second.is_empty()
    assert second.item("globex", Kind.CREDIT_COSTS, "hrms.payroll.run")["cost"] == "99.99"
    second.load(demo_tenants())  # an explicit reload resets the tenant
    assert second.item("globex", Kind.CREDIT_COSTS, "hrms.payroll.run")["version"] == 1
    second.close()


@pytest.mark.timeout(30)
def test_concurrent_writes_from_threads_get_distinct_versions(store: Store) -> None:
    versions: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(25):
            change = store.put_credit_cost("acme", "crm.leads.create", f"{n}.{i}")
            with lock:
                versions.append(change.version)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(2, 102))
    assert store.revision("acme") == 101
