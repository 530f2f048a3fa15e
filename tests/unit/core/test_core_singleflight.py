"""Single-flight with real threads: one Wrapper call per key or tenant, waiters bounded by deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from hybridcache.server.core import HybridCache, Kind, NotFound, Read, WrapperUnavailable, singleflight
from hybridcache.server.core.singleflight import Flight
from tests.unit.core.fakes import WAIT_S, FakeWrapper, cost, profile

pytestmark = pytest.mark.timeout(60)

T = "acme"
UP = Kind.USER_PROFILES
CC = Kind.CREDIT_COSTS


class WaiterCount:
    """Counts threads that have entered Flight.wait, so a test can open the gate only once
    every concurrent caller is actually waiting on the one flight."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._cond = threading.Condition()
        original = Flight.wait

        def counting_wait(
            flight: Flight[object], deadline: float | None, clock: Callable[[], float]
        ) -> object:
            with self._cond:
                self.count += 1
                self._cond.notify_all()
            return original(flight, deadline, clock)

        monkeypatch.setattr(singleflight.Flight, "wait", counting_wait)

    def wait_for(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.count >= n, timeout=WAIT_S), self.count


def _run_concurrently(n: int, call: Callable[[], object]) -> tuple[list[object], list[threading.Thread]]:
    results: list[object] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            outcome: object = call()
        except Exception as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    return results, threads


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()


def test_1000_concurrent_misses_make_one_wrapper_call(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = FakeWrapper()
    wrapper.put(T, UP, "u1", profile("u1"))
    gate = threading.Event()
    wrapper.gate = gate
    waiters = WaiterCount(monkeypatch)
    cache = HybridCache(wrapper)
    results, threads = _run_concurrently(1000, lambda: cache.get(T, UP, "u1"))
    assert wrapper.arrived.acquire(timeout=WAIT_S)
    waiters.wait_for(999)  # everyone else is waiting on the leader's flight
    gate.set()
    _join(threads)
    assert wrapper.count("item", T, UP, "u1") == 1
    assert len(results) == 1000
    assert all(isinstance(r, Read) and r.value == profile("u1") for r in results)
    stats = cache.stats().kinds[UP]
    assert (stats.fetches, stats.misses) == (1, 1000)


def test_concurrent_first_reads_load_the_tenant_once(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = FakeWrapper()
    wrapper.put(T, CC, "op", cost("op"))
    gate = threading.Event()
    wrapper.gate = gate
    waiters = WaiterCount(monkeypatch)
    cache = HybridCache(wrapper)
    results, threads = _run_concurrently(200, lambda: cache.get(T, CC, "op"))
    assert wrapper.arrived.acquire(timeout=WAIT_S)
    waiters.wait_for(199)
    gate.set()
    _join(threads)
    assert all(isinstance(r, Read) for r in results)
    assert wrapper.total_calls == 4  # one snapshot per replica kind
    assert all(wrapper.count("snapshot", T, kind) == 1 for kind in (CC, Kind.FEATURE_FLAGS))


def test_a_failed_fetch_wakes_every_waiter_with_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = FakeWrapper(down=True)
    gate = threading.Event()
    wrapper.gate = gate
    waiters = WaiterCount(monkeypatch)
    cache = HybridCache(wrapper)
    results, threads = _run_concurrently(50, lambda: cache.get(T, UP, "u1"))
    assert wrapper.arrived.acquire(timeout=WAIT_S)
    waiters.wait_for(49)
    gate.set()
    _join(threads)
    assert len(results) == 50
    assert all(isinstance(r, WrapperUnavailable) for r in results)
    assert len({id(r) for r in results}) == 50  # each thread raised its own exception object
    assert wrapper.total_calls == 1


def test_not_found_reaches_every_waiter(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = FakeWrapper()
    wrapper.add_tenant(T)
    gate = threading.Event()
    wrapper.gate = gate
    waiters = WaiterCount(monkeypatch)
    cache = HybridCache(wrapper)
    results, threads = _run_concurrently(20, lambda: cache.get(T, UP, "ghost"))
    assert wrapper.arrived.acquire(timeout=WAIT_S)
    waiters.wait_for(19)
    gate.set()
    _join(threads)
    assert all(isinstance(r, NotFound) for r in results)
    assert wrapper.total_calls == 1


def test_waiter_gives_up_before_its_deadline() -> None:
    wrapper = FakeWrapper()
    wrapper.put(T, UP, "u1", profile("u1"))
    gate = threading.Event()
    wrapper.gate = gate
    cache = HybridCache(wrapper)
    leader = threading.Thread(target=cache.get, args=(T, UP, "u1"))
    leader.start()
    try:
        assert wrapper.arrived.acquire(timeout=WAIT_S)
        deadline = time.monotonic() + 0.2
        with pytest.raises(WrapperUnavailable, match="deadline exceeded waiting for the Wrapper"):
            cache.get(T, UP, "u1", deadline=deadline)
        # The waiter aims 2 ms before its deadline; a loaded host may wake it a little late,
        # but never as late as the leader (held until the gate opens, up to WAIT_S).
        late = time.monotonic() - deadline
        assert late < 1.0, f"the waiter gave up {late:.3f} s after its deadline: it waited for the leader"
        with pytest.raises(WrapperUnavailable):  # a deadline already past: at once
            cache.get(T, UP, "u1", deadline=time.monotonic() - 1.0)
    finally:
        gate.set()  # never leave the leader blocked for the tests that follow
        leader.join(WAIT_S)
    assert cache.get(T, UP, "u1", deadline=time.monotonic() - 1.0).value == profile("u1")  # a hit
    assert wrapper.total_calls == 1


def test_waiter_on_a_tenant_load_honours_its_deadline() -> None:
    wrapper = FakeWrapper()
    wrapper.add_tenant(T)
    gate = threading.Event()
    wrapper.gate = gate
    cache = HybridCache(wrapper)
    loader = threading.Thread(target=cache.ensure_tenant, args=(T,))
    loader.start()
    assert wrapper.arrived.acquire(timeout=WAIT_S)
    deadline = time.monotonic() + 0.1
    with pytest.raises(WrapperUnavailable):
        cache.check_permission(T, "u1", "x", deadline=deadline)
    assert time.monotonic() < deadline
    gate.set()
    loader.join(WAIT_S)
    assert cache.is_loaded(T)


def test_flight_table_fencing() -> None:
    table: singleflight.FlightTable[str, int] = singleflight.FlightTable()
    first, leader = table.join_or_start("k")
    assert leader
    again, leader = table.join_or_start("k")
    assert again is first
    assert not leader
    table.fence("k")
    assert first.fenced
    assert "k" not in table
    second = table.start("k")
    third = table.start("k")  # supersedes the second
    assert second.fenced
    assert not third.fenced
    table.finish("k", second)  # not current: no effect
    assert "k" in table
    table.fence_all()
    assert third.fenced
    assert len(table) == 0
