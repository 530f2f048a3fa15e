"""The repair worker: the slow half of event handling, on its own thread.

The Redis reader must never wait on the Wrapper (a slow reader is disconnected by Redis's
pub/sub output-buffer limit, which is itself a gap), so everything that calls the Wrapper
is queued here:

* **Refetches** of single keys (an event said "changed" without a trustworthy new value).
  A key that needs one stays *pending* until a refetch succeeds (or the Wrapper says the
  entity is gone, or a resync of its tenant that started later succeeds): a failed attempt
  is retried after an exponential backoff with jitter (`refetch_backoff_s`, default 0.25 s
  doubling to 5 s, each pause drawn from [half, all] of it), so a Wrapper that was down
  for a while is caught up within one capped pause of answering again. Requests for a
  pending key coalesce (the latest event's identity is kept; one more attempt follows if
  one arrives while an attempt runs); the pending set is bounded, and an overflow turns
  into a full resync (which covers every key) instead of growing memory. While a key is
  pending, `pending` (a live mapping the servicer reads without a lock) holds it, so its
  answers say REPAIRING in their provenance. An event applied to a pending key settles the
  repair when it is at least as new as every request for it (`event_applied`: each request
  carried a version, none above the event's); a request without a version can be settled by
  the Wrapper only.
* **Resyncs** of every loaded tenant after a gap (messages may have been missed). A resync
  starts after a random delay in [0, jitter_max_s] so a fleet that lost Redis at the same
  moment does not hit the Wrapper at the same moment. Gaps coalesce: any number of gaps
  while a resync is pending make one resync; a gap while one is running schedules exactly
  one more (the running one may have read its snapshot before the missed message).
  Tenants whose resync failed are retried with exponential backoff; until every tenant is
  through, `resync_outstanding` stays True (freshness reports "degraded").

Every wait is a `Condition.wait` with a timeout, so `stop()` interrupts it at once.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from hybridcache.client.backoff import BackoffPolicy
from hybridcache.server.core.errors import NotFound
from hybridcache.server.core.kinds import Kind
from hybridcache.server.events.ports import ChangeCache, ChangeNotice
from hybridcache.server.events.ratelog import RateLimitedLog
from hybridcache.server.events.stats import EventStats

log = logging.getLogger(__name__)

RESYNC_EVENT_TYPE = "resync"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class RefetchRequest:
    """Fetch one key; the notice it produces carries the triggering event's identity."""

    tenant_id: str
    kind: Kind
    key: str
    event_id: str
    event_type: str
    changed_fields: tuple[str, ...]
    event_time_ms: int
    version: int = 0  # the triggering event's version; 0: none (only the Wrapper can settle it)


Slot = tuple[str, Kind, str]  # (tenant, kind, key)


@dataclass(slots=True)
class PendingRefetch:
    """A key known to need the Wrapper's value, from the first request until a success."""

    request: RefetchRequest  # the latest request (its notice carries that event's identity)
    since: float  # monotonic time of the first request
    # The version an event must carry to settle the repair in the Wrapper's place: the highest
    # version of the requests; None when one of them had none (only the Wrapper can settle it).
    needs: int | None
    due: float  # when the next attempt may start
    attempts: int = 0
    running: bool = False
    again: bool = False  # requested again while an attempt ran: one more attempt after it
    heap_due: float = field(default=0.0, repr=False)  # the `due` its live heap entry carries


@dataclass(frozen=True, slots=True)
class _ResyncJob:
    tenants: frozenset[str] | None  # None: every loaded tenant


class RepairWorker:
    def __init__(
        self,
        cache: ChangeCache,
        publish: Callable[[ChangeNotice], None],
        stats: EventStats,
        *,
        replica_kinds: Iterable[Kind],
        jitter_max_s: float = 1.0,
        max_pending_refetches: int = 10_000,
        refetch_timeout_s: float = 5.0,
        refetch_backoff_s: tuple[float, float] = (0.25, 5.0),
        resync_timeout_s: float = 60.0,
        retry_backoff_s: tuple[float, float] = (1.0, 30.0),
        log_interval_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self._cache = cache
        self._publish = publish
        self._stats = stats
        self._replica_kinds = tuple(replica_kinds)
        self._jitter_max_s = jitter_max_s
        self._max_pending = max_pending_refetches
        self._refetch_timeout_s = refetch_timeout_s
        self._refetch_backoff_s = refetch_backoff_s
        self._resync_timeout_s = resync_timeout_s
        self._retry_backoff_s = retry_backoff_s
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        # Mutated in place only (never rebound): the servicer holds it as a read-only view.
        self._pending: dict[Slot, PendingRefetch] = {}
        self._due: list[tuple[float, int, Slot]] = []  # heap; entries whose due moved are skipped
        self._seq = 0
        self._resync_due: float | None = None  # monotonic time the pending resync may start
        self._resync_all = False  # the pending resync covers every loaded tenant
        self._retry_tenants: set[str] = set()  # otherwise: just these (failed last time)
        self._resync_running = False
        self._consecutive_failures = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._errors = RateLimitedLog(
            log, "repair failed: %s (%d in this interval)", interval_s=log_interval_s
        )

    # --- control

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="hybridcache-events-repair", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the job in progress (a Wrapper call is bounded by its timeout)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # --- requests (from the reader thread: they only take a lock and return)

    def request_refetch(self, request: RefetchRequest) -> None:
        slot = (request.tenant_id, request.kind, request.key)
        with self._cond:
            pending = self._pending.get(slot)
            if pending is not None:
                # Coalesced. A pending key in backoff keeps its pause: a burst of events for it
                # must not turn into a burst of calls to a Wrapper that is failing.
                pending.request = request
                pending.again = pending.running
                pending.needs = _needs(pending.needs, request.version)
                overflow = False
            elif len(self._pending) >= self._max_pending:
                overflow = True
            else:
                now = time.monotonic()
                needs = request.version or None
                pending = self._pending[slot] = PendingRefetch(request, since=now, due=now, needs=needs)
                self._schedule_locked(slot, pending)
                overflow = False
        if overflow:
            self._stats.add("refetch_overflows")
            self._errors.note("refetch queue full: resyncing instead")
            self.request_resync()

    def event_applied(self, slot: Slot, version: int) -> bool:
        """An event's value (`version`: its version, 0 if none) was stored for a pending key.
        True when that settles the repair: the event is at least as new as every request for
        it (each carried a version, none above this one), so it is at least as new as what
        the refetch was asked to bring. Otherwise the key stays pending, and an attempt in
        flight is followed by one more: its answer was fenced by the event's write (not
        stored, core/replica.py), yet it may have been the newer of the two."""
        with self._cond:
            pending = self._pending.get(slot)
            if pending is None:
                return False
            if version > 0 and pending.needs is not None and version >= pending.needs:
                del self._pending[slot]  # an attempt in flight finds it gone: nothing more
                self._stats.add("refetches_settled_by_events")
                self._cond.notify_all()
                return True
            if pending.running:
                pending.again = True
            return False

    def request_resync(self, jitter_max_s: float | None = None) -> None:
        """`jitter_max_s` lowers the configured jitter for this gap (a small fleet, reader.py)."""
        jitter = self._jitter_max_s if jitter_max_s is None else min(jitter_max_s, self._jitter_max_s)
        with self._cond:
            due = time.monotonic() + self._rng.uniform(0.0, jitter)
            if self._resync_due is None or not self._resync_all:
                # A new gap, or one superseding a backoff retry of some tenants: all tenants,
                # no later than a fresh jittered start.
                self._resync_due = due if self._resync_due is None else min(self._resync_due, due)
                self._resync_all = True
                self._retry_tenants.clear()
                self._cond.notify_all()
            # else: a full resync is already pending and has not started: it covers this gap.

    # --- state

    @property
    def resync_outstanding(self) -> bool:
        """True from a gap until every loaded tenant has been resynced successfully."""
        with self._cond:
            return self._resync_due is not None or self._resync_running

    def pending_refetches(self) -> int:
        with self._cond:
            return len(self._pending)

    @property
    def pending(self) -> Mapping[Slot, PendingRefetch]:
        """The keys awaiting a successful refetch: a live view (read `slot in pending` without a
        lock: one dict lookup, atomic under the GIL)."""
        return self._pending

    def oldest_pending_age_s(self) -> float:
        """Seconds since the oldest pending key was first requested (0.0: none pending)."""
        with self._cond:
            if not self._pending:
                return 0.0
            return time.monotonic() - min(p.since for p in self._pending.values())

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending or running (tests, orderly shutdown)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and self._resync_due is None and not self._resync_running,
                timeout,
            )

    # --- the thread

    def _run(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            if isinstance(job, tuple):
                slot, pending = job
                self._finish_refetch(slot, pending, self._refetch(pending.request))
            else:
                failed = self._resync(job)
                self._finish_resync(failed)

    def _next_job(self) -> tuple[Slot, PendingRefetch] | _ResyncJob | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._resync_due is not None and now >= self._resync_due:
                    job = _ResyncJob(None if self._resync_all else frozenset(self._retry_tenants))
                    self._resync_due = None
                    self._resync_all = False
                    self._retry_tenants.clear()
                    self._resync_running = True
                    return job
                refetch = self._due_refetch_locked(now)
                if refetch is not None:
                    return refetch
                wake = [
                    t for t in (self._resync_due, self._due[0][0] if self._due else None) if t is not None
                ]
                self._cond.wait(min(wake) - now if wake else None)
            return None

    def _schedule_locked(self, slot: Slot, pending: PendingRefetch) -> None:
        self._seq += 1
        pending.heap_due = pending.due
        heapq.heappush(self._due, (pending.due, self._seq, slot))
        self._cond.notify_all()

    def _due_refetch_locked(self, now: float) -> tuple[Slot, PendingRefetch] | None:
        while self._due:
            due, _, slot = self._due[0]
            pending = self._pending.get(slot)
            if pending is None or pending.running or pending.heap_due != due:
                heapq.heappop(self._due)  # repaired, running, or rescheduled since: a dead entry
                continue
            if due > now:
                return None
            heapq.heappop(self._due)
            pending.running = True
            pending.again = False
            pending.attempts += 1
            return slot, pending
        return None

    def _finish_refetch(self, slot: Slot, pending: PendingRefetch, done: bool) -> None:
        with self._cond:
            pending.running = False
            if self._pending.get(slot) is not pending:
                pass  # a resync of the tenant covered it meanwhile
            elif done and not pending.again:
                del self._pending[slot]
            else:
                if done:  # an event came during the attempt: its refetch must start after it
                    pending.due = time.monotonic()
                else:
                    pause = BackoffPolicy(*self._refetch_backoff_s).delay(pending.attempts - 1, self._rng)
                    pending.due = time.monotonic() + pause
                self._schedule_locked(slot, pending)
            self._cond.notify_all()  # wake wait_idle

    def _refetch(self, request: RefetchRequest) -> bool:
        """One attempt; True when the key is repaired (the Wrapper answered), False to retry."""
        self._stats.add("refetch_attempts")
        deadline = time.monotonic() + self._refetch_timeout_s
        try:
            change = self._cache.refetch(request.tenant_id, request.kind, request.key, deadline)
        except NotFound:
            # The Wrapper says the entity is gone: drop what we hold and tell the watchers.
            self._stats.add("refetch_not_found")
            try:
                self._cache.invalidate(request.tenant_id, request.kind, request.key)
            except Exception:
                self._stats.add("refetch_errors")
                log.exception("invalidating a key the Wrapper no longer has failed")
                return False
            self._publish(
                ChangeNotice(
                    tenant_id=request.tenant_id,
                    kind=request.kind,
                    keys=(request.key,),
                    changed_fields=request.changed_fields,
                    event_id=request.event_id,
                    event_type=request.event_type,
                    event_time_ms=request.event_time_ms,
                    deleted=True,
                )
            )
            return True
        except Exception as exc:  # WrapperUnavailable, or a bug: retried after a backoff
            self._stats.add("refetch_errors")
            self._errors.note(f"refetch: {type(exc).__name__} (the key stays pending; retrying)")
            return False
        self._stats.add("refetched")
        if change is not None:
            self._publish(
                ChangeNotice.of_change(
                    change,
                    event_id=request.event_id,
                    event_type=request.event_type,
                    event_time_ms=request.event_time_ms,
                    changed_fields=request.changed_fields,
                )
            )
        return True

    def _resync(self, job: _ResyncJob) -> set[str]:
        """Resync the job's tenants; return those that failed (to retry)."""
        tenants = self._cache.loaded_tenants() if job.tenants is None else sorted(job.tenants)
        failed: set[str] = set()
        for tenant in tenants:
            if self._stopping:
                break
            started = time.monotonic()
            try:
                changes = self._cache.resync_tenant(tenant, started + self._resync_timeout_s)
            except NotFound:
                continue  # the tenant no longer exists: nothing to be fresh about
            except Exception as exc:
                self._stats.add("resync_failures")
                self._errors.note(f"resync: {type(exc).__name__}")
                failed.add(tenant)
                continue
            self._settle_pending(tenant, started)
            stamp = now_ms()
            for change in changes:
                self._publish(
                    ChangeNotice.of_change(
                        change, event_id="", event_type=RESYNC_EVENT_TYPE, event_time_ms=stamp
                    )
                )
            for kind in self._replica_kinds:
                self._publish(
                    ChangeNotice(
                        tenant_id=tenant,
                        kind=kind,
                        keys=(),
                        changed_fields=(),
                        event_id="",
                        event_type=RESYNC_EVENT_TYPE,
                        event_time_ms=stamp,
                        resync=True,
                    )
                )
        self._stats.add("resyncs")
        return failed

    def _settle_pending(self, tenant: str, started: float) -> None:
        """A resync that started after a key was requested read that key from the Wrapper too."""
        with self._cond:
            for slot in [s for s, p in self._pending.items() if s[0] == tenant and p.since < started]:
                if not self._pending[slot].running:
                    del self._pending[slot]
            self._cond.notify_all()

    def _finish_resync(self, failed: set[str]) -> None:
        with self._cond:
            self._resync_running = False
            if failed:
                self._consecutive_failures += 1
                pause = BackoffPolicy(*self._retry_backoff_s).delay(self._consecutive_failures - 1, self._rng)
                if self._resync_due is None:
                    self._resync_due = time.monotonic() + pause
                    self._retry_tenants |= failed
                elif not self._resync_all:
                    self._retry_tenants |= failed
                # else: a full resync is already pending; it includes the failed tenants.
            else:
                self._consecutive_failures = 0
            self._cond.notify_all()


def _needs(held: int | None, version: int) -> int | None:
    """The version needed to settle a repair, after one more request with `version` (0: none)."""
    return None if held is None or version <= 0 else max(held, version)
