"""Typed shapes of the JSON-valued settings: HYBRIDCACHE_CALLERS and HYBRIDCACHE_KIND_POLICIES.

JSON types are taken as written: a number must be a JSON number and a flag `true` or
`false` (`"adaptive_ttl": "false"` is an error, not a truthy string); unknown keys are
errors, so a misspelt key never silently does nothing. Enumerations (tier, when_down) are
written as their values ("on-demand", "serve-stale").

To give callers a new setting, add an optional field to `CallerEntry` (None: the server-wide
default applies) and read it where the caller is admitted; the README's settings table
describes the entry's keys (config.py, `callers`).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from hybridcache.server.api.validation import check_tenant_id
from hybridcache.server.core.errors import InvalidRequest
from hybridcache.server.core.kinds import Tier, WhenWrapperDown
from hybridcache.server.core.policy import KindPolicy

ALL_TENANTS = "*"

_STRICT_JSON = ConfigDict(extra="forbid", frozen=True)


class CallerEntry(BaseModel):
    """One caller: who it is (the SHA-256 of its bearer token), what it may read, its limits."""

    model_config = _STRICT_JSON

    name: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    token_sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    tenants: Annotated[list[StrictStr], Field(min_length=1)]  # tenant ids, or ["*"] for all
    rate_per_s: Annotated[StrictFloat, Field(ge=0)] | None = None  # None: HYBRIDCACHE_CALLER_RATE_PER_S
    burst: Annotated[StrictInt, Field(ge=1)] | None = None  # None: HYBRIDCACHE_CALLER_BURST
    max_in_flight: Annotated[StrictInt, Field(ge=0)] | None = None  # None: HYBRIDCACHE_CALLER_MAX_IN_FLIGHT
    # Binds the token to the caller's client certificate (mTLS): its subject CN or a SAN must
    # equal this, else UNAUTHENTICATED CERTIFICATE_MISMATCH (api/auth.py).
    tls_identity: Annotated[StrictStr, Field(min_length=1, max_length=1024)] | None = None

    @field_validator("tenants")
    @classmethod
    def _tenant_ids(cls, tenants: list[str]) -> list[str]:
        for tenant in tenants:
            if tenant == ALL_TENANTS:
                continue
            try:
                check_tenant_id(tenant)
            except InvalidRequest as exc:
                raise ValueError(f"{tenant!r}: {exc}") from None
        return tenants

    @property
    def all_tenants(self) -> bool:
        return ALL_TENANTS in self.tenants


def check_unique_callers(callers: list[CallerEntry]) -> list[CallerEntry]:
    """Two entries with one name or one token would make limits or identity ambiguous."""
    for what, key in (("name", "name"), ("token_sha256", "token_sha256")):
        seen: set[str] = set()
        for index, caller in enumerate(callers):
            value = getattr(caller, key).lower()
            if value in seen:
                raise ValueError(f"entry {index}: {what} repeats an earlier entry's")
            seen.add(value)
    return callers


class KindPolicyOverride(BaseModel):
    """What HYBRIDCACHE_KIND_POLICIES may change of one kind's policy (core/policy.py)."""

    model_config = _STRICT_JSON

    tier: Tier | None = None
    ttl_s: StrictFloat | None = None
    negative_ttl_s: StrictFloat | None = None
    max_stale_s: StrictFloat | None = None
    when_down: WhenWrapperDown | None = None
    refresh_ahead: StrictFloat | None = None
    adaptive_ttl: StrictBool | None = None
    ttl_min_s: StrictFloat | None = None
    ttl_max_s: StrictFloat | None = None

    def changes(self) -> dict[str, Any]:
        """Only the fields the override sets (the rest of the policy keeps its default)."""
        return self.model_dump(exclude_unset=True)

    def apply(self, policy: KindPolicy) -> KindPolicy:
        """The policy with these changes; ValueError when the result is impossible."""
        return dataclasses.replace(policy, **self.changes())
