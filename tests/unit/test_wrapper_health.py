"""The circuit breaker per Wrapper endpoint kind: opens after failures in a row, fails fast
while open, lets exactly one probe through after the reset timeout, closes on its success."""

from __future__ import annotations

import threading

import pytest

from hybridcache.server.core.errors import WrapperUnavailable
from hybridcache.server.wrapper.health import KNOWN_DOWN_REASON, Breaker, BreakerState, WrapperHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _opened(clock: Clock, threshold: int = 3) -> Breaker:
    breaker = Breaker("item:user-profiles", failure_threshold=threshold, reset_timeout_s=2.0, clock=clock)
    for _ in range(threshold):
        breaker.failed(breaker.admit())
    return breaker


def test_failures_in_a_row_open_it_and_a_success_in_between_resets_the_count() -> None:
    clock = Clock()
    breaker = Breaker("e", failure_threshold=3, reset_timeout_s=2.0, clock=clock)
    breaker.failed(breaker.admit())
    breaker.failed(breaker.admit())
    breaker.succeeded(breaker.admit())
    breaker.failed(breaker.admit())
    breaker.failed(breaker.admit())
    assert breaker.state is BreakerState.CLOSED
    assert not breaker.known_down
    breaker.failed(breaker.admit())
    assert breaker.state is BreakerState.OPEN
    assert breaker.known_down
    assert breaker.opened_total == 1


def test_while_open_calls_fail_at_once_saying_the_wrapper_is_known_down() -> None:
    breaker = _opened(Clock())
    with pytest.raises(WrapperUnavailable, match="known to be down") as raised:
        breaker.admit()
    assert raised.value.reason == KNOWN_DOWN_REASON


def test_after_the_reset_timeout_exactly_one_probe_goes_through() -> None:
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 2.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit() is True  # the probe
    with pytest.raises(WrapperUnavailable):
        breaker.admit()  # everyone else still fails fast while it runs
    breaker.succeeded(True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit() is False


def test_a_failed_probe_opens_it_for_another_period() -> None:
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 2.0
    breaker.failed(breaker.admit())
    assert breaker.state is BreakerState.OPEN
    clock.now += 1.9
    with pytest.raises(WrapperUnavailable):
        breaker.admit()
    clock.now += 0.1
    assert breaker.admit() is True


def test_a_probe_that_never_reached_the_wrapper_gives_its_slot_back() -> None:
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 2.0
    breaker.neutral(breaker.admit())
    assert breaker.admit() is True


def test_zero_failures_means_no_breaker() -> None:
    breaker = Breaker("e", failure_threshold=0, reset_timeout_s=2.0, clock=Clock())
    for _ in range(100):
        breaker.failed(breaker.admit())
    assert breaker.state is BreakerState.CLOSED


def test_one_breaker_per_endpoint_kind_even_under_concurrent_first_use() -> None:
    health = WrapperHealth()
    seen: list[Breaker] = []
    threads = [
        threading.Thread(target=lambda: seen.append(health.breaker("item:org-units"))) for _ in range(50)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(b) for b in seen}) == 1
    assert not health.known_down("item:user-profiles")  # another endpoint kind, never used
