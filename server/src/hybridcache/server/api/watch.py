"""WatchChanges, server side: one change stream per call, fed by the change hub.

For the sync `grpc.server`: `serve_watch` is the generator a servicer returns; each open
stream holds one pool thread, mostly asleep in `Subscription.next`.

The stream, as the client sees it:

1. The first message confirms the subscription: a `Progress` when nothing is pending
   (so a client can start loading state only after the server is watching for it, which
   is what makes list-then-watch gap-free); otherwise the replayed events, or a
   `ResyncRequired` when the resume token cannot be honoured.
2. `ChangeEvent`s in sequence order, each with its own resume token; with
   `max_batch` > 1, runs of them as `ChangeBatch`es (below).
3. A `Progress` after `heartbeat_s` without any message, so silence can be told from a
   dead stream and the client's resume point advances while idle.
4. `ResyncRequired` whenever events were missed (see `hybridcache.server.hub.hub`), after
   which the stream continues.

Messages leave as bytes (the service registers WatchChanges with a pass-through
serializer, `hybridcache.server.api.registration`): each change is serialized once for all
its subscribers (`hub.wire`), and a batch is those bytes concatenated. A stream that asked
for batches sends, at each wake-up, everything already pending (up to `max_batch` a
message) without waiting to fill a batch: an idle stream is as quick as an unbatched one,
a busy one pays one gRPC message per wake-up instead of one per event. Resync markers go
alone and in place, so a batch never reorders changes around one.

Pacing (batched streams only): a gRPC message costs the sync server ~100 µs of CPU here, so
100 streams at 1,000 changes/s, each woken per change, would need ~10 cores; left alone,
they fall behind until their batches grow large enough, hundreds of ms later. Instead a
batched stream holds its next message until `open streams / messages_per_s` after its
previous one, gathering what arrives meanwhile: all batched streams together send at most
about `messages_per_s` messages a second (HYBRIDCACHE_WATCH_MESSAGES_PER_S), and the
delay a change can pick up is that gap (20 ms for 100 streams at the default 5,000/s;
0.2 ms for one). A stream whose last message is older than the gap sends at once, so an
idle stream is never slowed.

Errors: INVALID_ARGUMENT (request or token malformed, token from the future),
PERMISSION_DENIED (a tenant the caller may not read), RESOURCE_EXHAUSTED (stream caps),
UNAVAILABLE "server shutting down" when `stop` is set. Each carries a
`google.rpc.ErrorInfo` reason.

Every exit path closes the subscription and releases the limiter slot: the `finally`
covers the generator ending or being discarded, and the RPC's termination callback covers
a client cancel while the generator sleeps (it also wakes it, so the thread is freed at once).
Both are idempotent. The callback takes the hub's locks and the limiter's one after the
other, never nested, so it adds no lock order to the hub's (hub, then subscription).

A stream whose client stops reading blocks its thread in gRPC's send (flow control) and
cannot see `stop` there; `server.stop(grace)` cancels it at the end of the grace period.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

import grpc

from hybridcache.client.reasons import Reason
from hybridcache.server import ids
from hybridcache.server.api.errors import abort
from hybridcache.server.core.kinds import Kind
from hybridcache.server.hub import (
    AllowedTenants,
    ChangeHub,
    Item,
    ResyncNeeded,
    StreamLimiter,
    StreamLimitError,
    Subscription,
    TenantNotAllowedError,
    WatchFilter,
    resolve_tenants,
    to_proto,
    wire,
)
from hybridcache.v1 import hybridcache_pb2 as pb

MAX_TENANTS = 100
MAX_KEY_PREFIX = 128
# How often a waiting stream looks at `stop`: a threading.Event cannot wake a Condition
# waiter, so shutdown is noticed within this long. 1,000 idle streams cost ~2,000 short
# wake-ups a second at 0.5 s, which is noise next to their heartbeats' sends.
STOP_POLL_S = 0.5
# Larger `max_batch` requests are clamped to this (documented in the proto): 1,000 changes
# of typical size are well under the message size limit, and more saves nothing measurable.
MAX_BATCH = 1_000
# Batched messages a second, all streams together, that pacing aims at (see above): a fifth
# of the ~25k messages a second the sync server can send on one core here.
DEFAULT_MESSAGES_PER_S = 5_000.0


def serve_watch(
    request: pb.WatchChangesRequest,
    context: grpc.ServicerContext,
    *,
    hub: ChangeHub,
    limiter: StreamLimiter,
    allowed_tenants: Callable[[grpc.ServicerContext], AllowedTenants],
    heartbeat_s: float,
    stop: threading.Event,
    stop_poll_s: float = STOP_POLL_S,
    messages_per_s: float = DEFAULT_MESSAGES_PER_S,
    subscribe: Callable[[WatchFilter, str | None], Subscription] | None = None,
) -> Iterator[bytes]:
    """Validate, authorise, take a slot, subscribe, then stream serialized
    `WatchChangesResponse`s until cancel or shutdown. `subscribe`: the hub's, unless
    given (durable mode: `api/catch_up.py`'s, which checks fleet tokens against the stream)."""
    if heartbeat_s <= 0 or stop_poll_s <= 0 or messages_per_s < 0:
        raise ValueError("heartbeat_s and stop_poll_s must be positive, messages_per_s >= 0 (0: no pacing)")
    if stop.is_set():
        abort(context, Reason.SHUTTING_DOWN, "server shutting down")
    allowed = allowed_tenants(context)  # first: an unauthenticated caller learns nothing more
    try:
        requested = _valid_tenants(request.tenant_ids)
        kinds = _valid_kinds(request.kinds)
        if len(request.key_prefix) > MAX_KEY_PREFIX:
            raise ValueError(f"key_prefix is longer than {MAX_KEY_PREFIX} characters")
    except ValueError as exc:
        abort(context, Reason.INVALID_ARGUMENT, str(exc))
    if request.resume_token:
        try:
            hub.resume_point(request.resume_token)  # before taking a slot; subscribe opens it again
        except ValueError as exc:
            abort(context, Reason.INVALID_RESUME_TOKEN, str(exc))
    try:
        tenants = resolve_tenants(requested, allowed)
    except TenantNotAllowedError as exc:
        abort(context, Reason.TENANT_NOT_ALLOWED, str(exc))
    flt = WatchFilter(tenants, kinds, request.key_prefix)
    max_batch = min(max(request.max_batch, 1), MAX_BATCH)  # 0 (unset) and 1: one change a message

    try:
        slot = limiter.acquire(allowed.caller or _peer_host(context.peer()))
    except StreamLimitError as exc:
        abort(context, Reason.TOO_MANY_STREAMS, str(exc))

    sub: Subscription | None = None
    try:
        try:
            sub = (subscribe or hub.subscribe)(flt, request.resume_token or None)
        except ValueError as exc:  # a token from this instance's future
            abort(context, Reason.INVALID_RESUME_TOKEN, str(exc))

        def on_rpc_done(sub: Subscription = sub) -> None:
            sub.close()  # wakes the handler if it is waiting in next()
            slot.release()

        if not context.add_callback(on_rpc_done):
            return  # the RPC already ended
        yield from _stream(
            sub=sub,
            context=context,
            hub=hub,
            heartbeat_s=heartbeat_s,
            stop=stop,
            stop_poll_s=stop_poll_s,
            max_batch=max_batch,
            pacing_gap=_pacing_gap(limiter, max_batch, messages_per_s),
        )
    finally:
        if sub is not None:
            sub.close()
        slot.release()


def _stream(
    *,
    sub: Subscription,
    context: grpc.ServicerContext,
    hub: ChangeHub,
    heartbeat_s: float,
    stop: threading.Event,
    stop_poll_s: float,
    max_batch: int,
    pacing_gap: Callable[[], float] | None,
) -> Iterator[bytes]:
    last_sent = float("-inf")  # so the first idle check below sends the confirming Progress
    while True:
        if stop.is_set():
            abort(context, Reason.SHUTTING_DOWN, "server shutting down")
        if sub.closed or not context.is_active():
            return
        now = time.monotonic()
        if now - last_sent >= heartbeat_s:
            beat = sub.heartbeat()
            if beat is not None:  # None: events are pending, and they go first
                position, shown = beat
                yield to_proto.progress(shown, hub.token(position)).SerializeToString()
                last_sent = time.monotonic()
                continue
        wait = min(stop_poll_s, max(0.0, last_sent + heartbeat_s - now))
        items = sub.next(wait)
        if items and pacing_gap is not None:
            hold = last_sent + pacing_gap() - time.monotonic()
            if hold > 0:  # busy: gather what arrives until this stream's next slot
                time.sleep(hold)
                items.extend(sub.next(0.0))
        for message in _messages(items, hub, max_batch):
            # A replay can be long and each send waits on flow control: look at `stop` as we go.
            if stop.is_set():
                abort(context, Reason.SHUTTING_DOWN, "server shutting down")
            yield message
        if items:
            last_sent = time.monotonic()


def _pacing_gap(limiter: StreamLimiter, max_batch: int, messages_per_s: float) -> Callable[[], float] | None:
    """The least time between two messages of this stream under load (None: not paced)."""
    if max_batch <= 1 or messages_per_s <= 0:
        return None
    return lambda: limiter.in_use() / messages_per_s


def _messages(items: list[Item], hub: ChangeHub, max_batch: int) -> Iterator[bytes]:
    """`items` as serialized stream messages, in order: each run of changes in batches of up
    to `max_batch` (a lone change as a plain `change`), each resync marker on its own."""
    run: list[bytes] = []
    for item in items:
        if isinstance(item, ResyncNeeded):
            if run:
                yield _changes(run)
                run = []
            yield to_proto.resync_required(item, hub.token(item.sequence)).SerializeToString()
            continue
        run.append(wire.encoded_change(item, hub))
        if len(run) == max_batch:
            yield _changes(run)
            run = []
    if run:
        yield _changes(run)


def _changes(run: list[bytes]) -> bytes:
    return run[0] if len(run) == 1 else wire.change_batch(run)


def _valid_tenants(tenant_ids: Iterable[str]) -> list[str]:
    tenants = list(tenant_ids)
    if len(tenants) > MAX_TENANTS:
        raise ValueError(f"at most {MAX_TENANTS} tenant_ids")
    for index, tenant in enumerate(tenants):
        if not ids.TENANT.matches(tenant):
            raise ValueError(f"tenant_ids[{index}] must be 1-64 {ids.TENANT.characters}")
    return tenants


def _valid_kinds(numbers: Iterable[int]) -> frozenset[Kind]:
    kinds: set[Kind] = set()
    every_kind = False
    for index, number in enumerate(numbers):
        if number == pb.KIND_UNSPECIFIED:
            every_kind = True  # the proto documents UNSPECIFIED in a filter as "every kind"
            continue
        kind = to_proto.KIND_FROM_PROTO.get(number)
        if kind is None:
            raise ValueError(f"kinds[{index}] is not a known Kind ({number})")
        kinds.add(kind)
    return frozenset() if every_kind else frozenset(kinds)


def _peer_host(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7': one caller however many connections it opens."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer
