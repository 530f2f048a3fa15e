"""A hung Wrapper costs nothing per call (issue: with the Wrapper SIGSTOPped every stale
reference read first waited 913 ms of its 1 s deadline, and uncached reads the same).

Real parts: a private redis-server, the development Wrapper stopped with SIGSTOP and
resumed with SIGCONT, the server as a `hybridcache serve` subprocess (so the load of this
test does not share its GIL).
"""

from __future__ import annotations

import json
import os
import signal
import time

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.percentiles import percentile
from tests.faults.history import Observation, Request, observe
from tests.faults.scenarios import USERS
from tests.faults.stack import spare_port, stack
from tests.helpers import wait_for

TTL_S = 1.0
DEADLINE_S = 1.0
RESET_S = 2.0  # HYBRIDCACHE_WRAPPER_BREAKER_RESET_S (the default)
WRAPPER_TIMEOUT_S = 2.0  # HYBRIDCACHE_WRAPPER_TIMEOUT_S (the default)
STALE_READS = 1000
WARM_READS = 100
CLIENT_P99_BOUND_S = 0.025  # was 913 ms per read without the breaker
FAST_FAIL_S = 0.05
# After SIGCONT: the probe in flight is answered at once, or the next one starts within RESET_S.
RECOVERY_BOUND_S = RESET_S + WRAPPER_TIMEOUT_S


def _profiles(tenant: str) -> list[Request]:
    return [Request("profile", tenant, user) for user in USERS]


@pytest.mark.timeout(180)
def test_with_the_wrapper_stopped_reads_cost_nothing_once_the_breaker_is_open() -> None:
    with stack() as s:
        policy = {"ttl_s": TTL_S, "max_stale_s": 600, "adaptive_ttl": False, "refresh_ahead": 0.0}
        metrics_port = spare_port()
        s.spawn_server(
            HYBRIDCACHE_KIND_POLICIES=json.dumps({"user-profiles": policy}),
            HYBRIDCACHE_METRICS_PORT=str(metrics_port),
        )
        cached, uncached = _profiles("acme"), _profiles("globex")
        with grpc.insecure_channel(s.target) as channel:
            stub = pb_grpc.HybridCacheStub(channel)
            for request in cached:
                first = observe(stub, request, timeout=5.0)
                assert first.ok, f"warming {request}: {first.code} {first.reason}"
                assert first.source == "wrapper"
            warmed_at = time.monotonic()
            wait_for(lambda: time.monotonic() - warmed_at > TTL_S + 0.1, timeout=5, what="the TTL to pass")

            os.kill(s.wrapper.pid, signal.SIGSTOP)
            try:
                # The first few reads pay for finding out (the breaker counts failures in a row).
                opened = wait_for(
                    lambda: _fast_stale(observe(stub, cached[0], timeout=DEADLINE_S)),
                    timeout=30,
                    what=f"a stale read answered within {FAST_FAIL_S * 1000:.0f} ms (the breaker open)",
                    interval=0.0,
                )
                assert opened.source == "stale"

                for i in range(WARM_READS):  # the channel and the server's threads warmed, not measured
                    observe(stub, cached[i % len(cached)], timeout=DEADLINE_S)
                before = _handling(metrics_port)
                stale = [
                    observe(stub, cached[i % len(cached)], timeout=DEADLINE_S) for i in range(STALE_READS)
                ]
                after = _handling(metrics_port)
                not_stale = [o for o in stale if not (o.ok and o.source == "stale")]
                assert not not_stale, f"{len(not_stale)} reads were not served stale: {not_stale[:3]}"
                latencies = [o.latency_s for o in stale]
                p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                calls, within = after[0] - before[0], after[1] - before[1]
                print(
                    f"\n{STALE_READS} stale reads with the Wrapper stopped: client-observed p50 "
                    f"{p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms; "
                    f"handled by the server within 5 ms: {within:.0f} of {calls:.0f}"
                )
                # The service's own time per read (the gate's histogram: validation, the core, the
                # answer) is what the breaker saves: p99 <= 5 ms means 99% in the 5 ms bucket. The
                # client's view adds this loaded host's scheduling of the test process.
                assert calls >= STALE_READS
                assert within >= 0.99 * calls, (
                    f"only {within:.0f} of {calls:.0f} stale reads were handled within 5 ms"
                )
                assert p99 <= CLIENT_P99_BOUND_S, f"client-observed p99 {p99 * 1000:.2f} ms"

                failures = [observe(stub, request, timeout=DEADLINE_S) for request in uncached]
                assert all(o.code == "UNAVAILABLE" for o in failures), [o.code for o in failures]
                fast = [o for o in failures if o.latency_s < FAST_FAIL_S and "known to be down" in o.reason]
                # At most one of them may be the breaker's probe (let through, it waits it out).
                assert len(fast) >= len(failures) - 1, (
                    f"only {len(fast)} of {len(failures)} uncached reads failed fast saying the Wrapper "
                    f"is known down: {[(round(o.latency_s, 3), o.reason[:60]) for o in failures]}"
                )
                state = _breaker_state(metrics_port, "item:user-profiles")
                assert state in (1.0, 2.0), f"breaker state metric {state}: neither open (2) nor probing (1)"
                uncached_p50 = percentile([o.latency_s for o in failures], 50)
                print(f"uncached reads: UNAVAILABLE, p50 {uncached_p50 * 1000:.2f} ms")
            finally:
                os.kill(s.wrapper.pid, signal.SIGCONT)
            resumed_at = time.monotonic()
            wait_for(
                lambda: observe(stub, uncached[0], timeout=DEADLINE_S).ok,
                timeout=RECOVERY_BOUND_S + 3.0,
                what=f"an uncached read to succeed within {RECOVERY_BOUND_S} s of SIGCONT",
                interval=0.05,
            )
            recovered_s = time.monotonic() - resumed_at
            fresh = observe(stub, cached[1], timeout=DEADLINE_S)
            print(f"recovered {recovered_s:.2f} s after SIGCONT")
            assert recovered_s <= RECOVERY_BOUND_S + 3.0
            assert fresh.ok, fresh.code
            assert fresh.source in ("wrapper", "cache"), fresh.source
            assert _breaker_state(metrics_port, "item:user-profiles") == 0.0, "breaker not closed again"


def _samples(port: int) -> list[Sample]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _handling(port: int) -> tuple[float, float]:
    """GetUserProfile calls handled so far, and those handled within 5 ms (the gate's histogram)."""
    total = within = 0.0
    for sample in _samples(port):
        if not sample.labels.get("grpc_method", "").endswith("GetUserProfile"):
            continue
        if sample.name == "grpc_server_handling_seconds_count":
            total += sample.value
        elif sample.name == "grpc_server_handling_seconds_bucket" and float(sample.labels["le"]) == 0.005:
            within += sample.value
    return total, within


def _breaker_state(port: int, endpoint: str) -> float | None:
    for sample in _samples(port):
        if sample.name == "hybridcache_wrapper_breaker_state" and sample.labels["endpoint"] == endpoint:
            return float(sample.value)
    return None


def _fast_stale(observation: Observation) -> Observation | None:
    fast = observation.ok and observation.source == "stale" and observation.latency_s < FAST_FAIL_S
    return observation if fast else None
