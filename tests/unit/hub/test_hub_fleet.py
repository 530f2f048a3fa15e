"""Fleet mode of the change hub: tokens carrying stream positions, resumable on any replica."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import pytest

from hybridcache.server.hub import REASON_OUTSIDE_WINDOW, ChangeHub, ResyncNeeded, Sequenced
from hybridcache.server.hub.events import REASON_OTHER_KEY
from hybridcache.server.hub.tokens import parse_fleet_key
from tests.unit.hub.hub_support import drain, event, only

pytestmark = pytest.mark.timeout(10)
KEY = secrets.token_bytes(16)


def replica(key: bytes = KEY, start: tuple[int, int] = (1, 0)) -> ChangeHub:
    hub = ChangeHub(fleet_key=key, retain=100)
    hub.stream_started(start)
    return hub


def feed(hub: ChangeHub, position: tuple[int, int], key: str) -> None:
    hub.begin_entry(position)
    hub.publish(event(key=key))
    hub.end_entry()


def keys(items: Sequence[object]) -> list[str]:
    return [item.event.keys[0] for item in items if isinstance(item, Sequenced)]


def test_another_replica_replays_exactly_what_follows_the_position() -> None:
    a, b = replica(), replica()
    for n in range(1, 6):
        feed(a, (10, n), f"k{n}")
        feed(b, (10, n), f"k{n}")
    token = a.token(3)  # the consumer saw k1..k3 on A
    with b.subscribe(only("t1"), token) as sub:
        assert keys(sub.next(1.0)) == ["k4", "k5"]


def test_a_replica_behind_the_issuer_skips_what_the_issuer_delivered() -> None:
    a, b = replica(), replica()
    for n in range(1, 4):
        feed(a, (10, n), f"k{n}")
    feed(b, (10, 1), "k1")
    with b.subscribe(only("t1"), a.token(3)) as sub:
        assert sub.heartbeat() is None, "a heartbeat now would move the consumer's position back"
        for n in range(2, 5):
            feed(b, (10, n), f"k{n}")
        assert keys(sub.next(1.0)) == ["k4"]


def test_another_key_and_a_position_before_the_start_need_a_resync() -> None:
    a = replica()
    feed(a, (10, 1), "k1")
    with replica(key=secrets.token_bytes(16)).subscribe(only("t1"), a.token(1)) as sub:
        (marker,) = sub.next(1.0)
        assert isinstance(marker, ResyncNeeded)
        assert marker.reason == REASON_OTHER_KEY
    with replica(start=(20, 0)).subscribe(only("t1"), a.token(1)) as sub:
        (marker,) = sub.next(1.0)
        assert isinstance(marker, ResyncNeeded)
        assert marker.reason == REASON_OUTSIDE_WINDOW


def test_a_tampered_fleet_token_is_invalid() -> None:
    token = replica().current_token()
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(ValueError, match="malformed"):
        replica().resume_point(tampered)


@pytest.mark.parametrize("bad", ["not base64!", "AAAA"])
def test_a_bad_key_setting_is_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match="resume token key"):
        parse_fleet_key(bad)


def test_a_token_before_the_streams_first_entry_is_bound_to_its_instance() -> None:
    """(0, 0) names no entry another replica could check (api/catch_up.py): such a token is
    this instance's alone, and a position the first entry gave is a fleet token again."""
    hub = replica(start=(0, 0))
    assert not hub.current_token().startswith("fleet-"), "no entry yet: an instance token"
    feed(hub, (10, 1), "k1")
    assert hub.current_token().startswith("fleet-"), "after an entry: a fleet token"


def test_a_catch_up_plan_holds_the_retained_changes_after_the_position() -> None:
    hub = replica()
    feed(hub, (10, 1), "k1")
    feed(hub, (10, 2), "k2")
    hub.begin_entry((10, 3))
    hub.publish(event(resync=True))  # a resync marker: its key-level diff came before it
    hub.end_entry()
    plan = hub.catch_up_plan(only("t1"), (10, 1))
    assert [e.keys for e in plan.retained] == [("k2",)], "after (10, 1), markers left out"
    assert plan.sequence == hub.current_sequence
    assert plan.floor == (1, 0)


def test_a_caught_up_subscription_sends_the_catch_up_then_the_ring_then_live() -> None:
    hub = replica()
    feed(hub, (10, 1), "k1")
    plan = hub.catch_up_plan(only("t1"), (5, 0))
    feed(hub, (10, 2), "k2")  # after the plan's sequence: from the ring
    start_token = "fleet-000000000000.start"
    sub = hub.subscribe_caught_up(only("t1"), plan.sequence, [event(key="c1"), event(key="c2")], start_token)
    with sub:
        feed(hub, (10, 3), "k3")  # live
        items = drain(sub)
        assert keys(items) == ["c1", "c2", "k2", "k3"]
        first, last = items[0], items[1]
        assert isinstance(first, Sequenced)
        assert isinstance(last, Sequenced)
        assert first.resume_token == start_token, "halfway through, a consumer starts the catch-up over"
        assert last.resume_token is not None
        assert hub.resume_point(last.resume_token).sequence == plan.sequence, "hands over at the plan"


def test_a_refused_subscription_starts_with_its_reason_then_goes_live() -> None:
    hub = replica()
    with hub.subscribe_refused(only("t1"), "the event stream was reset") as sub:
        feed(hub, (10, 1), "k1")
        items = drain(sub)
        assert isinstance(items[0], ResyncNeeded)
        assert items[0].reason == "the event stream was reset"
        assert keys(items[1:]) == ["k1"]


def test_tokens_are_the_instances_own_until_the_reader_passes_the_end_read_after_a_load() -> None:
    hub = replica(start=(10, 0))
    other = replica(start=(10, 0))
    feed(hub, (11, 0), "a")
    assert hub.resume_point(hub.current_token()).position == (11, 0)
    hub.settle_at((13, 0))  # a load read the Wrapper; the stream ended at 13-0 then
    assert not hub.settled()
    token = hub.current_token()
    assert token.startswith(f"{hub.instance_id}."), "the state is ahead of 11-0: no position named"
    assert other.resume_point(token).position is None
    assert hub.stream_floor() == (13, 0), "a resume from before the end read is a catch-up"
    feed(hub, (12, 0), "b")
    assert not hub.settled()
    feed(hub, (13, 0), "c")
    assert hub.settled()
    assert hub.resume_point(hub.current_token()).position == (13, 0)


def test_an_end_already_passed_settles_at_once_and_an_unknown_end_names_no_position() -> None:
    hub = replica(start=(10, 0))
    feed(hub, (12, 0), "a")
    hub.settle_at((11, 0))
    assert hub.settled()
    assert hub.resume_point(hub.current_token()).position == (12, 0)
    hub.settle_unknown()
    assert hub.settle_pending
    assert not hub.settled()
    assert hub.resume_point(hub.current_token()).position is None
    hub.settle_at((12, 0))
    assert hub.settled()
    assert not hub.settle_pending
