"""On-demand kinds: TTL, negative caching, LRU bound, refresh-ahead, serving stale, adaptive TTL."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import pytest

from hybridcache.server.core import (
    DEFAULT_POLICIES,
    HybridCache,
    Kind,
    KindPolicy,
    NotFound,
    Source,
    Tier,
    WhenWrapperDown,
    WrapperUnavailable,
)
from hybridcache.server.core.stats import AdaptiveTtl
from tests.unit.core.fakes import WAIT_S, FakeClock, FakeWrapper, profile

pytestmark = pytest.mark.timeout(30)

T = "acme"
UP = Kind.USER_PROFILES
OU = Kind.ORG_UNITS


class ManualSubmit:
    """A `submit` that queues the background job; the test runs it when it wants."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []

    def __call__(self, job: Callable[[], None]) -> object:
        self.jobs.append(job)
        return None

    def run_all(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


@pytest.fixture
def wrapper() -> FakeWrapper:
    w = FakeWrapper()
    for i in range(5):
        w.put(T, UP, f"u{i}", profile(f"u{i}", version=1))
    return w


def make(
    wrapper: FakeWrapper, clock: FakeClock, submit: ManualSubmit | None = None, **overrides: object
) -> HybridCache:
    policies = dict(DEFAULT_POLICIES)
    policies[UP] = dataclasses.replace(policies[UP], **overrides)  # type: ignore[arg-type]
    return HybridCache(wrapper, policies, clock=clock, submit=submit)


def test_miss_fetches_then_hits_until_ttl(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = make(wrapper, clock, adaptive_ttl=False)
    first = cache.get(T, UP, "u1")
    assert (first.source, first.version, first.age_s) == (Source.WRAPPER, 1, 0.0)
    clock.advance(299.0)
    hit = cache.get(T, UP, "u1")
    assert (hit.source, hit.age_s) == (Source.CACHE, 299.0)
    clock.advance(1.0)
    assert cache.get(T, UP, "u1").source is Source.WRAPPER
    assert wrapper.count("item", T, UP, "u1") == 2
    stats = cache.stats().kinds[UP]
    assert (stats.hits, stats.misses, stats.fetches, stats.entries, stats.ttl_s) == (1, 2, 2, 1, 300.0)


def test_not_found_is_remembered_for_negative_ttl(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = make(wrapper, clock)
    for _ in range(10):
        with pytest.raises(NotFound):
            cache.get(T, UP, "ghost")
    assert wrapper.count("item", T, UP, "ghost") == 1
    clock.advance(30.0)
    wrapper.put(T, UP, "ghost", profile("ghost"))
    assert cache.get(T, UP, "ghost").source is Source.WRAPPER


def test_invalidate_and_apply_drop_the_entry(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = make(wrapper, clock)
    cache.get(T, UP, "u1")
    wrapper.put(T, UP, "u1", profile("u1", "Grace", version=2))
    cache.invalidate(T, UP, "u1")
    assert cache.get(T, UP, "u1").version == 2
    wrapper.put(T, UP, "u1", profile("u1", "Lin", version=3))
    outcome, change = cache.apply(T, UP, "u1", None)
    assert (outcome.value, change) == ("invalidated", None)
    assert cache.get(T, UP, "u1").version == 3
    assert cache.refetch(T, UP, "u1") is None  # on-demand: refetch == invalidate
    assert cache.get(T, UP, "u1").source is Source.WRAPPER
    assert cache.stats().kinds[UP].invalidations == 3


def test_invalidate_kind_and_drop_reference(wrapper: FakeWrapper, clock: FakeClock) -> None:
    wrapper.put("other", UP, "u1", profile("u1"))
    cache = make(wrapper, clock)
    for key in ("u1", "u2"):
        cache.get(T, UP, key)
    cache.get("other", UP, "u1")
    cache.invalidate_kind(T, UP)
    assert cache.stats().kinds[UP].entries == 1
    assert cache.get("other", UP, "u1").source is Source.CACHE
    assert cache.get(T, UP, "u1").source is Source.WRAPPER
    cache.drop_reference()
    assert cache.stats().reference_entries == 0
    assert cache.get("other", UP, "u1").source is Source.WRAPPER


def test_lru_bound_evicts_least_recently_used(wrapper: FakeWrapper, clock: FakeClock) -> None:
    for i in range(50):
        wrapper.put(T, UP, f"p{i}", profile(f"p{i}"))
    cache = HybridCache(wrapper, clock=clock, max_reference_entries=10)
    for i in range(10):
        cache.get(T, UP, f"p{i}")
    cache.get(T, UP, "p0")  # p0 is now the most recently used; p1 the least
    for i in range(10, 50):
        cache.get(T, UP, f"p{i}")
        assert cache.stats().reference_entries <= 10
    assert cache.stats().reference_entries == 10
    assert cache.stats().kinds[UP].entries == 10
    calls = wrapper.total_calls
    for i in range(40, 50):
        assert cache.get(T, UP, f"p{i}").source is Source.CACHE
    assert wrapper.total_calls == calls
    assert cache.get(T, UP, "p0").source is Source.WRAPPER  # evicted in the end as well
    # After touching p0 it outlived p1..p9; check p0 was kept longer than p1 with a tighter run:
    small = HybridCache(wrapper, clock=clock, max_reference_entries=3)
    for key in ("p0", "p1", "p2"):
        small.get(T, UP, key)
    small.get(T, UP, "p0")
    small.get(T, UP, "p3")  # evicts p1, the least recently used
    assert small.get(T, UP, "p0").source is Source.CACHE
    assert small.get(T, UP, "p2").source is Source.CACHE
    assert small.get(T, UP, "p1").source is Source.WRAPPER


def test_refresh_ahead_submits_one_background_refresh(wrapper: FakeWrapper, clock: FakeClock) -> None:
    submit = ManualSubmit()
    cache = make(wrapper, clock, submit, adaptive_ttl=False)  # ttl 300, refresh in the last 60 s
    cache.get(T, UP, "u1")
    clock.advance(239.0)
    assert cache.get(T, UP, "u1").source is Source.CACHE
    assert submit.jobs == []
    clock.advance(1.0)
    wrapper.put(T, UP, "u1", profile("u1", "New", version=2))
    for _ in range(20):
        read = cache.get(T, UP, "u1")
        assert (read.source, read.version) == (Source.CACHE, 1)  # served from cache meanwhile
    assert len(submit.jobs) == 1
    submit.run_all()
    read = cache.get(T, UP, "u1")
    assert (read.source, read.version, read.age_s) == (Source.CACHE, 2, 0.0)
    assert wrapper.count("item", T, UP, "u1") == 2


def test_background_refresh_failure_keeps_the_entry(wrapper: FakeWrapper, clock: FakeClock) -> None:
    submit = ManualSubmit()
    cache = make(wrapper, clock, submit)
    cache.get(T, UP, "u1")
    clock.advance(250.0)
    cache.get(T, UP, "u1")
    wrapper.down = True
    submit.run_all()  # fails quietly
    assert cache.get(T, UP, "u1").source is Source.CACHE
    assert submit.jobs == []  # no second refresh for the same entry
    assert cache.stats().kinds[UP].fetch_errors == 1


def test_refresh_overtaken_by_invalidation_is_not_stored(wrapper: FakeWrapper, clock: FakeClock) -> None:
    submit = ManualSubmit()
    cache = make(wrapper, clock, submit)
    cache.get(T, UP, "u1")
    clock.advance(250.0)
    cache.get(T, UP, "u1")
    gate = threading.Event()
    wrapper.gate = gate
    refresher = threading.Thread(target=submit.run_all)
    refresher.start()
    assert wrapper.arrived.acquire(timeout=WAIT_S)
    assert wrapper.arrived.acquire(timeout=WAIT_S)  # (the first arrival was the initial fetch)
    wrapper.put(T, UP, "u1", profile("u1", "B", version=2))  # the refresh already read version 1
    cache.invalidate(T, UP, "u1")
    gate.set()
    refresher.join(WAIT_S)
    assert cache.get(T, UP, "u1").version == 2


def test_wrapper_down_serves_stale_within_max_stale(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = make(wrapper, clock, adaptive_ttl=False, max_stale_s=600.0)
    cache.get(T, UP, "u1")
    wrapper.down = True
    clock.advance(300.0 + 600.0)
    read = cache.get(T, UP, "u1")
    assert (read.source, read.version, read.age_s) == (Source.STALE, 1, 900.0)
    clock.advance(0.5)
    with pytest.raises(WrapperUnavailable):
        cache.get(T, UP, "u1")
    with pytest.raises(WrapperUnavailable):
        cache.get(T, UP, "never-cached")
    stats = cache.stats().kinds[UP]
    assert (stats.stale, stats.fetch_errors) == (1, 3)


def test_wrapper_down_invalidated_entry_is_not_served(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = make(wrapper, clock)
    cache.get(T, UP, "u1")
    cache.invalidate(T, UP, "u1")
    wrapper.down = True
    with pytest.raises(WrapperUnavailable):
        cache.get(T, UP, "u1")


def test_when_down_fail_raises_immediately(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = make(wrapper, clock, when_down=WhenWrapperDown.FAIL, adaptive_ttl=False)
    cache.get(T, UP, "u1")
    wrapper.down = True
    assert cache.get(T, UP, "u1").source is Source.CACHE  # fresh entries are still hits
    clock.advance(300.0)
    with pytest.raises(WrapperUnavailable):
        cache.get(T, UP, "u1")


def test_versions_only_move_forward(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = make(wrapper, clock, adaptive_ttl=False)
    wrapper.put(T, UP, "u1", profile("u1", version=5))
    cache.get(T, UP, "u1")
    clock.advance(301.0)
    wrapper.put(T, UP, "u1", profile("u1", version=4))  # a lagging Wrapper replica
    assert cache.get(T, UP, "u1").version == 4  # answered, but not stored over version 5 ...
    clock.advance(1.0)
    wrapper.put(T, UP, "u1", profile("u1", version=6))
    assert cache.get(T, UP, "u1").version == 6


# --- adaptive TTL


def _drive(cache: HybridCache, wrapper: FakeWrapper, clock: FakeClock, *, churn: bool) -> list[float]:
    """Minutes of traffic on 5 keys: reads every second; with churn, every entry is invalidated
    soon after it is fetched. Returns the TTL seen after each minute."""
    ttls = []
    for _ in range(8):
        for second in range(60):
            clock.advance(1.0)
            key = f"u{second % 5}"
            cache.get(T, UP, key)
            if churn and second % 5 == 4:
                for i in range(5):
                    cache.invalidate(T, UP, f"u{i}")
        ttls.append(cache.stats().kinds[UP].ttl_s)
    return ttls


def test_adaptive_ttl_shrinks_under_frequent_invalidation(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = make(wrapper, clock)
    ttls = _drive(cache, wrapper, clock, churn=True)
    assert ttls[-1] < 300.0
    assert ttls == sorted(ttls, reverse=True)
    assert ttls[-1] == 30.0  # the floor (ttl_min_s)


def test_adaptive_ttl_grows_when_stable_and_hit(wrapper: FakeWrapper, clock: FakeClock) -> None:
    cache = make(wrapper, clock)
    ttls = _drive(cache, wrapper, clock, churn=False)
    assert ttls[-1] > 300.0
    assert ttls == sorted(ttls)
    assert ttls[-1] == 900.0  # the ceiling (ttl_max_s)


def test_adaptive_ttl_needs_evidence_and_can_be_off(wrapper: FakeWrapper, clock: FakeClock) -> None:
    quiet = make(wrapper, clock)
    quiet.get(T, UP, "u1")
    clock.advance(AdaptiveTtl.ADAPT_INTERVAL_S * 5)
    quiet.invalidate(T, UP, "u1")  # an evaluation point, with 1 read of evidence
    assert quiet.stats().kinds[UP].ttl_s == 300.0
    fixed = make(wrapper, clock, adaptive_ttl=False)
    assert _drive(fixed, wrapper, clock, churn=True)[-1] == 300.0


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="cannot be replicated"):
        KindPolicy(UP, Tier.REPLICA)
    with pytest.raises(ValueError, match="refresh_ahead"):
        KindPolicy(UP, Tier.ON_DEMAND, refresh_ahead=1.0)
    with pytest.raises(ValueError, match="ttl_min_s"):
        KindPolicy(UP, Tier.ON_DEMAND, ttl_min_s=10, ttl_max_s=5)
    assert KindPolicy(UP, Tier.ON_DEMAND, ttl_s=5.0).ttl_bounds == (5.0, 900.0)
    with pytest.raises(ValueError, match="filed under"):
        HybridCache(FakeWrapper(), {UP: KindPolicy(OU, Tier.ON_DEMAND)})
