from __future__ import annotations

import dataclasses

import pytest

from hybridcache.server import convert
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import (
    CreditCost,
    FeatureFlag,
    OrgUnit,
    RolePermissions,
    UserProfile,
    UserStatus,
    Value,
)
from hybridcache.server.hub import REASON_FELL_BEHIND, ResyncNeeded, Sequenced, to_proto
from hybridcache.v1 import hybridcache_pb2 as pb
from tests.unit.hub.hub_support import event


def test_every_kind_maps_both_ways() -> None:
    assert set(convert.KIND_TO_PROTO) == set(Kind)
    assert pb.KIND_UNSPECIFIED not in to_proto.KIND_FROM_PROTO
    assert convert.KIND_TO_PROTO[Kind.ORG_UNITS] == pb.KIND_ORG_UNITS
    for kind, number in convert.KIND_TO_PROTO.items():
        assert to_proto.KIND_FROM_PROTO[number] is kind


def test_change_event_fields() -> None:
    e = dataclasses.replace(event("t1", Kind.CREDIT_COSTS, "op.a"), version=7)
    message = to_proto.change_event(Sequenced(42, e, 7), "tok").change
    assert message.sequence == 7  # the tenant's own numbering; the hub's total order stays inside
    assert message.resume_token == "tok"
    assert message.tenant_id == "t1"
    assert message.kind == pb.KIND_CREDIT_COSTS
    assert list(message.keys) == ["op.a"]
    assert list(message.changed_fields) == ["cost"]
    assert message.event_id == "t1-op.a"
    assert message.event_type == "credit-config-changed"
    assert message.event_time.ToMilliseconds() == 1_700_000_000_000
    assert message.version == 7
    assert not message.resync
    assert not message.deleted
    assert message.WhichOneof("new_value") is None


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        (
            CreditCost("op.a", "2.5"),
            "credit_cost",
            pb.CreditCost(operation_code="op.a", cost=pb.Decimal(value="2.5")),
        ),
        (
            RolePermissions("admin", frozenset({"b.*", "a.read"})),
            "role_permissions",
            pb.RolePermissions(role_id="admin", permissions=["a.read", "b.*"]),
        ),
        (
            UserStatus("u1", True, ("admin", "viewer")),
            "user_status",
            pb.UserStatus(user_id="u1", active=True, role_ids=["admin", "viewer"]),
        ),
        (
            FeatureFlag("crm.ai", True, '{"x":1}'),
            "feature_flag",
            pb.FeatureFlag(flag_key="crm.ai", enabled=True, value='{"x":1}'),
        ),
    ],
)
def test_replicated_values_travel(value: Value, field: str, expected: object) -> None:
    message = to_proto.change_event(Sequenced(1, dataclasses.replace(event(), value=value)), "t").change
    assert message.WhichOneof("new_value") == field
    assert getattr(message, field) == expected


@pytest.mark.parametrize(
    "value",
    [
        UserProfile("u1", "Ann", "ann@example.com", "", "", "", ""),
        OrgUnit("o1", "Sales", "", "", (), ()),
    ],
)
def test_on_demand_values_do_not_travel(value: Value) -> None:
    message = to_proto.change_event(Sequenced(1, dataclasses.replace(event(), value=value)), "t").change
    assert message.WhichOneof("new_value") is None


def test_deletions_and_resyncs_carry_no_value() -> None:
    cost = CreditCost("op.a", "1")
    deleted = dataclasses.replace(event(), value=cost, deleted=True)
    assert to_proto.change_event(Sequenced(1, deleted), "t").change.WhichOneof("new_value") is None
    resync = dataclasses.replace(event(resync=True), value=cost)
    message = to_proto.change_event(Sequenced(1, resync), "t").change
    assert message.resync
    assert list(message.keys) == []
    assert message.WhichOneof("new_value") is None


def test_progress_and_resync_required() -> None:
    assert to_proto.progress(5, "tok").progress == pb.Progress(sequence=5, resume_token="tok")
    marker = to_proto.resync_required(ResyncNeeded(REASON_FELL_BEHIND, 5), "tok").resync_required
    assert marker == pb.ResyncRequired(reason="subscriber fell behind", resume_token="tok")
