"""Immutable domain values the cache holds, one class per kind.

They are plain frozen, slotted dataclasses: cheap to hold by the million, safe to share
between threads without copying, and free of any wire format (the Wrapper's JSON is
parsed into them by the Wrapper client and the event decoder; the gRPC layer turns them
into protobuf messages).

Credits are exact decimals kept as their canonical text (see `canonical_decimal`): a
`decimal.Decimal` costs ~100 bytes per entry, a short str ~50, and the wire format is a
string anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


def canonical_decimal(raw: str | int | Decimal) -> str:
    """Return the canonical text of an exact decimal: no exponent, no trailing zeros.

    "2.50" -> "2.5", "3.0" -> "3", 3 -> "3". Raises ValueError for anything that is not a
    finite decimal number (floats are refused: parse JSON with parse_float=Decimal).
    """
    if isinstance(raw, bool | float):
        raise ValueError("credits must be an exact decimal, not a binary float")
    try:
        value = Decimal(raw) if not isinstance(raw, Decimal) else raw
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {raw!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite decimal number: {raw!r}")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text


@dataclass(frozen=True, slots=True)
class CreditCost:
    operation_code: str
    cost: str  # canonical decimal text
    version: int = 0


@dataclass(frozen=True, slots=True)
class RolePermissions:
    role_id: str
    permissions: frozenset[str]
    version: int = 0


@dataclass(frozen=True, slots=True)
class UserStatus:
    user_id: str
    active: bool
    role_ids: tuple[str, ...]
    version: int = 0


@dataclass(frozen=True, slots=True)
class FeatureFlag:
    flag_key: str
    enabled: bool
    value: str = ""
    version: int = 0


@dataclass(frozen=True, slots=True)
class UserProfile:
    """PII: never log an instance or its fields."""

    user_id: str
    display_name: str
    email: str
    title: str
    department: str
    org_unit_id: str
    phone: str
    version: int = 0

    def __repr__(self) -> str:  # keep PII out of logs and tracebacks
        return f"UserProfile(user_id={self.user_id!r}, <redacted>)"


@dataclass(frozen=True, slots=True)
class OrgUnitRef:
    org_unit_id: str
    name: str


@dataclass(frozen=True, slots=True)
class OrgUnit:
    org_unit_id: str
    name: str
    parent_id: str
    manager_user_id: str
    ancestors: tuple[OrgUnitRef, ...]
    children: tuple[OrgUnitRef, ...]
    version: int = 0


Value = CreditCost | RolePermissions | UserStatus | FeatureFlag | UserProfile | OrgUnit
