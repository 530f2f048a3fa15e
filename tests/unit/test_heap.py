"""The heap settler: a replica load leads to one collect-and-freeze, rate-limited."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from hybridcache.server.ops.heap import HeapSettler, settle
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it was


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_settle_collects_cycles_then_freezes_the_survivors(unfrozen: None) -> None:
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = [_Node() for _ in range(100)]

    pause = settle()

    assert gone() is None, "a garbage cycle was frozen instead of collected"
    assert gc.get_freeze_count() >= len(kept), "the surviving objects were not frozen"
    assert pause >= 0


def test_a_frozen_object_is_still_freed_by_reference_counting(unfrozen: None) -> None:
    value = _Value()
    gone = weakref.ref(value)
    settle()
    assert gc.is_tracked(value)
    assert gc.get_freeze_count() > 0
    del value
    assert gone() is None, "a frozen object with no references left was not freed"


class _Value:
    """Like a replica entry: no cycle, freed by reference counting alone."""


def test_settles_once_loads_are_quiet_and_at_most_once_per_interval() -> None:
    clock = _Clock()
    calls: list[float] = []

    def record() -> float:
        calls.append(clock.now)
        return 0.0

    settler = HeapSettler(min_interval_s=60, quiet_s=1, settle_heap=record, clock=clock)

    assert settler.due_in() is None, "nothing loaded, nothing to settle"
    settler.loaded()
    assert not settler.settle_if_due(), "settled while loads may still be arriving"
    clock.now += 0.5
    settler.loaded()  # a burst: the quiet period restarts
    clock.now += 0.9
    assert not settler.settle_if_due()
    clock.now += 0.2
    assert settler.settle_if_due(), "loads were quiet for 1 s: the heap should settle"
    assert calls == [clock.now]

    clock.now += 5
    settler.loaded()
    clock.now += 2
    assert settler.due_in() == pytest.approx(53), "the next settle must wait for the 60 s interval"
    assert not settler.settle_if_due()
    clock.now += 53
    assert settler.settle_if_due()
    assert len(calls) == 2
    assert settler.due_in() is None


def test_the_thread_settles_after_a_load() -> None:
    settled: list[bool] = []

    def record() -> float:
        settled.append(True)
        return 0.0

    settler = HeapSettler(min_interval_s=0, quiet_s=0.01, settle_heap=record)
    settler.start()
    try:
        settler.loaded()
        wait_for(lambda: settled, timeout=5, what="the settler thread to settle the heap")
        assert settler.settled == 1
    finally:
        settler.stop()
