"""Replica kinds: lazy tenant load, events (versions, old values), resync diffs, snapshot swaps."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from hybridcache.server.core import (
    MISSING,
    ApplyOutcome,
    Change,
    HybridCache,
    Kind,
    KindPolicy,
    NotFound,
    Source,
    Tier,
    WrapperUnavailable,
)
from tests.unit.core.fakes import WAIT_S, FakeClock, FakeWrapper, GatedWrapper, cost, flag, role, user

pytestmark = pytest.mark.timeout(30)

T = "acme"
CC = Kind.CREDIT_COSTS


@pytest.fixture
def wrapper() -> FakeWrapper:
    w = FakeWrapper()
    w.put(T, CC, "crm.leads.create", cost("crm.leads.create", "2.5", 3))
    w.put(T, CC, "crm.leads.read", cost("crm.leads.read", "0.5", 1))
    w.put(T, Kind.ROLE_PERMISSIONS, "sales", role("sales", "crm.leads.*"))
    w.put(T, Kind.USER_STATUS, "u1", user("u1", "sales"))
    w.put(T, Kind.FEATURE_FLAGS, "ai", flag("ai"))
    return w


def test_first_read_loads_every_replica_kind_once(cache: HybridCache, wrapper: FakeWrapper) -> None:
    read = cache.get(T, CC, "crm.leads.create")
    assert read.value == cost("crm.leads.create", "2.5", 3)
    assert (read.source, read.version) == (Source.CACHE, 3)
    cache.get(T, Kind.FEATURE_FLAGS, "ai")
    assert wrapper.total_calls == 4  # one snapshot per replica kind, nothing else
    assert cache.is_loaded(T)
    assert cache.loaded_tenants() == [T]


def test_absent_key_is_not_found_without_a_wrapper_call(cache: HybridCache, wrapper: FakeWrapper) -> None:
    cache.ensure_tenant(T)
    before = wrapper.total_calls
    with pytest.raises(NotFound):
        cache.get(T, CC, "no.such.code")
    assert wrapper.total_calls == before


def test_age_is_time_since_stored(cache: HybridCache, clock: FakeClock) -> None:
    cache.ensure_tenant(T)
    clock.advance(7.0)
    assert cache.get(T, CC, "crm.leads.read").age_s == pytest.approx(7.0)
    cache.apply(T, CC, "crm.leads.read", cost("crm.leads.read", "0.75", 2))
    clock.advance(1.0)
    assert cache.get(T, CC, "crm.leads.read").age_s == pytest.approx(1.0)


def test_unknown_tenant_is_remembered(cache: HybridCache, wrapper: FakeWrapper, clock: FakeClock) -> None:
    for _ in range(100):
        with pytest.raises(NotFound) as info:
            cache.get("nobody", CC, "x")
        assert info.value.reason == "TENANT_NOT_FOUND"
    assert wrapper.count("snapshot", "nobody", CC) == 1
    clock.advance(31.0)  # past the default negative TTL: asked again
    with pytest.raises(NotFound):
        cache.ensure_tenant("nobody")
    assert wrapper.count("snapshot", "nobody", CC) == 2
    assert not cache.is_loaded("nobody")


def test_wrapper_down_replica_keeps_answering(cache: HybridCache, wrapper: FakeWrapper) -> None:
    cache.ensure_tenant(T)
    wrapper.down = True
    assert cache.get(T, CC, "crm.leads.create").source is Source.CACHE
    assert cache.check_permission(T, "u1", "crm.leads.create").allowed
    with pytest.raises(WrapperUnavailable):
        cache.resync_tenant(T)
    assert cache.get(T, CC, "crm.leads.create").value.version == 3  # a failed resync changes nothing


def test_failed_first_load_is_retried(cache: HybridCache, wrapper: FakeWrapper) -> None:
    wrapper.down = True
    with pytest.raises(WrapperUnavailable):
        cache.get(T, CC, "crm.leads.create")
    assert not cache.is_loaded(T)
    wrapper.down = False
    assert cache.get(T, CC, "crm.leads.create").version == 3


# --- apply


def test_apply_outcomes(cache: HybridCache) -> None:
    code = "crm.leads.create"
    assert cache.apply(T, CC, code, cost(code, "9", 9)) == (ApplyOutcome.NOT_LOADED, None)
    cache.ensure_tenant(T)
    outcome, change = cache.apply(T, CC, code, cost(code, "4", 4))
    assert outcome is ApplyOutcome.APPLIED
    assert change == Change(T, CC, code, cost(code, "4", 4), 4, False)
    assert cache.apply(T, CC, code, cost(code, "3.5", 4)) == (ApplyOutcome.OLD_VERSION, None)
    assert cache.apply(T, CC, code, cost(code, "3", 2)) == (ApplyOutcome.OLD_VERSION, None)
    assert cache.get(T, CC, code).value.cost == "4"
    outcome, change = cache.apply(T, CC, code, None, version=5)
    assert outcome is ApplyOutcome.APPLIED
    assert change == Change(T, CC, code, None, 5, True)
    with pytest.raises(NotFound):
        cache.get(T, CC, code)


def test_apply_version_argument_stamps_an_unversioned_value(cache: HybridCache) -> None:
    cache.ensure_tenant(T)
    _, change = cache.apply(T, CC, "new.op", cost("new.op", "1", 0), version=7)
    assert change is not None
    assert change.version == 7
    assert cache.get(T, CC, "new.op").version == 7


def test_apply_unversioned_events_always_apply(cache: HybridCache) -> None:
    cache.ensure_tenant(T)
    assert cache.apply(T, CC, "x", cost("x", "1", 0))[0] is ApplyOutcome.APPLIED
    assert cache.apply(T, CC, "x", cost("x", "2", 0))[0] is ApplyOutcome.APPLIED
    assert cache.get(T, CC, "x").value.cost == "2"


def test_apply_same_value_again_is_applied_without_a_change(cache: HybridCache) -> None:
    cache.ensure_tenant(T)
    value = cost("crm.leads.read", "0.5", 0)
    outcome, change = cache.apply(T, CC, "crm.leads.read", cost("crm.leads.read", "0.5", 1), version=None)
    assert (outcome, change) == (ApplyOutcome.OLD_VERSION, None)
    outcome, change = cache.apply(T, CC, "y", value)
    assert change is not None
    assert cache.apply(T, CC, "y", value) == (ApplyOutcome.APPLIED, None)


def test_expected_old_is_compared_by_content(cache: HybridCache) -> None:
    code = "crm.leads.create"
    cache.ensure_tenant(T)
    # The event's old value carries no version: content decides.
    outcome, _ = cache.apply(T, CC, code, cost(code, "3", 0), expected_old=cost(code, "2.5", 0))
    assert outcome is ApplyOutcome.APPLIED
    outcome, change = cache.apply(T, CC, code, cost(code, "4", 0), expected_old=cost(code, "2.5", 0))
    assert (outcome, change) == (ApplyOutcome.OLD_VALUE_MISMATCH, None)
    assert cache.get(T, CC, code).value.cost == "3"
    # None means "did not exist".
    assert cache.apply(T, CC, "fresh", cost("fresh"), expected_old=None)[0] is ApplyOutcome.APPLIED
    assert cache.apply(T, CC, "fresh2", cost("fresh2"), expected_old=cost("fresh2"))[0] is (
        ApplyOutcome.OLD_VALUE_MISMATCH
    )
    assert cache.apply(T, CC, code, None, expected_old=None)[0] is ApplyOutcome.OLD_VALUE_MISMATCH
    assert cache.apply(T, CC, code, None, expected_old=MISSING)[0] is ApplyOutcome.APPLIED


def test_refetch_after_a_mismatch(cache: HybridCache, wrapper: FakeWrapper) -> None:
    code = "crm.leads.create"
    cache.ensure_tenant(T)
    wrapper.put(T, CC, code, cost(code, "6", 6))
    change = cache.refetch(T, CC, code)
    assert change == Change(T, CC, code, cost(code, "6", 6), 6, False)
    assert cache.get(T, CC, code).version == 6
    assert cache.refetch(T, CC, code) is None  # nothing changed
    wrapper.delete(T, CC, code)
    assert cache.refetch(T, CC, code) == Change(T, CC, code, None, 0, True)
    with pytest.raises(NotFound):
        cache.get(T, CC, code)
    assert cache.refetch("not-loaded", CC, code) is None


def test_a_refetch_answer_wins_over_a_higher_held_version(cache: HybridCache, wrapper: FakeWrapper) -> None:
    # The Wrapper is the authority: an event's version (here 8, the Wrapper is at 3) may be
    # forged or corrupt, and keeping it would pin the key. Its answer resets the held version.
    code = "crm.leads.create"
    cache.ensure_tenant(T)
    cache.apply(T, CC, code, cost(code, "8", 8))
    assert cache.refetch(T, CC, code) == Change(T, CC, code, cost(code, "2.5", 3), 3, False)
    read = cache.get(T, CC, code)
    assert (read.value, read.version) == (cost(code, "2.5", 3), 3)
    # ... and the Wrapper's next real change (version 4) is then accepted.
    assert cache.apply(T, CC, code, cost(code, "4", 4))[0] is ApplyOutcome.APPLIED


# --- resync and snapshot swaps


def test_resync_returns_the_key_level_diff(cache: HybridCache, wrapper: FakeWrapper) -> None:
    cache.ensure_tenant(T)
    wrapper.put(T, CC, "crm.leads.create", cost("crm.leads.create", "3", 4))  # changed
    wrapper.delete(T, CC, "crm.leads.read")  # deleted
    wrapper.put(T, CC, "crm.deals.close", cost("crm.deals.close", "5", 1))  # added
    wrapper.put(T, Kind.FEATURE_FLAGS, "ai", flag("ai", enabled=True))  # same content, new object
    changes = cache.resync_tenant(T)
    by_key = {(c.kind, c.key): c for c in changes}
    assert set(by_key) == {(CC, "crm.leads.create"), (CC, "crm.leads.read"), (CC, "crm.deals.close")}
    assert by_key[(CC, "crm.leads.read")].deleted
    assert by_key[(CC, "crm.leads.create")].version == 4
    assert by_key[(CC, "crm.deals.close")].value == cost("crm.deals.close", "5", 1)
    assert cache.resync_tenant(T) == []


def test_resync_of_a_tenant_not_loaded_loads_it(cache: HybridCache) -> None:
    assert cache.resync_tenant(T) == []
    assert cache.is_loaded(T)


def test_snapshot_swap_is_atomic_for_readers(wrapper: FakeWrapper) -> None:
    """Readers during a resync see either the whole old map or the whole new one."""
    for i in range(2000):
        wrapper.put(T, CC, f"op{i}", cost(f"op{i}", "1", 1))
    cache = HybridCache(wrapper)
    cache.ensure_tenant(T)
    stop = threading.Event()
    seen: set[tuple[int, ...]] = set()

    def reader() -> None:
        while not stop.is_set():
            # One map per read of the tenant-kind: versions within one snapshot are uniform.
            replica = cache._replica._tenants[T].kinds[CC].map
            seen.add(tuple(sorted({replica[f"op{i}"].value.version for i in range(0, 2000, 97)})))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for version in range(2, 12):
        for i in range(2000):
            wrapper.put(T, CC, f"op{i}", cost(f"op{i}", "1", version))
        assert len(cache.resync_tenant(T)) == 2000
    stop.set()
    for t in threads:
        t.join(WAIT_S)
    assert all(len(versions) == 1 for versions in seen), seen


def test_events_during_a_resync_are_kept(wrapper: FakeWrapper) -> None:
    """An event applied while a snapshot is loading wins over the (older) snapshot."""
    cache = HybridCache(wrapper)
    cache.ensure_tenant(T)
    gate = threading.Event()
    wrapper.gate = gate
    result: list[list[Change]] = []
    resync = threading.Thread(target=lambda: result.append(cache.resync_tenant(T)))
    resync.start()
    assert wrapper.arrived.acquire(timeout=WAIT_S)  # the first snapshot call has started
    # Event without versions for an existing key, a deletion, and a new key.
    code = "crm.leads.create"
    assert cache.apply(T, CC, code, cost(code, "7", 0))[0] is ApplyOutcome.APPLIED
    assert cache.apply(T, CC, "crm.leads.read", None)[0] is ApplyOutcome.APPLIED
    assert cache.apply(T, CC, "brand.new", cost("brand.new", "1", 0))[0] is ApplyOutcome.APPLIED
    gate.set()
    resync.join(WAIT_S)
    assert cache.get(T, CC, code).value.cost == "7"
    with pytest.raises(NotFound):
        cache.get(T, CC, "crm.leads.read")
    assert cache.get(T, CC, "brand.new").value.cost == "1"
    assert result == [[]]  # nothing differs from what the events already published


def test_snapshot_newer_than_an_event_during_the_load_wins(wrapper: FakeWrapper) -> None:
    cache = HybridCache(wrapper)
    cache.ensure_tenant(T)
    code = "crm.leads.create"
    wrapper.put(T, CC, code, cost(code, "5", 5))  # the Wrapper is already at version 5
    gate = threading.Event()
    wrapper.gate = gate
    resync = threading.Thread(target=cache.resync_tenant, args=(T,))
    resync.start()
    assert wrapper.arrived.acquire(timeout=WAIT_S)
    assert cache.apply(T, CC, code, cost(code, "4", 4))[0] is ApplyOutcome.APPLIED  # a late event
    gate.set()
    resync.join(WAIT_S)
    assert cache.get(T, CC, code).version == 5


def test_events_during_the_first_load_are_journaled(wrapper: FakeWrapper) -> None:
    cache = HybridCache(wrapper)
    gate = threading.Event()
    wrapper.gate = gate
    load = threading.Thread(target=cache.ensure_tenant, args=(T,))
    load.start()
    assert wrapper.arrived.acquire(timeout=WAIT_S)
    code = "crm.leads.create"
    # Published after the Wrapper served (or will serve) the snapshot: must not be lost.
    assert cache.apply(T, CC, code, cost(code, "9", 0)) == (ApplyOutcome.NOT_LOADED, None)
    gate.set()
    load.join(WAIT_S)
    assert cache.get(T, CC, code).value.cost == "9"


def test_refetch_started_before_an_event_is_not_stored(wrapper: FakeWrapper) -> None:
    cache = HybridCache(wrapper)
    cache.ensure_tenant(T)
    code = "crm.leads.create"
    gate = threading.Event()
    wrapper.gate = gate
    results: list[Change | None] = []
    refetch = threading.Thread(target=lambda: results.append(cache.refetch(T, CC, code)))
    refetch.start()
    assert wrapper.arrived.acquire(timeout=WAIT_S)  # the refetch read version 3
    cache.apply(T, CC, code, cost(code, "10", 0))  # then an event (no version) overtook it
    gate.set()
    refetch.join(WAIT_S)
    assert results == [None]
    assert cache.get(T, CC, code).value.cost == "10"


# --- invalidation of replicated keys


def test_invalidated_key_is_refetched_on_read(cache: HybridCache, wrapper: FakeWrapper) -> None:
    code = "crm.leads.create"
    cache.ensure_tenant(T)
    wrapper.put(T, CC, code, cost(code, "4", 4))
    cache.invalidate(T, CC, code)
    read = cache.get(T, CC, code)
    assert (read.source, read.version) == (Source.WRAPPER, 4)
    assert cache.get(T, CC, code).source is Source.CACHE
    # An invalidated key that was absent may exist now.
    wrapper.put(T, CC, "late", cost("late"))
    cache.invalidate(T, CC, "late")
    assert cache.get(T, CC, "late").source is Source.WRAPPER


def test_invalidated_key_served_stale_when_wrapper_down(cache: HybridCache, wrapper: FakeWrapper) -> None:
    code = "crm.leads.create"
    cache.ensure_tenant(T)
    cache.invalidate(T, CC, code)
    wrapper.down = True
    read = cache.get(T, CC, code)
    assert (read.source, read.version) == (Source.STALE, 3)
    assert cache.stats().kinds[CC].stale == 1


def test_invalidate_kind_reloads_the_kind_on_next_read(cache: HybridCache, wrapper: FakeWrapper) -> None:
    cache.ensure_tenant(T)
    wrapper.put(T, CC, "crm.leads.read", cost("crm.leads.read", "0.6", 2))
    cache.invalidate_kind(T, CC)
    snapshots = wrapper.count("snapshot", T, CC)
    read = cache.get(T, CC, "crm.leads.read")
    assert (read.source, read.version) == (Source.WRAPPER, 2)
    assert cache.get(T, CC, "crm.leads.create").source is Source.CACHE
    assert wrapper.count("snapshot", T, CC) == snapshots + 1
    wrapper.down = True
    cache.invalidate_kind(T, CC)
    assert cache.get(T, CC, "crm.leads.read").source is Source.STALE
    with pytest.raises(NotFound):
        cache.get(T, CC, "never.existed")


def test_get_many(cache: HybridCache) -> None:
    found, missing = cache.get_many(T, CC, ["crm.leads.create", "nope", "crm.leads.read"])
    assert set(found) == {"crm.leads.create", "crm.leads.read"}
    assert missing == ["nope"]
    with pytest.raises(NotFound):
        cache.get_many("nobody", CC, ["crm.leads.create"])


def test_entries_per_kind_in_stats(cache: HybridCache) -> None:
    cache.ensure_tenant(T)
    stats = cache.stats()
    assert stats.kinds[CC].entries == 2
    assert stats.kinds[CC].ttl_s == 0.0
    assert stats.loaded_tenants == 1


def test_a_late_event_cannot_resurrect_a_deleted_key(cache: HybridCache) -> None:
    cache.ensure_tenant(T)
    assert cache.apply(T, CC, "crm.leads.read", None, version=5)[0] is ApplyOutcome.APPLIED
    late = cost("crm.leads.read", "0.4", 4)
    assert cache.apply(T, CC, "crm.leads.read", late) == (ApplyOutcome.OLD_VERSION, None)
    with pytest.raises(NotFound):
        cache.get(T, CC, "crm.leads.read")
    assert cache.apply(T, CC, "crm.leads.read", cost("crm.leads.read", "0.6", 6))[0] is ApplyOutcome.APPLIED


class _Step:
    """Run one cache call in a thread and wait until it is blocked in the GatedWrapper."""

    def __init__(self, wrapper: GatedWrapper, call: Callable[[], object]) -> None:
        self.result: list[object] = []
        self.thread = threading.Thread(target=lambda: self.result.append(call()))
        self.thread.start()
        with wrapper.changed:
            assert wrapper.changed.wait_for(lambda: self.thread in wrapper.blocked(), WAIT_S)
        self.call = wrapper.pending_of(self.thread)[0]

    def finish(self, wrapper: GatedWrapper) -> object:
        wrapper.complete(self.call)
        self.thread.join(WAIT_S)
        return self.result[0]


def test_item_fetch_older_than_a_snapshot_is_not_stored() -> None:
    """Unversioned data: only the fence keeps a refetch that began before a resync's snapshot
    from overriding it when the refetch finishes first."""
    wrapper = GatedWrapper()
    wrapper.data[CC] = {"a": cost("a", "1", 0)}
    cache = HybridCache(wrapper, {CC: KindPolicy(CC, Tier.REPLICA)})
    _Step(wrapper, lambda: cache.ensure_tenant(T)).finish(wrapper)
    wrapper.data[CC]["a"] = cost("a", "2", 0)
    refetch = _Step(wrapper, lambda: cache.refetch(T, CC, "a"))  # reads "2"
    wrapper.data[CC]["a"] = cost("a", "3", 0)
    resync = _Step(wrapper, lambda: cache.resync_tenant(T))  # reads "3"
    assert refetch.finish(wrapper) is None  # fenced by the snapshot that started after it
    assert cache.get(T, CC, "a").value.cost == "1"
    resync.finish(wrapper)
    assert cache.get(T, CC, "a").value.cost == "3"


def test_a_late_event_after_invalidate_kind_is_not_trusted(cache: HybridCache, wrapper: FakeWrapper) -> None:
    cache.ensure_tenant(T)
    wrapper.put(T, CC, "c", cost("c", "3", 3))  # created (v2) and changed (v3); events delayed
    cache.invalidate_kind(T, CC)
    assert cache.apply(T, CC, "c", cost("c", "2", 2))[0] is ApplyOutcome.APPLIED  # the late v2 event
    assert cache.get(T, CC, "c").version == 3  # the kind reloads: the event was only a fallback


def test_replica_age_counts_from_the_installed_snapshot_not_a_superseded_one() -> None:
    """The replica-age metric reads this: a snapshot fetched but discarded (a newer resync
    superseded it) must not make the replica look fresher than it is."""
    clock = FakeClock()
    wrapper = GatedWrapper()
    wrapper.data[CC] = {"a": cost("a", "1", 0)}
    cache = HybridCache(wrapper, {CC: KindPolicy(CC, Tier.REPLICA)}, clock=clock)
    assert cache.replica_ages() == {}, "a tenant not loaded has no age"
    _Step(wrapper, lambda: cache.ensure_tenant(T)).finish(wrapper)
    clock.advance(10)
    assert cache.replica_ages() == {T: 10.0}
    older = _Step(wrapper, lambda: cache.resync_tenant(T))
    newer = _Step(wrapper, lambda: cache.resync_tenant(T))  # supersedes the older one
    newer.finish(wrapper)  # installed: fetched at 1010
    clock.advance(5)
    older.finish(wrapper)  # fetched at 1015 but discarded
    clock.advance(1)
    assert cache.replica_ages() == {T: 6.0}, "the discarded snapshot counted as a load"
