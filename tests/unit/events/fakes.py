"""A small in-memory stand-in for the cache core, implementing `events.ports.ChangeCache`.

It follows the core's contract as the event pipeline relies on it: versions only move
forward, `expected_old` is compared by content (the event's old value carries version 0),
tenants not loaded answer NOT_LOADED. Every call is recorded, and waiters can block on a
condition until the records satisfy a predicate (tests wait on conditions, not sleeps).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hybridcache.server.core.errors import NotFound
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.results import ApplyOutcome
from hybridcache.server.core.values import Value
from hybridcache.server.events.ports import ChangeNotice

_MISSING: Any = object()

Slot = tuple[str, Kind, str]


@dataclass(frozen=True, slots=True)
class FakeChange:
    tenant_id: str
    kind: Kind
    key: str
    value: Value | None
    version: int
    deleted: bool


def _content(value: Value | None) -> Value | None:
    return None if value is None else dataclasses.replace(value, version=0)


class FakeCache:
    def __init__(self, tenants: Iterable[str] = ("acme",)) -> None:
        self.cond = threading.Condition()
        self.tenants = list(tenants)
        self.store: dict[Slot, Value] = {}
        self.versions: dict[Slot, int] = {}
        self.wrapper: dict[Slot, Value] = {}  # what refetch/resync find "at the Wrapper"
        self.calls: list[tuple[Any, ...]] = []
        self.refetch_error: Exception | None = None
        self.resync_errors: dict[str, list[Exception]] = {}  # tenant -> errors to raise, in turn
        self.resync_gate: threading.Event | None = None  # when set: resync waits for it
        self.resync_started = threading.Event()

    # --- ChangeCache

    def apply(
        self,
        tenant_id: str,
        kind: Kind,
        key: str,
        value: Value | None,
        *,
        version: int | None = None,
        expected_old: object = _MISSING,
    ) -> tuple[ApplyOutcome, FakeChange | None]:
        with self.cond:
            self._record("apply", tenant_id, kind, key, value, version, expected_old)
            if tenant_id not in self.tenants:
                return ApplyOutcome.NOT_LOADED, None
            slot = (tenant_id, kind, key)
            if version is not None and version <= self.versions.get(slot, -1):
                return ApplyOutcome.OLD_VERSION, None
            if expected_old is not _MISSING and _content(self.store.get(slot)) != expected_old:
                return ApplyOutcome.OLD_VALUE_MISMATCH, None
            new_version = version if version is not None else self.versions.get(slot, 0)
            if value is None:
                self.store.pop(slot, None)
            else:
                self.store[slot] = value
            self.versions[slot] = new_version
            return ApplyOutcome.APPLIED, FakeChange(tenant_id, kind, key, value, new_version, value is None)

    def refetch(
        self, tenant_id: str, kind: Kind, key: str, deadline: float | None = None
    ) -> FakeChange | None:
        with self.cond:
            self._record("refetch", tenant_id, kind, key)
            if self.refetch_error is not None:
                raise self.refetch_error
            slot = (tenant_id, kind, key)
            if slot not in self.wrapper:
                raise NotFound(f"{kind} {key}")
            value = self.wrapper[slot]
            self.store[slot] = value
            self.versions[slot] = value.version
            return FakeChange(tenant_id, kind, key, value, value.version, False)

    def invalidate(self, tenant_id: str, kind: Kind, key: str) -> None:
        with self.cond:
            self._record("invalidate", tenant_id, kind, key)
            self.store.pop((tenant_id, kind, key), None)

    def drop_reference(self) -> None:
        with self.cond:
            self._record("drop_reference")

    def resync_tenant(self, tenant_id: str, deadline: float | None = None) -> list[FakeChange]:
        self.resync_started.set()
        if self.resync_gate is not None:
            assert self.resync_gate.wait(30), "test never opened the resync gate"
        with self.cond:
            self._record("resync_tenant", tenant_id)
            errors = self.resync_errors.get(tenant_id)
            if errors:
                raise errors.pop(0)
            changes = []
            for slot, value in self.wrapper.items():
                if slot[0] == tenant_id and self.store.get(slot) != value:
                    self.store[slot] = value
                    self.versions[slot] = value.version
                    changes.append(FakeChange(*slot, value, value.version, False))
            return changes

    def loaded_tenants(self) -> list[str]:
        with self.cond:
            return list(self.tenants)

    # --- for tests

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        self.cond.notify_all()

    def count(self, name: str, *args: Any) -> int:
        with self.cond:
            return sum(1 for c in self.calls if c[0] == name and c[1 : 1 + len(args)] == args)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(
                    f"timed out after {timeout} s waiting for: {what}; calls: {self.calls[-10:]}"
                )


class NoticeLog:
    """An on_change sink that records notices and lets tests wait for them."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.notices: list[ChangeNotice] = []

    def __call__(self, notice: ChangeNotice) -> None:
        with self.cond:
            self.notices.append(notice)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[list[ChangeNotice]], bool], timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self.notices), timeout):
                raise AssertionError(
                    f"timed out after {timeout} s waiting for: {what}; got {self.notices[-5:]}"
                )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.002) -> float:
    """Poll a condition against a deadline (for state without a condition variable).
    Returns the time it took."""
    start = time.monotonic()
    deadline = start + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(poll_s)
    return time.monotonic() - start
