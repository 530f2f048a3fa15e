"""Anti-entropy: compare every replica with the Wrapper's digests, and repair what differs.

Events can be lost (pub/sub is at-most-once), forged, reordered, or mishandled by a bug;
the periodic full refresh would find any of that only every ~10 minutes. The verifier
bounds such divergence to about one interval (default: every 30 s at most, each wait
random in [0.75, 1] × the interval, so a fleet does not align):

    for each loaded tenant, each replicated kind:
        open a VerifyMark                          (writes from now on are newer than what we read)
        ours   = digest of the replica             (core/digest.py; unchanged keys cost an `is`)
        theirs = GET .../digests/{kind}            (one small answer: the top digest)
        equal? done.  Else GET .../digests/{kind}/buckets, and for each bucket that differs
        GET .../snapshots/{kind}/buckets/{n} and install the Wrapper's items of that bucket:
        the authority wins over any event, versions included, except keys written since the mark
        each change -> WatchChanges (event_type "anti-entropy"), like any other change

A Wrapper without the digest endpoints (404 `not_found`) is told apart from an unknown
tenant (`tenant_not_found`): the service says once that replicas then rely on events and
the periodic full refresh, and asks again every interval (a Wrapper upgraded later is
picked up). A pass stops at the first Wrapper failure (the next interval tries again) and
logs one line per pass when anything differed or failed, never per key. A pass that left
a key alone because an event rewrote it meanwhile (the event may be forged too) is followed
by another within 1 s, so such a key is not left for a whole interval.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hybridcache.client.reasons import Reason
from hybridcache.server.core.authority import VerifyMark
from hybridcache.server.core.digest import DEFAULT_BUCKETS, DigestMemo, KindDigest, valid_bucket_count
from hybridcache.server.core.errors import NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.results import Change
from hybridcache.server.core.values import Value
from hybridcache.server.events.ports import ChangeNotice, NoticeSink
from hybridcache.server.events.repair import now_ms

log = logging.getLogger(__name__)

EVENT_TYPE = "anti-entropy"  # ChangeEvent.event_type of a change the verifier made
RECHECK_S = 1.0  # the wait after a pass that left a rewritten key alone


class VerifiedCache(Protocol):
    """The cache-core methods the verifier uses (the real one: `core.HybridCache`)."""

    def loaded_tenants(self) -> list[str]: ...
    def settled_items(self, tenant_id: str, kind: Kind) -> list[tuple[str, Value]] | None: ...
    def begin_verify(self, tenant_id: str, kind: Kind) -> VerifyMark: ...
    def end_verify(self, mark: VerifyMark) -> None: ...
    def install_authority(
        self,
        mark: VerifyMark,
        bucket: int,
        bucket_count: int,
        truth: Mapping[str, Value],
        replica_keys: Sequence[str],
    ) -> list[Change]: ...


class DigestSource(Protocol):
    """The Wrapper calls the verifier makes (the real one: `WrapperClient`)."""

    def fetch_digest(
        self, tenant_id: str, kind: Kind, bucket_count: int, deadline: float | None, *, buckets: bool = False
    ) -> KindDigest: ...
    def fetch_bucket(
        self, tenant_id: str, kind: Kind, bucket_count: int, bucket: int, deadline: float | None
    ) -> dict[str, Value]: ...


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    kinds: tuple[Kind, ...]
    interval_s: float = 30.0  # the longest wait between passes (0: no verifier)
    bucket_count: int = DEFAULT_BUCKETS
    timeout_s: float = 10.0  # per Wrapper call
    refresh_interval_s: float = 600.0  # only for the start-up line when digests are missing

    def __post_init__(self) -> None:
        if not valid_bucket_count(self.bucket_count):
            raise ValueError("bucket_count must be a power of two in 1..4096")


@dataclass
class VerifierStats:
    """Totals since start (read by /metrics and tests; written by the verifier thread only)."""

    passes: int = 0
    compared: int = 0  # tenant-kinds whose digests were compared
    mismatched: int = 0  # ... of which the top digests differed
    buckets_repaired: int = 0  # buckets re-read from the Wrapper
    keys_repaired: int = 0  # keys changed to the Wrapper's answer (published)
    failures: int = 0  # passes cut short by a Wrapper failure
    unsupported: int = 0  # passes that found no digest endpoint
    wrapper_requests: int = 0
    last_pass_s: float = 0.0
    repaired_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class _Pass:
    compared: int = 0
    mismatched: int = 0
    buckets: int = 0
    keys: int = 0
    requests: int = 0
    failure: str = ""
    unsupported: bool = False
    recheck: bool = False  # keys written during a repair were left alone: look again soon


class Verifier:
    def __init__(
        self,
        cache: VerifiedCache,
        wrapper: DigestSource,
        publish: NoticeSink,
        config: VerifierConfig,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._wrapper = wrapper
        self._publish = publish
        self.config = config
        self._rng = rng or random.Random()
        self._clock = clock
        self._memos: dict[tuple[str, Kind], DigestMemo] = {}
        self.stats = VerifierStats()
        self._supported: bool | None = None  # None until the first answer
        self._recheck = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # --- control

    def start(self) -> None:
        if self.config.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="hybridcache-verifier", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def verify_soon(self) -> None:
        """Run the next pass now (e.g. after a gap: only what changed is re-read)."""
        self._wake.set()

    @property
    def supported(self) -> bool | None:
        """Whether the Wrapper serves digests (None: not asked yet)."""
        return self._supported

    # --- the thread

    def _run(self) -> None:
        while not self._stop.is_set() and not self._cache.loaded_tenants():
            self._stop.wait(0.2)  # the first pass needs a loaded replica to compare
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bug: keep the thread, try again next interval
                log.exception("anti-entropy pass failed unexpectedly")
            wait = self.config.interval_s * self._rng.uniform(0.75, 1.0)
            if self._recheck:
                # A key differed but an event rewrote it while its bucket was read: the event
                # may itself be wrong (forged), so look again soon rather than in an interval.
                wait = min(wait, RECHECK_S)
            self._wake.wait(wait)
            self._wake.clear()

    def run_once(self) -> VerifierStats:
        """One pass over every loaded tenant and replicated kind; returns the running totals."""
        started = self._clock()
        done = _Pass()
        try:
            for tenant in self._cache.loaded_tenants():
                for kind in self.config.kinds:
                    if self._stop.is_set():
                        return self.stats
                    self._verify(tenant, kind, done)
        except NotFound as exc:
            done.unsupported = exc.reason != Reason.TENANT_NOT_FOUND
        except WrapperUnavailable as exc:
            done.failure = exc.reason or "WRAPPER_ERROR"
        self._account(done, self._clock() - started)
        return self.stats

    def _verify(self, tenant: str, kind: Kind, done: _Pass) -> None:
        count = self.config.bucket_count
        mark = self._cache.begin_verify(tenant, kind)
        try:
            items = self._cache.settled_items(tenant, kind)
            if items is None:
                return  # loading or invalidated: a snapshot is on its way anyway
            memo = self._memos.setdefault((tenant, kind), DigestMemo(count))
            ours = memo.compute(items)
            try:
                done.requests += 1
                theirs = self._wrapper.fetch_digest(tenant, kind, count, self._deadline())
            except NotFound as exc:
                if exc.reason == Reason.TENANT_NOT_FOUND:
                    return  # gone from the Wrapper: the next resync drops it
                raise
            done.compared += 1
            if theirs.top == ours.top:
                return
            done.mismatched += 1
            done.requests += 1
            buckets = self._wrapper.fetch_digest(tenant, kind, count, self._deadline(), buckets=True)
            for bucket in ours.differing(buckets):
                done.requests += 1
                truth = self._wrapper.fetch_bucket(tenant, kind, count, bucket, self._deadline())
                changes = self._cache.install_authority(mark, bucket, count, truth, memo.keys_in(bucket))
                done.buckets += 1
                done.keys += len(changes)
                self._announce(changes)
            done.recheck = done.recheck or mark.skipped > 0
        finally:
            self._cache.end_verify(mark)

    def _deadline(self) -> float:
        return self._clock() + self.config.timeout_s

    def _announce(self, changes: list[Change]) -> None:
        stamp = now_ms()
        for change in changes:
            self.stats.keys_repaired += 1  # before it is published: a watcher sees it counted
            counts = self.stats.repaired_by_kind
            counts[str(change.kind)] = counts.get(str(change.kind), 0) + 1
            try:
                self._publish(
                    ChangeNotice.of_change(change, event_id="", event_type=EVENT_TYPE, event_time_ms=stamp)
                )
            except Exception:
                log.exception("publishing an anti-entropy repair failed")

    def _account(self, done: _Pass, took_s: float) -> None:
        stats = self.stats
        stats.passes += 1
        stats.compared += done.compared
        stats.mismatched += done.mismatched
        stats.buckets_repaired += done.buckets
        stats.wrapper_requests += done.requests
        stats.last_pass_s = took_s
        self._recheck = done.recheck
        if done.failure:
            stats.failures += 1
        supported = not done.unsupported
        if done.unsupported:
            stats.unsupported += 1
        if supported != self._supported and (done.compared or done.unsupported):
            self._say_support(supported)
            self._supported = supported
        if done.mismatched or done.failure:
            log.warning(
                "anti-entropy: %d of %d tenant-kinds differed from the Wrapper; %d buckets re-read, "
                "%d keys repaired%s (%.2f s)",
                done.mismatched,
                done.compared,
                done.buckets,
                done.keys,
                f"; pass cut short: {done.failure}" if done.failure else "",
                took_s,
            )

    def _say_support(self, supported: bool) -> None:
        if supported:
            log.info(
                "anti-entropy: replicas verified against the Wrapper's digests every %.0f s at most "
                "(%d buckets per tenant and kind)",
                self.config.interval_s,
                self.config.bucket_count,
            )
        else:
            refresh = self.config.refresh_interval_s
            log.warning(
                "anti-entropy off: the Wrapper has no digest endpoint; replicas rely on change events "
                "and the periodic full refresh (%s)",
                f"every {refresh:.0f} s" if refresh > 0 else "which is off",
            )
