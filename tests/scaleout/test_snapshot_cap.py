"""The per-process cap on concurrent snapshot loads (HYBRIDCACHE_MAX_CONCURRENT_SNAPSHOT_LOADS).

A real WrapperClient over HTTP to an in-process server (`StubHTTP`) that holds each snapshot request
until released, so the number in flight is observed exactly (no timing guesses).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hybridcache.server.config import load_settings
from hybridcache.server.core.errors import WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.wrapper.client import WrapperClient
from hybridcache_dev.harness.stub_http import StubHTTP, StubRequest
from tests.scaleout.fleet import wait_until

pytestmark = pytest.mark.timeout(30)


class HeldWrapper:
    """Answers snapshot GETs only once `release` is set; counts requests in flight."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    def handler(self, request: StubRequest) -> tuple[int, bytes]:
        with self.lock:
            self.in_flight += 1
            self.calls += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            assert self.release.wait(10), "the test never released the held requests"
            tenant = request.path.split("/")[3]
            body = {"tenantId": tenant, "kind": "feature-flags", "revision": 1, "items": []}
            return 200, json.dumps(body).encode()
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.mark.parametrize(("cap", "expected_peak"), [(2, 2), (0, 6)])
def test_concurrent_snapshot_loads_are_capped(cap: int, expected_peak: int) -> None:
    wrapper = HeldWrapper()
    stub = StubHTTP(wrapper.handler)
    client = WrapperClient(stub.url, "t", max_concurrent_snapshots=cap, timeout_s=10)
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [
            pool.submit(client.fetch_snapshot, f"tenant-{i}", Kind.FEATURE_FLAGS, time.monotonic() + 10)
            for i in range(6)
        ]
        wait_until(lambda: wrapper.in_flight == expected_peak, 5, f"{expected_peak} requests in flight")
        # Give the others every chance to get past a broken cap before releasing.
        time.sleep(0.2)
        assert wrapper.in_flight == expected_peak
        wrapper.release.set()
        for future in futures:
            assert future.result(10).revision == 1
    assert wrapper.peak == expected_peak
    assert wrapper.calls == 6
    client.close()
    stub.close()


def test_a_load_waiting_for_a_slot_gives_up_at_its_deadline() -> None:
    wrapper = HeldWrapper()
    stub = StubHTTP(wrapper.handler)
    client = WrapperClient(stub.url, "t", max_concurrent_snapshots=1)
    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(client.fetch_snapshot, "a", Kind.FEATURE_FLAGS, time.monotonic() + 10)
        wait_until(lambda: wrapper.in_flight == 1, 5, "the first load in flight")
        started = time.monotonic()
        with pytest.raises(WrapperUnavailable) as caught:
            client.fetch_snapshot("b", Kind.FEATURE_FLAGS, time.monotonic() + 0.2)
        assert caught.value.reason == "WRAPPER_BUSY"
        assert time.monotonic() - started < 1.0, "the wait for a slot must end at the caller's deadline"
        wrapper.release.set()
        holder.result(10)
    assert wrapper.calls == 1
    client.close()
    stub.close()


def test_setting_defaults_and_validation() -> None:
    assert load_settings({}).max_concurrent_snapshot_loads == 2
    assert (
        load_settings({"HYBRIDCACHE_MAX_CONCURRENT_SNAPSHOT_LOADS": "0"}).max_concurrent_snapshot_loads == 0
    )
