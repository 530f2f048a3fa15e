"""Scenario 4: fill versus invalidate, under real concurrency (docs/GUARANTEES.md §2, "no stale set").

The server reaches the Wrapper through the fault proxy, which holds every Wrapper response
for `HOLD_S`. Each race, per worker and user:

    PATCH title=pre-i  ─► wait until the server applied its event (entry invalidated)
    A: GetUserProfile  ─► miss: the Wrapper reads "pre-i", the response waits in the proxy
    PATCH title=new-i  ─► commits and publishes while A's fetch is in flight: invalidation
    A returns          ─► "pre-i" (fetched before the change): the race was exercised
    wait until the server applied new-i's event
    B: GetUserProfile  ─► must be "new-i"; "pre-i" means A's stale fetch was stored after
                          the invalidation: a stale set

Figures: races exercised (A returned the old value after the change was published) and
stale values stored (must be 0).
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from tests.faults.conftest import Figures, Scale, variants
from tests.faults.history import Observation, Request, observe, wait_until
from tests.faults.stack import stack

HOLD_S = 0.15  # every Wrapper response waits this long in the proxy
WORKERS = 4


class Applied:
    """Waits until the server has applied (or invalidated by) every event published so far."""

    def __init__(self, stub: pb_grpc.HybridCacheStub) -> None:
        self.stub = stub
        self.baseline = self.count()
        self.published = 0
        self._lock = threading.Lock()

    def count(self) -> int:
        return int(self.stub.GetCacheStats(pb.GetCacheStatsRequest(), timeout=2).events_applied)

    def one_more(self) -> int:
        with self._lock:
            self.published += 1
            return self.baseline + self.published

    def wait(self, at_least: int) -> None:
        # Pub/sub delivers in publish order to one reader thread, and the Wrapper publishes
        # in commit order: reaching the count means this worker's event was applied too.
        wait_until(
            lambda: self.count() >= at_least, timeout=10, what=f"events_applied >= {at_least}", interval=0.005
        )


@pytest.mark.faults
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "scale", variants(Scale("fast", runs=12), Scale("full", runs=250))
)  # runs: races per worker
def test_no_stale_value_stored_after_invalidation(scale: Scale, figures: Figures) -> None:
    stale: list[str] = []
    exercised = 0
    attempts = 0
    lock = threading.Lock()
    with stack(wrapper_proxy=True) as s:
        assert s.wrapper_proxy is not None
        s.spawn_server()
        s.wrapper_proxy.latency(HOLD_S, "down")
        channel = grpc.insecure_channel(s.target)
        stub = pb_grpc.HybridCacheStub(channel)
        applied = Applied(stub)
        users_per_worker = 5

        def worker(w: int) -> None:
            nonlocal exercised, attempts
            rng = random.Random(w)
            fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"race-a-{w}")
            try:
                for i in range(int(scale.runs)):
                    user = f"user-{1 + w * users_per_worker + i % users_per_worker}"
                    request = Request("profile", "acme", user)
                    pre, new = f"pre-{w}-{i}", f"new-{w}-{i}"
                    s.admin.patch_profile("acme", user, title=pre)
                    applied.wait(applied.one_more())
                    a = fetcher.submit(observe, stub, request, timeout=5.0, worker=f"A{w}")
                    time.sleep(rng.uniform(0.02, HOLD_S * 0.6))  # into the fetch's flight
                    s.admin.patch_profile("acme", user, title=new)
                    t_written = time.monotonic()
                    expected = applied.one_more()
                    first: Observation = a.result(timeout=10)
                    applied.wait(expected)
                    second = observe(stub, request, timeout=5.0, worker=f"B{w}")
                    with lock:
                        attempts += 1
                        if (
                            first.ok
                            and first.value == pre
                            and first.source == "wrapper"
                            and t_written < first.end
                        ):
                            exercised += 1
                        if not second.ok or second.value != new:
                            stale.append(
                                f"{user} race {i}: A={first.value!r} ({first.source}), then "
                                f"B={second.value!r} ({second.source}, {second.code}) though the Wrapper "
                                f"holds {new!r}"
                            )
            finally:
                fetcher.shutdown(wait=True)

        threads = [threading.Thread(target=worker, args=(w,), name=f"race-{w}") for w in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(scale.runs * 5 + 60)
        channel.close()
    figures.record(
        "4-fill-vs-invalidate",
        scale.name,
        attempts=attempts,
        races_exercised=exercised,
        stale_values_stored=len(stale),
        wrapper_response_hold_ms=HOLD_S * 1000,
        workers=WORKERS,
    )
    assert attempts == WORKERS * scale.runs, f"only {attempts} of {WORKERS * scale.runs} races ran"
    assert exercised >= attempts // 2, (
        f"only {exercised} of {attempts} attempts raced: the test lost its edge"
    )
    assert not stale, f"{len(stale)} stale values stored after an invalidation, e.g. {stale[:3]}"
