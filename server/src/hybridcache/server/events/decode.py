"""Change notification bytes + channel -> a validated `Event`, or a `Rejection(reason)`.

Pure: no I/O, no clock of its own (the caller passes `now_ms`), no logging. The accepted
shape is the seed's (docs/CONTRACTS-INTERNAL.md): channel `{app}:{tenantId}:{eventType}`,
body `{eventId, eventType, tenantId, data: {...}}`, plus the optional `publishedAt`,
`data.version`, `data.deleted` and `signature` our own publishers add.

Checks run cheapest first, and nothing untrusted reaches the JSON parser before the size
cap (and, when signing is on, the signature) has passed:

    oversized -> bad-channel -> unknown-event-type -> tenant-not-allowed -> bad-signature
    -> malformed-json -> schema (envelope) -> tenant-mismatch -> type-mismatch -> schema (data)

Numbers are parsed as `Decimal` (`parse_float=Decimal`) so a credit cost of 3.0 is exactly
"3" and 0.1 stays "0.1"; NaN/Infinity are refused. The rejection reasons are a fixed set
(`stats.REJECTION_REASONS`) because they become metric labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum, StrEnum
from typing import Any, Final

from hybridcache.server import codec, ids
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import Value
from hybridcache.server.events import signing

# Tenant ids and keys have the shapes of `ids.py`'s table, as requests do. An event's key
# field may be a user id, so keys take the user-id shape (the widest of the key shapes).
APP_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")  # no ':' and no glob characters
_MAX_EVENT_ID = 128
_MAX_FIELD_NAME = 128
_MAX_CHANGED_FIELDS = 256
_MAX_PERMISSION = 256
_MAX_CHANNEL = 1 + 64 + 1 + 64 + 1 + 64  # generous: app, tenant, event type and separators
_COST_MAX_ADJUSTED = 30  # |exponent| bounds: a cost of 1e999999 must not become a 1 MB string
_COST_MIN_EXPONENT = -30

DEFAULT_MAX_BYTES = 64 * 1024


class Action(StrEnum):
    """What applying an event means."""

    APPLY = "apply"  # the event carries the new value (or a deletion): apply it, version-checked
    REFETCH = "refetch"  # "changed", without a usable new value: fetch the key from the Wrapper
    INVALIDATE = "invalidate"  # an on-demand kind: drop the cached entry, fetch on the next read


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    kind: Kind
    key_field: str
    carries_value: bool  # False: invalidate-only (the seed's user-profile-changed shape)


EVENT_TYPES: Final[Mapping[str, EventType]] = {
    t.name: t
    for t in (
        EventType("credit-config-changed", Kind.CREDIT_COSTS, "operationCode", carries_value=True),
        EventType("role-permissions-changed", Kind.ROLE_PERMISSIONS, "roleId", carries_value=True),
        EventType("user-status-changed", Kind.USER_STATUS, "userId", carries_value=True),
        EventType("feature-flag-changed", Kind.FEATURE_FLAGS, "flagKey", carries_value=True),
        EventType("user-profile-changed", Kind.USER_PROFILES, "userId", carries_value=False),
        EventType("org-unit-changed", Kind.ORG_UNITS, "orgUnitId", carries_value=False),
    )
}


class _NoOldValue(Enum):
    """The event has no `oldValue` member (distinct from `"oldValue": null`)."""

    NO_OLD_VALUE = "no-old-value"


NO_OLD_VALUE: Final = _NoOldValue.NO_OLD_VALUE


@dataclass(frozen=True, slots=True)
class Event:
    """A validated change notification. Never log `value`/`old_value` (profiles are PII)."""

    app: str
    event_id: str
    event_type: str
    tenant_id: str
    kind: Kind
    key: str
    changed_fields: tuple[str, ...]
    action: Action
    value: Value | None  # the new value for Action.APPLY; None there means "deleted"
    deleted: bool
    version: int | None  # the entity version the event carries, if any
    old_value: Value | _NoOldValue | None  # None: "did not exist"; NO_OLD_VALUE: not given
    published_at_ms: int | None
    received_at_ms: int

    @property
    def event_time_ms(self) -> int:
        return self.published_at_ms if self.published_at_ms is not None else self.received_at_ms


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused. `detail` names a field, never a value: safe for debugging."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    apps: frozenset[str] = frozenset({"crm"})
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed_tenants: frozenset[str] | None = None  # None: every tenant
    hmac_keys: tuple[bytes, ...] = ()  # empty: signatures not required (and not checked)
    signature_window_ms: int = signing.DEFAULT_WINDOW_MS

    def __post_init__(self) -> None:
        bad = [app for app in self.apps if not APP_RE.fullmatch(app)]
        if bad or not self.apps:
            raise ValueError(f"app names must match {APP_RE.pattern}: {sorted(bad)}")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be positive")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def decode(
    channel: bytes | str, data: bytes | str, *, config: DecoderConfig, now_ms: int
) -> Event | Rejection:
    """Validate one message. `now_ms` is the receive time (epoch ms; signature window, lag)."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > config.max_bytes:
        return Rejection("oversized")
    try:
        app, tenant_id, event_type = _parse_channel(channel, config)
        if config.hmac_keys:
            raw = _verified(raw, config, now_ms)
        body = _parse_json(raw)
        return _event(body, app, tenant_id, event_type, now_ms)
    except _RejectedError as exc:
        return Rejection(exc.reason, exc.detail)
    except ValueError as exc:  # the codec's errors: a value of the wrong shape
        return Rejection("schema", _field_only(exc))


class _RejectedError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _schema(detail: str) -> _RejectedError:
    return _RejectedError("schema", detail)


def _field_only(exc: ValueError) -> str:
    # The codec's messages sometimes quote the bad value; keep only what precedes a colon.
    return str(exc).split(":", 1)[0][:200]


def _parse_channel(channel: bytes | str, config: DecoderConfig) -> tuple[str, str, EventType]:
    try:
        text = channel.decode("ascii") if isinstance(channel, bytes) else channel
    except UnicodeDecodeError:
        raise _RejectedError("bad-channel") from None
    parts = text.split(":")
    if len(text) > _MAX_CHANNEL or len(parts) != 3:
        raise _RejectedError("bad-channel")
    app, tenant_id, type_name = parts
    if app not in config.apps or not ids.TENANT.matches(tenant_id):
        raise _RejectedError("bad-channel")
    event_type = EVENT_TYPES.get(type_name)
    if event_type is None:
        raise _RejectedError("unknown-event-type")
    if config.allowed_tenants is not None and tenant_id not in config.allowed_tenants:
        raise _RejectedError("tenant-not-allowed")
    return app, tenant_id, event_type


def _verified(raw: bytes, config: DecoderConfig, now_ms: int) -> bytes:
    try:
        return signing.verify(raw, config.hmac_keys, now_ms, config.signature_window_ms)
    except signing.SignatureError as exc:
        raise _RejectedError("bad-signature", str(exc)) from None


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _RejectedError("malformed-json") from None


def _envelope(body: Any, tenant_id: str, event_type: EventType) -> tuple[str, int | None, dict[str, Any]]:
    """Check the top level; return eventId, publishedAt and data."""
    if not isinstance(body, dict):
        raise _schema("the message must be a JSON object")
    event_id = body.get("eventId")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= _MAX_EVENT_ID or not event_id.isprintable():
        raise _schema("field 'eventId' must be a printable string of 1-128 characters")
    if not isinstance(body.get("eventType"), str) or not isinstance(body.get("tenantId"), str):
        raise _schema("fields 'eventType' and 'tenantId' must be strings")
    published_at = body.get("publishedAt")
    if published_at is not None and not _is_count(published_at):
        raise _schema("field 'publishedAt' must be epoch milliseconds")
    data = body.get("data")
    if not isinstance(data, dict):
        raise _schema("field 'data' must be an object")
    # The channel is what Redis ACLs and our subscription vouch for; the body must agree.
    if body["tenantId"] != tenant_id:
        raise _RejectedError("tenant-mismatch")
    if body["eventType"] != event_type.name:
        raise _RejectedError("type-mismatch")
    return event_id, published_at, data


def _event(body: Any, app: str, tenant_id: str, event_type: EventType, now_ms: int) -> Event:
    event_id, published_at, data = _envelope(body, tenant_id, event_type)
    key = data.get(event_type.key_field)
    if not isinstance(key, str) or not ids.USER.matches(key):
        raise _schema(f"field 'data.{event_type.key_field}' must be 1-128 {ids.USER.characters}")
    changed_fields = _changed_fields(data.get("changedFields"))
    if event_type.carries_value:
        action, value, deleted, version, old_value = _change(data, event_type.kind, key)
    else:
        # Invalidate-only: anything else in `data` is ignored (and must not be PII anyway).
        action, value, deleted, version, old_value = Action.INVALIDATE, None, False, None, NO_OLD_VALUE
    return Event(
        app=app,
        event_id=event_id,
        event_type=event_type.name,
        tenant_id=tenant_id,
        kind=event_type.kind,
        key=key,
        changed_fields=changed_fields,
        action=action,
        value=value,
        deleted=deleted,
        version=version,
        old_value=old_value,
        published_at_ms=published_at,
        received_at_ms=now_ms,
    )


def _change(
    data: dict[str, Any], kind: Kind, key: str
) -> tuple[Action, Value | None, bool, int | None, Value | _NoOldValue | None]:
    """The value part of a replicated kind's event: action, new value, deleted, version, old value."""
    version = data.get("version")
    if version is not None and not _is_count(version):
        raise _schema("field 'data.version' must be a non-negative integer")
    deleted = data.get("deleted", False)
    if not isinstance(deleted, bool):
        raise _schema("field 'data.deleted' must be a boolean")
    build = _VALUE_BUILDERS[kind]

    old_value: Value | _NoOldValue | None = NO_OLD_VALUE
    if "oldValue" in data:
        old_value = None if data["oldValue"] is None else build(key, data["oldValue"], 0, "oldValue")

    new_raw = data.get("newValue")
    if deleted:
        if new_raw is not None:
            raise _schema("field 'data.newValue' must be null or absent when 'deleted' is true")
        return Action.APPLY, None, True, version, old_value
    if new_raw is None:
        # No usable new value ("newValue" absent, or null without "deleted"): ask the Wrapper.
        return Action.REFETCH, None, False, version, old_value
    return Action.APPLY, build(key, new_raw, version or 0, "newValue"), False, version, old_value


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _changed_fields(value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or len(value) > _MAX_CHANGED_FIELDS
        or not all(isinstance(f, str) and 0 < len(f) <= _MAX_FIELD_NAME for f in value)
    ):
        raise _schema("field 'data.changedFields' must be a list of field names")
    return tuple(value)


def _bounded_cost(raw: object, field: str) -> str | int | Decimal:
    """Check a cost before the codec renders it: finite, non-negative, of sane magnitude."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise _schema(f"field 'data.{field}' must be a decimal number or string")
    try:
        number = Decimal(raw) if not isinstance(raw, Decimal) else raw
    except InvalidOperation:
        raise _schema(f"field 'data.{field}' must be a decimal number or string") from None
    if not number.is_finite() or number < 0:
        raise _schema(f"field 'data.{field}' must be a finite, non-negative number")
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if number and (number.adjusted() > _COST_MAX_ADJUSTED or exponent < _COST_MIN_EXPONENT):
        raise _schema(f"field 'data.{field}' is out of range")
    return raw


def _credit(key: str, raw: object, version: int, field: str) -> Value:
    return codec.parse_item(
        Kind.CREDIT_COSTS, {"operationCode": key, "cost": _bounded_cost(raw, field), "version": version}
    )


def _role(key: str, raw: object, version: int, field: str) -> Value:
    if not isinstance(raw, list) or not all(
        isinstance(p, str) and 0 < len(p) <= _MAX_PERMISSION for p in raw
    ):
        raise _schema(f"field 'data.{field}' must be a list of permission strings")
    return codec.parse_item(Kind.ROLE_PERMISSIONS, {"roleId": key, "permissions": raw, "version": version})


def _user_status(key: str, raw: object, version: int, field: str) -> Value:
    if not isinstance(raw, dict):
        raise _schema(f"field 'data.{field}' must be an object {{active, roles}}")
    roles = raw.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) and ids.KEY.matches(r) for r in roles):
        raise _schema(f"field 'data.{field}.roles' must be a list of role ids")
    return codec.parse_item(
        Kind.USER_STATUS, {"userId": key, "active": raw.get("active"), "roles": roles, "version": version}
    )


def _flag(key: str, raw: object, version: int, field: str) -> Value:
    if not isinstance(raw, dict):
        raise _schema(f"field 'data.{field}' must be an object {{enabled, value}}")
    body: dict[str, Any] = {"flagKey": key, "enabled": raw.get("enabled"), "version": version}
    if "value" in raw:
        body["value"] = raw["value"]
    return codec.parse_item(Kind.FEATURE_FLAGS, body)


_VALUE_BUILDERS: Final[dict[Kind, Callable[[str, object, int, str], Value]]] = {
    Kind.CREDIT_COSTS: _credit,
    Kind.ROLE_PERMISSIONS: _role,
    Kind.USER_STATUS: _user_status,
    Kind.FEATURE_FLAGS: _flag,
}
