from __future__ import annotations

import threading

import pytest

from hybridcache.server.hub import StreamLimiter, StreamLimitError


def test_total_cap() -> None:
    limiter = StreamLimiter(max_streams=2, max_per_caller=5)
    first = limiter.acquire("a")
    limiter.acquire("b")
    with pytest.raises(StreamLimitError, match="limit 2"):
        limiter.acquire("c")
    first.release()
    limiter.acquire("c")
    assert limiter.in_use() == 2


def test_per_caller_cap() -> None:
    limiter = StreamLimiter(max_streams=10, max_per_caller=1)
    with limiter.acquire("a"):
        with pytest.raises(StreamLimitError, match="this caller"):
            limiter.acquire("a")
        limiter.acquire("b")
        assert limiter.in_use("a") == 1
    assert limiter.in_use("a") == 0
    assert limiter.in_use() == 1


def test_release_is_idempotent() -> None:
    limiter = StreamLimiter(max_streams=1, max_per_caller=1)
    slot = limiter.acquire("a")
    slot.release()
    slot.release()
    assert limiter.in_use() == 0
    limiter.acquire("a")
    assert limiter.in_use() == 1


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        StreamLimiter(max_streams=0, max_per_caller=1)


@pytest.mark.timeout(20)
def test_concurrent_acquire_release_never_exceeds_the_cap() -> None:
    limiter = StreamLimiter(max_streams=3, max_per_caller=3)
    peak = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal peak
        for _ in range(2_000):
            try:
                slot = limiter.acquire("same")
            except StreamLimitError:
                continue
            with lock:
                peak = max(peak, limiter.in_use())
            slot.release()
            slot.release()  # a second release (the RPC callback) must not free someone else's slot

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak <= 3
    assert limiter.in_use() == 0
