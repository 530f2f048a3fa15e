"""What the legitimate side sees while an attack runs: authenticated calls and health checks,
each on its own connection, timed one after another until told to stop."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.percentiles import percentile


@dataclass
class ProbeResults:
    what: str
    seconds: list[float] = field(default_factory=list)  # successful calls
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def p99_ms(self) -> float:
        return percentile(self.seconds, 99) * 1000

    @property
    def answered(self) -> int:
        return len(self.seconds)

    def summary(self) -> str:
        return (
            f"{self.what}: {self.answered} answered, p99 {self.p99_ms:.1f} ms, failures {dict(self.failures)}"
        )


class Prober:
    """Calls `call(channel)` in a loop on a thread of its own until `stop()`."""

    def __init__(self, target: str, what: str, call: Callable[[grpc.Channel], None]) -> None:
        self.results = ProbeResults(what)
        self._target = target
        self._call = call
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe-{what}", daemon=True)

    def _run(self) -> None:
        with grpc.insecure_channel(self._target) as channel:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    self._call(channel)
                except grpc.RpcError as exc:
                    self.results.failures[exc.code().name] += 1
                except AssertionError as exc:  # an answer, but not the one a healthy server gives
                    self.results.failures[str(exc)] += 1
                else:
                    self.results.seconds.append(time.perf_counter() - started)
                self._stop.wait(0.01)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> ProbeResults:
        self._stop.set()
        self._thread.join(10)
        return self.results


def credit_cost_call(
    token: str, tenant: str = "acme", timeout: float = 2.0
) -> Callable[[grpc.Channel], None]:
    request = pb.GetCreditCostRequest(tenant_id=tenant, operation_code="crm.leads.create")
    metadata = (("authorization", f"Bearer {token}"),)

    def call(channel: grpc.Channel) -> None:
        pb_grpc.HybridCacheStub(channel).GetCreditCost(request, metadata=metadata, timeout=timeout)

    return call


def health_call(timeout: float = 1.0) -> Callable[[grpc.Channel], None]:
    def call(channel: grpc.Channel) -> None:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise AssertionError(f"health answered {reply.status}")

    return call
