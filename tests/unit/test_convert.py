"""Domain values -> protobuf: a conversion built in place (`into`, as the servicer builds its
responses) is the same message as one built on its own, field for field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hybridcache.server import convert
from hybridcache.server.core.values import (
    CreditCost,
    FeatureFlag,
    OrgUnit,
    OrgUnitRef,
    RolePermissions,
    UserProfile,
    UserStatus,
)
from hybridcache.v1 import hybridcache_pb2 as pb

PROFILE = UserProfile("u-1", "Ada Lovelace", "ada@example.test", "Engineer", "R&D", "ou-1", "+1 555", 3)
ORG_UNIT = OrgUnit(
    "ou-1",
    "Sales",
    "root",
    "u-1",
    (OrgUnitRef("root", "Root"),),
    (OrgUnitRef("a", "A"), OrgUnitRef("b", "B")),
    2,
)

# (conversion, value, the message written out field by field, the parent field it fills)
CASES: list[tuple[Callable[..., Any], object, Any, Callable[[], Any]]] = [
    (
        convert.credit_cost,
        CreditCost("crm.leads.read", "2.5", 4),
        pb.CreditCost(operation_code="crm.leads.read", cost=pb.Decimal(value="2.5")),
        lambda: pb.GetCreditCostResponse().credit_cost,
    ),
    (
        convert.credit_cost,
        CreditCost("free", "0"),
        pb.CreditCost(operation_code="free", cost=pb.Decimal(value="0")),
        pb.BatchGetCreditCostsResponse().credit_costs.add,
    ),
    (
        convert.role_permissions,
        RolePermissions("sales", frozenset({"crm.deals.*", "crm.leads.*"})),
        pb.RolePermissions(role_id="sales", permissions=["crm.deals.*", "crm.leads.*"]),
        lambda: pb.ChangeEvent().role_permissions,
    ),
    (
        convert.user_status,
        UserStatus("u-1", False, ("viewer", "sales")),
        pb.UserStatus(user_id="u-1", active=False, role_ids=["viewer", "sales"]),
        lambda: pb.GetUserStatusResponse().user_status,
    ),
    (
        convert.feature_flag,
        FeatureFlag("beta", True, "blue"),
        pb.FeatureFlag(flag_key="beta", enabled=True, value="blue"),
        lambda: pb.GetFeatureFlagResponse().feature_flag,
    ),
    (
        convert.user_profile,
        PROFILE,
        pb.UserProfile(
            user_id="u-1",
            display_name="Ada Lovelace",
            email="ada@example.test",
            title="Engineer",
            department="R&D",
            org_unit_id="ou-1",
            phone="+1 555",
        ),
        lambda: pb.GetUserProfileResponse().user_profile,
    ),
    (
        convert.org_unit,
        ORG_UNIT,
        pb.OrgUnit(
            org_unit_id="ou-1",
            name="Sales",
            parent_id="root",
            manager_user_id="u-1",
            ancestors=[pb.OrgUnitRef(org_unit_id="root", name="Root")],
            children=[pb.OrgUnitRef(org_unit_id="a", name="A"), pb.OrgUnitRef(org_unit_id="b", name="B")],
        ),
        lambda: pb.GetOrgUnitResponse().org_unit,
    ),
]


@pytest.mark.parametrize(("conversion", "value", "expected", "field"), CASES)
def test_in_place_and_standalone_conversions_agree(
    conversion: Callable[..., Any], value: object, expected: Any, field: Callable[[], Any]
) -> None:
    assert conversion(value) == expected
    into = field()
    assert conversion(value, into) is into
    assert into == expected
    assert into.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def test_provenance_in_place() -> None:
    response = pb.GetCreditCostResponse()
    convert.provenance("stale", 1.2345, 7, "degraded", response.provenance)
    expected = pb.Provenance(source=pb.SOURCE_STALE, age_ms=1234, version=7, freshness=pb.FRESHNESS_DEGRADED)
    assert response.provenance == expected == convert.provenance("stale", 1.2345, 7, "degraded")
    # A zero provenance is still present on the response, as a constructor argument makes it.
    empty = pb.GetCreditCostResponse()
    convert.provenance("cache", -0.5, 0, "live", empty.provenance)
    assert empty.HasField("provenance")
    assert empty.provenance.age_ms == 0
