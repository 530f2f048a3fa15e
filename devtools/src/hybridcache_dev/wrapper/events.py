"""Change notifications in the seed's format, built from the store's `Change`s.

Channel `{app}:{tenantId}:{eventType}`, body
`{"eventId", "eventType", "tenantId", "data": {...}, "publishedAt"}` (docs/CONTRACTS-INTERNAL.md).

Costs go out as JSON *numbers*, as the seed's JavaScript publisher sends them
(`newValue: 3.0`), but written from the exact decimal text: the body is serialised by
`dumps_exact`, which writes a `Decimal` as its digits. Going through a float would turn
"0.1" into 0.1000000000000000055... for any consumer that parses exactly.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import canonical_decimal
from hybridcache_dev.wrapper.store import Change

EVENT_TYPES: dict[Kind, str] = {
    Kind.CREDIT_COSTS: "credit-config-changed",
    Kind.ROLE_PERMISSIONS: "role-permissions-changed",
    Kind.USER_STATUS: "user-status-changed",
    Kind.FEATURE_FLAGS: "feature-flag-changed",
    Kind.USER_PROFILES: "user-profile-changed",
    Kind.ORG_UNITS: "org-unit-changed",
}


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    tenant_id: str
    data: dict[str, Any]
    published_at: int  # epoch milliseconds

    def channel(self, app: str) -> str:
        return f"{app}:{self.tenant_id}:{self.event_type}"

    def message(self) -> str:
        """The JSON body, with costs as exact number literals."""
        return dumps_exact(
            {
                "eventId": self.event_id,
                "eventType": self.event_type,
                "tenantId": self.tenant_id,
                "data": self.data,
                "publishedAt": self.published_at,
            }
        )


def event_for(change: Change, *, include_value: bool = True) -> Event:
    """The notification for one change.

    include_value=False leaves out newValue/oldValue (roles, user status, flags only: the
    contract makes them optional there) so that consumers must refetch the item.
    """
    return Event(
        event_id=f"change-{uuid.uuid4().hex}",
        event_type=EVENT_TYPES[change.kind],
        tenant_id=change.tenant_id,
        data=_data(change, include_value=include_value),
        published_at=time.time_ns() // 1_000_000,
    )


def _data(change: Change, *, include_value: bool) -> dict[str, Any]:
    kind = change.kind
    if kind is Kind.USER_PROFILES:
        # The seed: only which fields changed; PII never travels on the bus.
        return {"userId": change.key, "changedFields": list(change.changed_fields)}
    if kind is Kind.ORG_UNITS:
        return {"orgUnitId": change.key, "changedFields": list(change.changed_fields)}
    if kind is Kind.CREDIT_COSTS:
        # The seed's shape always has newValue and oldValue (null when absent).
        data: dict[str, Any] = {
            "configId": change.config_id,
            "operationCode": change.key,
            "changedFields": list(change.changed_fields),
            "newValue": _cost(change.new),
            "oldValue": _cost(change.old),
            "version": change.version,
        }
    else:
        key_field = {
            Kind.ROLE_PERMISSIONS: "roleId",
            Kind.USER_STATUS: "userId",
            Kind.FEATURE_FLAGS: "flagKey",
        }[kind]
        data = {key_field: change.key, "changedFields": list(change.changed_fields)}
        if include_value and change.new is not None:
            data["newValue"] = _value(kind, change.new)
        if include_value and change.old is not None:
            data["oldValue"] = _value(kind, change.old)
        data["version"] = change.version
    if change.deleted:
        data["deleted"] = True
    return data


def _cost(item: dict[str, Any] | None) -> Decimal | None:
    return None if item is None else Decimal(item["cost"])


def _value(kind: Kind, item: dict[str, Any]) -> Any:
    if kind is Kind.ROLE_PERMISSIONS:
        return list(item["permissions"])
    if kind is Kind.USER_STATUS:
        return {"active": item["active"], "roles": list(item["roles"])}
    return {"enabled": item["enabled"], "value": item["value"]}


def dumps_exact(value: Any) -> str:  # noqa: PLR0911 (one return per JSON type)
    """Compact JSON like JavaScript's JSON.stringify, with each Decimal as its exact digits.

    Refuses floats: every number on this bus is an int or an exact decimal.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return canonical_decimal(value)  # digits only: a valid JSON number literal
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} exactly")
