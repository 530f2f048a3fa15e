"""The moving parts of the failover scenarios: a load driver through the shipped client, a
consumer that keeps its own copy of one tenant's credit costs from `watch()` (reloading on
RESYNC_REQUIRED), a writer that keeps changing the Wrapper's data, and the truth to compare.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import grpc

from hybridcache.client import ClientConfig, HybridCacheClient
from hybridcache.client.errors import HybridCacheError
from hybridcache.server.hub.tokens import instance_of as token_instance
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin

TENANT = "acme"


def codes_of(admin: WrapperAdmin, tenant: str = TENANT, count: int = 6) -> list[str]:
    items = admin.item(f"{tenant}/snapshots/credit-costs")["items"]
    return sorted(str(item["operationCode"]) for item in items)[:count]


def truth(admin: WrapperAdmin, codes: Sequence[str], tenant: str = TENANT) -> dict[str, Decimal]:
    return {code: Decimal(admin.item(f"{tenant}/credit-costs/{code}")["cost"]) for code in codes}


def answers_of(target: str, codes: Sequence[str], tenant: str = TENANT) -> dict[str, Decimal] | None:
    """One replica's answers, asked directly (None when it cannot answer right now)."""
    with HybridCacheClient(target, ClientConfig(default_timeout=1.0, retry=None)) as client:
        try:
            reply = client.batch_get_credit_costs(tenant, codes)
        except HybridCacheError:
            return None
    return {c.operation_code: Decimal(c.cost.value) for c in reply.credit_costs}


def instance_of(target: str, timeout: float = 10.0) -> str:
    """The hub instance id of a replica: from the resume token of its first stream message."""
    with grpc.insecure_channel(target) as channel:
        call = pb_grpc.HybridCacheStub(channel).WatchChanges(
            pb.WatchChangesRequest(tenant_ids=[TENANT]), timeout=timeout
        )
        try:
            first = next(iter(call))
        finally:
            call.cancel()
    message = getattr(first, str(first.WhichOneof("message")))
    return token_instance(message.resume_token)


@dataclass
class Answer:
    sent: float
    took: float
    code: str
    value: Decimal | None  # None: the call failed
    error: str = ""


class LoadDriver:
    """Calls GetCreditCost in a loop through one client (round_robin over the replicas)."""

    def __init__(self, client: HybridCacheClient, codes: Sequence[str], *, pause_s: float = 0.004) -> None:
        self.client = client
        self.codes = list(codes)
        self.pause_s = pause_s
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> LoadDriver:
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            code = self.codes[i % len(self.codes)]
            i += 1
            sent = time.monotonic()
            try:
                reply = self.client.get_credit_cost(TENANT, code)
                value: Decimal | None = Decimal(reply.credit_cost.cost.value)
                error = ""
            except HybridCacheError as exc:
                value, error = None, f"{type(exc).__name__}: {exc}"
            self.answers.append(Answer(sent, time.monotonic() - sent, code, value, error))
            self._stop.wait(self.pause_s)  # pacing of the load, not a wait for readiness

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def failures(self, since: float = 0.0) -> list[Answer]:
        return [a for a in self.answers if a.value is None and a.sent >= since]


class Consumer:
    """A service that keeps one tenant's credit costs itself, fed by `watch()`.

    Reloads everything (BatchGetCreditCosts) at start and whenever the stream says
    RESYNC_REQUIRED or a kind was resynced; refreshes a key on each change event.
    """

    def __init__(self, client: HybridCacheClient, codes: Sequence[str]) -> None:
        self.client = client
        self.codes = list(codes)
        self.state: dict[str, Decimal] = {}
        self.resyncs: list[tuple[float, str]] = []
        self.events = 0
        self.dirty = True
        self.lock = threading.Lock()
        self.stream = client.watch(
            tenant_ids=[TENANT], on_resync=self._on_resync, on_progress=self._on_progress
        )
        self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)

    def start(self) -> Consumer:
        self._reload()
        self._thread.start()
        return self

    @property
    def instance(self) -> str | None:
        token = self.stream.resume_token
        return token_instance(token) if token else None

    def _reload(self) -> None:
        try:
            reply = self.client.batch_get_credit_costs(TENANT, self.codes, timeout=2.0)
        except HybridCacheError:
            self.dirty = True  # retried at the next heartbeat
            return
        with self.lock:
            self.state = {c.operation_code: Decimal(c.cost.value) for c in reply.credit_costs}
            self.dirty = False

    def _on_resync(self, reason: str) -> None:
        self.resyncs.append((time.monotonic(), reason))
        self._reload()

    def _on_progress(self, _progress: pb.Progress) -> None:
        if self.dirty:
            self._reload()

    def _run(self) -> None:
        for event in self.stream:
            self.events += 1
            if event.kind != pb.KIND_CREDIT_COSTS:
                continue
            if event.resync:
                self._reload()
                continue
            for key in event.keys:
                if key not in self.codes:
                    continue
                try:
                    reply = self.client.get_credit_cost(TENANT, key, timeout=2.0)
                except HybridCacheError:
                    self.dirty = True
                    continue
                with self.lock:
                    self.state[key] = Decimal(reply.credit_cost.cost.value)

    def snapshot(self) -> dict[str, Decimal]:
        with self.lock:
            return dict(self.state)

    def close(self) -> None:
        self.stream.close()
        self._thread.join(10)


class Writer:
    """Changes one credit cost every `period_s` through the Wrapper's admin API (which publishes)."""

    def __init__(self, admin: WrapperAdmin, codes: Sequence[str], *, period_s: float = 0.2) -> None:
        self.admin = admin
        self.codes = list(codes)
        self.period_s = period_s
        self.writes: list[tuple[float, str, str, bool]] = []  # (time, code, cost, published)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def write_once(self) -> bool:
        n = len(self.writes)
        code = self.codes[n % len(self.codes)]
        cost = f"{10 + n}.{n % 100:02d}"
        published = bool(self.admin.put_cost(TENANT, code, cost).get("published", False))
        self.writes.append((time.monotonic(), code, cost, published))
        return published

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):  # the write rate, not a readiness wait
            self.write_once()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
