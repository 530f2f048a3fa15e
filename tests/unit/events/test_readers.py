"""Pure parts of the readers: subscription patterns, stream IDs and the stream loss rules."""

from __future__ import annotations

from typing import Any

import pytest

from hybridcache.server.events.stats import EventStats
from hybridcache.server.events.stream_reader import RedisStreamReader, format_id, parse_id, stream_key
from hybridcache.server.events.subscriber import RedisSubscriber, default_patterns


class NullSink:
    stats = EventStats()
    resync_outstanding = False

    def process(self, channel: bytes | str, data: bytes | str) -> object:
        return None

    def reject(self, reason: str) -> None:
        pass

    def on_gap(self, reason: str, jitter_max_s: float | None = None) -> None:
        pass


def test_default_patterns_name_each_app_and_event_type() -> None:
    patterns = default_patterns(["crm", "hrms"])
    assert "crm:*:credit-config-changed" in patterns
    assert "hrms:*:org-unit-changed" in patterns
    assert len(patterns) == 12
    with pytest.raises(ValueError, match="app name"):
        default_patterns(["c*"])


def test_subscriber_liveness_bound_and_pattern_dedup() -> None:
    sub = RedisSubscriber("redis://x", NullSink(), patterns=["crm:*", "crm:*"])
    assert sub.patterns == ("crm:*",)
    assert sub.detection_bound_s == pytest.approx(5 + 3 + 0.25)


def test_stream_ids_and_keys() -> None:
    assert parse_id(b"1700000000000-5") == (1700000000000, 5)
    assert parse_id("12") == (12, 0)
    assert format_id((3, 4)) == "3-4"
    assert parse_id(b"10-0") > parse_id(b"9-99")  # numeric, not lexicographic
    assert stream_key("crm") == "{crm}:changes"


def info(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "length": 3,
        "entries-added": 3,
        "last-generated-id": b"30-0",
        "max-deleted-entry-id": b"0-0",
        "recorded-first-entry-id": b"10-0",
        "first-entry": (b"10-0", {}),
    }
    return base | fields


def reader_at(position: str, added: int = 3) -> RedisStreamReader:
    reader = RedisStreamReader("redis://x", NullSink())
    reader._positions[stream_key("crm")] = parse_id(position)
    reader._added[stream_key("crm")] = added
    return reader


KEY = stream_key("crm")


@pytest.mark.parametrize(
    ("position", "fields", "verdict"),
    [
        ("20-0", {}, None),  # nothing ever removed
        ("20-0", {"entries-added": 10, "recorded-first-entry-id": b"15-0"}, None),  # trimmed below us
        ("5-0", {"entries-added": 10, "recorded-first-entry-id": b"15-0"}, "stream trimmed"),
        ("20-0", {"max-deleted-entry-id": b"25-0", "entries-added": 4}, "stream trimmed"),  # XDEL unread
        ("20-0", {"max-deleted-entry-id": b"15-0", "entries-added": 4}, None),  # XDEL of read entry
        ("30-0", {"length": 0, "entries-added": 3}, None),  # all trimmed, all read
        ("20-0", {"length": 0, "entries-added": 3}, "stream trimmed"),  # all trimmed, 30 unread
        ("40-0", {}, "stream reset"),  # the stream's end is behind us
    ],
)
def test_stream_loss_rules(position: str, fields: dict[str, Any], verdict: str | None) -> None:
    assert reader_at(position)._examine(KEY, info(**fields)) == verdict


def test_redis_below_7_falls_back_to_the_first_entry() -> None:
    old = {"length": 3, "last-generated-id": b"30-0", "first-entry": (b"15-0", {})}
    assert reader_at("5-0")._examine(KEY, old) == "stream trimmed"
    assert reader_at("20-0")._examine(KEY, old) is None


def test_a_loss_is_reported_once() -> None:
    reader = reader_at("5-0")
    trimmed = info(**{"entries-added": 10, "recorded-first-entry-id": b"15-0"})
    assert reader._examine(KEY, trimmed) == "stream trimmed"
    assert reader._examine(KEY, trimmed) is None  # same loss: the resync it caused covers it
    assert reader._examine(KEY, info(**{"entries-added": 20, "recorded-first-entry-id": b"25-0"})) == (
        "stream trimmed"
    )


def test_a_recreated_stream_is_a_reset() -> None:
    reader = reader_at("20-0", added=500)
    assert reader._examine(KEY, info(**{"entries-added": 3})) == "stream reset"  # the counter dropped
    reader = reader_at("20-0")
    assert reader._examine(KEY, None) == "stream reset"
    assert reader._positions[KEY] == (0, 0)
