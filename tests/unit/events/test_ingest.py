"""The ingestor: exactly-once in effect, version order, oldValue checks, refetch and invalidation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from hybridcache.server.core.errors import WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import CreditCost, FeatureFlag
from hybridcache.server.events.ingest import REPLICA_KINDS, EventIngestor
from hybridcache.server.events.ports import ChangeNotice

from .fakes import FakeCache, NoticeLog

NOW_MS = 1_700_000_000_000
CREDIT = "crm:acme:credit-config-changed"
FLAG = "crm:acme:feature-flag-changed"


def credit(
    event_id: str, cost: Any, *, version: int | None = None, old: Any = ..., tenant: str = "acme", **top: Any
) -> str:
    data: dict[str, Any] = {"operationCode": "op.a", "changedFields": ["cost"], "newValue": cost}
    if version is not None:
        data["version"] = version
    if old is not ...:
        data["oldValue"] = old
    return json.dumps(
        {"eventId": event_id, "eventType": "credit-config-changed", "tenantId": tenant, "data": data, **top}
    )


class Harness:
    def __init__(self, **kwargs: Any) -> None:
        self.cache = FakeCache(tenants=["acme", "globex"])
        self.notices = NoticeLog()
        self.lags: list[float] = []
        kwargs.setdefault("resync_jitter_s", 0.0)
        self.ingestor = EventIngestor(
            self.cache, self.notices, on_lag=self.lags.append, clock_ms=lambda: NOW_MS, **kwargs
        )
        self.ingestor.start()

    def idle(self) -> None:
        assert self.ingestor.wait_idle(5), "repair worker did not go idle"

    @property
    def stats(self) -> Any:
        return self.ingestor.stats.snapshot()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    assert harness.ingestor.stop(5), "worker thread did not stop"


def test_an_event_is_applied_and_published(h: Harness) -> None:
    h.ingestor.process(CREDIT, credit("e-1", "2.5", version=3, publishedAt=NOW_MS - 40))
    assert h.cache.store[("acme", Kind.CREDIT_COSTS, "op.a")] == CreditCost("op.a", "2.5", 3)
    [notice] = h.notices.notices
    assert notice == ChangeNotice(
        tenant_id="acme",
        kind=Kind.CREDIT_COSTS,
        keys=("op.a",),
        changed_fields=("cost",),
        event_id="e-1",
        event_type="credit-config-changed",
        event_time_ms=NOW_MS - 40,
        version=3,
        deleted=False,
        value=CreditCost("op.a", "2.5", 3),
    )
    assert h.stats.applied == 1
    assert h.lags == [0.04]
    assert h.stats.lag_count == 1


def test_duplicates_are_applied_once(h: Harness) -> None:
    for _ in range(5):
        h.ingestor.process(CREDIT, credit("e-1", 1))
    assert h.cache.count("apply") == 1
    assert len(h.notices.notices) == 1
    assert (h.stats.applied, h.stats.duplicate, h.stats.received) == (1, 4, 5)


def test_event_ids_are_per_tenant(h: Harness) -> None:
    h.ingestor.process(CREDIT, credit("e-1", 1))
    h.ingestor.process("crm:globex:credit-config-changed", credit("e-1", 1, tenant="globex"))
    assert h.cache.count("apply") == 2


def test_the_duplicate_memory_is_bounded() -> None:
    h = Harness(dedupe_capacity=3)
    try:
        for i in range(4):
            h.ingestor.process(CREDIT, credit(f"e-{i}", i))
        h.ingestor.process(CREDIT, credit("e-3", 3))  # remembered
        h.ingestor.process(CREDIT, credit("e-0", 0))  # forgotten: the oldest of four
        assert h.stats.duplicate == 1
        assert h.cache.count("apply") == 5
    finally:
        h.ingestor.stop()


def test_an_older_version_is_ignored(h: Harness) -> None:
    h.ingestor.process(CREDIT, credit("e-2", 5, version=2))
    h.ingestor.process(CREDIT, credit("e-1", 4, version=1))
    assert h.cache.store[("acme", Kind.CREDIT_COSTS, "op.a")].cost == "5"  # type: ignore[union-attr]
    assert h.stats.old_version == 1
    assert len(h.notices.notices) == 1


def test_old_value_mismatch_refetches_from_the_wrapper(h: Harness) -> None:
    slot = ("acme", Kind.CREDIT_COSTS, "op.a")
    h.cache.store[slot] = CreditCost("op.a", "9", 1)  # what we hold
    h.cache.wrapper[slot] = CreditCost("op.a", "3", 2)  # the truth
    h.ingestor.process(CREDIT, credit("e-1", 3, old=2.5))  # "2.5 -> 3", but we hold 9
    h.idle()
    assert h.cache.count("refetch", "acme", Kind.CREDIT_COSTS, "op.a") == 1
    assert h.cache.store[slot] == CreditCost("op.a", "3", 2)
    assert h.stats.mismatches == 1
    [notice] = h.notices.notices
    assert (notice.event_id, notice.value, notice.version) == ("e-1", CreditCost("op.a", "3", 2), 2)


def test_old_value_match_applies(h: Harness) -> None:
    h.cache.store[("acme", Kind.CREDIT_COSTS, "op.a")] = CreditCost("op.a", "2.5", 1)
    h.ingestor.process(CREDIT, credit("e-1", 3.0, old=2.5))
    assert h.stats.applied == 1
    assert h.cache.count("refetch") == 0
    apply_call = next(c for c in h.cache.calls if c[0] == "apply")
    assert apply_call[-1] == CreditCost("op.a", "2.5", 0)  # expected_old, by content


def test_no_old_value_leaves_expected_old_out(h: Harness) -> None:
    h.ingestor.process(CREDIT, credit("e-1", 1))
    apply_call = next(c for c in h.cache.calls if c[0] == "apply")
    assert apply_call[-1] is not None
    assert type(apply_call[-1]).__name__ == "object"  # the fake's own default sentinel: not passed


def test_a_flag_event_without_new_value_refetches(h: Harness) -> None:
    slot = ("acme", Kind.FEATURE_FLAGS, "f.x")
    h.cache.wrapper[slot] = FeatureFlag("f.x", True, "on", 4)
    body = {
        "eventId": "e-9",
        "eventType": "feature-flag-changed",
        "tenantId": "acme",
        "data": {"flagKey": "f.x", "changedFields": ["enabled"]},
    }
    h.ingestor.process(FLAG, json.dumps(body))
    h.notices.wait_for(lambda n: len(n) == 1, 5, "the refetched flag's notice")
    assert h.cache.store[slot] == FeatureFlag("f.x", True, "on", 4)
    assert h.cache.count("apply") == 0
    assert h.stats.refetched == 1


@pytest.mark.parametrize(
    ("event_type", "field", "kind"),
    [
        ("user-profile-changed", "userId", Kind.USER_PROFILES),
        ("org-unit-changed", "orgUnitId", Kind.ORG_UNITS),
    ],
)
def test_reference_events_only_invalidate(h: Harness, event_type: str, field: str, kind: Kind) -> None:
    body = {
        "eventId": "e-1",
        "eventType": event_type,
        "tenantId": "acme",
        "data": {field: "x-1", "changedFields": ["title"]},
    }
    h.ingestor.process(f"crm:acme:{event_type}", json.dumps(body))
    h.idle()
    assert h.cache.calls == [("invalidate", "acme", kind, "x-1")]  # no fetch
    [notice] = h.notices.notices
    assert (notice.kind, notice.keys, notice.changed_fields, notice.value) == (
        kind,
        ("x-1",),
        ("title",),
        None,
    )
    assert h.stats.invalidated == 1


def test_a_failed_refetch_stays_pending_and_is_retried_until_it_succeeds() -> None:
    h = Harness(refetch_backoff_s=(0.02, 0.05))
    try:
        h.cache.refetch_error = WrapperUnavailable("down")
        slot = ("acme", Kind.CREDIT_COSTS, "op.a")
        h.ingestor.process(CREDIT, credit("e-1", None))  # null without deleted: refetch
        h.cache.wait_for(lambda: h.cache.count("refetch") >= 3, 5, "three attempts while the Wrapper is down")
        assert slot in h.ingestor.worker.pending, "a key whose refetch failed was forgotten"
        assert not h.notices.notices
        h.cache.refetch_error = None
        h.cache.wrapper[slot] = CreditCost("op.a", "4", 4)
        # No second event: the pending key is retried on its own.
        h.notices.wait_for(lambda n: len(n) == 1, 5, "the retried refetch's notice")
        h.idle()
        assert h.cache.store[slot] == CreditCost("op.a", "4", 4)
        stats = h.stats
        assert stats.refetched == 1, "successes must count only the attempt that succeeded"
        assert stats.refetch_errors == stats.refetch_attempts - 1 >= 2
        assert stats.refetch_reasons == {"no-new-value": 1}
        assert h.ingestor.worker.pending_refetches() == 0
    finally:
        assert h.ingestor.stop(5)


@pytest.fixture
def down() -> Iterator[Harness]:
    """The Wrapper failing every refetch, retried slowly (the tests settle repairs themselves)."""
    harness = Harness(refetch_backoff_s=(30.0, 30.0))
    harness.cache.refetch_error = WrapperUnavailable("down")
    yield harness
    assert harness.ingestor.stop(5), "worker thread did not stop"


def _pending_after_a_failed_attempt(h: Harness, body: str) -> tuple[str, Kind, str]:
    slot = ("acme", Kind.CREDIT_COSTS, "op.a")
    h.cache.store[slot] = CreditCost("op.a", "1", 3)
    h.cache.versions[slot] = 3
    h.ingestor.process(CREDIT, body)
    h.cache.wait_for(lambda: h.cache.count("refetch") >= 1, 5, "the first (failing) refetch")
    assert slot in h.ingestor.worker.pending, "the key whose refetch failed is not pending"
    return slot


def test_a_newer_versioned_event_for_a_pending_key_is_applied_and_settles_the_repair(down: Harness) -> None:
    h = down
    slot = _pending_after_a_failed_attempt(h, credit("e-1", None, version=5))  # v5 "changed": refetch
    # v6 carries the value; its oldValue (v5's) is not what is held, which is the value in doubt.
    h.ingestor.process(CREDIT, credit("e-2", 7, version=6, old=2))
    assert h.cache.store[slot] == CreditCost("op.a", "7", 6), "the newer event's value was not applied"
    assert slot not in h.ingestor.worker.pending, "an event newer than every request left the key pending"
    assert h.stats.refetches_settled_by_events == 1
    assert h.stats.mismatches == 0
    assert [n.event_id for n in h.notices.notices] == ["e-2"]


def test_an_event_older_than_a_request_is_applied_but_does_not_settle_it(down: Harness) -> None:
    h = down
    slot = _pending_after_a_failed_attempt(h, credit("e-1", None, version=6))
    h.ingestor.process(CREDIT, credit("e-2", 7, version=5, old=2))  # newer than held (3), older than 6
    assert h.cache.store[slot] == CreditCost("op.a", "7", 5)
    assert slot in h.ingestor.worker.pending, "an event older than the change asked for settled its repair"
    assert h.stats.refetches_settled_by_events == 0


def test_a_repair_asked_for_without_a_version_is_settled_only_by_the_wrapper(down: Harness) -> None:
    """A version-less request may refer to any version: no event can be shown to be as new."""
    h = down
    slot = _pending_after_a_failed_attempt(h, credit("e-1", None))
    h.ingestor.process(CREDIT, credit("e-2", 7, version=9, old=2))
    assert h.cache.store[slot] == CreditCost("op.a", "7", 9), "the newer event's value was not applied"
    assert slot in h.ingestor.worker.pending, "a version-less request was settled by an event"
    h.ingestor.process(CREDIT, credit("e-3", 8, old=2))  # version-less, oldValue not held: not applied
    assert h.cache.store[slot] == CreditCost("op.a", "7", 9)


def test_refetch_of_a_vanished_entity_invalidates_and_reports_a_deletion(h: Harness) -> None:
    h.ingestor.process(CREDIT, credit("e-1", None))  # the fake's Wrapper has no op.a: NotFound
    h.notices.wait_for(lambda n: len(n) == 1, 5, "a deletion notice")
    assert h.cache.count("invalidate", "acme", Kind.CREDIT_COSTS, "op.a") == 1
    assert h.notices.notices[0].deleted
    assert h.stats.refetch_not_found == 1


def test_events_of_tenants_not_held_are_counted_not_applied(h: Harness) -> None:
    h.ingestor.process("crm:initech:credit-config-changed", credit("e-1", 1, tenant="initech"))
    assert h.stats.not_loaded == 1
    assert h.notices.notices == []


def test_a_failing_apply_falls_back_to_refetch(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(h.cache, "apply", broken)
    h.ingestor.process(CREDIT, credit("e-1", 1))
    h.idle()
    assert h.stats.apply_errors == 1
    assert h.cache.count("refetch") == 1


def test_a_failing_sink_does_not_stop_processing() -> None:
    cache = FakeCache()

    def sink(notice: ChangeNotice) -> None:
        raise RuntimeError("downstream bug")

    ingestor = EventIngestor(cache, sink, resync_jitter_s=0)
    ingestor.process(CREDIT, credit("e-1", 1))
    ingestor.process(CREDIT, credit("e-2", 2))
    assert ingestor.stats.snapshot().sink_errors == 2
    assert cache.count("apply") == 2


def test_rejections_are_counted_by_reason(h: Harness) -> None:
    h.ingestor.process(CREDIT, "{nope")
    h.ingestor.process("crm:acme:credit-config-changed", credit("e-1", 1, tenant="globex"))
    h.ingestor.process("bad", credit("e-1", 1))
    assert h.stats.rejected == {"malformed-json": 1, "tenant-mismatch": 1, "bad-channel": 1}
    assert h.cache.calls == []


def test_rejection_logs_are_rate_limited_and_carry_no_body(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hybridcache.server.events")
    ingestor = EventIngestor(FakeCache(), NoticeLog(), resync_jitter_s=0)
    secret = "PII-jane.doe@example.com"
    for i in range(1000):
        ingestor.process(CREDIT, credit(f"e-{i}", secret))  # schema: the cost is not a number
        ingestor.process(CREDIT, "{" + secret)  # malformed-json
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one per reason per interval
    assert all(secret not in line for line in lines)
    assert ingestor.stats.snapshot().rejected == {"schema": 1000, "malformed-json": 1000}


def test_a_gap_drops_reference_data_and_resyncs_every_loaded_tenant(h: Harness) -> None:
    slot = ("globex", Kind.CREDIT_COSTS, "op.z")
    h.cache.wrapper[slot] = CreditCost("op.z", "1", 1)
    h.ingestor.on_gap("subscribed")
    assert h.cache.count("drop_reference") == 1  # at once, on the reader's thread
    h.idle()
    assert h.cache.count("resync_tenant", "acme") == 1
    assert h.cache.count("resync_tenant", "globex") == 1
    changes = [n for n in h.notices.notices if not n.resync]
    markers = [(n.tenant_id, n.kind) for n in h.notices.notices if n.resync]
    assert [(c.tenant_id, c.keys, c.value) for c in changes] == [
        ("globex", ("op.z",), CreditCost("op.z", "1", 1))
    ]
    assert markers == [(t, k) for t in ("acme", "globex") for k in REPLICA_KINDS]
    assert all(n.event_type == "resync" for n in h.notices.notices)
    assert (h.stats.gaps, h.stats.resyncs) == (1, 1)
    assert not h.ingestor.resync_outstanding
