"""NearCache: an in-process copy of one tenant's replicated kinds, kept current by `watch()`.

    near.credit_cost(op) ──► dict.get ──hit──► Decimal                  (no lock, ~0.1 µs)
                                │ miss
                                ▼
                  one RPC per key at a time (single-flight) ──► store it, unless an event
                  for the key arrived meanwhile with a version the answer does not reach,
                  or the cache was cleared meanwhile (epoch), or the watch is not live

    watch thread: ChangeEvent ──► apply new value / delete (versions only move forward)
                  ResyncRequired, resync event ──► clear (reload lazily), epoch += 1

The API has no "list all" RPC, so entries are loaded per key on first read (credit costs
can be warmed in one batch). The watch is opened *before* anything is loaded, and nothing
fetched is stored until the stream has delivered its first message (so the server has a
position for us and every later change reaches us as an event). Role permissions have no
read RPC in the API: `role_permissions()` knows only the roles that changed while watching.

Thread-safety: any number of threads may read. Reads are plain dict lookups without a
lock; all writes (the watch thread, loaders) happen under one lock, which is never held
while calling the server. Returned protobuf messages are shared: treat them as read-only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, cast

from hybridcache.client._client import HybridCacheClient
from hybridcache.client.errors import HybridCacheError
from hybridcache.v1 import hybridcache_pb2 as pb

_log = logging.getLogger("hybridcache.client")
_V = TypeVar("_V")
_KINDS = (pb.KIND_CREDIT_COSTS, pb.KIND_ROLE_PERMISSIONS, pb.KIND_USER_STATUS, pb.KIND_FEATURE_FLAGS)
_BATCH_LIMIT = 1000  # BatchGetCreditCosts' documented maximum
_Key = tuple[int, str]


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


class NearCache:
    """A local, event-maintained copy of one tenant's credit costs, role permissions,
    user status and feature flags. Start it, read it, `close()` it (or use `with`)."""

    def __init__(
        self,
        client: HybridCacheClient,
        tenant_id: str,
        *,
        operation_codes: Iterable[str] = (),
        fetch_timeout: float | None = None,
    ) -> None:
        """Open the watch for `tenant_id` on a background thread. `operation_codes` are
        loaded in one batch as soon as the watch is live; `fetch_timeout` overrides the
        client's default deadline for the loads."""
        self._client = client
        self._tenant_id = tenant_id
        self._fetch_timeout = fetch_timeout
        self._warm_codes = list(dict.fromkeys(operation_codes))
        self._credit_costs: dict[str, Decimal] = {}
        self._role_permissions: dict[str, frozenset[str]] = {}
        self._user_status: dict[str, pb.UserStatus] = {}
        self._feature_flags: dict[str, pb.FeatureFlag] = {}
        self._tables: dict[int, dict[str, Any]] = {
            pb.KIND_CREDIT_COSTS: self._credit_costs,
            pb.KIND_ROLE_PERMISSIONS: self._role_permissions,
            pb.KIND_USER_STATUS: self._user_status,
            pb.KIND_FEATURE_FLAGS: self._feature_flags,
        }
        self._lock = threading.Lock()
        self._versions: dict[_Key, int] = {}  # kept after a deletion: a tombstone
        self._flights: dict[_Key, _Flight] = {}
        self._epoch = 0
        self._live = threading.Event()
        self._watch_error: BaseException | None = None
        self._stream = client.watch(
            tenant_ids=[tenant_id],
            kinds=_KINDS,
            on_resync=self._on_resync,
            on_progress=lambda _progress: self._mark_live(),
        )
        self._thread = threading.Thread(
            target=self._run, name=f"hybridcache-near-cache-{tenant_id}", daemon=True
        )
        self._thread.start()

    # -- reads (the hot path: one dict lookup on a hit) ---------------------------------

    def credit_cost(self, operation_code: str) -> Decimal:
        """The cost of an operation; loads it on a miss (NotFound if the tenant has none)."""
        cost = self._credit_costs.get(operation_code)
        if cost is None:
            return self._load(pb.KIND_CREDIT_COSTS, operation_code, self._fetch_credit_cost)
        return cost

    def user_status(self, user_id: str) -> pb.UserStatus:
        """A user's active flag and roles; loads it on a miss."""
        status = self._user_status.get(user_id)
        if status is None:
            return self._load(pb.KIND_USER_STATUS, user_id, self._fetch_user_status)
        return status

    def feature_flag(self, flag_key: str) -> pb.FeatureFlag:
        """A feature flag; loads it on a miss."""
        flag = self._feature_flags.get(flag_key)
        if flag is None:
            return self._load(pb.KIND_FEATURE_FLAGS, flag_key, self._fetch_feature_flag)
        return flag

    def role_permissions(self, role_id: str) -> frozenset[str] | None:
        """A role's grants, if a change of it was seen while watching; else None (the API
        has no RPC to read a role: use `client.check_permission` for decisions)."""
        return self._role_permissions.get(role_id)

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

    def wait_live(self, timeout: float) -> bool:
        """Wait until the watch has delivered its first message; False on timeout."""
        return self._live.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the watch thread and drop the copy. Reads afterwards go to the server."""
        self._stream.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._stop_caching()

    def __enter__(self) -> NearCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- loading --------------------------------------------------------------------------

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
        try:
            for event in self._stream:
                self._mark_live()
                self._apply(event)
        except BaseException as error:
            # The copy can no longer be kept current: stop serving it.
            self._watch_error = error
            _log.error("near cache watch of %s stopped: %s", self._tenant_id, error)
        finally:
            self._stop_caching()

    def _mark_live(self) -> None:
        if not self._live.is_set():
            self._live.set()
            if self._warm_codes:
                self._warm_up()

    def _on_resync(self, _reason: str) -> None:
        # Changes were missed: drop everything (reloaded lazily), void in-flight loads.
        with self._lock:
            self._clear()
        self._mark_live()

    def _apply(self, event: pb.ChangeEvent) -> None:
        table = self._tables.get(event.kind)
        if table is None or event.tenant_id != self._tenant_id:
            return
        with self._lock:
            if event.resync:  # the server reloaded this kind: so do we, lazily
                table.clear()
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
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
            if event.version:
                self._versions[flight_key] = event.version
            else:
                self._versions.pop(flight_key, None)

    def _clear(self) -> None:
        for table in self._tables.values():
            table.clear()
        self._versions.clear()
        self._epoch += 1

    def _stop_caching(self) -> None:
        with self._lock:
            self._live.clear()
            self._clear()
