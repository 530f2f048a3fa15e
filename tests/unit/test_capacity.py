"""Lanes admit up to their cap and give places back; RetryInfo delays respect the floor."""

from __future__ import annotations

import statistics

from hybridcache.server.api.capacity import Lane, Lanes
from hybridcache.server.api.errors import RETRY_FLOOR_S, retry_delay_s


def test_a_lane_admits_up_to_its_limit_and_again_after_a_release() -> None:
    lane = Lane("unary", threads=1, limit=2)
    try:
        assert lane.try_admit()
        assert lane.try_admit()
        assert not lane.try_admit(), "a full lane admitted a third call"
        lane.release()
        assert lane.try_admit(), "a released place was not given again"
        assert lane.admitted == 2
    finally:
        lane.shutdown()


def test_each_kind_of_call_has_a_pool_of_its_own() -> None:
    lanes = Lanes.build(unary_threads=4, unary_limit=16, streams=3, reflection=1, health=2)
    try:
        pools = {id(lane.pool) for lane in lanes.all()}
        assert len(pools) == len(lanes.all()), "two lanes share a thread pool"
        assert lanes.stream.limit == 3
        assert lanes.health.limit > lanes.health_watch.limit  # Check queues briefly; Watch holds
        for name in ("unary", "health"):
            behavior = getattr(lanes, name).on_pool(lambda *_: None)
            assert behavior.experimental_thread_pool is getattr(lanes, name).pool
    finally:
        lanes.shutdown()


def test_retry_delays_are_never_below_the_floor_and_are_jittered() -> None:
    delays = [retry_delay_s(0.0) for _ in range(200)]
    assert min(delays) >= RETRY_FLOOR_S
    assert max(delays) <= 2 * RETRY_FLOOR_S
    assert statistics.pstdev(delays) > 0, "every delay was the same"
    assert retry_delay_s(1.0) >= 1.0, "a longer wanted delay was shortened"
