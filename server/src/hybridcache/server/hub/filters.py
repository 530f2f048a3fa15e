"""Which events a subscriber receives, and which tenants a caller may watch.

`WatchFilter` is what the hub matches each event against. Its tenant set is never empty:
the stream handler resolves "every tenant the caller may read" before subscribing, so the
hub cannot leak another tenant's events through an empty (= unrestricted) filter. A caller
that may read every tenant gets the wildcard `ANY_TENANT`, which no real tenant id can
collide with (tenant ids are ``[A-Za-z0-9._-]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hybridcache.server.core.kinds import Kind
from hybridcache.server.hub.events import HubEvent

ANY_TENANT = "*"


@dataclass(frozen=True, slots=True)
class AllowedTenants:
    """What a caller may read, as resolved by the security layer from its credentials.

    `caller` names the principal, for the per-caller stream cap; "" lets the stream
    handler fall back to the peer's address.
    """

    all: bool
    tenants: frozenset[str] = frozenset()
    caller: str = ""


class TenantNotAllowedError(Exception):
    """The caller asked to watch a tenant its credentials do not cover (PERMISSION_DENIED)."""


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """Events of these tenants (or `ANY_TENANT`), of these kinds (empty: every kind), whose
    key starts with `key_prefix` (empty: every key). A resync event (the whole kind of a
    tenant reloaded, no keys) matches any prefix: a prefix watcher must reload too."""

    tenants: frozenset[str]
    kinds: frozenset[Kind] = frozenset()
    key_prefix: str = ""

    def __post_init__(self) -> None:
        if not self.tenants:
            raise ValueError("a watch filter names at least one tenant (or ANY_TENANT)")

    @property
    def all_tenants(self) -> bool:
        return ANY_TENANT in self.tenants

    def matches(self, event: HubEvent) -> bool:
        if not self.all_tenants and event.tenant_id not in self.tenants:
            return False
        return self.matches_kind_and_key(event)

    def matches_kind_and_key(self, event: HubEvent) -> bool:
        """`matches` without the tenant test, for the hub, which indexes by tenant."""
        if self.kinds and event.kind not in self.kinds:
            return False
        if not self.key_prefix or event.resync:
            return True
        return any(key.startswith(self.key_prefix) for key in event.keys)


def resolve_tenants(requested: Iterable[str], allowed: AllowedTenants) -> frozenset[str]:
    """The tenant set of a watch filter: the requested tenants, each checked against what
    the caller may read; none requested means all of those. Raises TenantNotAllowedError."""
    wanted = frozenset(requested)
    if not wanted:
        if allowed.all:
            return frozenset({ANY_TENANT})
        if not allowed.tenants:
            raise TenantNotAllowedError("the caller may not read any tenant")
        return allowed.tenants
    if not allowed.all:
        denied = sorted(wanted - allowed.tenants)
        if denied:
            raise TenantNotAllowedError(f"the caller may not read tenant {denied[0]!r}")
    return wanted
