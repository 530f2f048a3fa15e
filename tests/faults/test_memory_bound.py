"""Why the soak's RSS kept growing after warm-up (scenario 7), pinned to one component.

The soak (docs/RELIABILITY.md) saw `hybridcache serve` grow ~1.5 MiB/min, linearly, from the
end of the 3-minute warm-up to the end (80.9 -> 92.1 MiB, +13.9%) at ~80 change events/s.
The cause: the change-notification ingestor remembered the last 100,000 event ids to drop
duplicates, a window that takes ~21 minutes to fill at 80 events/s. It now forgets ids older
than `dedupe_window_s` (2 minutes) too, so its memory is flat after the warm-up.

This test measures the bytes the ingestor keeps per distinct event after a warm-up (time
passing at the soak's event rate) and projects them over the soak's post-warm-up period.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest

from hybridcache.server.events import EventIngestor
from tests.unit.events.fakes import FakeCache

SOAK_EVENTS_PER_S = 80  # what the soak's writer achieved
SOAK_AFTER_WARMUP_S = 420  # 10 minutes minus the 3-minute warm-up
SOAK_RSS_AFTER_WARMUP = 80.9 * 2**20  # bytes, measured by the soak
WARMUP_EVENTS = 180 * SOAK_EVENTS_PER_S  # the soak's 3-minute warm-up, at its event rate
MEASURED_EVENTS = 8_000


class SoakClock:
    """Milliseconds that pass at the soak's event rate: one event every 1/80 s."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls * 1000 // SOAK_EVENTS_PER_S


class QuietCache(FakeCache):
    """The unit tests' fake cache without its call log (which would grow per event itself)."""

    def _record(self, *call: object) -> None:
        pass


def _message(i: int) -> tuple[str, str]:
    body = {
        "eventId": f"change-{i:032x}",
        "eventType": "user-profile-changed",
        "tenantId": "acme",
        "data": {"userId": f"user-{i % 50 + 1}", "changedFields": ["title"]},
    }
    return "crm:acme:user-profile-changed", json.dumps(body)


@pytest.mark.faults
@pytest.mark.timeout(120)
def test_dedupe_window_does_not_grow_memory_after_warmup() -> None:
    clock = SoakClock()
    ingestor = EventIngestor(
        QuietCache(tenants=()), lambda _notice: None, resync_jitter_s=0.0, clock_ms=clock
    )
    for i in range(WARMUP_EVENTS):
        ingestor.process(*_message(i))
    tracemalloc.start()
    try:
        # tracemalloc sees only what is allocated after it starts: let the window turn over
        # once under tracing, so ids it forgets and ids it keeps are both counted.
        for i in range(WARMUP_EVENTS, 2 * WARMUP_EVENTS):
            ingestor.process(*_message(i))
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2 * WARMUP_EVENTS, 2 * WARMUP_EVENTS + MEASURED_EVENTS):
            ingestor.process(*_message(i))
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_event = retained / MEASURED_EVENTS
    projected = per_event * SOAK_EVENTS_PER_S * SOAK_AFTER_WARMUP_S
    assert projected < 0.05 * SOAK_RSS_AFTER_WARMUP, (
        f"the ingestor keeps {per_event:.0f} B per distinct event after warm-up: over the soak's "
        f"{SOAK_AFTER_WARMUP_S} s at {SOAK_EVENTS_PER_S} events/s that is {projected / 2**20:.1f} MiB, "
        f"more than 5% of the server's {SOAK_RSS_AFTER_WARMUP / 2**20:.1f} MiB"
    )
