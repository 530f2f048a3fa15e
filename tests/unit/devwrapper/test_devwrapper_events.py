"""Notifications built by the development Wrapper: the seed's shape, exact numbers."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from hybridcache.server.core.kinds import Kind
from hybridcache_dev.wrapper.events import dumps_exact, event_for
from hybridcache_dev.wrapper.seed import demo_tenants
from hybridcache_dev.wrapper.store import Store


@pytest.fixture
def store() -> Store:
    s = Store()
    s.load(demo_tenants())
    return s


def _body(message: str) -> dict[str, object]:
    body = json.loads(message, parse_float=Decimal)
    assert isinstance(body, dict)
    return body


def test_dumps_exact_writes_decimals_as_their_digits() -> None:
    text = dumps_exact({"a": Decimal("0.1"), "b": [Decimal("3.0"), 2, None, True], "c": 'q"é'})
    assert text == '{"a":0.1,"b":[3,2,null,true],"c":"q\\"\\u00e9"}'
    assert json.loads(text, parse_float=Decimal)["a"] == Decimal("0.1")
    long = Decimal("0.1000000000000000000001")
    assert json.loads(dumps_exact(long), parse_float=Decimal) == long
    with pytest.raises(TypeError):
        dumps_exact(0.1)


def test_credit_cost_event_has_the_seed_shape(store: Store) -> None:
    event = event_for(store.put_credit_cost("acme", "crm.leads.create", "3.0"))
    assert event.channel("crm") == "crm:acme:credit-config-changed"
    body = _body(event.message())
    assert list(body) == ["eventId", "eventType", "tenantId", "data", "publishedAt"]
    assert body["eventId"] == event.event_id
    assert str(body["eventId"]).startswith("change-")
    assert body["eventType"] == "credit-config-changed"
    assert body["tenantId"] == "acme"
    assert isinstance(body["publishedAt"], int)
    assert body["data"] == {
        "configId": "cfg-101",
        "operationCode": "crm.leads.create",
        "changedFields": ["credit_cost"],
        "newValue": Decimal(3),
        "oldValue": Decimal("2.5"),
        "version": 2,
    }
    # numbers, not strings, as the seed's publisher sends them
    assert '"newValue":3,' in event.message()
    assert '"oldValue":2.5,' in event.message()


def test_event_ids_are_unique(store: Store) -> None:
    change = store.put_credit_cost("acme", "crm.leads.create", "1")
    assert event_for(change).event_id != event_for(change).event_id


def test_credit_cost_create_and_delete(store: Store) -> None:
    created = _body(event_for(store.put_credit_cost("acme", "crm.x", "0.3")).message())["data"]
    assert isinstance(created, dict)
    assert created["oldValue"] is None
    assert created["newValue"] == Decimal("0.3")
    deleted = _body(event_for(store.delete("acme", Kind.CREDIT_COSTS, "crm.x")).message())["data"]
    assert isinstance(deleted, dict)
    assert deleted["newValue"] is None
    assert deleted["oldValue"] == Decimal("0.3")
    assert deleted["deleted"] is True
    assert deleted["version"] == 2


def test_role_status_and_flag_events(store: Store) -> None:
    role = event_for(store.put_role("globex", "viewer", ["crm.*"]))
    assert role.channel("crm") == "crm:globex:role-permissions-changed"
    assert role.data == {
        "roleId": "viewer",
        "changedFields": ["permissions"],
        "newValue": ["crm.*"],
        "oldValue": ["crm.leads.read", "crm.contacts.read"],
        "version": 2,
    }
    status = event_for(store.put_user_status("acme", "user-4", False, ["viewer"]))
    assert status.event_type == "user-status-changed"
    assert status.data["newValue"] == {"active": False, "roles": ["viewer"]}
    assert status.data["userId"] == "user-4"
    flag = event_for(store.put_feature_flag("acme", "crm.bulk-export", True, "x"))
    assert flag.event_type == "feature-flag-changed"
    assert flag.data["newValue"] == {"enabled": True, "value": "x"}
    assert flag.data["oldValue"] == {"enabled": False, "value": ""}
    gone = event_for(store.delete("acme", Kind.FEATURE_FLAGS, "crm.bulk-export"))
    assert gone.data["deleted"] is True
    assert "newValue" not in gone.data


def test_include_value_false_leaves_the_values_out(store: Store) -> None:
    event = event_for(store.put_feature_flag("acme", "crm.ai-summaries", False, ""), include_value=False)
    assert event.data == {"flagKey": "crm.ai-summaries", "changedFields": ["enabled", "value"], "version": 2}


def test_profile_event_carries_no_profile_data(store: Store) -> None:
    event = event_for(store.patch_profile("acme", "user-5", {"title": "Boss", "phone": "+1-555-9"}))
    assert event.channel("hrms") == "hrms:acme:user-profile-changed"
    assert event.data == {"userId": "user-5", "changedFields": ["title", "phone"]}
    assert "Boss" not in event.message()


def test_org_unit_events(store: Store) -> None:
    events = [event_for(c) for c in store.patch_org_unit("acme", "org-hr", {"parentId": "org-finance"})]
    assert [e.data for e in events] == [
        {"orgUnitId": "org-hr", "changedFields": ["parentId"]},
        {"orgUnitId": "org-root", "changedFields": ["children"]},
        {"orgUnitId": "org-finance", "changedFields": ["children"]},
    ]
    assert {e.event_type for e in events} == {"org-unit-changed"}
