"""ChangeHub and Subscription, single-threaded: order, filters, resume, backpressure, close."""

from __future__ import annotations

import threading
import time

import pytest

from hybridcache.server.core.kinds import Kind
from hybridcache.server.hub import (
    ANY_TENANT,
    REASON_FELL_BEHIND,
    REASON_OUTSIDE_WINDOW,
    REASON_UNKNOWN_INSTANCE,
    ChangeHub,
    Item,
    ResyncNeeded,
    Sequenced,
)
from tests.unit.hub.hub_support import drain, event, only, publish_many, sequences


def test_sequences_start_at_one_and_increase() -> None:
    hub = ChangeHub()
    assert hub.current_sequence == 0
    assert [hub.publish(event()) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert hub.current_sequence == 5


def test_instance_ids_differ_per_hub_and_are_validated() -> None:
    assert ChangeHub().instance_id != ChangeHub().instance_id
    assert ChangeHub(instance_id="node-1").instance_id == "node-1"
    with pytest.raises(ValueError, match="instance_id"):
        ChangeHub(instance_id="no:colons")


def test_subscriber_sees_only_later_events_in_order() -> None:
    hub = ChangeHub()
    hub.publish(event())
    sub = hub.subscribe(only("t1"))
    publish_many(hub, [event(key=f"k{i}") for i in range(10)])
    items = drain(sub)
    assert sequences(items) == list(range(2, 12))
    assert [i.event.keys[0] for i in items if isinstance(i, Sequenced)] == [f"k{i}" for i in range(10)]


def test_filters_apply_per_subscriber() -> None:
    hub = ChangeHub()
    t1 = hub.subscribe(only("t1"))
    both = hub.subscribe(only("t1", "t2"))
    every = hub.subscribe(only(ANY_TENANT))
    flags = hub.subscribe(only(ANY_TENANT, kinds=[Kind.FEATURE_FLAGS]))
    crm = hub.subscribe(only("t2", prefix="crm."))
    hub.publish(event("t1", key="crm.a"))  # 1
    hub.publish(event("t2", key="crm.b"))  # 2
    hub.publish(event("t3", Kind.FEATURE_FLAGS, "f"))  # 3
    hub.publish(event("t2", key="hrms.c"))  # 4
    hub.publish(event("t2", resync=True))  # 5
    assert sequences(drain(t1)) == [1]
    assert sequences(drain(both)) == [1, 2, 4, 5]
    assert sequences(drain(every)) == [1, 2, 3, 4, 5]
    assert sequences(drain(flags)) == [3]
    assert sequences(drain(crm)) == [2, 5]


def test_resume_inside_window_replays_exactly_the_missed_events_then_live() -> None:
    hub = ChangeHub(retain=100)
    publish_many(hub, [event("t1" if i % 2 else "t2") for i in range(20)])
    sub = hub.subscribe(only("t1"), hub.token(10))
    hub.publish(event("t1"))  # 21, live
    assert sequences(drain(sub)) == [12, 14, 16, 18, 20, 21]  # even sequences are t1


def test_resume_at_the_current_sequence_replays_nothing() -> None:
    hub = ChangeHub()
    publish_many(hub, [event()] * 3)
    sub = hub.subscribe(only("t1"), hub.token(3))
    assert drain(sub) == []
    hub.publish(event())
    assert sequences(drain(sub)) == [4]


def test_window_edges() -> None:
    hub = ChangeHub(retain=5)
    publish_many(hub, [event()] * 10)  # retains 6..10
    assert sequences(drain(hub.subscribe(only("t1"), hub.token(5)))) == [6, 7, 8, 9, 10]
    assert drain(hub.subscribe(only("t1"), hub.token(4))) == [ResyncNeeded(REASON_OUTSIDE_WINDOW, 10)]
    assert drain(hub.subscribe(only("t1"), hub.token(0))) == [ResyncNeeded(REASON_OUTSIDE_WINDOW, 10)]


def test_fresh_hub_replays_from_zero() -> None:
    hub = ChangeHub(retain=5)
    publish_many(hub, [event()] * 5)
    assert sequences(drain(hub.subscribe(only("t1"), hub.token(0)))) == [1, 2, 3, 4, 5]


def test_retain_zero_can_only_resume_at_the_current_sequence() -> None:
    hub = ChangeHub(retain=0)
    publish_many(hub, [event()] * 3)
    assert drain(hub.subscribe(only("t1"), hub.token(3))) == []
    assert drain(hub.subscribe(only("t1"), hub.token(2))) == [ResyncNeeded(REASON_OUTSIDE_WINDOW, 3)]


def test_token_of_another_instance_means_resync_then_live() -> None:
    hub = ChangeHub()
    hub.publish(event())
    sub = hub.subscribe(only("t1"), ChangeHub().token(0))
    hub.publish(event())
    assert drain(sub) == [ResyncNeeded(REASON_UNKNOWN_INSTANCE, 1), Sequenced(2, event(), 2)]


def test_future_and_malformed_tokens_are_refused() -> None:
    hub = ChangeHub()
    hub.publish(event())
    with pytest.raises(ValueError, match="ahead"):
        hub.subscribe(only("t1"), hub.token(2))
    with pytest.raises(ValueError, match="malformed"):
        hub.subscribe(only("t1"), "not a token")
    assert hub.subscriber_count() == 0


def test_a_lagging_subscriber_gets_one_marker_and_a_bounded_buffer() -> None:
    hub = ChangeHub(subscriber_buffer=3)
    slow = hub.subscribe(only("t1"))
    fast = hub.subscribe(only("t1"))
    for _ in range(10):
        hub.publish(event())
        assert slow.buffered() <= 3
        assert sequences(fast.next(0)) == [hub.current_sequence]  # unaffected by the slow one
    assert hub.stats().lagged_total == 1
    assert hub.stats().discarded_total == 10
    assert drain(slow) == [ResyncNeeded(REASON_FELL_BEHIND, 10)]
    hub.publish(event())  # live again after the marker was read
    assert sequences(drain(slow)) == [11]


def test_while_lagging_the_marker_moves_with_the_skipped_events() -> None:
    hub = ChangeHub(subscriber_buffer=1)
    sub = hub.subscribe(only("t1"))
    publish_many(hub, [event("t1"), event("t1"), event("t2"), event("t1"), event("t2")])
    # The last matching event skipped is 4: resuming after it misses nothing of t1.
    assert drain(sub) == [ResyncNeeded(REASON_FELL_BEHIND, 4)]
    assert hub.stats().lagged_total == 1


def test_the_lag_marker_is_a_valid_resume_point() -> None:
    hub = ChangeHub(subscriber_buffer=2)
    sub = hub.subscribe(only("t1"))
    publish_many(hub, [event()] * 5)
    (marker,) = drain(sub)
    assert isinstance(marker, ResyncNeeded)
    sub.close()
    hub.publish(event())
    assert sequences(drain(hub.subscribe(only("t1"), hub.token(marker.sequence)))) == [6]


def test_replay_does_not_count_against_the_buffer() -> None:
    hub = ChangeHub(retain=100, subscriber_buffer=2)
    publish_many(hub, [event()] * 50)
    sub = hub.subscribe(only("t1"), hub.token(0))
    hub.publish(event())
    assert sequences(drain(sub)) == list(range(1, 52))


def test_falling_behind_during_a_replay_drops_the_replay_too() -> None:
    hub = ChangeHub(retain=100, subscriber_buffer=2)
    publish_many(hub, [event()] * 50)
    sub = hub.subscribe(only("t1"), hub.token(0))
    publish_many(hub, [event()] * 3)
    assert drain(sub) == [ResyncNeeded(REASON_FELL_BEHIND, 53)]


def test_progress_is_only_given_when_everything_was_delivered() -> None:
    hub = ChangeHub(subscriber_buffer=1)
    sub = hub.subscribe(only("t1"))
    assert sub.progress() == 0
    hub.publish(event())
    assert sub.progress() is None
    drain(sub)
    hub.publish(event("t2"))  # not ours: progress still moves past it
    assert sub.progress() == 2
    publish_many(hub, [event()] * 2)  # falls behind
    assert sub.progress() is None
    drain(sub)
    assert sub.progress() == 4


def test_next_waits_for_the_timeout_then_returns_nothing() -> None:
    sub = ChangeHub().subscribe(only("t1"))
    started = time.monotonic()
    assert sub.next(0.05) == []
    assert time.monotonic() - started >= 0.05


@pytest.mark.timeout(10)
def test_next_wakes_on_publish_and_on_close() -> None:
    hub = ChangeHub()
    sub = hub.subscribe(only("t1"))
    got: list[list[Item]] = []
    reader = threading.Thread(target=lambda: got.append(sub.next(5)))
    reader.start()
    hub.publish(event())
    reader.join(2)
    assert not reader.is_alive()
    assert sequences(got[0]) == [1]

    reader = threading.Thread(target=lambda: got.append(sub.next(5)))
    reader.start()
    time.sleep(0.01)  # let it block (the test stays correct if it has not)
    sub.close()
    reader.join(2)
    assert not reader.is_alive()
    assert got[1] == []


def test_close_frees_at_once_and_is_idempotent() -> None:
    hub = ChangeHub()
    subs = [hub.subscribe(only("t1")), hub.subscribe(only("t1", "t2")), hub.subscribe(only(ANY_TENANT))]
    assert hub.subscriber_count() == 3
    for sub in subs:
        sub.close()
        sub.close()
    assert hub.subscriber_count() == 0
    assert hub._by_tenant == {}  # no empty buckets left behind
    hub.publish(event())
    assert subs[0].next(0) == []
    assert subs[0].closed


def test_context_manager_closes() -> None:
    hub = ChangeHub()
    with hub.subscribe(only("t1")) as sub:
        assert hub.subscriber_count() == 1
    assert sub.closed
    assert hub.subscriber_count() == 0


def test_stats() -> None:
    hub = ChangeHub(retain=3, subscriber_buffer=10)
    sub = hub.subscribe(only("t1"))
    publish_many(hub, [event()] * 5)
    stats = hub.stats()
    assert (stats.current_sequence, stats.retained, stats.subscribers, stats.buffered) == (5, 3, 1, 5)
    drain(sub)
    assert hub.stats().buffered == 0


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="retain"):
        ChangeHub(retain=-1)
    with pytest.raises(ValueError, match="subscriber_buffer"):
        ChangeHub(subscriber_buffer=0)
