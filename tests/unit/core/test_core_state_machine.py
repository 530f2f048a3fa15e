"""A Hypothesis state machine of the cache core racing the Wrapper.

Every Wrapper call made by the core is a step of its own: the call *starts* (the fake records
the Wrapper's state at that moment) and the test *completes* it later, in any order with any
other step — events, invalidations, resyncs, clock moves, more reads. Operations that may call
the Wrapper (reads, refetches, resyncs, background refreshes) run in their own thread; after
every step the test waits until each such thread has finished, is blocked in the fake, or is
waiting on another thread's unfinished fetch (`settle`), so the next step always starts from a
quiescent core and every interleaving is deterministic and replayable.

Two worlds are explored: events and entities carry versions (and then late events may arrive
out of order), or they carry none, as in the seed's event format (and then only the fences,
not version checks, can keep a slow fetch from storing an old value). Every value's content
encodes the Wrapper version it was read at, so reads are checked either way.

The property, per key: once the cache has acknowledged a newer value or an invalidation (an
applied event, an invalidation, a resync that installed), no read that starts afterwards
returns anything older, and what the cache holds is never older either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hybridcache.server.core import (
    ApplyOutcome,
    HybridCache,
    Kind,
    KindPolicy,
    NotFound,
    Read,
    Snapshot,
    Source,
    Tier,
)
from hybridcache.server.core.singleflight import Flight
from hybridcache.server.core.values import CreditCost, UserProfile, Value
from tests.unit.core.fakes import WAIT_S, FakeClock, GatedWrapper, PendingCall, cost, profile

T = "t"
CC = Kind.CREDIT_COSTS  # replicated
UP = Kind.USER_PROFILES  # on demand
KINDS = (CC, UP)
KEYS = ("a", "c")
Slot = tuple[Kind, str]


def value_of(kind: Kind, key: str, version: int, *, versioned: bool = True) -> CreditCost | UserProfile:
    """The Wrapper's value of a key at a version; its content encodes the version either way."""
    stamp = version if versioned else 0
    return cost(key, str(version), stamp) if kind is CC else profile(key, f"v{version}", stamp)


def version_of(value: Value) -> int:
    """The Wrapper version a value was read at (from its content)."""
    if isinstance(value, CreditCost):
        return int(value.cost)
    assert isinstance(value, UserProfile)
    return int(value.display_name[1:])


@dataclass
class Op:
    name: str
    floor: dict[Slot, int]  # the acknowledged floor when the op started (reads are checked against it)
    slot: Slot | None = None
    thread: threading.Thread | None = None
    done: bool = False
    result: object = None
    error: BaseException | None = None
    snapshot: tuple[int, dict[str, int]] | None = None  # (call order, versions) of its snapshot call
    journal: list[tuple[Slot, int]] = field(default_factory=list)  # events applied while it loaded


class FlightWaits:
    """Which threads are inside Flight.wait, on which flight (so `settle` can tell a thread
    parked on someone else's fetch from one still running)."""

    def __init__(self, changed: threading.Condition) -> None:
        self.on: dict[threading.Thread, Flight[object]] = {}
        self._changed = changed

    @contextmanager
    def installed(self) -> Iterator[None]:
        original = Flight.wait

        def wait(flight: Flight[object], deadline: float | None, clock: Callable[[], float]) -> object:
            self.on[threading.current_thread()] = flight
            with self._changed:
                self._changed.notify_all()
            try:
                return original(flight, deadline, clock)
            finally:
                del self.on[threading.current_thread()]

        Flight.wait = wait  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            Flight.wait = original  # type: ignore[method-assign]

    def parked(self, thread: threading.Thread) -> bool:
        flight = self.on.get(thread)
        return flight is not None and not flight.done


class Submit:
    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []

    def __call__(self, job: Callable[[], None]) -> object:
        self.jobs.append(job)
        return None


class CoreMachine(RuleBasedStateMachine):
    @initialize(versioned=st.booleans(), preload=st.integers(0, 3))
    def setup(self, versioned: bool, preload: int) -> None:
        self.versioned = versioned
        self.wrapper = GatedWrapper()
        self.clock = FakeClock()
        self.submit = Submit()
        policies = {
            CC: KindPolicy(CC, Tier.REPLICA),
            UP: KindPolicy(UP, Tier.ON_DEMAND, ttl_s=300.0, negative_ttl_s=30.0),
        }
        self.cache = HybridCache(self.wrapper, policies, clock=self.clock, submit=self.submit)
        # The Wrapper's history per key: (version, exists). "c" starts absent.
        self.history: dict[Slot, list[tuple[int, bool]]] = {}
        for kind in KINDS:
            self.wrapper.data[kind] = {}
            for key in KEYS:
                exists = key != "c"
                self.history[(kind, key)] = [(1, exists)]
                if exists:
                    self.wrapper.data[kind][key] = self.value(kind, key, 1)
        self.floor: dict[Slot, int] = dict.fromkeys(self.history, 0)
        self.undelivered: dict[Slot, list[tuple[int, bool, object]]] = {slot: [] for slot in self.history}
        self.ops: list[Op] = []
        self.tainted_upto = 0  # snapshot calls started up to this one were fenced by invalidate_kind
        self.waits = FlightWaits(self.wrapper.changed)
        self._uninstall = self.waits.installed()
        self._uninstall.__enter__()
        if preload:  # mostly start with the tenant loaded: most interesting steps need it
            self.read(CC, "a")
            self.wrapper.complete(self.wrapper.pending[0])
            self.settle()

    # --- helpers

    def value(self, kind: Kind, key: str, version: int) -> CreditCost | UserProfile:
        return value_of(kind, key, version, versioned=self.versioned)

    def current(self, slot: Slot) -> tuple[int, bool]:
        return self.history[slot][-1]

    def raise_floor(self, slot: Slot, version: int) -> None:
        self.floor[slot] = max(self.floor[slot], version)

    def loading_op(self) -> Op | None:
        return next((op for op in self.ops if op.name == "load" and not op.done), None)

    def start(self, name: str, call: Callable[[], object], slot: Slot | None = None) -> None:
        op = Op(name, dict(self.floor), slot)

        def run() -> None:
            try:
                op.result = call()
            except Exception as exc:
                op.error = exc
            finally:
                op.done = True
                with self.wrapper.changed:
                    self.wrapper.changed.notify_all()

        op.thread = threading.Thread(target=run, daemon=True)
        self.ops.append(op)
        op.thread.start()
        self.settle()

    def settle(self) -> None:
        """Wait until every operation has finished, or is blocked in the fake Wrapper, or is
        waiting on a fetch that has not finished; then account for the finished ones."""

        def quiet() -> bool:
            blocked = self.wrapper.blocked()
            return all(op.done or op.thread in blocked or self.waits.parked(op.thread) for op in self.ops)  # type: ignore[arg-type]

        with self.wrapper.changed:
            assert self.wrapper.changed.wait_for(quiet, WAIT_S), "an operation neither finished nor blocked"
        blocked = self.wrapper.blocked()
        for op in self.ops:
            if op.snapshot is None and op.thread in blocked:
                for call in self.wrapper.pending_of(op.thread):  # type: ignore[arg-type]
                    if call.what == "snapshot":
                        assert isinstance(call.result, Snapshot)
                        op.snapshot = (call.seq, {k: version_of(v) for k, v in call.result.items.items()})
        for op in [op for op in self.ops if op.done]:
            assert op.thread is not None
            op.thread.join(WAIT_S)
            self.ops.remove(op)
            self.finished(op)

    def finished(self, op: Op) -> None:
        if op.error is not None and not isinstance(op.error, NotFound):
            raise op.error
        if op.name in ("read", "load"):
            assert op.slot is not None
            self.check_read(op.slot, op.floor, op.result if op.error is None else op.error)
        if op.name in ("load", "resync") and op.error is None and op.snapshot is not None:
            seq, versions = op.snapshot
            if seq == self.wrapper.last_snapshot_seq and seq > self.tainted_upto:  # it was installed
                for key, version in versions.items():
                    self.raise_floor((CC, key), version)
        for slot, version in op.journal:
            self.raise_floor(slot, version)

    def check_read(self, slot: Slot, floor: dict[Slot, int], outcome: object) -> None:
        kind, key = slot
        history = self.history[slot]
        if isinstance(outcome, Read):
            assert outcome.source is not Source.STALE  # the Wrapper never fails here
            version = version_of(outcome.value)
            assert outcome.value == self.value(kind, key, version), "not a value the Wrapper ever had"
            assert outcome.version == outcome.value.version
            assert (version, True) in history
            assert version >= floor[slot], (
                f"{slot}: read version {version} older than acknowledged {floor[slot]}"
            )
        else:
            assert isinstance(outcome, NotFound)
            assert any(not exists and version >= floor[slot] for version, exists in history), (
                f"{slot}: NOT_FOUND, but it existed at every version since {floor[slot]}"
            )

    # --- the Wrapper changes

    @rule(
        kind=st.sampled_from(KINDS),
        key=st.sampled_from(KEYS),
        delete=st.booleans(),
        delivery=st.sampled_from(["now", "later", "never", "refetch"]),
        with_old=st.booleans(),
    )
    def wrapper_changes(self, kind: Kind, key: str, delete: bool, delivery: str, with_old: bool) -> None:
        slot = (kind, key)
        old_version, old_exists = self.current(slot)
        version = old_version + 1
        self.history[slot].append((version, not delete))
        if delete:
            self.wrapper.data[kind].pop(key, None)
        else:
            self.wrapper.data[kind][key] = self.value(kind, key, version)
        old: object = self.value(kind, key, old_version) if old_exists else None
        if delivery == "refetch":  # an event without the new value: the pipeline refetches
            self.start("refetch", lambda: self.cache.refetch(T, kind, key), slot)
        elif delivery == "now" or (delivery == "later" and self.versioned):
            # Without versions a late event is indistinguishable from a current one: only
            # versioned events are ever delivered late (and then in any order).
            self.undelivered[slot].append((version, delete, old if with_old else ...))
            if delivery == "now":
                self.deliver(slot, len(self.undelivered[slot]) - 1)

    @precondition(lambda self: any(self.undelivered.values()))
    @rule(data=st.data())
    def deliver_late_event(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from([s for s, events in self.undelivered.items() if events]))
        self.deliver(slot, data.draw(st.integers(0, len(self.undelivered[slot]) - 1)))

    def deliver(self, slot: Slot, index: int) -> None:
        kind, key = slot
        version, delete, old = self.undelivered[slot].pop(index)
        value = None if delete else self.value(kind, key, version)
        stamp = version if self.versioned else None
        if old is ...:
            outcome, _ = self.cache.apply(T, kind, key, value, version=stamp)
        else:
            outcome, _ = self.cache.apply(T, kind, key, value, version=stamp, expected_old=old)
        if outcome in (ApplyOutcome.APPLIED, ApplyOutcome.INVALIDATED):
            self.raise_floor(slot, version)
        elif outcome is ApplyOutcome.NOT_LOADED:
            loading = self.loading_op()
            if loading is not None:
                loading.journal.append((slot, version))
        elif outcome is ApplyOutcome.OLD_VALUE_MISMATCH:
            self.start("refetch", lambda: self.cache.refetch(T, kind, key), slot)

    # --- cache operations

    @rule(kind=st.sampled_from(KINDS), key=st.sampled_from(KEYS))
    def read(self, kind: Kind, key: str) -> None:
        name = "load" if kind is CC and not self.cache.is_loaded(T) else "read"
        self.start(name, lambda: self.cache.get(T, kind, key), (kind, key))

    @rule(kind=st.sampled_from(KINDS), key=st.sampled_from(KEYS))
    def invalidate(self, kind: Kind, key: str) -> None:
        self.cache.invalidate(T, kind, key)
        self.acknowledge(kind, [key])

    def acknowledge(self, kind: Kind, keys: list[str]) -> None:
        """An invalidation of `keys` was applied: reads from now on see the current versions."""
        loading = self.loading_op()
        for key in keys:
            slot = (kind, key)
            if kind is UP or self.cache.is_loaded(T):
                self.raise_floor(slot, self.current(slot)[0])
            elif loading is not None:  # journaled into the load in progress
                loading.journal.append((slot, self.current(slot)[0]))

    @rule(kind=st.sampled_from(KINDS))
    def invalidate_kind(self, kind: Kind) -> None:
        self.cache.invalidate_kind(T, kind)
        if kind is CC:
            self.tainted_upto = self.wrapper.last_snapshot_seq
        self.acknowledge(kind, list(KEYS))

    @rule()
    def drop_reference(self) -> None:
        self.cache.drop_reference()

    @precondition(lambda self: self.cache.is_loaded(T))
    @rule()
    def resync(self) -> None:
        self.start("resync", lambda: self.cache.resync_tenant(T))

    @precondition(lambda self: bool(self.submit.jobs))
    @rule()
    def run_background_refresh(self) -> None:
        job = self.submit.jobs.pop(0)
        self.start("refresh", job)

    @rule(seconds=st.sampled_from([1.0, 29.0, 100.0, 250.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: bool(self.wrapper.pending))
    @rule(data=st.data())
    def complete_a_wrapper_call(self, data: st.DataObject) -> None:
        call: PendingCall = data.draw(st.sampled_from(self.wrapper.pending))
        self.wrapper.complete(call)
        self.settle()

    # --- the property

    @invariant()
    def held_values_are_never_older_than_acknowledged(self) -> None:
        if not hasattr(self, "cache"):
            return
        tenant = self.cache._replica._tenants.get(T)
        if tenant is not None and tenant.loaded:
            for key, entry in list(tenant.kinds[CC].map.items()):
                version = version_of(entry.value)
                assert entry.value == self.value(CC, key, version)
                assert version >= self.floor[(CC, key)], f"replica holds {key} v{version} < {self.floor}"
        now = self.clock()
        for (_, kind, key), ref in list(self.cache._reference._entries.items()):
            if now >= ref.expires_at:
                continue  # not served (the Wrapper never fails in this machine)
            if ref.value is None:
                assert any(not e and v >= self.floor[(kind, key)] for v, e in self.history[(kind, key)])
            else:
                assert version_of(ref.value) >= self.floor[(kind, key)]

    def teardown(self) -> None:
        if not hasattr(self, "ops"):
            return
        try:
            for _ in range(100):
                if not self.ops:
                    break
                # A read may wait on a background refresh's flight whose job is still queued (a
                # real executor runs it): run them, or that read never finishes.
                while self.submit.jobs:
                    self.start("refresh", self.submit.jobs.pop(0))
                for call in list(self.wrapper.pending):
                    self.wrapper.complete(call)
                self.settle()
            assert not self.ops
        finally:
            self._uninstall.__exit__(None, None, None)


CoreMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCoreMachine = pytest.mark.timeout(300)(CoreMachine.TestCase)
