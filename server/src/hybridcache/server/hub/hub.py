"""The change hub: numbers applied changes and fans them out to watchers.

    producer (event thread) ──publish──► ChangeHub ──► retained ring (last `retain` events)
                                             │
                                             └──► Subscription buffers (bounded) ──next()──► stream handlers

Semantics are those of an etcd / Kubernetes watch, with no silent gap ever:

* Every published event gets the next sequence number (1, 2, 3, ...) of this process, and
  the next of its tenant. The first orders the ring and is what a resume token seals; only
  the second is shown on the stream (a caller bound to acme must not count globex's
  changes), and a Progress shows the sum of its stream's tenants' numbers.
* A subscriber that resumes from a token of this instance whose sequence is still inside
  the retained window receives exactly the retained events after it (filtered), then live
  ones: the snapshot of the ring and the registration for live events happen under one
  lock, so nothing published in between is lost or doubled.
* A token from another instance, or older than the window, yields a `ResyncNeeded` first,
  then live events. A token from the future is a `ValueError` (the client is confused).
* Backpressure: each subscriber buffers at most `subscriber_buffer` events. When a publish
  would overflow it, the buffer is replaced by one `ResyncNeeded("subscriber fell behind")`
  and the subscriber skips events until it has read that marker; then it gets live events
  again. We keep the stream rather than end it because the client has to reload either
  way, and reloading over an open stream is list-then-watch done right: the events that
  happen during the reload arrive on the stream, where ending it would force a reconnect
  with its own window for loss. Memory stays bounded and neither the producer nor the
  other subscribers ever wait for a slow one.

Threads and locks. `publish` runs on the event thread; `next` on stream handler threads;
`close` on either (gRPC runs cancellation callbacks on its own threads). Lock order:
**hub lock, then subscription lock**, never the reverse. `publish`, `subscribe`, `close`
and `Subscription.progress` take the hub lock first; `Subscription.next` takes only its
own lock (it never needs the hub), so a consumer waiting for events never holds up the
producer, and the producer holds each subscription lock only for a deque append.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from hybridcache.server.hub.events import (
    REASON_FELL_BEHIND,
    REASON_OTHER_KEY,
    REASON_OUTSIDE_WINDOW,
    REASON_UNKNOWN_INSTANCE,
    HubEvent,
    Item,
    ResyncNeeded,
    Sequenced,
)
from hybridcache.server.hub.filters import ANY_TENANT, WatchFilter
from hybridcache.server.hub.tokens import (
    INSTANCE_ID_RE,
    FleetSealer,
    ResumePoint,
    StreamPosition,
    TokenSealer,
)

_BEFORE_STREAM: StreamPosition = (0, 0)  # the position of a stream without entries


@dataclass(frozen=True, slots=True)
class HubStats:
    """A consistent snapshot of the hub's counters, for metrics and GetCacheStats."""

    current_sequence: int
    retained: int
    subscribers: int
    buffered: int  # events waiting in subscriber buffers, all subscribers together
    lagged_total: int  # times a subscriber fell behind and was sent "resync required"
    discarded_total: int  # events not delivered to a subscriber because it had fallen behind


@dataclass(frozen=True, slots=True)
class CatchUpPlan:
    """Where a catch-up from the Redis stream hands over to this hub (`catch_up_plan`)."""

    sequence: int  # the hub's sequence when the plan was made: live items follow it
    floor: StreamPosition | None  # the ring holds every item after this position
    retained: list[HubEvent]  # the ring's events after the position asked for, filtered


@dataclass(slots=True)
class _Counters:
    """Monotonic counters; mutated only under the hub lock."""

    lagged: int = 0
    discarded: int = 0


class ChangeHub:
    """Sequences published events, retains the last `retain`, fans them out to subscribers.

    `instance_id` must differ between process starts (the default is random): sequences
    restart at 1, so a stable id (a hostname) would make an old token look like a position
    in the new sequence and resume at the wrong place, silently.

    Fleet mode (`fleet_key`: durable mode, one Redis stream read by every replica): the
    stream reader reports each entry it processes (`stream_started`, `begin_entry`,
    `end_entry`), every item is tagged with its stream position, and tokens are fleet
    tokens (`tokens.FleetSealer`). A token of this instance resumes by sequence as always;
    one of another replica (or an earlier run) of the fleet resumes by position: the
    retained items after it, then live ones, dropping any live item at or before it while
    this replica is behind the issuer. A position older than what this replica retains
    (its ring, or its start) gets a `ResyncNeeded` here; the service first checks every such
    token against the Redis stream and replays older positions from it (`api/catch_up.py`,
    which uses `stream_floor`, `catch_up_plan`, `subscribe_caught_up`, `subscribe_refused`).
    """

    def __init__(
        self,
        *,
        instance_id: str | None = None,
        retain: int = 10_000,
        subscriber_buffer: int = 1_000,
        fleet_key: bytes | None = None,
    ) -> None:
        if retain < 0:
            raise ValueError("retain must be >= 0")
        if subscriber_buffer < 1:
            raise ValueError("subscriber_buffer must be >= 1")
        if instance_id is None:
            instance_id = secrets.token_hex(8)
        elif not INSTANCE_ID_RE.fullmatch(instance_id):
            raise ValueError("instance_id must be 1-64 characters of [A-Za-z0-9_-]")
        self._instance_id = instance_id
        self._sealer = TokenSealer(instance_id)
        self._fleet = FleetSealer(instance_id, fleet_key) if fleet_key is not None else None
        self._subscriber_buffer = subscriber_buffer
        self._lock = threading.Lock()
        # All below guarded by _lock.
        self._sequence = 0
        self._tenant_sequences: dict[str, int] = {}  # one int per tenant that ever changed
        self._ring: deque[Sequenced] = deque(maxlen=retain)
        # Subscribers indexed by tenant (ANY_TENANT for wildcard ones), so a publish touches
        # only the subscribers that can want it; the inner dict keeps subscription order.
        self._by_tenant: dict[str, dict[int, Subscription]] = {}
        self._subscriptions: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        self._counters = _Counters()
        # Fleet mode only, all guarded by _lock: the last stream entry fully processed, the
        # one in progress and its thread (the reader's), the highest position an item got,
        # and the floor: a position below it may have items this replica no longer holds.
        self._completed: StreamPosition | None = None
        self._entry: StreamPosition | None = None
        self._entry_thread: int | None = None
        self._last_tag: StreamPosition | None = None
        self._floor: StreamPosition | None = None
        # This replica's own reads of the Wrapper (a tenant's load, a resync) see changes whose
        # stream entries the reader has not reached: until it has, the state is ahead of every
        # position it could name. `_settle`: the stream's end read after such a read (tokens
        # stay this instance's until the reader passes it); `_settle_unknown`: that end could
        # not be read (Redis down), so no position is named until `settle_at` comes.
        self._settle: StreamPosition | None = None
        self._settle_unknown = False

    @property
    def fleet(self) -> bool:
        """True when tokens are fleet tokens (resumable on any replica of the stream)."""
        return self._fleet is not None

    # --- the stream reader's reports (fleet mode)

    def stream_started(self, position: StreamPosition) -> None:
        """The reader starts at `position` (the stream's end): nothing at or before it will
        come, so a token at or after it is resumable here."""
        with self._lock:
            if self._floor is None:
                self._floor = position
            if self._completed is None or self._completed < position:
                self._completed = position

    def begin_entry(self, position: StreamPosition) -> None:
        """The calling thread now processes stream entry `position`: what it publishes until
        `end_entry` comes at that position."""
        with self._lock:
            self._entry = position
            self._entry_thread = threading.get_ident()

    def end_entry(self) -> None:
        with self._lock:
            if self._entry is not None and (self._completed is None or self._completed < self._entry):
                self._completed = self._entry
            self._entry = None
            self._entry_thread = None

    def settle_at(self, position: StreamPosition) -> None:
        """A read of the Wrapper just ended, and the stream's last entry is at `position`: every
        change that read saw has its entry at or before it (bar a publisher that commits and
        publishes apart: the gap between the two, if it outlasts the read). So a position
        before it no longer describes this replica (it is the floor: a resume from before it
        is a catch-up from the stream, `api/catch_up.py`), and the positions this replica
        names wait until its reader has passed it."""
        with self._lock:
            if self._fleet is None:
                return
            self._settle_unknown = False
            if self._floor is None or self._floor < position:
                self._floor = position
            if self._completed is not None and self._completed >= position:
                return
            if self._settle is None or self._settle < position:
                self._settle = position

    def settle_unknown(self) -> None:
        """A read of the Wrapper ended but the stream's end could not be read: name no position
        (tokens of this instance only, resumes by position refused) until `settle_at`."""
        with self._lock:
            if self._fleet is not None:
                self._settle_unknown = True

    @property
    def settle_pending(self) -> bool:
        """True while `settle_unknown` holds (the stream's end is still to be read)."""
        return self._settle_unknown

    def settled(self) -> bool:
        """Whether this replica's state is described by its reader's position (always outside
        fleet mode)."""
        with self._lock:
            return not self._unsettled_locked()

    def _unsettled_locked(self) -> bool:
        if self._settle_unknown:
            return True
        settle = self._settle
        if settle is None:
            return False
        if self._completed is not None and self._completed >= settle:
            self._settle = None
            return False
        return True

    def _tag_locked(self) -> StreamPosition | None:
        """The position of an item published now (caller holds the lock)."""
        if self._fleet is None:
            return None
        tag = self._entry if self._entry_thread == threading.get_ident() else self._completed
        if tag is None or (self._last_tag is not None and tag < self._last_tag):
            tag = self._last_tag
        self._last_tag = tag
        return tag

    def _position_of_locked(self, sequence: int) -> StreamPosition | None:
        """The stream position a token for "after `sequence`" carries (None: unknown)."""
        offset = self._sequence - sequence
        position = self._ring[-1 - offset].position if 0 <= offset < len(self._ring) else None
        if offset == 0 and self._completed is not None and (position is None or position < self._completed):
            position = self._completed
        return position

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def current_sequence(self) -> int:
        """The last sequence assigned (0 before the first publish)."""
        return self._sequence  # one attribute read: atomic, no lock needed

    def token(self, sequence: int) -> str:
        """A resume token for "after `sequence`" of this instance (sealed: a new one per call);
        in fleet mode a fleet token when the position of `sequence` is known and past the
        stream's start (an entry another replica can check)."""
        if self._fleet is None:
            return self._sealer.seal(sequence)
        with self._lock:
            return self._token_locked(sequence)

    def _token_locked(self, sequence: int) -> str:
        position = self._position_of_locked(sequence) if self._fleet is not None else None
        if self._fleet is None or position is None or position == _BEFORE_STREAM or self._unsettled_locked():
            # Before the stream's first entry no position can be checked on another replica
            # (api/catch_up.py); while unsettled (`settle_at`) the state is ahead of the
            # position: such a token is this instance's alone.
            return self._sealer.seal(sequence)
        return self._fleet.seal(sequence, position)

    def resume_point(self, token: str) -> ResumePoint:
        """What a token of this hub says (sequence None: another instance's). ValueError if
        it is malformed or was not sealed by this instance (or, in fleet mode, its fleet)."""
        if self._fleet is None or token.startswith(f"{self._instance_id}."):
            return self._sealer.open(token)
        return self._fleet.open(token)

    def visible_sequence(self, flt: WatchFilter) -> int:
        """What a Progress of a stream with `flt` shows: its tenants' changes numbered so far
        (all tenants' for a wildcard filter), never a count of another tenant's."""
        if flt.all_tenants:
            return self._sequence
        counts = self._tenant_sequences
        return sum(counts.get(tenant, 0) for tenant in flt.tenants)

    def current_token(self) -> str:
        """The resume token for "after everything published so far" (ListSnapshot's position).
        The one place a position of now becomes a token: a change to the token format needs
        only this and `token`."""
        return self.token(self._sequence)

    def publish(self, event: HubEvent) -> int:
        """Sequence `event`, retain it, hand it to every matching subscriber; return its
        sequence. Never blocks on a subscriber: each gets a non-blocking append."""
        with self._lock:
            self._sequence += 1
            tenant_sequence = self._tenant_sequences.get(event.tenant_id, 0) + 1
            self._tenant_sequences[event.tenant_id] = tenant_sequence
            item = Sequenced(self._sequence, event, tenant_sequence, self._tag_locked())
            if item.position is not None and len(self._ring) == self._ring.maxlen:
                evicted = self._ring[0].position if self._ring else item.position
                if evicted is not None and (self._floor is None or self._floor < evicted):
                    self._floor = evicted
            self._ring.append(item)
            for bucket_key in (event.tenant_id, ANY_TENANT):
                bucket = self._by_tenant.get(bucket_key)
                if bucket:
                    for sub in bucket.values():
                        if sub.filter.matches_kind_and_key(event):
                            sub._offer(item, self._counters, self._completed)
            return self._sequence

    def subscribe(self, flt: WatchFilter, resume_token: str | None = None) -> Subscription:
        """Start watching. With `resume_token`, replay what was missed (or say it cannot).

        Raises ValueError for a malformed token or one from this instance's future.
        """
        point = self.resume_point(resume_token) if resume_token else None
        marker: ResyncNeeded | None = None
        backlog: list[Sequenced] = []
        skip_through: StreamPosition | None = None
        with self._lock:
            current = self._sequence
            if point is not None:
                oldest_replayable = current - len(self._ring)  # resume after it replays all retained
                if point.other_key:
                    marker = ResyncNeeded(REASON_OTHER_KEY, current)
                elif point.sequence is None and point.position is not None and self._fleet is not None:
                    marker, backlog, skip_through = self._resume_by_position_locked(point.position)
                elif point.sequence is None:  # another instance's token
                    marker = ResyncNeeded(REASON_UNKNOWN_INSTANCE, current)
                elif point.sequence > current:
                    raise ValueError("resume token is ahead of this server's sequence")
                elif point.sequence < oldest_replayable:
                    marker = ResyncNeeded(REASON_OUTSIDE_WINDOW, current)
                elif point.sequence < current:
                    # Retained sequences are contiguous, so the position is arithmetic.
                    start = len(self._ring) - (current - point.sequence)
                    backlog = list(itertools.islice(self._ring, start, None))
            sub = self._register_locked(flt)
            sub._skip_through = skip_through
        # Filtering the backlog (up to `retain` events) happens outside the lock so a resume
        # does not stall the producer; the snapshot is immutable and the subscription is not
        # yet visible to its consumer, and live events go to a separate buffer after it.
        if marker is not None:
            sub._prime([marker])
        elif backlog:
            sub._prime([s for s in backlog if flt.matches(s.event)])
        return sub

    def _register_locked(self, flt: WatchFilter) -> Subscription:
        sub = Subscription(self, next(self._ids), flt, self._subscriber_buffer)
        self._subscriptions[sub.id] = sub
        for bucket_key in (ANY_TENANT,) if flt.all_tenants else flt.tenants:
            self._by_tenant.setdefault(bucket_key, {})[sub.id] = sub
        return sub

    # --- fleet resumes that need the Redis stream (api/catch_up.py drives these)

    def stream_floor(self) -> StreamPosition | None:
        """Fleet mode: positions after this one are all in the ring (None: not in fleet mode,
        or the reader has not started)."""
        with self._lock:
            return self._floor

    def subscribe_refused(self, flt: WatchFilter, reason: str) -> Subscription:
        """A subscription whose first item is `ResyncNeeded(reason)`, then live events."""
        with self._lock:
            sub = self._register_locked(flt)
            marker = ResyncNeeded(reason, self._sequence)
        sub._prime([marker])
        return sub

    def catch_up_plan(self, flt: WatchFilter, after: StreamPosition) -> CatchUpPlan:
        """What a catch-up from stream position `after` starts from: the current sequence,
        the floor, and the retained events after `after` that `flt` matches (resync markers
        left out: the key-level diff they close is among them)."""
        with self._lock:
            events = [
                s.event
                for s in self._ring
                if s.position is not None
                and s.position > after
                and not s.event.resync
                and flt.matches(s.event)
            ]
            return CatchUpPlan(self._sequence, self._floor, events)

    def subscribe_caught_up(
        self, flt: WatchFilter, sequence: int, catch_up: list[HubEvent], resume_token: str
    ) -> Subscription:
        """Subscribe after `sequence` of this hub, delivering `catch_up` first (each carrying
        `resume_token`, the last the token for `sequence`), then the retained items after
        `sequence`, then live ones. `sequence` from `catch_up_plan`, taken under the feed's
        order lock with the values `catch_up` holds."""
        with self._lock:
            current = self._sequence
            if sequence < current - len(self._ring):  # the ring moved past it meanwhile
                sub = self._register_locked(flt)
                marker: list[Item] = [ResyncNeeded(REASON_OUTSIDE_WINDOW, current)]
                sub._prime(marker)
                return sub
            start = len(self._ring) - (current - sequence)
            backlog = list(itertools.islice(self._ring, start, None))
            position = self._position_of_locked(sequence)
            last_token = self._token_locked(sequence)
            shown = self._tenant_sequences
            items: list[Item] = [
                Sequenced(
                    sequence,
                    event,
                    shown.get(event.tenant_id, 0),
                    position,
                    resume_token=resume_token if index < len(catch_up) - 1 else last_token,
                )
                for index, event in enumerate(catch_up)
            ]
            sub = self._register_locked(flt)
        items.extend(s for s in backlog if flt.matches(s.event))
        sub._prime(items)
        return sub

    def _resume_by_position_locked(
        self, after: StreamPosition
    ) -> tuple[ResyncNeeded | None, list[Sequenced], StreamPosition | None]:
        """Another replica's (or an earlier run's) fleet token: (marker, backlog, the live
        position to skip through). Caller holds the lock."""
        if self._floor is None or after < self._floor or self._settle_unknown:
            return ResyncNeeded(REASON_OUTSIDE_WINDOW, self._sequence), [], None
        backlog = [s for s in self._ring if s.position is not None and s.position > after]
        if not backlog and (self._completed is None or self._completed < after):
            return None, [], after  # we are behind the issuer: skip what it delivered
        return None, backlog, None

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscriptions)

    def stats(self) -> HubStats:
        with self._lock:
            return HubStats(
                current_sequence=self._sequence,
                retained=len(self._ring),
                subscribers=len(self._subscriptions),
                buffered=sum(sub.buffered() for sub in self._subscriptions.values()),
                lagged_total=self._counters.lagged,
                discarded_total=self._counters.discarded,
            )

    def _unsubscribe(self, sub: Subscription) -> None:
        """Caller holds the hub lock. Idempotent."""
        if self._subscriptions.pop(sub.id, None) is None:
            return
        for bucket_key in (ANY_TENANT,) if sub.filter.all_tenants else sub.filter.tenants:
            bucket = self._by_tenant.get(bucket_key)
            if bucket is not None:
                bucket.pop(sub.id, None)
                if not bucket:
                    del self._by_tenant[bucket_key]


class Subscription:
    """One watcher's bounded buffer. Read it from one thread; close it from any."""

    def __init__(self, hub: ChangeHub, sub_id: int, flt: WatchFilter, bound: int) -> None:
        self._hub = hub
        self.id = sub_id
        self.filter = flt
        self._bound = bound
        self._cond = threading.Condition(threading.Lock())
        # All below guarded by _cond. `_replay` (resume backlog or a start marker) is read
        # before `_pending` (live events) and does not count against the bound: it is at
        # most `retain` references to events the ring holds anyway.
        self._replay: list[Item] = []
        self._pending: deque[Sequenced] = deque()
        self._lagging = False
        self._last_offered = 0  # sequence of the last matching event offered, delivered or not
        self._closed = False
        # True while `next` waits and nobody has woken it yet: `_offer` notifies only then.
        # With 100 subscribers at 1,000 events/s a notify per offer would be 100,000 wasted
        # calls a second, as a busy subscriber is almost never waiting when an event comes.
        self._waiting = False
        # Fleet resume on a replica behind the token's issuer: live items at or before this
        # position were delivered by the issuer; dropped until this replica passes it.
        self._skip_through: StreamPosition | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def next(self, timeout: float) -> list[Item]:
        """Wait up to `timeout` seconds for items and return all that are pending, in order.

        [] means the timeout passed (send a heartbeat) or the subscription is closed.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._closed or self._lagging or self._replay or self._pending):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._waiting = True
                self._cond.wait(remaining)
                self._waiting = False  # (a waker clears it too, so it notifies only once)
            if self._closed:
                return []
            if self._lagging:
                # The stream continues after the last event this subscriber skipped, so the
                # marker's position is a correct resume point once the client has reloaded.
                self._lagging = False
                return [ResyncNeeded(REASON_FELL_BEHIND, self._last_offered)]
            items: list[Item] = self._replay
            items.extend(self._pending)
            self._replay = []
            self._pending.clear()
            return items

    def progress(self) -> int | None:
        """The hub's current sequence if this subscriber has been given everything up to it
        (a safe resume point for a heartbeat); None if items are pending (read them first).
        """
        # Both locks, in order: with only ours, a publish could have taken its sequence and
        # be waiting to append here, and we would report a point past an undelivered event.
        with self._hub._lock, self._cond:
            if self._closed or self._lagging or self._replay or self._pending or self._skipping_locked():
                return None
            return self._hub._sequence

    def heartbeat(self) -> tuple[int, int] | None:
        """(`progress()`, what the Progress message shows: `hub.visible_sequence`), read at
        one moment; None if items are pending."""
        with self._hub._lock, self._cond:
            if self._closed or self._lagging or self._replay or self._pending or self._skipping_locked():
                return None
            return self._hub._sequence, self._hub.visible_sequence(self.filter)

    def _skipping_locked(self) -> bool:
        """Still behind a fleet token's position (a heartbeat now would move it back)."""
        skip, completed = self._skip_through, self._hub._completed
        if skip is not None and completed is not None and completed >= skip:
            self._skip_through = skip = None
        return skip is not None

    def buffered(self) -> int:
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        """Stop receiving and leave the hub at once. Idempotent; wakes a blocked `next`."""
        with self._hub._lock:
            self._hub._unsubscribe(self)
            with self._cond:
                self._closed = True
                self._replay = []
                self._pending.clear()
                self._cond.notify_all()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _prime(self, items: list[Item]) -> None:
        """Set the replay backlog; called once by `subscribe` before it returns."""
        with self._cond:
            if not (self._closed or self._lagging):  # a lag marker supersedes the backlog
                self._replay = items
                self._cond.notify()

    def _offer(self, item: Sequenced, counters: _Counters, completed: StreamPosition | None = None) -> None:
        """Called by `publish` under the hub lock. Never blocks beyond our own short lock."""
        with self._cond:
            if self._closed:
                return
            skip = self._skip_through
            if skip is not None:
                if item.position is not None and item.position > skip:
                    self._skip_through = None
                elif completed is not None and completed >= skip and item.position == completed:
                    self._skip_through = None  # a repair of ours after we passed the position
                else:
                    return  # the token's issuer delivered it
            self._last_offered = item.sequence
            if self._lagging:
                counters.discarded += 1
                return
            if len(self._pending) >= self._bound:
                counters.lagged += 1
                counters.discarded += len(self._pending) + len(self._replay) + 1
                self._pending.clear()
                self._replay = []
                self._lagging = True
                self._wake()
                return
            self._pending.append(item)
            self._wake()

    def _wake(self) -> None:
        """Caller holds `_cond`. Wake `next` if it is waiting and not already woken."""
        if self._waiting:
            self._waiting = False
            self._cond.notify()
