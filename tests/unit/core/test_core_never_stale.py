"""Never silently stale, in the core: org-unit invalidations reach every cached unit naming
the changed one; implausible and version-less event versions; the Wrapper's answer wins;
stale at once while the Wrapper is known down."""

from __future__ import annotations

import pytest

from hybridcache.server.core import (
    DEFAULT_POLICIES,
    ApplyOutcome,
    HybridCache,
    Kind,
    Source,
)
from hybridcache.server.core.values import CreditCost, OrgUnit, OrgUnitRef
from tests.unit.core.fakes import FakeClock, FakeWrapper, cost

pytestmark = pytest.mark.timeout(30)

T = "acme"
OU = Kind.ORG_UNITS
UP = Kind.USER_PROFILES
CC = Kind.CREDIT_COSTS


def _unit(uid: str, parent: str, ancestors: tuple[str, ...], children: tuple[str, ...]) -> OrgUnit:
    refs = lambda ids: tuple(OrgUnitRef(i, i.title()) for i in ids)  # noqa: E731
    return OrgUnit(uid, uid.title(), parent, "", refs(ancestors), refs(children), 1)


@pytest.fixture
def wrapper() -> FakeWrapper:
    w = FakeWrapper()
    w.put(T, OU, "root", _unit("root", "", (), ("mid",)))
    w.put(T, OU, "mid", _unit("mid", "root", ("root",), ("leaf",)))
    w.put(T, OU, "leaf", _unit("leaf", "mid", ("mid", "root"), ()))
    w.put(T, OU, "other", _unit("other", "", (), ()))
    w.put(T, CC, "op", cost("op", "2.5", 3))
    return w


@pytest.mark.parametrize(
    ("changed", "dropped"),
    [("mid", {"root", "mid", "leaf"}), ("root", {"root", "mid", "leaf"}), ("leaf", {"mid", "leaf"})],
)
def test_an_org_unit_invalidation_drops_every_cached_unit_naming_it(
    cache: HybridCache, wrapper: FakeWrapper, changed: str, dropped: set[str]
) -> None:
    for unit in ("root", "mid", "leaf", "other"):
        cache.get(T, OU, unit)
    assert cache.invalidate(T, OU, changed) == tuple(sorted(dropped - {changed}))
    refetched = {u for u in ("root", "mid", "leaf", "other") if cache.get(T, OU, u).source is Source.WRAPPER}
    assert refetched == dropped
    assert cache.stats().kinds[OU].entries == 4


def test_the_org_unit_index_forgets_evicted_entries(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = HybridCache(wrapper, DEFAULT_POLICIES, clock=clock, max_reference_entries=2)
    cache.get(T, OU, "leaf")
    cache.get(T, OU, "other")
    cache.get(T, OU, "root")  # evicts leaf
    cache.invalidate(T, OU, "mid")  # names nothing cached but root now
    assert cache.get(T, OU, "other").source is Source.CACHE
    assert cache.get(T, OU, "root").source is Source.WRAPPER


def test_an_implausible_version_is_not_applied_and_a_refetch_wins(cache: HybridCache) -> None:
    cache.ensure_tenant(T)
    poisoned = CreditCost("op", "99", 2**63 - 1)
    assert cache.apply(T, CC, "op", poisoned) == (ApplyOutcome.IMPLAUSIBLE_VERSION, None)
    assert cache.get(T, CC, "op").value == cost("op", "2.5", 3)
    within = CreditCost("op", "3", 3 + 1000)  # the window (default 1,000) past the high water
    assert cache.apply(T, CC, "op", within)[0] is ApplyOutcome.APPLIED


def test_a_version_less_event_keeps_the_held_version(cache: HybridCache) -> None:
    cache.ensure_tenant(T)
    outcome, change = cache.apply(T, CC, "op", CreditCost("op", "4"))
    assert outcome is ApplyOutcome.APPLIED
    assert change is not None
    assert change.version == 3
    assert cache.get(T, CC, "op").version == 3
    assert cache.apply(T, CC, "op", cost("op", "1", 2))[0] is ApplyOutcome.OLD_VERSION


def test_while_the_wrapper_is_known_down_an_expired_entry_is_stale_at_once(
    wrapper: FakeWrapper, clock: FakeClock
) -> None:
    down = {"now": False}
    jobs: list[object] = []
    cache = HybridCache(wrapper, clock=clock, submit=jobs.append, wrapper_known_down=lambda kind: down["now"])
    cache.get(T, OU, "root")
    clock.advance(301.0)  # past the 300 s TTL, within max_stale_s
    down["now"] = True
    calls = wrapper.count("item", T, OU, "root")
    read = cache.get(T, OU, "root")
    assert read.source is Source.STALE
    assert wrapper.count("item", T, OU, "root") == calls, "a reader waited on a Wrapper known down"
    assert len(jobs) == 1, "one background refresh (the breaker's probe when due)"
    cache.get(T, OU, "root")
    assert len(jobs) == 1, "background refreshes are throttled while the Wrapper is known down"
