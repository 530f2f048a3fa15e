"""Duplicate event ids are remembered for a window of time, at most a number of them."""

from __future__ import annotations

import json

import pytest

from hybridcache.server.events import EventIngestor
from tests.unit.events.fakes import FakeCache

pytestmark = pytest.mark.timeout(30)


def message(event_id: str) -> tuple[str, str]:
    body = {
        "eventId": event_id,
        "eventType": "user-profile-changed",
        "tenantId": "acme",
        "data": {"userId": "user-1", "changedFields": ["title"]},
    }
    return "crm:acme:user-profile-changed", json.dumps(body)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def test_a_duplicate_within_the_window_is_dropped_and_an_old_one_forgotten() -> None:
    clock = Clock()
    ingestor = EventIngestor(FakeCache(tenants=()), lambda _n: None, dedupe_window_s=60, clock_ms=clock)
    ingestor.process(*message("e-1"))
    clock.ms += 59_000
    ingestor.process(*message("e-1"))
    assert ingestor.stats.snapshot().rejected.get("duplicate") == 1
    clock.ms += 2_000  # e-1 is now 61 s old: forgotten once another event comes in
    ingestor.process(*message("e-2"))
    ingestor.process(*message("e-1"))
    assert ingestor.stats.snapshot().rejected.get("duplicate") == 1, (
        "an id older than the window is forgotten"
    )


def test_the_count_bound_still_holds() -> None:
    ingestor = EventIngestor(FakeCache(tenants=()), lambda _n: None, dedupe_capacity=10, clock_ms=Clock())
    for i in range(50):
        ingestor.process(*message(f"e-{i}"))
    ingestor.process(*message("e-0"))
    assert ingestor.stats.snapshot().rejected.get("duplicate", 0) == 0
    ingestor.process(*message("e-49"))
    assert ingestor.stats.snapshot().rejected.get("duplicate") == 1
