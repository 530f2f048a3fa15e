"""Fleet resumes that need the Redis stream: a position checked, or replayed from the stream.

In durable mode a fleet token carries a stream position (hub/tokens.py). A token of this
instance resumes by sequence (the hub alone). Any other replica's token goes through here:

1. **Fencing.** The token's own entry must still be in the stream (`StreamSource.check`):
   after a Redis restart without persistence the stream is a new one and its ids say
   nothing about the old ones, so resuming "after" an old id (from the ring, or by skipping
   until this replica passes it) would silently drop what was lost with the old stream.
   Otherwise RESYNC_REQUIRED with the reason (reset, past the retention, unreadable).
2. **Inside this replica's ring** (position at or after its floor): the hub resumes it.
3. **Older than the ring** (a replica just started, or a long absence): a *catch-up*. The
   keys changed after the position come from the stream's entries up to the floor
   (`StreamSource.read`, bounded) and from the ring's items after the position. Under the
   feed's `order` lock (which the change feed holds while it applies and publishes one
   entry, as ListSnapshot uses it) the hub's sequence S is taken and each of those keys'
   current value read; the stream then sends those values (a deletion for a key no longer
   held), then the ring after S, then live changes. Every change after the position is
   therefore either in a value sent (which is its key's value at S, or later) or after S:
   no gap; each key is sent once in the catch-up, and a change after S is not in it
   (changes the repair worker makes outside the lock may come once more, as a value the
   consumer already holds, as in ListSnapshot). The catch-up is a compaction: a key that
   changed five times arrives once, at its latest value (what a replica needs, not a log).
   Until the catch-up's last change, each change carries the token it started from (a
   consumer cut off halfway starts over); the last carries the token of S.

   On-demand kinds have no held value: a changed key arrives as an invalidation, and an
   org unit as a `resync` of the tenant's org units (the related units a live invalidation
   names cannot be known without the entries).

Bounded: at most `StreamReplay.max_entries` entries read (the ring's size), and a copy of
the touched tenants' maps (a pointer per item) held while the values are read.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from hybridcache.server.core import HybridCache
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.replica_state import Entry
from hybridcache.server.core.values import Value
from hybridcache.server.events.stream_replay import REASON_UNREADABLE
from hybridcache.server.hub import REASON_OUTSIDE_WINDOW, ChangeHub, HubEvent, Subscription, WatchFilter
from hybridcache.server.hub.tokens import StreamPosition

_ATTEMPTS = 3  # the floor moved past what was read (a burst evicted ring items): read on
# ResyncRequired reasons of a catch-up (the stream's own: events/stream_replay.py).
REASON_TENANT_UNAVAILABLE = "the resume position's tenant could not be loaded"
REASON_OUTPACED = "the event stream moved faster than the resume could read it"


class StreamEvent(Protocol):
    """What a catch-up needs of a decoded stream entry (events/decode.py's `Event`)."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def key(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def event_time_ms(self) -> int: ...


class StreamSource(Protocol):
    """The Redis stream, read back (events/stream_replay.py's `StreamReplay`)."""

    def check(self, position: StreamPosition) -> str | None: ...
    def head(self) -> StreamPosition | None: ...
    def read(self, after: StreamPosition, until: StreamPosition) -> Iterable[StreamEvent] | str: ...


@dataclass(frozen=True, slots=True)
class _Touch:
    tenant_id: str
    kind: Kind
    key: str
    event_id: str
    event_type: str
    event_time_ms: int


class FleetResume:
    """`subscribe(flt, token)`: the hub's, with fleet tokens checked against the stream and
    positions older than the ring replayed from it."""

    def __init__(
        self,
        hub: ChangeHub,
        cache: HybridCache,
        order: AbstractContextManager[object],
        source: StreamSource,
    ) -> None:
        self._hub = hub
        self._cache = cache
        self._order = order
        self._source = source

    def subscribe(self, flt: WatchFilter, token: str | None) -> Subscription:
        """ValueError for a malformed token or one from this instance's future (as the hub)."""
        point = self._hub.resume_point(token) if token else None
        if token is None or point is None or not point.other_instance or point.position is None:
            return self._hub.subscribe(flt, token)
        # Before the stream's first entry: nothing to check it by (hub tokens never carry it).
        reason = REASON_OUTSIDE_WINDOW if point.position == (0, 0) else self._source.check(point.position)
        if reason is not None:
            return self._hub.subscribe_refused(flt, reason)
        if self._hub.settle_pending:  # the end of the stream after our last Wrapper read: read it now
            head = self._source.head()
            if head is None:
                return self._hub.subscribe_refused(flt, REASON_UNREADABLE)
            self._hub.settle_at(head)
        floor = self._hub.stream_floor()
        if floor is not None and point.position >= floor:
            return self._hub.subscribe(flt, token)
        return self._catch_up(flt, token, point.position, floor)

    def _catch_up(
        self, flt: WatchFilter, token: str, after: StreamPosition, until: StreamPosition | None
    ) -> Subscription:
        touched: dict[tuple[str, Kind, str], _Touch] = {}
        read_from = after
        for _ in range(_ATTEMPTS):
            if until is None:
                break
            if until > read_from:
                events = self._source.read(read_from, until)
                if isinstance(events, str):
                    return self._hub.subscribe_refused(flt, events)
                for event in events:
                    _touch(touched, flt, event)
                read_from = until
            try:
                for tenant in {key[0] for key in touched if self._cache.is_replicated(key[1])}:
                    self._cache.ensure_tenant(tenant)  # may call the Wrapper: outside the lock
            except Exception:  # the tenant cannot be loaded here: the consumer reloads
                return self._hub.subscribe_refused(flt, REASON_TENANT_UNAVAILABLE)
            with self._order:
                plan = self._hub.catch_up_plan(flt, after)
                if plan.floor is not None and plan.floor > read_from:
                    until = plan.floor  # ring items in (read_from, floor] were evicted: read them too
                    continue
                for item in plan.retained:
                    for key in item.keys:
                        touch = _Touch(
                            item.tenant_id, item.kind, key, item.event_id, item.event_type, item.event_time_ms
                        )
                        _touch(touched, flt, touch)
                notices = self._notices(touched.values())
                return self._hub.subscribe_caught_up(flt, plan.sequence, notices, token)
        return self._hub.subscribe_refused(flt, REASON_OUTPACED)

    def _notices(self, touches: Iterable[_Touch]) -> list[HubEvent]:
        """The catch-up's changes: each touched key's value now. Caller holds the order lock."""
        views: dict[tuple[str, Kind], dict[str, Entry] | None] = {}
        notices: list[HubEvent] = []
        reset_kinds: set[tuple[str, Kind]] = set()
        for touch in touches:
            if not self._cache.is_replicated(touch.kind):
                if touch.kind is not Kind.ORG_UNITS:
                    notices.append(_notice(touch, keys=(touch.key,)))
                elif (touch.tenant_id, touch.kind) not in reset_kinds:
                    reset_kinds.add((touch.tenant_id, touch.kind))
                    notices.append(_notice(touch, keys=(), resync=True))
                continue
            slot = (touch.tenant_id, touch.kind)
            if slot not in views:
                try:
                    views[slot] = self._cache.replica_view(touch.tenant_id, (touch.kind,))[touch.kind]
                except KeyError:  # not loaded here (any more): nothing to send
                    views[slot] = None
            view = views[slot]
            if view is None:
                continue
            entry = view.get(touch.key)
            if entry is None:
                notices.append(_notice(touch, keys=(touch.key,), deleted=True))
            else:
                notices.append(
                    _notice(touch, keys=(touch.key,), version=entry.value.version, value=entry.value)
                )
        return notices


def _notice(
    touch: _Touch,
    *,
    keys: tuple[str, ...],
    resync: bool = False,
    deleted: bool = False,
    version: int = 0,
    value: Value | None = None,
) -> HubEvent:
    return HubEvent(
        tenant_id=touch.tenant_id,
        kind=touch.kind,
        keys=keys,
        changed_fields=(),
        event_id=touch.event_id,
        event_type=touch.event_type,
        event_time_ms=touch.event_time_ms,
        resync=resync,
        deleted=deleted,
        version=version,
        value=value,
    )


def _touch(touched: dict[tuple[str, Kind, str], _Touch], flt: WatchFilter, event: StreamEvent) -> None:
    """Note that `event`'s key changed, if the stream's filter wants it; the latest wins and
    moves last (the catch-up sends keys in the order of their last change)."""
    probe = HubEvent(
        tenant_id=event.tenant_id,
        kind=event.kind,
        keys=(event.key,),
        changed_fields=(),
        event_id=event.event_id,
        event_type=event.event_type,
        event_time_ms=event.event_time_ms,
    )
    if not flt.matches(probe):
        return
    slot = (event.tenant_id, event.kind, event.key)
    touched.pop(slot, None)
    touched[slot] = _Touch(
        event.tenant_id, event.kind, event.key, event.event_id, event.event_type, event.event_time_ms
    )
