"""Fleet mode of the change hub: tokens carrying stream positions, resumable on any replica."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import pytest

from hybridcache.server.hub import REASON_OUTSIDE_WINDOW, ChangeHub, ResyncNeeded, Sequenced
from hybridcache.server.hub.events import REASON_OTHER_KEY
from hybridcache.server.hub.tokens import parse_fleet_key
from tests.unit.hub.hub_support import event, only

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
