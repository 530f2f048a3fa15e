"""Gap handling on the repair worker: jitter, coalescing, retries, and never blocking the reader."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hybridcache.server.core.errors import NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import CreditCost
from hybridcache.server.events.ingest import EventIngestor
from hybridcache.server.events.repair import RefetchRequest
from tests.helpers import FixedRandom

from .fakes import FakeCache, NoticeLog, wait_until


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache(tenants=["acme", "globex"])


@pytest.fixture
def make(cache: FakeCache) -> Iterator[Any]:
    made: list[EventIngestor] = []

    def factory(**kwargs: Any) -> EventIngestor:
        ingestor = EventIngestor(cache, NoticeLog(), **kwargs)
        ingestor.start()
        made.append(ingestor)
        return ingestor

    yield factory
    for ingestor in made:
        assert ingestor.stop(5), "worker did not stop"


@pytest.mark.timeout(20)
def test_the_resync_waits_for_its_jitter(cache: FakeCache, make: Any) -> None:
    ingestor = make(resync_jitter_s=0.4, rng=FixedRandom(0.5))  # 0.2 s
    start = time.monotonic()
    ingestor.on_gap("subscribed")
    cache.wait_for(lambda: cache.count("resync_tenant") == 2, 5, "the resync of both tenants")
    elapsed = time.monotonic() - start
    assert elapsed >= 0.2, f"resync started after {elapsed:.3f} s, before its 0.2 s jitter"


@pytest.mark.timeout(20)
def test_many_gaps_while_one_resync_is_pending_make_one_resync(cache: FakeCache, make: Any) -> None:
    ingestor = make(resync_jitter_s=0.3, rng=FixedRandom(1.0))
    for _ in range(50):
        ingestor.on_gap("subscribed")
    assert ingestor.wait_idle(5)
    assert cache.count("resync_tenant", "acme") == 1
    assert cache.count("resync_tenant", "globex") == 1
    assert cache.count("drop_reference") == 50  # cheap and local: done for every gap
    stats = ingestor.stats.snapshot()
    assert (stats.gaps, stats.resyncs) == (50, 1)


@pytest.mark.timeout(20)
def test_a_gap_during_a_running_resync_makes_exactly_one_more(cache: FakeCache, make: Any) -> None:
    gate = threading.Event()
    cache.resync_gate = gate
    ingestor = make(resync_jitter_s=0.0)
    ingestor.on_gap("subscribed")
    assert cache.resync_started.wait(5), "the first resync never started"
    for _ in range(10):  # the running resync may have read its snapshot before these gaps
        ingestor.on_gap("subscribed")
    gate.set()
    assert ingestor.wait_idle(5)
    assert cache.count("resync_tenant", "acme") == 2
    assert ingestor.stats.snapshot().resyncs == 2


@pytest.mark.timeout(20)
def test_a_gap_never_blocks_the_reader(cache: FakeCache, make: Any) -> None:
    gate = threading.Event()
    cache.resync_gate = gate
    ingestor = make(resync_jitter_s=0.0)
    ingestor.on_gap("subscribed")
    assert cache.resync_started.wait(5)
    start = time.monotonic()
    for i in range(100):  # the reader keeps handling gaps and messages while the resync hangs
        ingestor.on_gap("subscribed")
        ingestor.process("crm:acme:org-unit-changed", _org_event(f"e-{i}"))
    elapsed = time.monotonic() - start
    gate.set()
    # A reader blocked by the resync would wait for the gate, which only opens below: any
    # generous bound tells "not blocked" from "blocked" on a loaded host.
    assert elapsed < 5.0, f"the reader was held up {elapsed:.3f} s by a running resync"
    assert cache.count("invalidate") == 100


@pytest.mark.timeout(20)
def test_stop_interrupts_the_jitter_wait(cache: FakeCache, make: Any) -> None:
    ingestor = make(resync_jitter_s=60.0, rng=FixedRandom(1.0))
    ingestor.on_gap("subscribed")
    start = time.monotonic()
    assert ingestor.stop(5)
    assert time.monotonic() - start < 1.0
    assert cache.count("resync_tenant") == 0


@pytest.mark.timeout(20)
def test_freshness_flag_is_outstanding_from_gap_to_resync_end(cache: FakeCache, make: Any) -> None:
    gate = threading.Event()
    cache.resync_gate = gate
    ingestor = make(resync_jitter_s=0.0)
    assert not ingestor.resync_outstanding
    ingestor.on_gap("subscribed")
    assert ingestor.resync_outstanding  # pending
    assert cache.resync_started.wait(5)
    assert ingestor.resync_outstanding  # running
    gate.set()
    assert ingestor.wait_idle(5)
    assert not ingestor.resync_outstanding


@pytest.mark.timeout(20)
def test_failed_tenants_are_retried_with_backoff_and_stay_outstanding(cache: FakeCache, make: Any) -> None:
    cache.resync_errors["globex"] = [WrapperUnavailable("down"), WrapperUnavailable("down")]
    ingestor = make(resync_jitter_s=0.0, rng=FixedRandom(1.0), resync_retry_backoff_s=(0.05, 0.1))
    ingestor.on_gap("subscribed")
    cache.wait_for(lambda: cache.count("resync_tenant", "globex") == 3, 5, "two retries of globex")
    assert ingestor.wait_idle(5)
    assert cache.count("resync_tenant", "acme") == 1  # only the failed tenant is retried
    assert ingestor.stats.snapshot().resync_failures == 2
    assert not ingestor.resync_outstanding


@pytest.mark.timeout(20)
def test_a_vanished_tenant_is_not_retried(cache: FakeCache, make: Any) -> None:
    cache.resync_errors["globex"] = [NotFound("tenant")]
    ingestor = make(resync_jitter_s=0.0)
    ingestor.on_gap("subscribed")
    assert ingestor.wait_idle(5)
    assert cache.count("resync_tenant", "globex") == 1
    assert not ingestor.resync_outstanding


@pytest.mark.timeout(20)
def test_refetches_coalesce_and_overflow_becomes_a_resync(cache: FakeCache, make: Any) -> None:
    gate = threading.Event()
    cache.resync_gate = gate
    ingestor = make(resync_jitter_s=0.0, max_pending_refetches=3)
    ingestor.on_gap("subscribed")  # occupy the worker
    assert cache.resync_started.wait(5)
    worker = ingestor.worker
    for key in ("a", "b", "a", "c", "b"):
        worker.request_refetch(RefetchRequest("acme", Kind.CREDIT_COSTS, key, "e", "t", (), 0))
    assert worker.pending_refetches() == 3  # a, b, c: duplicates coalesced
    worker.request_refetch(RefetchRequest("acme", Kind.CREDIT_COSTS, "d", "e", "t", (), 0))
    assert worker.pending_refetches() == 3  # bounded: d became a resync request instead
    gate.set()
    assert ingestor.wait_idle(5)
    assert cache.count("resync_tenant", "acme") == 2
    # The overflow's resync started after a, b and c were requested and read every key of the
    # tenant: it settled them, no refetch was needed.
    assert cache.count("refetch") == 0
    assert worker.pending_refetches() == 0


@pytest.mark.timeout(20)
def test_stats_are_consistent_under_two_writer_threads(cache: FakeCache, make: Any) -> None:
    ingestor = make(resync_jitter_s=0.0)
    for i in range(2000):
        ingestor.process("crm:acme:org-unit-changed", _org_event(f"e-{i}"))
        if i % 100 == 0:
            ingestor.on_gap("subscribed")
    assert ingestor.wait_idle(10)
    wait_until(lambda: not ingestor.resync_outstanding, 5, "resyncs done")
    assert ingestor.stats.snapshot().invalidated == 2000


def _org_event(event_id: str) -> str:
    return (
        f'{{"eventId":"{event_id}","eventType":"org-unit-changed","tenantId":"acme",'
        '"data":{"orgUnitId":"ou-1","changedFields":["name"]}}'
    )


def _refetch_request(key: str, event_id: str = "e-1") -> RefetchRequest:
    return RefetchRequest("acme", Kind.CREDIT_COSTS, key, event_id, "credit-config-changed", ("cost",), 0)


@pytest.mark.timeout(20)
def test_pending_refetches_back_off_with_jitter_and_coalesce(cache: FakeCache, make: Any) -> None:
    cache.refetch_error = WrapperUnavailable("down")
    ingestor = make(refetch_backoff_s=(0.05, 0.2), rng=FixedRandom(1.0))
    worker = ingestor.worker
    start = time.monotonic()
    for i in range(20):  # a burst of events for one key: one pending entry, one attempt at a time
        worker.request_refetch(_refetch_request("op.a", f"e-{i}"))
    cache.wait_for(lambda: cache.count("refetch") >= 4, 5, "four attempts")
    elapsed = time.monotonic() - start
    # Pauses 0.05, 0.1, 0.2 (capped): the 4th attempt is no earlier than 0.35 s after the 1st.
    assert elapsed >= 0.3, f"4 attempts in {elapsed:.3f} s: the backoff was not applied"
    assert worker.pending_refetches() == 1
    assert worker.pending[("acme", Kind.CREDIT_COSTS, "op.a")].request.event_id == "e-19"
    assert worker.oldest_pending_age_s() >= 0.3


@pytest.mark.timeout(20)
def test_the_pending_set_is_bounded_and_overflow_resyncs(cache: FakeCache, make: Any) -> None:
    cache.refetch_error = WrapperUnavailable("down")
    ingestor = make(max_pending_refetches=5, refetch_backoff_s=(10.0, 10.0))
    for i in range(50):
        ingestor.worker.request_refetch(_refetch_request(f"op.{i}"))
    assert ingestor.worker.pending_refetches() == 5
    cache.wait_for(lambda: cache.count("resync_tenant") >= 1, 5, "the overflow's resync")
    assert ingestor.stats.snapshot().refetch_overflows == 45


@pytest.mark.timeout(20)
def test_a_later_successful_resync_settles_the_tenants_pending_keys(cache: FakeCache, make: Any) -> None:
    cache.refetch_error = WrapperUnavailable("down")
    ingestor = make(refetch_backoff_s=(30.0, 30.0))
    ingestor.worker.request_refetch(_refetch_request("op.a"))
    cache.wait_for(lambda: cache.count("refetch") == 1, 5, "the first attempt")
    assert ingestor.worker.pending_refetches() == 1
    ingestor.on_gap("subscribed")  # the resync reads every key of the tenant from the Wrapper
    assert ingestor.wait_idle(5), "the resync did not settle the pending key"
    assert cache.count("refetch") == 1


class GatedCache(FakeCache):
    """Its first refetch waits for `gate`: an attempt held in flight."""

    def __init__(self) -> None:
        super().__init__(tenants=["acme"])
        self.gate = threading.Event()
        self.in_flight = threading.Event()

    def refetch(self, tenant_id: str, kind: Kind, key: str, deadline: float | None = None) -> Any:
        if not self.in_flight.is_set():
            self.in_flight.set()
            assert self.gate.wait(10), "the test never let the attempt finish"
        return super().refetch(tenant_id, kind, key, deadline)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("requested", "settles"), [(5, True), (0, False)], ids=["versioned", "version-less"])
def test_an_event_applied_during_an_attempt_settles_it_or_is_followed_by_one_more(
    requested: int, settles: bool
) -> None:
    """An event applied while an attempt is in flight fences that attempt's answer (the core
    does not store it). If the event settles the repair (every request had a version, none
    above the event's), nothing more is fetched; if not, the fenced answer may have been the
    newer one, so one more attempt follows instead of taking the fenced one for a repair."""
    cache = GatedCache()
    slot = ("acme", Kind.CREDIT_COSTS, "op.a")
    cache.wrapper[slot] = CreditCost("op.a", "4", 6)
    ingestor = EventIngestor(cache, NoticeLog(), resync_jitter_s=0.0)
    ingestor.start()
    try:
        worker = ingestor.worker
        worker.request_refetch(dataclasses.replace(_refetch_request("op.a"), version=requested))
        assert cache.in_flight.wait(5), "no attempt started"
        assert worker.event_applied(slot, 6) is settles
        assert (slot in worker.pending) is not settles
        cache.gate.set()
        cache.wait_for(lambda: cache.count("refetch") >= 1, 5, "the held attempt to finish")
        assert ingestor.wait_idle(5), "the repair did not finish"
        time.sleep(0.2)  # a second attempt would be due at once: room for one that must not come
        attempts = cache.count("refetch")
        assert attempts == (1 if settles else 2), (
            f"{attempts} attempts: expected {'none after the settling event' if settles else 'one more'}"
        )
        assert ingestor.stats.snapshot().refetches_settled_by_events == int(settles)
    finally:
        assert ingestor.stop(5)
