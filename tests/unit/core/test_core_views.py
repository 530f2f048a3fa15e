"""What the core shows of its replicas without changing them: the kinds it replicates, the
items a snapshot stream copies (ListSnapshot), the settled items the verifier compares, and
stats narrowed to a caller's tenants."""

from __future__ import annotations

import pytest

from hybridcache.server.core import HybridCache, InvalidRequest, Kind
from tests.unit.core.fakes import FakeWrapper, cost, role

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def wrapper() -> FakeWrapper:
    fake = FakeWrapper()
    fake.put("acme", Kind.CREDIT_COSTS, "a", cost("a", "1.5", version=3))
    fake.put("acme", Kind.CREDIT_COSTS, "b", cost("b", "2", version=4))
    fake.put("acme", Kind.ROLE_PERMISSIONS, "admin", role("admin", "*"))
    fake.put("globex", Kind.CREDIT_COSTS, "a", cost("a", "9"))
    return fake


def test_replicated_kinds_are_the_replica_tier_only(cache: HybridCache) -> None:
    assert cache.is_replicated(Kind.CREDIT_COSTS)
    assert cache.is_replicated(Kind.FEATURE_FLAGS)
    assert not cache.is_replicated(Kind.USER_PROFILES)
    assert not cache.is_replicated(Kind.ORG_UNITS)


def test_a_view_copies_the_loaded_tenants_items_at_one_moment(cache: HybridCache) -> None:
    cache.ensure_tenant("acme")
    view = cache.replica_view("acme", [Kind.CREDIT_COSTS, Kind.ROLE_PERMISSIONS])
    assert sorted(view[Kind.CREDIT_COSTS]) == ["a", "b"]
    assert view[Kind.CREDIT_COSTS]["a"].value == cost("a", "1.5", version=3)
    assert list(view[Kind.ROLE_PERMISSIONS]) == ["admin"]
    cache.apply("acme", Kind.CREDIT_COSTS, "a", cost("a", "7", version=5), version=5)
    assert view[Kind.CREDIT_COSTS]["a"].value == cost("a", "1.5", version=3), "a view is a copy"
    assert cache.replica_view("acme", [Kind.CREDIT_COSTS])[Kind.CREDIT_COSTS]["a"].value.version == 5


def test_a_view_refuses_a_kind_served_on_demand_and_a_tenant_not_loaded(cache: HybridCache) -> None:
    cache.ensure_tenant("acme")
    with pytest.raises(InvalidRequest, match="not replicated"):
        cache.replica_view("acme", [Kind.CREDIT_COSTS, Kind.USER_PROFILES])
    with pytest.raises(KeyError):
        cache.replica_view("globex", [Kind.CREDIT_COSTS])  # never loaded: ensure_tenant first


def test_settled_items_exist_only_for_a_loaded_replica_kind(cache: HybridCache) -> None:
    assert cache.settled_items("acme", Kind.CREDIT_COSTS) is None  # not loaded yet
    cache.ensure_tenant("acme")
    assert sorted(key for key, _ in cache.settled_items("acme", Kind.CREDIT_COSTS) or []) == ["a", "b"]
    assert cache.settled_items("acme", Kind.USER_PROFILES) is None  # on demand: nothing to verify
    cache.invalidate_kind("acme", Kind.CREDIT_COSTS)
    assert cache.settled_items("acme", Kind.CREDIT_COSTS) is None  # awaiting its reload


def test_loaded_tenants_and_stats_narrowed_to_a_callers_tenants(cache: HybridCache) -> None:
    cache.ensure_tenant("acme")
    cache.ensure_tenant("globex")
    assert sorted(cache.loaded_tenants()) == ["acme", "globex"]
    assert cache.is_loaded("acme")
    assert not cache.is_loaded("initech")
    cache.get("globex", Kind.CREDIT_COSTS, "a")
    mine = cache.stats(tenants=["acme"])
    assert mine.loaded_tenants == 1
    assert mine.kinds[Kind.CREDIT_COSTS].entries == 2
    assert mine.kinds[Kind.CREDIT_COSTS].hits == 0, "globex's read must not show in acme's stats"
    everyone = cache.stats()
    assert everyone.loaded_tenants == 2
    assert everyone.kinds[Kind.CREDIT_COSTS].entries == 3
    assert everyone.kinds[Kind.CREDIT_COSTS].hits == 1
