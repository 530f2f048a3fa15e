"""Helpers shared by the hub's unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hybridcache.server.core.kinds import Kind
from hybridcache.server.hub import (
    ChangeHub,
    HubEvent,
    Item,
    ResyncNeeded,
    Sequenced,
    Subscription,
    WatchFilter,
)


def event(
    tenant: str = "t1",
    kind: Kind = Kind.CREDIT_COSTS,
    key: str = "op.a",
    *,
    resync: bool = False,
) -> HubEvent:
    return HubEvent(
        tenant_id=tenant,
        kind=kind,
        keys=() if resync else (key,),
        changed_fields=("cost",),
        event_id=f"{tenant}-{key}",
        event_type="credit-config-changed",
        event_time_ms=1_700_000_000_000,
        resync=resync,
    )


def only(*tenants: str, kinds: Iterable[Kind] = (), prefix: str = "") -> WatchFilter:
    return WatchFilter(frozenset(tenants), frozenset(kinds), prefix)


def drain(sub: Subscription) -> list[Item]:
    """Everything pending, without waiting."""
    out: list[Item] = []
    while batch := sub.next(0):
        out.extend(batch)
    return out


def sequences(items: Sequence[Item]) -> list[int]:
    assert all(isinstance(i, Sequenced) for i in items), items
    return [i.sequence for i in items if isinstance(i, Sequenced)]


def assert_gap_free(
    items: Sequence[Item], published: dict[int, HubEvent], flt: WatchFilter, start: int, end: int
) -> None:
    """The watch invariant: after `start`, every matching event up to `end` arrives once, in
    order, except where an explicit ResyncNeeded says the stream jumped ahead."""
    position = start
    for item in items:
        if isinstance(item, ResyncNeeded):
            assert item.sequence >= position, (item, position)
            position = item.sequence
            continue
        assert item.sequence > position, (item.sequence, position)
        skipped = [s for s in range(position + 1, item.sequence) if flt.matches(published[s])]
        assert not skipped, f"silently skipped {skipped}"
        assert flt.matches(item.event)
        position = item.sequence
    missing = [s for s in range(position + 1, end + 1) if flt.matches(published[s])]
    assert not missing, f"never delivered {missing}"


def publish_many(hub: ChangeHub, events: Iterable[HubEvent]) -> dict[int, HubEvent]:
    return {hub.publish(e): e for e in events}
