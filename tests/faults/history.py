"""Concurrent recorders of what every client saw, and the checkers run on the record afterwards.

    history = History()
    with LoadLoop(target, requests, history, workers=4, rate_per_s=200, max_s=30) as load:
        ... inject faults ...
    convergence(history.ok_or_failed(...), truth, since=t_healed)

Every observation is (start, end, worker, request, answer, provenance): the time it was
sent and answered (time.monotonic()), which request, what came back (a normalised value or
the gRPC status code with its ErrorInfo reason), and where the server said the value came
from (source, age, version, freshness). Checkers never look at the server's internals.

Every loop is bounded in count and in time and ends by itself; `stop()` ends it early.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import grpc

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from tests.helpers import wait_for

SOURCE = {pb.SOURCE_CACHE: "cache", pb.SOURCE_WRAPPER: "wrapper", pb.SOURCE_STALE: "stale"}
FRESHNESS = {
    pb.FRESHNESS_LIVE: "live",
    pb.FRESHNESS_DEGRADED: "degraded",
    pb.FRESHNESS_REPAIRING: "repairing",
}
CRITICAL_OPS = frozenset({"credit-cost", "permission", "user-status", "flag"})


# --- requests -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One read the load loops send: op is the RPC, (tenant, key) the entity."""

    op: str  # credit-cost | permission | user-status | flag | profile | org-unit
    tenant: str
    key: str  # permission: "user|permission"

    @property
    def critical(self) -> bool:
        return self.op in CRITICAL_OPS

    @property
    def entity(self) -> tuple[str, str, str]:
        return (self.op, self.tenant, self.key)

    def call(self, stub: pb_grpc.HybridCacheStub, timeout: float) -> tuple[str, Any]:
        """Send it; (normalised value, provenance). Raises grpc.RpcError."""
        t = self.tenant
        if self.op == "credit-cost":
            r = stub.GetCreditCost(
                pb.GetCreditCostRequest(tenant_id=t, operation_code=self.key), timeout=timeout
            )
            return canonical(r.credit_cost.cost.value), r.provenance
        if self.op == "permission":
            user, permission = self.key.split("|", 1)
            req = pb.CheckPermissionRequest(tenant_id=t, user_id=user, permission=permission)
            p = stub.CheckPermission(req, timeout=timeout)
            return f"{p.allowed}", p.provenance
        if self.op == "user-status":
            s = stub.GetUserStatus(pb.GetUserStatusRequest(tenant_id=t, user_id=self.key), timeout=timeout)
            return status_value(s.user_status.active, s.user_status.role_ids), s.provenance
        if self.op == "flag":
            f = stub.GetFeatureFlag(pb.GetFeatureFlagRequest(tenant_id=t, flag_key=self.key), timeout=timeout)
            return flag_value(f.feature_flag.enabled, f.feature_flag.value), f.provenance
        if self.op == "profile":
            u = stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id=t, user_id=self.key), timeout=timeout)
            return u.user_profile.title, u.provenance
        if self.op == "org-unit":
            o = stub.GetOrgUnit(pb.GetOrgUnitRequest(tenant_id=t, org_unit_id=self.key), timeout=timeout)
            return o.org_unit.name, o.provenance
        raise ValueError(f"unknown op {self.op}")


def canonical(decimal_text: str) -> str:
    """Exact decimal text in one spelling ("2.50" and "2.5" compare equal)."""
    value = Decimal(decimal_text).normalize()
    return format(value, "f")


def status_value(active: bool, roles: Iterable[str]) -> str:
    return f"{active}|{','.join(roles)}"


def flag_value(enabled: bool, value: str) -> str:
    return f"{enabled}|{value}"


# --- observations ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    start: float
    end: float
    worker: str
    request: Request
    code: str  # "OK" or a grpc.StatusCode name
    value: str | None = None
    source: str | None = None
    age_ms: int = 0
    version: int = 0
    freshness: str | None = None
    reason: str = ""  # ErrorInfo reason / details, for errors
    deadline_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def latency_s(self) -> float:
        return self.end - self.start


class History:
    """An append-only record shared by many threads (list.append is atomic under the GIL)."""

    def __init__(self) -> None:
        self._items: list[Observation] = []

    def add(self, obs: Observation) -> None:
        self._items.append(obs)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Observation]:
        return iter(list(self._items))

    def select(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        critical: bool | None = None,
        ops: Iterable[str] | None = None,
    ) -> list[Observation]:
        """Observations *sent* in [since, until) matching the filters."""
        wanted = None if ops is None else frozenset(ops)
        return [
            o
            for o in list(self._items)
            if (since is None or o.start >= since)
            and (until is None or o.start < until)
            and (critical is None or o.request.critical == critical)
            and (wanted is None or o.request.op in wanted)
        ]


def observe(
    stub: pb_grpc.HybridCacheStub, request: Request, *, timeout: float, worker: str = "main"
) -> Observation:
    """Send one request and describe what came back (never raises for an RPC error)."""
    start = time.monotonic()
    try:
        value, prov = request.call(stub, timeout)
    except grpc.RpcError as exc:
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        details = exc.details() if callable(getattr(exc, "details", None)) else ""
        return Observation(
            start,
            time.monotonic(),
            worker,
            request,
            code.name if code is not None else "UNKNOWN",
            reason=str(details or "")[:200],
            deadline_s=timeout,
        )
    return Observation(
        start,
        time.monotonic(),
        worker,
        request,
        "OK",
        value=value,
        source=SOURCE.get(prov.source, str(prov.source)),
        age_ms=int(prov.age_ms),
        version=int(prov.version),
        freshness=FRESHNESS.get(prov.freshness, str(prov.freshness)),
        deadline_s=timeout,
    )


# --- load -----------------------------------------------------------------------------


class LoadLoop:
    """`workers` threads sending `requests` round-robin (each from its own offset), recording
    every answer; paced to `rate_per_s` in total when given. Ends by itself after
    `max_requests` in total or `max_s` seconds, whichever first; `stop()` ends it early."""

    def __init__(
        self,
        target: str,
        requests: Sequence[Request],
        history: History,
        *,
        workers: int = 4,
        rate_per_s: float | None = None,
        max_requests: int = 1_000_000,
        max_s: float = 60.0,
        timeout_s: float = 1.0,
        name: str = "load",
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not requests:
            raise ValueError("no requests to send")
        self.target = target
        self.requests = list(requests)
        self.history = history
        self.workers = workers
        self.rate_per_s = rate_per_s
        self.max_requests = max_requests
        self.max_s = max_s
        self.timeout_s = timeout_s
        self.name = name
        self.channel_options = list(channel_options)
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadLoop:
        self._deadline = time.monotonic() + self.max_s
        for i in range(self.workers):
            thread = threading.Thread(target=self._run, args=(i,), name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def __enter__(self) -> LoadLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take(self) -> bool:
        with self._lock:
            if self.sent >= self.max_requests:
                return False
            self.sent += 1
            return True

    def _run(self, index: int) -> None:
        worker = f"{self.name}-{index}"
        per_worker_interval = self.workers / self.rate_per_s if self.rate_per_s else 0.0
        next_at = time.monotonic() + (per_worker_interval * index / max(1, self.workers))
        i = index
        with grpc.insecure_channel(self.target, options=self.channel_options) as channel:
            stub = pb_grpc.HybridCacheStub(channel)
            while not self._stop.is_set() and time.monotonic() < self._deadline and self._take():
                if per_worker_interval:
                    pause = next_at - time.monotonic()
                    if pause > 0 and self._stop.wait(pause):
                        break
                    next_at = max(next_at + per_worker_interval, time.monotonic() - 1.0)
                request = self.requests[i % len(self.requests)]
                i += 1
                self.history.add(observe(stub, request, timeout=self.timeout_s, worker=worker))


# --- checkers -------------------------------------------------------------------------


def success_rate(observations: Sequence[Observation]) -> float:
    if not observations:
        return math.nan
    return sum(o.ok for o in observations) / len(observations)


def codes(observations: Iterable[Observation]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for o in observations:
        counts[o.code if o.ok else f"{o.code}:{o.reason[:60]}"] += 1
    return dict(counts)


@dataclass
class Convergence:
    """When every answer started to equal the truth, measured from `since`."""

    since: float
    t_s: float  # last wrong answer's end - since (0.0: none wrong after since)
    wrong: int  # answers that differed from the truth after `since`
    # entities with no right answer sent after their last wrong one
    unconfirmed: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return not self.unconfirmed


def convergence(
    observations: Iterable[Observation], truth: dict[tuple[str, str, str], str], *, since: float
) -> Convergence:
    """T = the time from `since` to the end of the last answer (sent after `since`) that
    differed from `truth` (errors count as not equal); each entity must be confirmed by a
    right answer sent after its last wrong one."""
    last_wrong: dict[tuple[str, str, str], float] = {}
    last_right: dict[tuple[str, str, str], float] = {}
    wrong = 0
    for o in observations:
        entity = o.request.entity
        if entity not in truth or o.start < since:
            continue
        if o.ok and o.value == truth[entity]:
            last_right[entity] = max(last_right.get(entity, 0.0), o.start)
        else:
            wrong += 1
            last_wrong[entity] = max(last_wrong.get(entity, 0.0), o.end)
    unconfirmed = [e for e in truth if e not in last_right or last_right[e] < last_wrong.get(e, -math.inf)]
    t_s = max((t - since for t in last_wrong.values()), default=0.0)
    return Convergence(since=since, t_s=max(0.0, t_s), wrong=wrong, unconfirmed=unconfirmed)


@dataclass
class Regression:
    worker: str
    entity: tuple[str, str, str]
    before: int
    after: int
    at: float


def version_regressions(observations: Iterable[Observation]) -> list[Regression]:
    """Successful answers, per worker and entity in send order, whose version went down."""
    by_stream: dict[tuple[str, tuple[str, str, str]], list[Observation]] = defaultdict(list)
    for o in observations:
        if o.ok:
            by_stream[(o.worker, o.request.entity)].append(o)
    found: list[Regression] = []
    for (worker, entity), seq in by_stream.items():
        seq.sort(key=lambda o: o.start)
        highest = 0
        for o in seq:
            if o.version < highest:
                found.append(Regression(worker, entity, highest, o.version, o.start))
            highest = max(highest, o.version)
    return found


# Polling every 20 ms: these conditions often ask the Wrapper for its truth over HTTP.
wait_until = functools.partial(wait_for, interval=0.02)
