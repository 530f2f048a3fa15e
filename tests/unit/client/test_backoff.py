"""The one backoff policy (hybridcache.client.backoff) every retry and reconnect loop uses."""

from __future__ import annotations

import pytest

from hybridcache.client.backoff import Backoff, BackoffPolicy
from tests.helpers import FixedRandom


def test_ceiling_doubles_from_initial_up_to_the_cap() -> None:
    policy = BackoffPolicy(initial_s=0.1, cap_s=0.25)
    assert [policy.ceiling(n) for n in range(4)] == [0.1, 0.2, 0.25, 0.25]


def test_a_huge_attempt_count_stays_at_the_cap() -> None:
    assert BackoffPolicy(initial_s=0.1, cap_s=30.0).ceiling(10_000) == 30.0


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_equal_jitter_stays_between_half_the_ceiling_and_the_ceiling(fraction: float) -> None:
    policy = BackoffPolicy(initial_s=0.2, cap_s=5.0)
    delays = [policy.delay(n, FixedRandom(fraction)) for n in range(8)]
    edges = [min(5.0, 0.2 * 2**n) * (0.5 + fraction / 2) for n in range(8)]
    assert delays == pytest.approx(edges), "equal jitter must span exactly [ceiling/2, ceiling]"


def test_full_jitter_may_retry_at_once_and_never_beyond_the_ceiling() -> None:
    policy = BackoffPolicy(initial_s=0.04, cap_s=0.5, jitter="full")
    assert policy.delay(0, FixedRandom(0.0)) == 0.0
    assert policy.delay(5, FixedRandom(1.0)) == 0.5


def test_random_delays_stay_in_range_without_a_given_generator() -> None:
    policy = BackoffPolicy(initial_s=0.1, cap_s=1.0)
    for n in range(200):
        ceiling = policy.ceiling(n % 6)
        assert ceiling / 2 <= policy.delay(n % 6) <= ceiling


def test_the_loop_state_grows_and_resets() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=0.1, cap_s=0.25), FixedRandom(1.0))
    assert [backoff.next_delay() for _ in range(4)] == [0.1, 0.2, 0.25, 0.25]
    backoff.reset()
    assert backoff.next_delay() == 0.1, "after reset() the next delay starts from initial_s again"


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_bounds_are_refused(initial: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < initial_s <= cap_s"):
        BackoffPolicy(initial_s=initial, cap_s=cap)
