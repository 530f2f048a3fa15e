"""ListSnapshot: a tenant's replicated kinds as of one position of the change stream.

A consumer builds its own replica the way a Kubernetes informer does (LIST, then WATCH from
the list's position): it reads the snapshot, then opens WatchChanges with the snapshot's
resume token and applies what arrives.

Exactness. The position and the items are taken together under the ingestor's `order` lock,
which the change feed holds while it applies one message to the cache and publishes its
change (`EventIngestor.process`), so a change is either in the items and at or before the
position, or in neither: WatchChanges from the token delivers every later change once.
The position is read before the items are copied, so a change the repair worker makes
(a refetch or a resync, which apply and publish outside that lock because they wait for
the Wrapper) can at worst be both in the items and delivered once more — a duplicate of a
value the consumer already holds, never a gap.

Memory. Under the lock the items are copied as a shallow dict per kind (a pointer per item,
the values are shared); pages are then built and sent one at a time, so at most one page of
messages exists at once, however large the tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Final

from hybridcache.client.reasons import Reason
from hybridcache.server import convert
from hybridcache.server.core import HybridCache
from hybridcache.server.core.errors import InvalidRequest
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.replica_state import Entry
from hybridcache.server.core.values import CreditCost, FeatureFlag, RolePermissions, UserStatus, Value
from hybridcache.server.hub import ChangeHub
from hybridcache.v1 import hybridcache_pb2 as pb

SNAPSHOT_KINDS: Final = (Kind.CREDIT_COSTS, Kind.ROLE_PERMISSIONS, Kind.USER_STATUS, Kind.FEATURE_FLAGS)
DEFAULT_PAGE_SIZE: Final = 500
MAX_PAGE_SIZE: Final = 5000


class SnapshotLister:
    """Serves ListSnapshot for a tenant the caller has already been checked for."""

    def __init__(
        self,
        cache: HybridCache,
        hub: ChangeHub,
        order: AbstractContextManager[object],
        *,
        freshness: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._hub = hub
        self._order = order
        self._freshness = freshness
        self._clock = clock

    def pages(
        self, tenant_id: str, request: pb.ListSnapshotRequest, deadline: float | None
    ) -> Iterator[pb.ListSnapshotResponse]:
        """The snapshot's messages. InvalidRequest (raised before the first message) for bad
        fields; NotFound / WrapperUnavailable if the tenant cannot be loaded."""
        # None asked: every kind of the four this server replicates (a kind configured on
        # demand has no full copy to list); asked for by name, it must be replicated.
        kinds = snapshot_kinds(request.kinds) or tuple(
            k for k in SNAPSHOT_KINDS if self._cache.is_replicated(k)
        )
        page_size = page_size_of(request.page_size)
        self._cache.ensure_tenant(tenant_id, deadline)  # may call the Wrapper: outside the lock
        with self._order:
            token = self._hub.current_token()
            freshness = self._freshness()
            view = self._cache.replica_view(tenant_id, kinds)
        return self._stream(view, token, freshness, page_size)

    def _stream(
        self, view: dict[Kind, dict[str, Entry]], token: str, freshness: str, page_size: int
    ) -> Iterator[pb.ListSnapshotResponse]:
        total = 0
        oldest: float | None = None
        page = pb.ListSnapshotResponse()
        for kind, items in view.items():
            for key in sorted(items):
                entry = items[key]
                _item(kind, key, entry.value, page.items.add())
                total += 1
                if oldest is None or entry.stored_at < oldest:
                    oldest = entry.stored_at
                if len(page.items) >= page_size:
                    yield page
                    page = pb.ListSnapshotResponse()
        page.last = True
        page.resume_token = token
        page.total_items = total
        page.kinds.extend(convert.KIND_TO_PROTO[kind] for kind in view)
        age_s = 0.0 if oldest is None else max(0.0, self._clock() - oldest)
        convert.provenance("cache", age_s, 0, freshness, page.provenance)
        yield page


def snapshot_kinds(numbers: Iterable[int]) -> tuple[Kind, ...]:
    """The request's kinds, in the stream's order (empty: none named). InvalidRequest for
    a kind that is not one of the four replicated kinds."""
    asked: set[Kind] = set()
    for index, number in enumerate(numbers):
        kind = convert.PROTO_TO_KIND.get(number)
        if kind not in SNAPSHOT_KINDS:
            raise InvalidRequest(
                f"kinds[{index}] is not a replicated kind ({number}): a snapshot holds credit costs, "
                "role permissions, user status and feature flags",
                reason=Reason.KIND_NOT_REPLICATED,
            )
        asked.add(kind)
    return tuple(k for k in SNAPSHOT_KINDS if k in asked)


def page_size_of(requested: int) -> int:
    if requested > MAX_PAGE_SIZE:
        raise InvalidRequest(f"page_size must be at most {MAX_PAGE_SIZE}", reason=Reason.INVALID_ARGUMENT)
    return requested or DEFAULT_PAGE_SIZE


def _item(kind: Kind, key: str, value: Value, into: pb.SnapshotItem) -> None:
    into.kind = convert.KIND_TO_PROTO[kind]
    into.key = key
    into.version = value.version
    if isinstance(value, CreditCost):
        convert.credit_cost(value, into.credit_cost)
    elif isinstance(value, RolePermissions):
        convert.role_permissions(value, into.role_permissions)
    elif isinstance(value, UserStatus):
        convert.user_status(value, into.user_status)
    elif isinstance(value, FeatureFlag):
        convert.feature_flag(value, into.feature_flag)
