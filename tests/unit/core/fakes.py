"""In-memory stand-ins for the Wrapper and the clock, for the cache-core tests.

`FakeWrapper` serves items and snapshots from dicts, counts calls, and can be put down or
made to block every call on an event (for single-flight tests). `GatedWrapper` makes each
call a separate, controllable step: the Wrapper's state is captured when the call *starts*
and returned when the test *completes* it, in any order — a fetch racing with events.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from hybridcache.client.reasons import Reason
from hybridcache.server.core.errors import NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.source import Snapshot
from hybridcache.server.core.values import (
    CreditCost,
    FeatureFlag,
    RolePermissions,
    UserProfile,
    UserStatus,
    Value,
)

WAIT_S = 10.0  # generous bound on any wait for another thread; tests never sleep for timing


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def cost(code: str, amount: str = "1", version: int = 1) -> CreditCost:
    return CreditCost(code, amount, version)


def role(role_id: str, *grants: str, version: int = 1) -> RolePermissions:
    return RolePermissions(role_id, frozenset(grants), version)


def user(user_id: str, *roles: str, active: bool = True, version: int = 1) -> UserStatus:
    return UserStatus(user_id, active, roles, version)


def flag(key: str, enabled: bool = True, version: int = 1) -> FeatureFlag:
    return FeatureFlag(key, enabled, "", version)


def profile(user_id: str, name: str = "Ada", version: int = 1) -> UserProfile:
    return UserProfile(user_id, name, f"{user_id}@example.com", "", "", "", "", version)


@dataclass
class FakeWrapper:
    """tenants -> kind -> key -> value. A tenant absent from `data` is unknown."""

    data: dict[str, dict[Kind, dict[str, Value]]] = field(default_factory=dict)
    down: bool = False
    gate: threading.Event | None = None  # when set: every call waits for it (then proceeds)
    calls: Counter[tuple[str, str, Kind, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def put(self, tenant_id: str, kind: Kind, key: str, value: Value) -> None:
        self.data.setdefault(tenant_id, {}).setdefault(kind, {})[key] = value

    def delete(self, tenant_id: str, kind: Kind, key: str) -> None:
        self.data[tenant_id][kind].pop(key, None)

    def add_tenant(self, tenant_id: str) -> None:
        self.data.setdefault(tenant_id, {})

    def _enter(self, call: tuple[str, str, Kind, str]) -> None:
        with self._lock:
            self.calls[call] += 1
        self.arrived.release()
        if self.gate is not None and not self.gate.wait(WAIT_S):
            raise AssertionError("the test never opened the gate")
        if self.down:
            raise WrapperUnavailable("the Wrapper is down (fake)")

    def fetch_item(self, tenant_id: str, kind: Kind, key: str, deadline: float | None) -> Value:
        self._enter(("item", tenant_id, kind, key))
        tenant = self.data.get(tenant_id)
        if tenant is None:
            raise NotFound("unknown tenant", reason=Reason.TENANT_NOT_FOUND)
        value = tenant.get(kind, {}).get(key)
        if value is None:
            raise NotFound("not found")
        return value

    def fetch_snapshot(self, tenant_id: str, kind: Kind, deadline: float | None) -> Snapshot:
        self._enter(("snapshot", tenant_id, kind, ""))
        tenant = self.data.get(tenant_id)
        if tenant is None:
            raise NotFound("unknown tenant", reason=Reason.TENANT_NOT_FOUND)
        return Snapshot(tenant_id, kind, 0, dict(tenant.get(kind, {})))

    def count(self, what: str, tenant_id: str, kind: Kind, key: str = "") -> int:
        return self.calls[(what, tenant_id, kind, key)]

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


@dataclass
class PendingCall:
    """One Wrapper call the test has not completed yet; `result` was captured at its start."""

    what: str
    tenant_id: str
    kind: Kind
    key: str
    result: Value | Snapshot | None  # None: not found
    thread: threading.Thread
    seq: int  # the order in which calls started
    release: threading.Event = field(default_factory=threading.Event)


class GatedWrapper:
    """Every call blocks until the test completes it; the answer is the state at the call's start."""

    def __init__(self) -> None:
        self.data: dict[Kind, dict[str, Value]] = {}
        self.pending: list[PendingCall] = []
        self.started = 0
        self.last_snapshot_seq = 0
        self._lock = threading.Lock()
        self.changed = threading.Condition()  # notified when a call arrives (tests share it)

    def _call(self, what: str, tenant_id: str, kind: Kind, key: str) -> Value | Snapshot:
        with self._lock:
            result: Value | Snapshot | None
            if what == "snapshot":
                result = Snapshot(tenant_id, kind, 0, dict(self.data.get(kind, {})))
            else:
                result = self.data.get(kind, {}).get(key)
            self.started += 1
            if what == "snapshot":
                self.last_snapshot_seq = self.started
            call = PendingCall(what, tenant_id, kind, key, result, threading.current_thread(), self.started)
            self.pending.append(call)
        with self.changed:
            self.changed.notify_all()
        if not call.release.wait(WAIT_S):
            raise AssertionError("the test never completed this call")
        if call.result is None:
            raise NotFound("not found")
        return call.result

    def fetch_item(self, tenant_id: str, kind: Kind, key: str, deadline: float | None) -> Value:
        result = self._call("item", tenant_id, kind, key)
        assert not isinstance(result, Snapshot)
        return result

    def fetch_snapshot(self, tenant_id: str, kind: Kind, deadline: float | None) -> Snapshot:
        result = self._call("snapshot", tenant_id, kind, "")
        assert isinstance(result, Snapshot)
        return result

    def pending_of(self, thread: threading.Thread) -> list[PendingCall]:
        with self._lock:
            return [c for c in self.pending if c.thread is thread and not c.release.is_set()]

    def blocked(self) -> set[threading.Thread]:
        """Threads waiting in one of our calls for the test to complete it."""
        with self._lock:
            return {c.thread for c in self.pending if not c.release.is_set()}

    def complete(self, call: PendingCall) -> None:
        with self._lock:
            self.pending.remove(call)
        call.release.set()
