"""Request and response bodies of the development Wrapper (and so of docs/wrapper-api.yaml).

Python attributes are snake_case; the JSON names are the camelCase aliases of the
contract (docs/CONTRACTS-INTERNAL.md). Costs are decimal *strings* on HTTP: a JSON number
would pass through a binary float in most clients.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from hybridcache.server.core.values import canonical_decimal


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)


class _Body(_Model):
    # Request bodies refuse unknown fields (a typo must not be a silent no-op) and are
    # strict ("yes" is not a boolean, 1 is not a string).
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", strict=True
    )


class ErrorBody(_Model):
    error: str = Field(examples=["not_found"])
    detail: str = ""


# ---- public API ------------------------------------------------------------------------


class Tenant(_Model):
    tenant_id: str = Field(examples=["acme"])
    name: str = Field(examples=["Acme Corp"])


class TenantList(_Model):
    tenants: list[Tenant]


class CreditCostItem(_Model):
    operation_code: str = Field(examples=["crm.leads.create"])
    cost: str = Field(description="exact decimal", examples=["2.5"])
    version: int


class RoleItem(_Model):
    role_id: str = Field(examples=["sales-rep"])
    permissions: list[str] = Field(examples=[["crm.leads.read", "crm.contacts.*"]])
    version: int


class UserStatusItem(_Model):
    user_id: str = Field(examples=["user-1"])
    active: bool
    roles: list[str] = Field(examples=[["sales-rep"]])
    version: int


class FeatureFlagItem(_Model):
    flag_key: str = Field(examples=["crm.ai-summaries"])
    enabled: bool
    value: str = ""
    version: int


class UserProfileItem(_Model):
    """PII."""

    user_id: str
    display_name: str
    email: str
    title: str
    department: str
    org_unit_id: str
    phone: str
    version: int


class OrgUnitRef(_Model):
    org_unit_id: str
    name: str


class OrgUnitItem(_Model):
    org_unit_id: str = Field(examples=["org-sales-emea"])
    name: str
    parent_id: str | None
    manager_user_id: str | None
    ancestors: list[OrgUnitRef] = Field(description="parent first, root last")
    children: list[OrgUnitRef]
    version: int


ItemT = TypeVar("ItemT", bound=BaseModel)


class Snapshot(_Model, Generic[ItemT]):
    tenant_id: str
    kind: str
    revision: int = Field(description="the tenant's change counter when the snapshot was taken")
    items: list[ItemT]


class Digest(_Model):
    """A tenant-kind's anti-entropy digest (docs/CONTRACTS-INTERNAL.md, "Digests")."""

    tenant_id: str
    kind: str
    revision: int = Field(description="the tenant's change counter when the digest was taken")
    algorithm: str = Field(examples=["sha256-xor-v1"])
    bucket_count: int = Field(examples=[256])
    count: int = Field(description="items digested")
    digest: str = Field(description="top digest, 32 lowercase hex digits")


class DigestBuckets(Digest):
    buckets: list[str] = Field(description="bucket_count digests (32 hex digits each), bucket 0 first")


class BucketSnapshot(Snapshot[ItemT], Generic[ItemT]):
    bucket_count: int
    bucket: int


# ---- admin -----------------------------------------------------------------------------


class CreditCostBody(_Body):
    cost: str = Field(description="exact decimal; a JSON string, or an integer", examples=["3.0"])

    @field_validator("cost", mode="before")
    @classmethod
    def _exact(cls, raw: Any) -> str:
        if isinstance(raw, bool | float) or not isinstance(raw, str | int):
            raise ValueError('cost must be a decimal string such as "2.5" (a JSON float is not exact)')
        text = canonical_decimal(raw)  # ValueError for anything but a finite decimal
        if text.startswith("-"):
            raise ValueError("cost must not be negative")
        return text


class RoleBody(_Body):
    permissions: list[str]


class UserStatusBody(_Body):
    active: bool
    roles: list[str]


class FeatureFlagBody(_Body):
    enabled: bool
    value: str = ""


class ProfilePatch(_Body):
    display_name: str | None = None
    email: str | None = None
    title: str | None = None
    department: str | None = None
    org_unit_id: str | None = None
    phone: str | None = None


class OrgUnitPatch(_Body):
    name: str | None = None
    parent_id: str | None = None
    manager_user_id: str | None = None


class PublishRawBody(_Body):
    channel: str = Field(examples=["crm:acme:credit-config-changed"])
    message: str = Field(description="sent as is: any text, valid JSON or not")


ItemOrNone = TypeVar("ItemOrNone")


class WriteResult(_Model, Generic[ItemOrNone]):
    tenant_id: str
    item: ItemOrNone | None = Field(description="the item after the write; null when deleted")
    version: int
    revision: int
    published: bool = Field(description="every notification of this write reached Redis")
    event_ids: list[str] = Field(description="the notifications built (published or not)")


class PublishResult(_Model):
    published: bool


class StatsBody(_Model):
    requests: dict[str, int] = Field(description='per route template, e.g. "GET /api/tenants"')
    by_tenant: dict[str, dict[str, int]] = Field(description="per route template, per tenant")
    total: int
    recent_paths: list[str] = Field(description="the last /api request paths as received, oldest first")
    traceparents: list[str] = Field(
        description="W3C traceparent headers of the last 100 /api requests that had one"
    )


class FaultsBody(_Body):
    latency_ms: int = Field(0, ge=0, le=600_000)
    fail_status: int | None = Field(None, ge=400, le=599)
    hang: bool = False
    reset_connections: bool = False
    tenants: list[str] | None = Field(None, description="only these tenants' requests; null: all")
    routes: list[str] | None = Field(
        None, description='only these route templates, e.g. "GET /api/tenants"; null: all'
    )
