"""NearCache: an in-process replica of one tenant's replicated kinds, kept current by `watch()`.

    start ──► ListSnapshot (one streamed call: every credit cost, role with its grants,
              user status and feature flag) ──► install ──► watch(resume_token=snapshot's)
    watch thread: ChangeEvent ──► apply new value / delete (versions only move forward)
                  ResyncRequired, resync event ──► one snapshot reload, then watch from it

    near.credit_cost(op) ──► dict.get ──► Decimal                 (no lock, ~0.1 µs)
    near.check_permission(user, perm) ──► evaluated locally, the server's exact rules

Once the snapshot is installed (`wait_ready()`), reads never call the server: a key the
replica lacks is absent (NotFound) — the snapshot held every item and the watch delivers
every change after it exactly once. Before that, a read goes to the server.

A server that predates ListSnapshot (UNIMPLEMENTED) is served as before: the watch is
opened before anything is loaded, entries are loaded per key on first read (credit costs
can be warmed in one batch), nothing fetched is stored until the stream has delivered its
first message, and a resync clears everything to be reloaded lazily.

Thread-safety: any number of threads may read. Reads are plain dict lookups without a
lock; all writes (the watch thread, loaders) happen under one lock, which is never held
while calling the server. Returned protobuf messages are shared: treat them as read-only.
Memory: per item, a dict slot and the value (a Decimal, a frozenset of grants and its
compiled form, or the protobuf message), plus its version: measured with tracemalloc
(scripts/measure_replica.py) at 514 bytes per entry for 10k entries and 605 for 100k (a
tenant whose entries are 9 in 10 user statuses), i.e. ~60 MB per 100k entries.

Metrics: `stats()` (NearCacheStats: snapshot loads, last load time, changes applied,
resyncs, entries held, age) for an exporter to poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, cast

import grpc

from hybridcache.client._client import HybridCacheClient
from hybridcache.client._permissions import CompiledGrants, LocalDecision, Subject, decide_locally, subject_of
from hybridcache.client._watch import _TERMINAL_CODES, WatchStream
from hybridcache.client.errors import HybridCacheError, NotFound
from hybridcache.v1 import hybridcache_pb2 as pb

_log = logging.getLogger("hybridcache.client")
_V = TypeVar("_V")
_KINDS = (pb.KIND_CREDIT_COSTS, pb.KIND_ROLE_PERMISSIONS, pb.KIND_USER_STATUS, pb.KIND_FEATURE_FLAGS)
_BATCH_LIMIT = 1000  # BatchGetCreditCosts' documented maximum
_Key = tuple[int, str]
_RELOAD_BACKOFF_S = (0.5, 10.0)  # a failed snapshot load is retried after 0.5 s, doubling to 10 s


class _ReloadNeeded(Exception):  # noqa: N818 (a signal, not an error)
    """Raised from the watch's on_resync: leave the stream, reload the snapshot."""


@dataclass(frozen=True, slots=True)
class NearCacheProvenance:
    """How fresh the replica is.

    `mode` "replica" (loaded by ListSnapshot) or "per-key" (a server without it) or "" (not
    started yet); `live`: the watch is delivering (the replica is current within the
    stream's propagation delay); `degraded`: it is not (loading, reconnecting, or stopped:
    values may be as old as `age_s`); `age_s`: seconds since the last message of the stream
    (change or heartbeat) or the snapshot; `position`: the resume token of the last
    message applied; `snapshot_loads`: snapshots installed so far (1 after a clean start)."""

    mode: str
    ready: bool
    live: bool
    degraded: bool
    age_s: float
    position: str
    snapshot_loads: int


@dataclass(frozen=True, slots=True)
class NearCacheStats:
    """Counters to export (Prometheus, logs), read with `near.stats()`; all since start.

    `snapshot_loads`: snapshots installed (1 after a clean start; each later one is a
    reload); `last_snapshot_s`: how long the last load took (ListSnapshot to installed);
    `changes_applied`: watch changes stored (older replays ignored are not counted);
    `resyncs`: RESYNC_REQUIRED or resync events received; `items`: entries held now, all
    kinds; `age_s`: seconds since the last stream message or snapshot (as in provenance)."""

    snapshot_loads: int
    last_snapshot_s: float
    changes_applied: int
    resyncs: int
    items: int
    age_s: float
    last_resync_reason: str = ""  # the server's words ("resync event": the server reloaded a kind)


@dataclass
class _Flight:
    """One in-flight fetch of a key, shared by every reader that missed it meanwhile."""

    epoch: int
    cacheable: bool
    future: Future[Any] = field(default_factory=Future)
    raced: bool = False
    raced_version: int = 0
    raced_unversioned: bool = False

    def note_event(self, version: int) -> None:
        self.raced = True
        if version:
            self.raced_version = max(self.raced_version, version)
        else:
            self.raced_unversioned = True

    def may_store(self, version: int) -> bool:
        # An event that arrived during the fetch may be newer than the answer. Keep the
        # higher version; when either side has none, the event wins (it arrived later).
        if not self.raced:
            return True
        return not self.raced_unversioned and version > 0 and version >= self.raced_version


def _key_and_value(event: pb.ChangeEvent) -> tuple[str | None, Any]:
    """The entity key an event names and its new value (None: deleted / re-read it)."""
    which = event.WhichOneof("new_value")
    if event.deleted or which is None:
        return (event.keys[0] if event.keys else None), None
    if which == "credit_cost":
        try:
            return event.credit_cost.operation_code, Decimal(event.credit_cost.cost.value)
        except InvalidOperation:
            return event.credit_cost.operation_code, None
    if which == "role_permissions":
        return event.role_permissions.role_id, frozenset(event.role_permissions.permissions)
    if which == "user_status":
        return event.user_status.user_id, event.user_status
    return event.feature_flag.flag_key, event.feature_flag


@dataclass
class _SnapshotTables:
    """The tables a snapshot is read into, before they replace the replica's."""

    credit_costs: dict[str, Decimal] = field(default_factory=dict)
    roles: dict[str, frozenset[str]] = field(default_factory=dict)
    grants: dict[str, CompiledGrants] = field(default_factory=dict)
    statuses: dict[str, pb.UserStatus] = field(default_factory=dict)
    subjects: dict[str, Subject] = field(default_factory=dict)
    flags: dict[str, pb.FeatureFlag] = field(default_factory=dict)
    versions: dict[_Key, int] = field(default_factory=dict)

    def add(self, item: pb.SnapshotItem) -> None:
        which = item.WhichOneof("value")
        if which == "credit_cost":
            try:
                self.credit_costs[item.key] = Decimal(item.credit_cost.cost.value)
            except InvalidOperation:
                return  # unreadable: a read of it is NotFound, as from the server
        elif which == "role_permissions":
            self.roles[item.key] = frozenset(item.role_permissions.permissions)
            self.grants[item.key] = CompiledGrants(item.role_permissions.permissions)
        elif which == "user_status":
            self.statuses[item.key] = item.user_status
            self.subjects[item.key] = subject_of(item.user_status)
        elif which == "feature_flag":
            self.flags[item.key] = item.feature_flag
        else:
            return
        if item.version:
            self.versions[(int(item.kind), item.key)] = item.version


class NearCache:
    """A local, event-maintained replica of one tenant's credit costs, role permissions,
    user status and feature flags. Start it, read it, `close()` it (or use `with`)."""

    def __init__(
        self,
        client: HybridCacheClient,
        tenant_id: str,
        *,
        operation_codes: Iterable[str] = (),
        fetch_timeout: float | None = None,
        snapshot_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the snapshot and open the watch for `tenant_id` on a background thread.
        `operation_codes` are loaded in one batch once the watch is live (servers without
        ListSnapshot only); `fetch_timeout` overrides the client's default deadline for
        per-key reads; `snapshot_timeout` bounds one snapshot load."""
        self._client = client
        # The snapshot and the watch from its token must reach the same server while it
        # lives (a round_robin client would send them to two replicas: with tokens bound to
        # one process, every watch would start with RESYNC_REQUIRED, a reload loop).
        self._stream_client = client.sticky()
        self._tenant_id = tenant_id
        self._fetch_timeout = fetch_timeout
        self._snapshot_timeout = snapshot_timeout
        self._clock = clock
        self._warm_codes = list(dict.fromkeys(operation_codes))
        self._credit_costs: dict[str, Decimal] = {}
        self._role_permissions: dict[str, frozenset[str]] = {}
        self._grants: dict[str, CompiledGrants] = {}
        self._subjects: dict[str, Subject] = {}  # user id -> what a permission check reads
        self._user_status: dict[str, pb.UserStatus] = {}
        self._feature_flags: dict[str, pb.FeatureFlag] = {}
        self._tables: dict[int, dict[str, Any]] = {}
        self._bind_tables()
        self._lock = threading.Lock()
        self._versions: dict[_Key, int] = {}  # kept after a deletion: a tombstone
        self._flights: dict[_Key, _Flight] = {}
        self._epoch = 0
        self._live = threading.Event()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._mode = ""
        self._held: frozenset[int] = frozenset()  # kinds the snapshot holds in full
        self._local_checks = False  # user status and roles both held: checks run locally
        self._position = ""
        self._last_message_at = clock()
        self._snapshot_loads = 0
        self._last_snapshot_s = 0.0
        self._changes_applied = 0
        self._resyncs = 0
        self._last_resync_reason = ""
        self._watch_error: BaseException | None = None
        self._stream: WatchStream | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"hybridcache-near-cache-{tenant_id}", daemon=True
        )
        self._thread.start()

    def _bind_tables(self) -> None:
        self._tables = {
            pb.KIND_CREDIT_COSTS: self._credit_costs,
            pb.KIND_ROLE_PERMISSIONS: self._role_permissions,
            pb.KIND_USER_STATUS: self._user_status,
            pb.KIND_FEATURE_FLAGS: self._feature_flags,
        }

    # -- reads (the hot path: one dict lookup on a hit) ---------------------------------

    def credit_cost(self, operation_code: str) -> Decimal:
        """The cost of an operation (NotFound if the tenant has none)."""
        cost = self._credit_costs.get(operation_code)
        if cost is None:
            return self._load(pb.KIND_CREDIT_COSTS, operation_code, self._fetch_credit_cost)
        return cost

    def user_status(self, user_id: str) -> pb.UserStatus:
        """A user's active flag and roles (NotFound for an unknown user)."""
        status = self._user_status.get(user_id)
        if status is None:
            return self._load(pb.KIND_USER_STATUS, user_id, self._fetch_user_status)
        return status

    def feature_flag(self, flag_key: str) -> pb.FeatureFlag:
        """A feature flag (NotFound if the tenant has no such flag)."""
        flag = self._feature_flags.get(flag_key)
        if flag is None:
            return self._load(pb.KIND_FEATURE_FLAGS, flag_key, self._fetch_feature_flag)
        return flag

    def role_permissions(self, role_id: str) -> frozenset[str] | None:
        """A role's grants (None: no such role). Against a server without ListSnapshot,
        only roles that changed while watching are known."""
        return self._role_permissions.get(role_id)

    def check_permission(self, user_id: str, permission: str) -> LocalDecision:
        """CheckPermission's answer, evaluated locally once ready (the server's exact rules:
        `_permissions.py`); before that, or against a server without ListSnapshot, asked
        of the server."""
        if self._ready.is_set() and self._local_checks:
            return decide_locally(self._subjects.get(user_id), self._grants.get, permission)
        answer = self._client.check_permission(
            self._tenant_id, user_id, permission, timeout=self._fetch_timeout
        )
        return LocalDecision(answer.allowed, answer.reason, answer.granted_by_role, answer.matched_grant)

    # -- state ----------------------------------------------------------------------------

    @property
    def tenant_id(self) -> str:
        return self._tenant_id

    @property
    def live(self) -> bool:
        """True while the watch stream keeps the copy current (loads are stored)."""
        return self._live.is_set()

    @property
    def watch_error(self) -> BaseException | None:
        """Why the watch stopped for good (then reads still work, each by RPC)."""
        return self._watch_error

    def provenance(self) -> NearCacheProvenance:
        """How fresh the replica is. Live means the watch delivered a message (a change or a
        heartbeat) within the watch's `idle_timeout`, after which it reconnects anyway: a
        silent stream is not taken for a current replica."""
        age_s = max(0.0, self._clock() - self._last_message_at)
        live = self._live.is_set() and age_s <= self._client.config.watch.idle_timeout
        return NearCacheProvenance(
            mode=self._mode,
            ready=self._ready.is_set(),
            live=live,
            degraded=not live,
            age_s=age_s,
            position=self._position,
            snapshot_loads=self._snapshot_loads,
        )

    def stats(self) -> NearCacheStats:
        """The replica's counters (metrics hooks: poll this from an exporter)."""
        return NearCacheStats(
            snapshot_loads=self._snapshot_loads,
            last_snapshot_s=self._last_snapshot_s,
            changes_applied=self._changes_applied,
            resyncs=self._resyncs,
            items=sum(len(table) for table in self._tables.values()),
            age_s=max(0.0, self._clock() - self._last_message_at),
            last_resync_reason=self._last_resync_reason,
        )

    def wait_ready(self, timeout: float) -> bool:
        """Wait until reads are served locally: the snapshot is installed and its watch has
        delivered its first message (per-key mode: the watch is live); False on timeout."""
        return self._ready.wait(timeout)

    def wait_live(self, timeout: float) -> bool:
        """Wait until the watch has delivered its first message; False on timeout."""
        return self._live.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the watch thread and drop the copy. Reads afterwards go to the server."""
        self._closed.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._stop_caching()
        if self._stream_client is not self._client:
            self._stream_client.close()

    def __enter__(self) -> NearCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the snapshot ---------------------------------------------------------------------

    def _load_snapshot(self) -> str | None:
        """Load and install a snapshot; its resume token, or None if the server has no
        ListSnapshot. Raises HybridCacheError if the load fails."""
        started = time.monotonic()
        loaded = _SnapshotTables()
        token: str | None = None
        held: frozenset[int] = frozenset()
        try:
            # No kinds named: those of the four the server replicates (a kind it serves on
            # demand stays loaded per key here too).
            pages = self._stream_client.list_snapshot(self._tenant_id, timeout=self._snapshot_timeout)
            for page in pages:
                for item in page.items:
                    loaded.add(item)
                if page.last:
                    token = page.resume_token
                    held = frozenset(int(kind) for kind in page.kinds)
        except HybridCacheError as error:
            if error.code == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise
        if not token:
            raise HybridCacheError(
                "the snapshot stream ended without its last page", code=grpc.StatusCode.DATA_LOSS
            )
        with self._lock:
            # Whole tables swapped: a reader sees the old replica or the new one, never a mix.
            self._credit_costs, self._role_permissions = loaded.credit_costs, loaded.roles
            self._grants, self._user_status, self._feature_flags = (
                loaded.grants,
                loaded.statuses,
                loaded.flags,
            )
            self._subjects = loaded.subjects
            self._bind_tables()
            self._versions = loaded.versions
            self._held = held
            self._local_checks = {pb.KIND_USER_STATUS, pb.KIND_ROLE_PERMISSIONS} <= held
            self._epoch += 1
            self._position = token
            self._snapshot_loads += 1
            self._last_snapshot_s = time.monotonic() - started
            self._last_message_at = self._clock()
        return token

    # -- loading (before the snapshot, or per key from a server without ListSnapshot) ----

    def _fetch_credit_cost(self, key: str) -> tuple[Decimal, int]:
        answer = self._client.get_credit_cost(self._tenant_id, key, timeout=self._fetch_timeout)
        return Decimal(answer.credit_cost.cost.value), answer.provenance.version

    def _fetch_user_status(self, key: str) -> tuple[pb.UserStatus, int]:
        answer = self._client.get_user_status(self._tenant_id, key, timeout=self._fetch_timeout)
        return answer.user_status, answer.provenance.version

    def _fetch_feature_flag(self, key: str) -> tuple[pb.FeatureFlag, int]:
        answer = self._client.get_feature_flag(self._tenant_id, key, timeout=self._fetch_timeout)
        return answer.feature_flag, answer.provenance.version

    def _load(self, kind: int, key: str, fetch: Callable[[str], tuple[_V, int]]) -> _V:
        if self._ready.is_set() and kind in self._held:
            # The replica holds every item: absent is an answer, not a reason to call.
            raise NotFound(
                f"{pb.Kind.Name(cast(pb.Kind.ValueType, kind))} {key!r} is not in the replica",
                code=grpc.StatusCode.NOT_FOUND,
            )
        table = self._tables[kind]
        flight_key = (kind, key)
        with self._lock:
            held = table.get(key)
            if held is not None:  # filled while we were getting here
                return cast(_V, held)
            flight = self._flights.get(flight_key)
            leader = flight is None
            if flight is None:
                flight = self._flights[flight_key] = _Flight(self._epoch, self._live.is_set())
        if not leader:
            return cast(_V, flight.future.result())  # the leader's call has a deadline
        try:
            value, version = fetch(key)
        except BaseException as error:
            with self._lock:
                self._end_flight(flight_key, flight)
            flight.future.set_exception(error)
            raise
        with self._lock:
            self._end_flight(flight_key, flight)
            if flight.cacheable and flight.epoch == self._epoch and self._live.is_set():
                if flight.may_store(version):
                    table[key] = value
                    if version:
                        self._versions[flight_key] = version
                else:
                    value = cast(_V, table.get(key, value))  # the newer event's value
        flight.future.set_result(value)
        return value

    def _end_flight(self, flight_key: _Key, flight: _Flight) -> None:
        if self._flights.get(flight_key) is flight:
            del self._flights[flight_key]

    def _warm_up(self) -> None:
        # Runs on the watch thread, so no event is applied while the batch is in flight;
        # events queued meanwhile are applied after it and win. setdefault keeps values
        # a loader stored meanwhile.
        epoch = self._epoch
        for start in range(0, len(self._warm_codes), _BATCH_LIMIT):
            chunk = self._warm_codes[start : start + _BATCH_LIMIT]
            try:
                answer = self._client.batch_get_credit_costs(
                    self._tenant_id, chunk, timeout=self._fetch_timeout
                )
            except HybridCacheError as error:
                _log.warning("near cache warm-up of %s failed: %s", self._tenant_id, error)
                return
            with self._lock:
                if epoch != self._epoch or not self._live.is_set():
                    return
                for item in answer.credit_costs:
                    try:
                        self._credit_costs.setdefault(item.operation_code, Decimal(item.cost.value))
                    except InvalidOperation:
                        continue

    # -- the watch thread -----------------------------------------------------------------

    def _run(self) -> None:
        delay = _RELOAD_BACKOFF_S[0]
        try:
            while not self._closed.is_set():
                try:
                    token = self._load_snapshot()
                except HybridCacheError as error:
                    if error.code in _TERMINAL_CODES:
                        raise
                    # Keep serving what is held (degraded: not live) and try again.
                    _log.warning("near cache snapshot of %s failed: %s", self._tenant_id, error)
                    if self._closed.wait(delay):
                        return
                    delay = min(delay * 2, _RELOAD_BACKOFF_S[1])
                    continue
                delay = _RELOAD_BACKOFF_S[0]
                self._mode = "per-key" if token is None else "replica"
                if not self._watch_from(token):
                    return
        except BaseException as error:
            # The copy can no longer be kept current: stop serving it.
            self._watch_error = error
            _log.error("near cache watch of %s stopped: %s", self._tenant_id, error)
        finally:
            self._stop_caching()

    def _watch_from(self, token: str | None) -> bool:
        """Apply the watch until it ends (False: closed) or needs a snapshot reload (True)."""
        stream = self._stream_client.watch(
            tenant_ids=[self._tenant_id],
            kinds=_KINDS,
            resume_token=token,
            on_resync=self._on_resync,
            on_progress=self._on_progress,
        )
        with self._lock:
            if self._closed.is_set():
                stream.close()
                return False
            self._stream = stream
        try:
            for event in stream:
                self._mark_live()
                self._apply(event)
                self._position = stream.resume_token
        except _ReloadNeeded:
            stream.close()
            self._live.clear()  # degraded until the new snapshot's watch delivers
            return True
        return False

    def _on_progress(self, progress: pb.Progress) -> None:
        self._mark_live()
        self._position = progress.resume_token

    def _mark_live(self) -> None:
        self._last_message_at = self._clock()
        if not self._live.is_set():
            self._live.set()
            self._ready.set()
            if self._warm_codes and self._mode == "per-key":
                self._warm_up()

    def _on_resync(self, reason: str) -> None:
        self._resyncs += 1
        self._last_resync_reason = reason
        if self._mode == "replica":
            raise _ReloadNeeded  # out of the stream: one snapshot reload, then watch from it
        # Changes were missed: drop everything (reloaded lazily), void in-flight loads.
        with self._lock:
            self._clear()
        self._mark_live()

    def _apply(self, event: pb.ChangeEvent) -> None:
        if event.tenant_id != self._tenant_id or event.kind not in self._tables:
            return
        if event.resync:
            self._resyncs += 1
            self._last_resync_reason = "resync event"
        if event.resync and self._mode == "replica":
            raise _ReloadNeeded  # the server reloaded this kind: so do we, in one call
        with self._lock:
            table = self._tables[event.kind]
            if event.resync:  # the server reloaded this kind: so do we, lazily
                table.clear()
                self._derived_of(event.kind).clear()
                self._versions = {k: v for k, v in self._versions.items() if k[0] != event.kind}
                self._epoch += 1
                return
            key, value = _key_and_value(event)
            if key is None:
                return
            flight_key = (int(event.kind), key)
            flight = self._flights.get(flight_key)
            if flight is not None:
                flight.note_event(event.version)
            held_version = self._versions.get(flight_key, 0)
            if event.version and held_version > event.version:
                return  # a replay of a change older than what we hold
            self._store(event.kind, table, key, value)
            self._changes_applied += 1
            if event.version:
                self._versions[flight_key] = event.version
            else:
                self._versions.pop(flight_key, None)

    def _derived_of(self, kind: int) -> dict[str, Any]:
        """The table a permission check reads beside `kind`'s own ({} for other kinds)."""
        if kind == pb.KIND_ROLE_PERMISSIONS:
            return self._grants
        if kind == pb.KIND_USER_STATUS:
            return self._subjects
        return {}

    def _store(self, kind: int, table: dict[str, Any], key: str, value: Any) -> None:
        derived = self._derived_of(kind)
        if value is None:
            table.pop(key, None)
            derived.pop(key, None)
            return
        table[key] = value
        if kind == pb.KIND_ROLE_PERMISSIONS:
            derived[key] = CompiledGrants(value)
        elif kind == pb.KIND_USER_STATUS:
            derived[key] = subject_of(value)

    def _clear(self) -> None:
        for table in self._tables.values():
            table.clear()
        self._grants.clear()
        self._subjects.clear()
        self._versions.clear()
        self._epoch += 1

    def _stop_caching(self) -> None:
        with self._lock:
            self._live.clear()
            self._ready.clear()
            self._clear()
