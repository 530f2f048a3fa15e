"""The rate-limited log: first occurrence at once, then at most one line per interval with a count."""

from __future__ import annotations

import logging

import pytest

from hybridcache.server.events.ratelog import RateLimitedLog


def test_one_line_per_reason_per_interval_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), "rejected %s x%d", interval_s=60, clock=lambda: now[0])
    for _ in range(10):
        limited.note("schema")
    limited.note("oversized")
    now[0] = 59.9
    limited.note("schema")
    now[0] = 60.0
    limited.note("schema")  # the interval has passed: reports the 10 held back plus this one
    assert [r.getMessage() for r in caplog.records] == [
        "rejected schema x1",
        "rejected oversized x1",
        "rejected schema x11",
    ]
