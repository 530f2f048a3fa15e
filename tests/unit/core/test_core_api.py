"""The core's public surface: the facade's names, the default policies, stats' shape."""

from __future__ import annotations

import dataclasses

import pytest

from hybridcache.server import core
from hybridcache.server.core import (
    DEFAULT_POLICIES,
    HybridCache,
    InvalidRequest,
    Kind,
    KindPolicy,
    Read,
    Source,
    Tier,
    cache,
)
from hybridcache.server.core.results import make_read
from tests.unit.core.fakes import FakeWrapper, cost

pytestmark = pytest.mark.timeout(30)


def test_facade_exports_exactly_all() -> None:
    public = {name for name in vars(core) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(core, name)).__name__ == "module"}
    assert public - modules == set(core.__all__)
    for name in ("Read", "Source", "Change", "ApplyOutcome", "MISSING", "PermissionDecision", "HybridCache"):
        assert getattr(cache, name) is getattr(core, name)  # documented as living in core.cache


def test_default_policies_are_the_seeds_split() -> None:
    replicated = {k for k, p in DEFAULT_POLICIES.items() if p.tier is Tier.REPLICA}
    assert replicated == {Kind.CREDIT_COSTS, Kind.ROLE_PERMISSIONS, Kind.USER_STATUS, Kind.FEATURE_FLAGS}
    assert DEFAULT_POLICIES[Kind.USER_PROFILES].ttl_s == 300.0
    assert DEFAULT_POLICIES[Kind.ORG_UNITS].tier is Tier.ON_DEMAND
    assert all(policy.kind is kind for kind, policy in DEFAULT_POLICIES.items())


def test_make_read_builds_the_same_frozen_read() -> None:
    fast = make_read(cost("x"), Source.CACHE, 1.5, 1)
    assert fast == Read(cost("x"), Source.CACHE, 1.5, 1)
    assert hash(fast) == hash(Read(cost("x"), Source.CACHE, 1.5, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.version = 2  # type: ignore[misc]


def test_unconfigured_kind_is_an_invalid_request() -> None:
    only_costs = HybridCache(FakeWrapper(), {Kind.CREDIT_COSTS: KindPolicy(Kind.CREDIT_COSTS, Tier.REPLICA)})
    with pytest.raises(InvalidRequest):
        only_costs.get("acme", Kind.USER_PROFILES, "u1")
    with pytest.raises(InvalidRequest):
        only_costs.apply("acme", Kind.ORG_UNITS, "ou", None)


def test_stats_cover_every_configured_kind() -> None:
    wrapper = FakeWrapper()
    wrapper.put("acme", Kind.CREDIT_COSTS, "x", cost("x"))
    hc = HybridCache(wrapper, max_reference_entries=5)
    hc.get("acme", Kind.CREDIT_COSTS, "x")
    stats = hc.stats()
    assert set(stats.kinds) == set(DEFAULT_POLICIES)
    cc = stats.kinds[Kind.CREDIT_COSTS]
    assert (cc.tier, cc.hits, cc.fetches, cc.entries, cc.ttl_s) == (Tier.REPLICA, 1, 1, 1, 0.0)
    assert stats.kinds[Kind.USER_PROFILES].ttl_s == 300.0
    assert (stats.loaded_tenants, stats.reference_entries, stats.reference_capacity) == (1, 0, 5)
