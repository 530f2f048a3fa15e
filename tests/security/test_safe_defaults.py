"""Safe defaults, on a real `hybridcache serve` in secure mode with no limits configured:
one caller's burst of slow Wrapper-backed calls is capped by the default per-caller
in-flight limit, so other tenants' replica reads keep their deadlines, and every refusal
carries a RetryInfo delay of at least the floor, jittered."""

from __future__ import annotations

import threading
import time
from collections import Counter

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hybridcache.server.api.errors import RETRY_FLOOR_S
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from tests.faults.stack import Stack
from tests.helpers import wait_for
from tests.integration.test_rpcs import error_reason
from tests.security.conftest import ACME_TOKEN, GLOBEX_TOKEN

pytestmark = pytest.mark.timeout(120)

SLOW_CALLS = 120
WRAPPER_LATENCY_MS = 1500
REPLICA_DEADLINE_S = 0.5  # a replica read is ~1 ms; the README promises errors before the deadline


def retry_delay_s(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error.code()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError(f"no RetryInfo on {error.code()}: {error.details()}")


def test_one_callers_slow_calls_leave_other_tenants_replica_reads_in_time(secure_stack: Stack) -> None:
    assert secure_stack.server is not None
    target = secure_stack.server.target
    acme = (("authorization", f"Bearer {ACME_TOKEN}"),)
    globex = (("authorization", f"Bearer {GLOBEX_TOKEN}"),)
    outcomes: Counter[str] = Counter()
    refusals: list[grpc.RpcError] = []
    lock = threading.Lock()
    secure_stack.admin.set_faults(latencyMs=WRAPPER_LATENCY_MS)
    try:
        with grpc.insecure_channel(target) as slow_channel, grpc.insecure_channel(target) as fast_channel:
            slow = pb_grpc.HybridCacheStub(slow_channel)

            def slow_miss(i: int) -> None:
                request = pb.GetUserProfileRequest(tenant_id="acme", user_id=f"user-{i % 50 + 1}-{i}")
                try:
                    slow.GetUserProfile(request, metadata=acme, timeout=10)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        with lock:
                            refusals.append(exc)
                with lock:
                    outcomes[code] += 1

            threads = [threading.Thread(target=slow_miss, args=(i,)) for i in range(SLOW_CALLS)]
            for thread in threads:
                thread.start()
            wait_for(
                lambda: secure_stack.admin.stats()["total"] > 0, timeout=10, what="slow calls at the Wrapper"
            )
            fast = pb_grpc.HybridCacheStub(fast_channel)
            replica_reads: list[float] = []
            missed: Counter[str] = Counter()
            request = pb.GetCreditCostRequest(tenant_id="globex", operation_code="crm.leads.create")
            until = time.monotonic() + 1.0  # while the slow calls are at the Wrapper
            while time.monotonic() < until:
                started = time.perf_counter()
                try:
                    fast.GetCreditCost(request, metadata=globex, timeout=REPLICA_DEADLINE_S)
                    replica_reads.append(time.perf_counter() - started)
                except grpc.RpcError as exc:
                    missed[exc.code().name] += 1
                time.sleep(0.005)  # a steady caller, well under the default rate limit
            for thread in threads:
                thread.join(30)
    finally:
        secure_stack.admin.clear_faults()
    print(f"\nslow calls: {dict(outcomes)}; replica reads: {len(replica_reads)}, missed {dict(missed)}")
    assert not missed, f"globex's replica reads missed their deadline under acme's slow calls: {dict(missed)}"
    assert len(replica_reads) >= 10, f"too few replica reads answered: {len(replica_reads)}"
    assert outcomes["RESOURCE_EXHAUSTED"] > 0, f"the default in-flight cap did not bite: {dict(outcomes)}"
    assert {error_reason(e) for e in refusals} == {"TOO_MANY_IN_FLIGHT"}
    delays = [retry_delay_s(e) for e in refusals]
    assert min(delays) >= RETRY_FLOOR_S, f"a RetryInfo delay below the {RETRY_FLOOR_S} s floor: {min(delays)}"
    assert len(set(delays)) > 1, "every refusal asked for the same delay: no jitter"
