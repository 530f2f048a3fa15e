"""The Wrapper's JSON shapes <-> domain values, in one place.

Used by the Wrapper client (HTTP item and snapshot bodies), the event decoder (a change
notification's `newValue`) and the development Wrapper (which produces the same shapes).
The shapes are documented in docs/wrapper-api.yaml.

Every parser raises `ValueError` with a message that names the bad field; callers turn
that into their own error (a malformed Wrapper answer, a rejected event).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import (
    CreditCost,
    FeatureFlag,
    OrgUnit,
    OrgUnitRef,
    RolePermissions,
    UserProfile,
    UserStatus,
    Value,
    canonical_decimal,
)

# The JSON field that holds each kind's key (entity id), in items and in events.
KEY_FIELD: dict[Kind, str] = {
    Kind.CREDIT_COSTS: "operationCode",
    Kind.ROLE_PERMISSIONS: "roleId",
    Kind.USER_STATUS: "userId",
    Kind.FEATURE_FLAGS: "flagKey",
    Kind.USER_PROFILES: "userId",
    Kind.ORG_UNITS: "orgUnitId",
}


def _str(body: Mapping[str, Any], field: str, *, default: str | None = None) -> str:
    value = body.get(field, default)
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} must be a string")
    return value


def _bool(body: Mapping[str, Any], field: str) -> bool:
    value = body.get(field)
    if not isinstance(value, bool):
        raise ValueError(f"field {field!r} must be a boolean")
    return value


def _str_list(body: Mapping[str, Any], field: str) -> list[str]:
    value = body.get(field)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"field {field!r} must be a list of strings")
    return value


def _version(body: Mapping[str, Any]) -> int:
    value = body.get("version", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("field 'version' must be a non-negative integer")
    return value


def parse_cost(raw: Any) -> str:
    """A cost given as a JSON string ("2.5") or number (parsed with parse_float=Decimal)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise ValueError("cost must be a decimal string or number")
    return canonical_decimal(raw)


def _credit_cost(body: Mapping[str, Any]) -> CreditCost:
    return CreditCost(_str(body, "operationCode"), parse_cost(body.get("cost")), _version(body))


def _role(body: Mapping[str, Any]) -> RolePermissions:
    return RolePermissions(_str(body, "roleId"), frozenset(_str_list(body, "permissions")), _version(body))


def _user_status(body: Mapping[str, Any]) -> UserStatus:
    return UserStatus(
        _str(body, "userId"), _bool(body, "active"), tuple(_str_list(body, "roles")), _version(body)
    )


def _flag(body: Mapping[str, Any]) -> FeatureFlag:
    return FeatureFlag(
        _str(body, "flagKey"), _bool(body, "enabled"), _str(body, "value", default=""), _version(body)
    )


def _profile(body: Mapping[str, Any]) -> UserProfile:
    return UserProfile(
        user_id=_str(body, "userId"),
        display_name=_str(body, "displayName", default=""),
        email=_str(body, "email", default=""),
        title=_str(body, "title", default=""),
        department=_str(body, "department", default=""),
        org_unit_id=_str(body, "orgUnitId", default=""),
        phone=_str(body, "phone", default=""),
        version=_version(body),
    )


def _refs(body: Mapping[str, Any], field: str) -> tuple[OrgUnitRef, ...]:
    value = body.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError(f"field {field!r} must be a list of objects")
    return tuple(OrgUnitRef(_str(ref, "orgUnitId"), _str(ref, "name", default="")) for ref in value)


def _org_unit(body: Mapping[str, Any]) -> OrgUnit:
    parent = body.get("parentId") or ""
    manager = body.get("managerUserId") or ""
    if not isinstance(parent, str) or not isinstance(manager, str):
        raise ValueError("fields 'parentId' and 'managerUserId' must be strings or null")
    return OrgUnit(
        org_unit_id=_str(body, "orgUnitId"),
        name=_str(body, "name", default=""),
        parent_id=parent,
        manager_user_id=manager,
        ancestors=_refs(body, "ancestors"),
        children=_refs(body, "children"),
        version=_version(body),
    )


_PARSERS: dict[Kind, Callable[[Mapping[str, Any]], Value]] = {
    Kind.CREDIT_COSTS: _credit_cost,
    Kind.ROLE_PERMISSIONS: _role,
    Kind.USER_STATUS: _user_status,
    Kind.FEATURE_FLAGS: _flag,
    Kind.USER_PROFILES: _profile,
    Kind.ORG_UNITS: _org_unit,
}


def parse_item(kind: Kind, body: Any) -> Value:
    """Parse one Wrapper item body (as served by the item and snapshot endpoints)."""
    if not isinstance(body, Mapping):
        raise ValueError(f"{kind} item must be a JSON object")
    return _PARSERS[kind](body)


def parse_items(kind: Kind, raw: Any) -> dict[str, Value]:
    """A snapshot's `items` list -> key -> value."""
    if not isinstance(raw, list):
        raise ValueError("'items' must be a list")
    items: dict[str, Value] = {}
    for body in raw:
        value = parse_item(kind, body)
        items[key_of(kind, value)] = value
    return items


def key_of(kind: Kind, value: Value) -> str:
    """The key an item is stored under (its entity id)."""
    key = getattr(value, _ATTR_OF_KEY[kind])
    assert isinstance(key, str)
    return key


_ATTR_OF_KEY: dict[Kind, str] = {
    Kind.CREDIT_COSTS: "operation_code",
    Kind.ROLE_PERMISSIONS: "role_id",
    Kind.USER_STATUS: "user_id",
    Kind.FEATURE_FLAGS: "flag_key",
    Kind.USER_PROFILES: "user_id",
    Kind.ORG_UNITS: "org_unit_id",
}
