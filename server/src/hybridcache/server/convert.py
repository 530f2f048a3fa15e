"""Domain values -> protobuf messages (the only place that knows both)."""

from __future__ import annotations

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import (
    CreditCost,
    FeatureFlag,
    OrgUnit,
    RolePermissions,
    UserProfile,
    UserStatus,
)
from hybridcache.v1 import hybridcache_pb2 as pb

KIND_TO_PROTO: dict[Kind, pb.Kind.ValueType] = {
    Kind.CREDIT_COSTS: pb.KIND_CREDIT_COSTS,
    Kind.ROLE_PERMISSIONS: pb.KIND_ROLE_PERMISSIONS,
    Kind.USER_STATUS: pb.KIND_USER_STATUS,
    Kind.FEATURE_FLAGS: pb.KIND_FEATURE_FLAGS,
    Kind.USER_PROFILES: pb.KIND_USER_PROFILES,
    Kind.ORG_UNITS: pb.KIND_ORG_UNITS,
}
PROTO_TO_KIND: dict[int, Kind] = {v: k for k, v in KIND_TO_PROTO.items()}

SOURCE_TO_PROTO: dict[str, pb.Source.ValueType] = {
    "cache": pb.SOURCE_CACHE,
    "wrapper": pb.SOURCE_WRAPPER,
    "stale": pb.SOURCE_STALE,
}
FRESHNESS_TO_PROTO: dict[str, pb.Freshness.ValueType] = {
    "live": pb.FRESHNESS_LIVE,
    "degraded": pb.FRESHNESS_DEGRADED,
}


def provenance(source: str, age_s: float, version: int, freshness: str) -> pb.Provenance:
    return pb.Provenance(
        source=SOURCE_TO_PROTO[source],
        age_ms=max(0, int(age_s * 1000)),
        version=version,
        freshness=FRESHNESS_TO_PROTO[freshness],
    )


def credit_cost(value: CreditCost) -> pb.CreditCost:
    return pb.CreditCost(operation_code=value.operation_code, cost=pb.Decimal(value=value.cost))


def role_permissions(value: RolePermissions) -> pb.RolePermissions:
    return pb.RolePermissions(role_id=value.role_id, permissions=sorted(value.permissions))


def user_status(value: UserStatus) -> pb.UserStatus:
    return pb.UserStatus(user_id=value.user_id, active=value.active, role_ids=value.role_ids)


def feature_flag(value: FeatureFlag) -> pb.FeatureFlag:
    return pb.FeatureFlag(flag_key=value.flag_key, enabled=value.enabled, value=value.value)


def user_profile(value: UserProfile) -> pb.UserProfile:
    return pb.UserProfile(
        user_id=value.user_id,
        display_name=value.display_name,
        email=value.email,
        title=value.title,
        department=value.department,
        org_unit_id=value.org_unit_id,
        phone=value.phone,
    )


def org_unit(value: OrgUnit) -> pb.OrgUnit:
    return pb.OrgUnit(
        org_unit_id=value.org_unit_id,
        name=value.name,
        parent_id=value.parent_id,
        manager_user_id=value.manager_user_id,
        ancestors=[pb.OrgUnitRef(org_unit_id=r.org_unit_id, name=r.name) for r in value.ancestors],
        children=[pb.OrgUnitRef(org_unit_id=r.org_unit_id, name=r.name) for r in value.children],
    )
