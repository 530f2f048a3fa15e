"""Why a resume position is not in the stream: trimmed away, or another stream (a reset)."""

from __future__ import annotations

from typing import Any

import pytest

from hybridcache.server.events.stream_replay import (
    REASON_PAST_RETENTION,
    REASON_STREAM_RESET,
    StreamReplay,
    absent_reason,
)

pytestmark = pytest.mark.timeout(10)


def info(first: str, last: str, added: int, length: int) -> dict[str, Any]:
    return {
        "recorded-first-entry-id": first.encode(),
        "last-generated-id": last.encode(),
        "entries-added": added,
        "length": length,
        "max-deleted-entry-id": b"0-0",
    }


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (None, REASON_STREAM_RESET),  # no stream at all: Redis came back empty
        (info("200-0", "300-0", 5, 5), REASON_STREAM_RESET),  # never trimmed, yet no such entry
        (info("200-0", "300-0", 50, 5), REASON_PAST_RETENTION),  # trimmed past the position
        (info("20-0", "90-0", 50, 5), REASON_STREAM_RESET),  # a stream that ends before it
    ],
)
def test_an_absent_position_is_told_apart(stream: dict[str, Any] | None, reason: str) -> None:
    assert absent_reason((100, 0), stream) == reason


def test_a_replay_needs_a_positive_bound() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        StreamReplay("redis://127.0.0.1:1", "crm", decoder=None, max_entries=0)  # type: ignore[arg-type]
