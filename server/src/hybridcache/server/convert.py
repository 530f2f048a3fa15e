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
    "repairing": pb.FRESHNESS_REPAIRING,  # this key awaits a refetch (events/repair.py)
}


# Each conversion builds a new message, or fills `into`: an empty message field of the message
# being built (e.g. `response.credit_cost`). Filling in place skips building a sub-message and
# copying it into its parent (which a constructor argument or CopyFrom does): a cache-hit
# response costs ~1.3 µs that way instead of ~3.8 µs. The messages are the same either way.


def provenance(
    source: str, age_s: float, version: int, freshness: str, into: pb.Provenance | None = None
) -> pb.Provenance:
    message = pb.Provenance() if into is None else into
    message.source = SOURCE_TO_PROTO[source]
    message.age_ms = max(0, int(age_s * 1000))
    message.version = version
    message.freshness = FRESHNESS_TO_PROTO[freshness]
    return message


def credit_cost(value: CreditCost, into: pb.CreditCost | None = None) -> pb.CreditCost:
    message = pb.CreditCost() if into is None else into
    message.operation_code = value.operation_code
    message.cost.value = value.cost
    return message


def role_permissions(value: RolePermissions, into: pb.RolePermissions | None = None) -> pb.RolePermissions:
    message = pb.RolePermissions() if into is None else into
    message.role_id = value.role_id
    message.permissions.extend(sorted(value.permissions))
    return message


def user_status(value: UserStatus, into: pb.UserStatus | None = None) -> pb.UserStatus:
    message = pb.UserStatus() if into is None else into
    message.user_id = value.user_id
    message.active = value.active
    message.role_ids.extend(value.role_ids)
    return message


def feature_flag(value: FeatureFlag, into: pb.FeatureFlag | None = None) -> pb.FeatureFlag:
    message = pb.FeatureFlag() if into is None else into
    message.flag_key = value.flag_key
    message.enabled = value.enabled
    message.value = value.value
    return message


def user_profile(value: UserProfile, into: pb.UserProfile | None = None) -> pb.UserProfile:
    message = pb.UserProfile() if into is None else into
    message.user_id = value.user_id
    message.display_name = value.display_name
    message.email = value.email
    message.title = value.title
    message.department = value.department
    message.org_unit_id = value.org_unit_id
    message.phone = value.phone
    return message


def org_unit(value: OrgUnit, into: pb.OrgUnit | None = None) -> pb.OrgUnit:
    message = pb.OrgUnit() if into is None else into
    message.org_unit_id = value.org_unit_id
    message.name = value.name
    message.parent_id = value.parent_id
    message.manager_user_id = value.manager_user_id
    for ref in value.ancestors:
        message.ancestors.add(org_unit_id=ref.org_unit_id, name=ref.name)
    for ref in value.children:
        message.children.add(org_unit_id=ref.org_unit_id, name=ref.name)
    return message
