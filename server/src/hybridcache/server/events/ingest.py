"""Apply decoded change notifications to the cache, exactly once in effect.

Runs on the Redis reader's thread and does only fast, local work there (dict operations
and the cache's in-memory apply); anything that calls the Wrapper goes to the
`RepairWorker`. Per event:

* a recent `(tenantId, eventId)` seen before -> counted as `duplicate`, not applied
  (bounded memory: ids seen in the last `dedupe_window_s`, at most `dedupe_capacity`,
  oldest forgotten first — duplicates arrive within seconds, and an older replay is still
  caught by the version order or the oldValue check below, or is a harmless invalidation;
  a window by time keeps the memory flat at a steady event rate instead of growing for
  as long as a count takes to fill);
* a carried new value -> `cache.apply`, which orders by version (an older version is
  counted as `old-version`) and compares the event's `oldValue` with the held value: on a
  mismatch the key is refetched, because then the event does not describe a transition
  from what we hold, and the Wrapper is the authority, not the event;
* a version implausibly far ahead (beyond the highest version the tenant-kind has seen plus
  the core's window) -> not applied: refetch that key, the Wrapper's answer wins;
* "changed" without a usable new value -> refetch that key (every refetch is counted by
  reason; the key stays pending, answers say REPAIRING, until a refetch succeeds, or an
  event at least as new as every request for it is applied: see below);
* a versioned event for a pending key -> applied if newer than what is held, whatever its
  oldValue (the held value is the one in doubt); it settles the repair when every request
  for the key carried a version and none is above the event's (`RepairWorker.event_applied`);
  otherwise the key stays pending (only the Wrapper can tell what a version-less request
  referred to) while answering the event's newer value;
* user-profile-changed / org-unit-changed -> invalidate only (fetched on the next read);
* a gap (subscribe, reconnect, trimmed stream) -> drop the on-demand entries at once (their
  invalidations may have been missed) and ask the worker for a jittered, coalesced resync
  of every loaded tenant.

Every change made is published to `on_change` as a `ChangeNotice`. Rejections are counted
by reason and logged at most once per interval per reason; message bodies are never logged.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.results import ApplyOutcome
from hybridcache.server.events.decode import (
    NO_OLD_VALUE,
    Action,
    DecoderConfig,
    Event,
    Rejection,
    decode,
)
from hybridcache.server.events.ports import ChangeCache, ChangeNotice, NoticeSink
from hybridcache.server.events.ratelog import RateLimitedLog
from hybridcache.server.events.repair import RefetchRequest, RepairWorker, now_ms
from hybridcache.server.events.stats import EventStats

log = logging.getLogger(__name__)

REPLICA_KINDS: Final = (Kind.CREDIT_COSTS, Kind.ROLE_PERMISSIONS, Kind.USER_STATUS, Kind.FEATURE_FLAGS)
DEFAULT_DEDUPE_CAPACITY = 100_000
DEFAULT_DEDUPE_WINDOW_S = 120.0


class EventIngestor:
    def __init__(
        self,
        cache: ChangeCache,
        on_change: NoticeSink,
        *,
        decoder: DecoderConfig | None = None,
        stats: EventStats | None = None,
        dedupe_capacity: int = DEFAULT_DEDUPE_CAPACITY,
        dedupe_window_s: float = DEFAULT_DEDUPE_WINDOW_S,
        resync_jitter_s: float = 1.0,
        replica_kinds: Iterable[Kind] = REPLICA_KINDS,
        on_lag: Callable[[float], None] | None = None,
        log_interval_s: float = 60.0,
        max_pending_refetches: int = 10_000,
        refetch_timeout_s: float = 5.0,
        refetch_backoff_s: tuple[float, float] = (0.25, 5.0),
        resync_timeout_s: float = 60.0,
        resync_retry_backoff_s: tuple[float, float] = (1.0, 30.0),
        rng: random.Random | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._cache = cache
        self._on_change = on_change
        # Held while one message is applied to the cache and its change published, so that a
        # snapshot (ListSnapshot) taken under it sees both or neither: no gap, no duplicate.
        self.order = threading.Lock()
        self.decoder = decoder or DecoderConfig()
        self.stats = stats or EventStats()
        self._dedupe_capacity = dedupe_capacity
        self._dedupe_window_ms = int(dedupe_window_s * 1000)
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()  # id -> when seen (ms)
        self._on_lag = on_lag
        self._clock_ms = clock_ms
        self._rejections = RateLimitedLog(
            log, "change notification rejected: %s (%d since the last report)", interval_s=log_interval_s
        )
        self._gaps = RateLimitedLog(
            log, "change notifications may have been missed (%s): resyncing (%d)", interval_s=log_interval_s
        )
        self._sink_errors = RateLimitedLog(log, "on_change failed: %s (%d)", interval_s=log_interval_s)
        self.worker = RepairWorker(
            cache,
            self._publish,
            self.stats,
            replica_kinds=replica_kinds,
            jitter_max_s=resync_jitter_s,
            max_pending_refetches=max_pending_refetches,
            refetch_timeout_s=refetch_timeout_s,
            refetch_backoff_s=refetch_backoff_s,
            resync_timeout_s=resync_timeout_s,
            retry_backoff_s=resync_retry_backoff_s,
            log_interval_s=log_interval_s,
            rng=rng,
        )

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout: float = 5.0) -> bool:
        return self.worker.stop(timeout)

    @property
    def resync_outstanding(self) -> bool:
        return self.worker.resync_outstanding

    def wait_idle(self, timeout: float) -> bool:
        return self.worker.wait_idle(timeout)

    # --- the reader thread's entry points

    def process(self, channel: bytes | str, data: bytes | str) -> Event | Rejection:
        """Decode and apply one message as read from Redis."""
        self.stats.add("received")
        result = decode(channel, data, config=self.decoder, now_ms=self._clock_ms())
        if isinstance(result, Rejection):
            self.reject(result.reason)
        else:
            with self.order:
                self.ingest(result)
        return result

    def reject(self, reason: str, tenant: str | None = None) -> None:
        self.stats.reject(reason, tenant=tenant)
        self._rejections.note(reason)

    def on_gap(self, reason: str, jitter_max_s: float | None = None) -> None:
        """Messages may have been missed (reason: a short fixed phrase, e.g. "subscribed");
        `jitter_max_s`: a smaller resync jitter the reader chose (None: the configured one)."""
        self.stats.add("gaps")
        self._gaps.note(reason)
        try:
            self._cache.drop_reference()
        except Exception:
            log.exception("dropping the on-demand entries after a gap failed")
        self.worker.request_resync(jitter_max_s)

    def ingest(self, event: Event) -> None:
        seen_key = (event.tenant_id, event.event_id)
        if seen_key in self._seen:
            self.reject("duplicate", event.tenant_id)
            return
        now = self._clock_ms()
        seen = self._seen
        seen[seen_key] = now
        horizon = now - self._dedupe_window_ms
        # The newest entry is never past the horizon, so this stops on a non-empty dict.
        while len(seen) > self._dedupe_capacity or next(iter(seen.values())) < horizon:
            seen.popitem(last=False)

        if event.action is Action.INVALIDATE:
            self._invalidate(event)
        elif event.action is Action.REFETCH:
            self._refetch(event, "no-new-value")
        else:
            self._apply(event)

    # --- the three actions

    def _apply(self, event: Event) -> None:
        slot = (event.tenant_id, event.kind, event.key)
        # A key being repaired holds a value known to be in doubt, so an oldValue compared with it
        # tells nothing: a versioned event is applied if it is newer than what is held (the
        # core's version order and window still decide), and may settle the repair.
        repairing = bool(event.version) and slot in self.worker.pending
        try:
            if event.old_value is NO_OLD_VALUE or repairing:
                outcome, change = self._cache.apply(
                    event.tenant_id, event.kind, event.key, event.value, version=event.version
                )
            else:
                outcome, change = self._cache.apply(
                    event.tenant_id,
                    event.kind,
                    event.key,
                    event.value,
                    version=event.version,
                    expected_old=event.old_value,
                )
        except Exception:
            # A bug in the core, not the event's fault: fall back to asking the Wrapper.
            self.stats.add("apply_errors")
            log.exception("cache.apply failed; refetching the key instead")
            self._refetch(event, "apply-error", version=0)  # only the Wrapper settles this one
            return
        if outcome == ApplyOutcome.APPLIED:
            self.stats.add("applied", tenant=event.tenant_id)
            if slot in self.worker.pending:
                self.worker.event_applied(slot, event.version or 0)
            if change is not None:
                self._publish(
                    ChangeNotice.of_change(
                        change,
                        event_id=event.event_id,
                        event_type=event.event_type,
                        event_time_ms=event.event_time_ms,
                        changed_fields=event.changed_fields,
                    )
                )
            self._observe_lag(event)
        elif outcome == ApplyOutcome.OLD_VERSION:
            self.reject("old-version", event.tenant_id)
        elif outcome == ApplyOutcome.OLD_VALUE_MISMATCH:
            self.stats.add("mismatches")
            self._refetch(event, "old-value-mismatch")
        elif outcome == ApplyOutcome.IMPLAUSIBLE_VERSION:
            self._refetch(event, "implausible-version")
        elif outcome == ApplyOutcome.NOT_LOADED:
            self.stats.add("not_loaded")  # not a tenant this instance holds
        else:  # INVALIDATED: the core dropped the key rather than store the value
            self.stats.add("invalidated", tenant=event.tenant_id)
            if change is not None:
                self._publish(
                    ChangeNotice.of_change(
                        change,
                        event_id=event.event_id,
                        event_type=event.event_type,
                        event_time_ms=event.event_time_ms,
                        changed_fields=event.changed_fields,
                    )
                )

    def _refetch(self, event: Event, reason: str, *, version: int | None = None) -> None:
        self.stats.refetch_requested(reason)
        self.worker.request_refetch(
            RefetchRequest(
                tenant_id=event.tenant_id,
                kind=event.kind,
                key=event.key,
                event_id=event.event_id,
                event_type=event.event_type,
                changed_fields=event.changed_fields,
                event_time_ms=event.event_time_ms,
                version=(event.version or 0) if version is None else version,
            )
        )

    def _invalidate(self, event: Event) -> None:
        try:
            related = self._cache.invalidate(event.tenant_id, event.kind, event.key) or ()
        except Exception:
            self.stats.add("apply_errors")
            log.exception("cache.invalidate failed")
            return
        self.stats.add("invalidated", tenant=event.tenant_id)
        self._publish(
            ChangeNotice(
                tenant_id=event.tenant_id,
                kind=event.kind,
                # Related entries dropped with it (org units naming it) are outdated for
                # watchers' copies too.
                keys=(event.key, *related),
                changed_fields=event.changed_fields,
                event_id=event.event_id,
                event_type=event.event_type,
                event_time_ms=event.event_time_ms,
            )
        )
        self._observe_lag(event)

    # --- helpers

    def _observe_lag(self, event: Event) -> None:
        if event.published_at_ms is None:
            return
        lag_s = max(0.0, (self._clock_ms() - event.published_at_ms) / 1000.0)
        self.stats.observe_lag(lag_s)
        if self._on_lag is not None:
            try:
                self._on_lag(lag_s)
            except Exception as exc:  # a metrics hook must not cost an event
                self._sink_errors.note(f"on_lag: {type(exc).__name__}")

    def _publish(self, notice: ChangeNotice) -> None:
        try:
            self._on_change(notice)
        except Exception as exc:
            self.stats.add("sink_errors")
            self._sink_errors.note(type(exc).__name__)
