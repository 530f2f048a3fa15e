"""The repair worker: the slow half of event handling, on its own thread.

The Redis reader must never wait on the Wrapper (a slow reader is disconnected by Redis's
pub/sub output-buffer limit, which is itself a gap), so everything that calls the Wrapper
is queued here:

* **Refetches** of single keys (an event said "changed" without a trustworthy new value).
  Queued requests for the same key coalesce; the queue is bounded, and an overflow turns
  into a full resync (which covers every key) instead of growing memory.
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

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
        self._resync_timeout_s = resync_timeout_s
        self._retry_backoff_s = retry_backoff_s
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._refetches: OrderedDict[tuple[str, Kind, str], RefetchRequest] = OrderedDict()
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
            if slot not in self._refetches and len(self._refetches) >= self._max_pending:
                overflow = True
            else:
                self._refetches[slot] = request
                overflow = False
                self._cond.notify_all()
        if overflow:
            self._errors.note("refetch queue full: resyncing instead")
            self.request_resync()

    def request_resync(self) -> None:
        with self._cond:
            due = time.monotonic() + self._rng.uniform(0.0, self._jitter_max_s)
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
            return len(self._refetches)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued, pending or running (tests, orderly shutdown)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._refetches and self._resync_due is None and not self._resync_running,
                timeout,
            )

    # --- the thread

    def _run(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            if isinstance(job, RefetchRequest):
                self._refetch(job)
                with self._cond:
                    self._cond.notify_all()  # wake wait_idle
            else:
                failed = self._resync(job)
                self._finish_resync(failed)

    def _next_job(self) -> RefetchRequest | _ResyncJob | None:
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
                if self._refetches:
                    return self._refetches.popitem(last=False)[1]
                self._cond.wait(None if self._resync_due is None else self._resync_due - now)
            return None

    def _refetch(self, request: RefetchRequest) -> None:
        self._stats.add("refetched")
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
                return
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
            return
        except Exception as exc:  # WrapperUnavailable, or a bug: the periodic refresh repairs it
            self._stats.add("refetch_errors")
            self._errors.note(f"refetch: {type(exc).__name__}")
            return
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

    def _resync(self, job: _ResyncJob) -> set[str]:
        """Resync the job's tenants; return those that failed (to retry)."""
        tenants = self._cache.loaded_tenants() if job.tenants is None else sorted(job.tenants)
        failed: set[str] = set()
        for tenant in tenants:
            if self._stopping:
                break
            try:
                changes = self._cache.resync_tenant(tenant, time.monotonic() + self._resync_timeout_s)
            except NotFound:
                continue  # the tenant no longer exists: nothing to be fresh about
            except Exception as exc:
                self._stats.add("resync_failures")
                self._errors.note(f"resync: {type(exc).__name__}")
                failed.add(tenant)
                continue
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

    def _finish_resync(self, failed: set[str]) -> None:
        with self._cond:
            self._resync_running = False
            if failed:
                self._consecutive_failures += 1
                first, cap = self._retry_backoff_s
                pause = min(cap, first * 2 ** (self._consecutive_failures - 1))
                pause *= self._rng.uniform(0.5, 1.0)
                if self._resync_due is None:
                    self._resync_due = time.monotonic() + pause
                    self._retry_tenants |= failed
                elif not self._resync_all:
                    self._retry_tenants |= failed
                # else: a full resync is already pending; it includes the failed tenants.
            else:
                self._consecutive_failures = 0
            self._cond.notify_all()
