"""How each kind is held: the seed's `DATA_CATEGORIES`, with TTLs and degraded-mode rules.

REPLICA kinds are held in full per tenant and kept current by change notifications; only
kinds the Wrapper serves snapshots of (`SNAPSHOT_KINDS`) can be replicated. ON_DEMAND kinds
are fetched when asked for and kept for a (possibly adaptive) TTL; the TTL fields below
apply to them only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from hybridcache.server.core.kinds import Kind, Tier, WhenWrapperDown

SNAPSHOT_KINDS: Final = frozenset(
    {Kind.CREDIT_COSTS, Kind.ROLE_PERMISSIONS, Kind.USER_STATUS, Kind.FEATURE_FLAGS}
)
"""Kinds the Wrapper has per-tenant snapshot endpoints for (docs/CONTRACTS-INTERNAL.md)."""


@dataclass(frozen=True, slots=True)
class KindPolicy:
    kind: Kind
    tier: Tier
    ttl_s: float = 300.0  # on-demand: how long an entry is fresh
    negative_ttl_s: float = 30.0  # on-demand: how long a NOT_FOUND is remembered (also unknown tenants)
    max_stale_s: float = 3600.0  # on-demand: how long past expiry an entry may be served, Wrapper down
    when_down: WhenWrapperDown = WhenWrapperDown.SERVE_STALE
    refresh_ahead: float = 0.2  # the last fraction of the TTL in which a hit triggers a background refresh
    adaptive_ttl: bool = True
    ttl_min_s: float = 30.0  # adaptive bounds; the range is widened to contain ttl_s
    ttl_max_s: float = 900.0

    def __post_init__(self) -> None:
        if self.tier is Tier.REPLICA and self.kind not in SNAPSHOT_KINDS:
            raise ValueError(f"{self.kind} cannot be replicated: the Wrapper serves no snapshot of it")
        if not self.ttl_s > 0:
            raise ValueError(f"{self.kind}: ttl_s must be > 0")
        if self.negative_ttl_s < 0 or self.max_stale_s < 0:
            raise ValueError(f"{self.kind}: negative_ttl_s and max_stale_s must be >= 0")
        if not 0 <= self.refresh_ahead < 1:
            raise ValueError(f"{self.kind}: refresh_ahead must be in [0, 1)")
        if not 0 < self.ttl_min_s <= self.ttl_max_s:
            raise ValueError(f"{self.kind}: need 0 < ttl_min_s <= ttl_max_s")

    @property
    def ttl_bounds(self) -> tuple[float, float]:
        """The range adaptive TTL moves in: [ttl_min_s, ttl_max_s] widened to contain ttl_s, so a
        configured TTL is never overridden at start."""
        return min(self.ttl_min_s, self.ttl_s), max(self.ttl_max_s, self.ttl_s)


def _policy(kind: Kind, tier: Tier) -> KindPolicy:
    return KindPolicy(kind=kind, tier=tier)


DEFAULT_POLICIES: Mapping[Kind, KindPolicy] = MappingProxyType(
    {
        Kind.CREDIT_COSTS: _policy(Kind.CREDIT_COSTS, Tier.REPLICA),
        Kind.ROLE_PERMISSIONS: _policy(Kind.ROLE_PERMISSIONS, Tier.REPLICA),
        Kind.USER_STATUS: _policy(Kind.USER_STATUS, Tier.REPLICA),
        Kind.FEATURE_FLAGS: _policy(Kind.FEATURE_FLAGS, Tier.REPLICA),
        Kind.USER_PROFILES: _policy(Kind.USER_PROFILES, Tier.ON_DEMAND),
        Kind.ORG_UNITS: _policy(Kind.ORG_UNITS, Tier.ON_DEMAND),
    }
)
"""The seed's split: critical data replicated, reference data on demand with a 5-minute TTL."""
