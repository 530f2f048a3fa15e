"""Fleet resumes that need the stream (api/catch_up.py), with a real hub and cache core and a
scripted stream: checked positions, refusals with their reasons, and a catch-up's values."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from hybridcache.server.api.catch_up import FleetResume, StreamEvent
from hybridcache.server.core import HybridCache, Kind
from hybridcache.server.events.ports import ChangeNotice
from hybridcache.server.events.stream_replay import REASON_UNREADABLE
from hybridcache.server.hub import REASON_OUTSIDE_WINDOW, ChangeHub, ResyncNeeded, Sequenced, WatchFilter
from hybridcache.server.hub.tokens import FleetSealer, StreamPosition
from tests.unit.core.fakes import FakeWrapper, cost
from tests.unit.hub.hub_support import drain

pytestmark = pytest.mark.timeout(10)
KEY = secrets.token_bytes(16)
ACME = WatchFilter(frozenset({"acme"}), frozenset(), "")


@dataclass(frozen=True)
class Entry:
    tenant_id: str
    kind: Kind
    key: str
    event_id: str = "e"
    event_type: str = "credit-config-changed"
    event_time_ms: int = 0


@dataclass
class Stream:
    """The Redis stream as the catch-up sees it: which entries exist, what follows a position."""

    entries: dict[StreamPosition, Entry] = field(default_factory=dict)
    absent_reason: str = "the event stream was reset after the resume token"
    reads: list[tuple[StreamPosition, StreamPosition]] = field(default_factory=list)
    readable: bool = True

    def head(self) -> StreamPosition | None:
        if not self.readable:
            return None
        return max(self.entries, default=(0, 0))

    def check(self, position: StreamPosition) -> str | None:
        return None if position in self.entries else self.absent_reason

    def read(self, after: StreamPosition, until: StreamPosition) -> Iterable[StreamEvent] | str:
        self.reads.append((after, until))
        return [e for p, e in sorted(self.entries.items()) if after < p <= until]


def replica(start: StreamPosition) -> ChangeHub:
    hub = ChangeHub(fleet_key=KEY, retain=100)
    hub.stream_started(start)
    return hub


def published(hub: ChangeHub, position: StreamPosition, key: str, amount: str, version: int) -> None:
    hub.begin_entry(position)
    hub.publish(
        ChangeNotice(
            "acme",
            Kind.CREDIT_COSTS,
            (key,),
            (),
            f"e{version}",
            "credit-config-changed",
            0,
            version=version,
            value=cost(key, amount, version),
        )
    )
    hub.end_entry()


@pytest.fixture
def cache() -> HybridCache:
    wrapper = FakeWrapper()
    wrapper.put("acme", Kind.CREDIT_COSTS, "a", cost("a", "3", version=3))
    wrapper.put("acme", Kind.CREDIT_COSTS, "b", cost("b", "1", version=1))
    core = HybridCache(wrapper)
    core.ensure_tenant("acme")
    return core


def test_a_position_the_stream_does_not_hold_is_refused_with_the_streams_reason(cache: HybridCache) -> None:
    issuer, here, stream = replica((10, 0)), replica((10, 0)), Stream()
    published(issuer, (11, 0), "a", "2", 2)
    resume = FleetResume(here, cache, threading.Lock(), stream)
    with resume.subscribe(ACME, issuer.current_token()) as sub:
        (marker,) = drain(sub)
        assert isinstance(marker, ResyncNeeded)
        assert marker.reason == stream.absent_reason


def test_a_position_inside_the_ring_resumes_from_the_ring(cache: HybridCache) -> None:
    issuer, here = replica((10, 0)), replica((10, 0))
    stream = Stream(
        {(11, 0): Entry("acme", Kind.CREDIT_COSTS, "a"), (12, 0): Entry("acme", Kind.CREDIT_COSTS, "b")}
    )
    for hub in (issuer, here):
        published(hub, (11, 0), "a", "2", 2)
    token = issuer.current_token()
    published(here, (12, 0), "b", "1", 1)
    with FleetResume(here, cache, threading.Lock(), stream).subscribe(ACME, token) as sub:
        items = drain(sub)
        assert [i.event.keys for i in items if isinstance(i, Sequenced)] == [("b",)]
        assert not stream.reads, "inside the ring: nothing read back"


def test_an_older_position_gets_the_keys_changed_since_at_their_current_values(cache: HybridCache) -> None:
    issuer = replica((10, 0))
    published(issuer, (11, 0), "a", "2", 2)
    token = issuer.current_token()  # the consumer holds a@2
    entries = {(11, 0): "a", (12, 0): "a", (13, 0): "gone"}
    stream = Stream({p: Entry("acme", Kind.CREDIT_COSTS, key) for p, key in entries.items()})
    here = replica((13, 0))  # started after the token: its ring starts at 13-0
    with FleetResume(here, cache, threading.Lock(), stream).subscribe(ACME, token) as sub:
        published(here, (14, 0), "b", "5", 5)  # live, after the catch-up
        items = [i for i in drain(sub) if isinstance(i, Sequenced)]
    assert stream.reads == [((11, 0), (13, 0))], "the entries between the token and the floor"
    sent = [(i.event.keys[0], i.event.version, i.event.deleted) for i in items]
    assert sent == [("a", 3, False), ("gone", 0, True), ("b", 5, False)], "a once at its value now, then live"
    assert items[0].resume_token == token, "halfway, the catch-up starts over from the consumer's token"
    assert items[1].resume_token != token, "its last change hands over"


def test_a_token_before_the_streams_first_entry_is_refused(cache: HybridCache) -> None:
    fleet_token = FleetSealer("older-build", KEY).seal(0, (0, 0))  # as an older build issued them
    with FleetResume(replica((10, 0)), cache, threading.Lock(), Stream()).subscribe(ACME, fleet_token) as sub:
        (marker,) = drain(sub)
        assert isinstance(marker, ResyncNeeded)
        assert marker.reason == REASON_OUTSIDE_WINDOW


def test_a_replica_whose_load_is_ahead_of_its_reader_catches_a_consumer_up_from_the_stream(
    cache: HybridCache,
) -> None:
    """The defect a fresh replica had: its load read a@3 from the Wrapper before its reader
    reached a@3's entry (12-0); a consumer from 11-0 resumed "by the ring" there, and the
    entry, finding a@3 held, published nothing: the consumer stayed at a@2. The end of the
    stream read after the load (12-0) is the floor now, so the resume is a catch-up."""
    issuer = replica((10, 0))
    published(issuer, (11, 0), "a", "2", 2)
    token = issuer.current_token()  # the consumer holds a@2, and 11-0 is its position
    stream = Stream(
        {(11, 0): Entry("acme", Kind.CREDIT_COSTS, "a"), (12, 0): Entry("acme", Kind.CREDIT_COSTS, "a")}
    )
    here = replica((10, 0))  # the cache fixture's load holds a@3: ahead of this reader
    here.settle_at((12, 0))  # what the service does after a load (app.py: `_snapshot_loaded`)
    with FleetResume(here, cache, threading.Lock(), stream).subscribe(ACME, token) as sub:
        for position in ((11, 0), (12, 0)):  # the reader reaches both: a@3 held, nothing published
            here.begin_entry(position)
            here.end_entry()
        items = [i for i in drain(sub) if isinstance(i, Sequenced)]
    assert [(i.event.keys[0], i.event.version) for i in items] == [("a", 3)], "a@3 must reach the consumer"
    assert stream.reads == [((11, 0), (12, 0))]


def test_while_a_loads_stream_end_is_unknown_a_resume_reads_it_or_is_refused(cache: HybridCache) -> None:
    issuer = replica((10, 0))
    published(issuer, (11, 0), "a", "2", 2)
    token = issuer.current_token()
    stream = Stream(
        {(11, 0): Entry("acme", Kind.CREDIT_COSTS, "a"), (12, 0): Entry("acme", Kind.CREDIT_COSTS, "a")},
        readable=False,
    )
    here = replica((10, 0))
    here.settle_unknown()  # a load ended while Redis could not be read
    with FleetResume(here, cache, threading.Lock(), stream).subscribe(ACME, token) as sub:
        (marker,) = drain(sub)
        assert isinstance(marker, ResyncNeeded)
        assert marker.reason == REASON_UNREADABLE
    stream.readable = True
    with FleetResume(here, cache, threading.Lock(), stream).subscribe(ACME, token) as sub:
        items = [i for i in drain(sub) if isinstance(i, Sequenced)]
    assert not here.settle_pending, "the resume read the stream's end itself"
    assert [(i.event.keys[0], i.event.version) for i in items] == [("a", 3)]
