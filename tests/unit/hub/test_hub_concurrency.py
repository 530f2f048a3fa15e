"""A producer at full speed, consumers at different speeds, and a consumer that keeps
disconnecting and resuming: every stream must be gap-free and duplicate-free, or say
explicitly (ResyncNeeded) where it jumped."""

from __future__ import annotations

import threading
import time

import pytest

from hybridcache.server.core.kinds import Kind
from hybridcache.server.hub import ANY_TENANT, ChangeHub, HubEvent, Item, ResyncNeeded, Sequenced, WatchFilter
from tests.unit.hub.hub_support import assert_gap_free, event

N_EVENTS = 30_000


def _events() -> list[HubEvent]:
    kinds = (Kind.CREDIT_COSTS, Kind.FEATURE_FLAGS, Kind.USER_STATUS)
    return [event(f"t{i % 4}", kinds[i % 3], f"k{i % 7}") for i in range(N_EVENTS)]


@pytest.mark.timeout(60)
def test_concurrent_producer_and_consumers() -> None:
    hub = ChangeHub(retain=5_000, subscriber_buffer=256)
    producer_done = threading.Event()
    published: dict[int, HubEvent] = {}
    failures: list[BaseException] = []

    def produce() -> None:
        for e in _events():
            published[hub.publish(e)] = e
            if len(published) % 1_000 == 0:
                time.sleep(0)  # let consumers run; the hub must not depend on it
        producer_done.set()

    def consume(flt: WatchFilter, out: list[Item], delay: float) -> None:
        try:
            with hub.subscribe(flt, hub.token(0)) as sub:
                # Done when the producer is, and everything up to its last event was given.
                while not (producer_done.is_set() and sub.progress() == N_EVENTS):
                    out.extend(sub.next(0.05))
                    if delay:
                        time.sleep(delay)
        except BaseException as exc:
            failures.append(exc)
            raise

    def churn(flt: WatchFilter, out: list[Item]) -> None:
        """Read a few batches, disconnect, resume from the last position; repeat."""
        position = 0
        try:
            while True:
                with hub.subscribe(flt, hub.token(position)) as sub:
                    for _ in range(3):
                        batch = sub.next(0.01)
                        out.extend(batch)
                        if batch:
                            position = batch[-1].sequence
                    if producer_done.is_set() and sub.progress() == N_EVENTS:
                        return
        except BaseException as exc:
            failures.append(exc)
            raise

    consumers = {
        "everything": (WatchFilter(frozenset({ANY_TENANT})), 0.0),
        "one tenant": (WatchFilter(frozenset({"t1"})), 0.0),
        "kind and prefix": (WatchFilter(frozenset({"t0", "t2"}), frozenset({Kind.FEATURE_FLAGS}), "k1"), 0.0),
        "slow": (WatchFilter(frozenset({ANY_TENANT})), 0.002),
    }
    received: dict[str, list[Item]] = {name: [] for name in [*consumers, "churn"]}
    threads = [
        threading.Thread(target=consume, args=(flt, received[name], delay))
        for name, (flt, delay) in consumers.items()
    ]
    churn_filter = WatchFilter(frozenset({"t3"}))
    threads.append(threading.Thread(target=churn, args=(churn_filter, received["churn"])))
    for t in threads:
        t.start()
    produce()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert not failures

    assert sorted(published) == list(range(1, N_EVENTS + 1))
    for name, (flt, _) in consumers.items():
        assert_gap_free(received[name], published, flt, 0, N_EVENTS)
    assert_gap_free(received["churn"], published, churn_filter, 0, N_EVENTS)

    # The fast exact consumers saw every one of their events exactly once.
    one_tenant = [i.sequence for i in received["one tenant"] if isinstance(i, Sequenced)]
    if not any(isinstance(i, ResyncNeeded) for i in received["one tenant"]):
        assert one_tenant == [s for s in range(1, N_EVENTS + 1) if published[s].tenant_id == "t1"]
    # The slow one fell behind and was told so, without holding anyone up.
    assert any(isinstance(i, ResyncNeeded) for i in received["slow"])
    assert hub.subscriber_count() == 0


@pytest.mark.timeout(60)
def test_a_waiting_consumer_is_woken_for_every_event_it_waits_for() -> None:
    # Publish notifies only a consumer that is waiting (and only once per wait): a lost
    # wake-up would leave the consumer asleep for its whole long timeout and fail the join.
    total = 2_000
    hub = ChangeHub(subscriber_buffer=total)
    sub = hub.subscribe(WatchFilter(frozenset({ANY_TENANT})))
    received: list[Item] = []

    def consume() -> None:
        while len(received) < total:
            received.extend(sub.next(30))

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(total):
        hub.publish(event(key=f"k{i}"))
        if i % 4 == 0:
            time.sleep(0.0002)  # let the consumer get back to waiting, so both paths are taken
    consumer.join(20)
    assert not consumer.is_alive(), f"consumer stalled after {len(received)} events"
    assert [i.sequence for i in received if isinstance(i, Sequenced)] == list(range(1, total + 1))
