"""What the change-notification pipeline needs from its neighbours, as structural interfaces.

`ChangeCache` names exactly the cache-core methods the pipeline calls (the real one is
`hybridcache.server.core.HybridCache`); unit tests pass a fake. The pipeline reports every
change it caused through a `NoticeSink` (`on_change`), which the service adapts to the
WatchChanges hub.

Outcomes are the core's own `ApplyOutcome` (the events package depends on the core, never
the other way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.results import ApplyOutcome
from hybridcache.server.core.values import Value


class AppliedChange(Protocol):
    """Read-only view of the core's `Change` (a frozen dataclass with these fields)."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> Value | None: ...
    @property
    def version(self) -> int: ...
    @property
    def deleted(self) -> bool: ...


class ChangeCache(Protocol):
    """The cache-core methods the event pipeline uses. All are thread-safe in the core."""

    def apply(
        self,
        tenant_id: str,
        kind: Kind,
        key: str,
        value: Value | None,
        *,
        version: int | None = None,
        expected_old: object = ...,
    ) -> tuple[ApplyOutcome, AppliedChange | None]:
        """Apply an event's new value (None: deletion). `expected_old` is left out when the
        event has no oldValue; otherwise it is the old value (None: "did not exist")."""
        ...

    def refetch(
        self, tenant_id: str, kind: Kind, key: str, deadline: float | None = None
    ) -> AppliedChange | None:
        """Fetch one key from the Wrapper and store it. May raise NotFound / WrapperUnavailable."""
        ...

    def invalidate(self, tenant_id: str, kind: Kind, key: str) -> Sequence[str] | None:
        """Drop or suspect the key; returns the keys of related entries dropped with it (org
        units naming it), if any."""
        ...

    def drop_reference(self) -> None:
        """Drop every on-demand (reference) entry: invalidations for them may have been missed."""
        ...

    def resync_tenant(self, tenant_id: str, deadline: float | None = None) -> Sequence[AppliedChange]:
        """Reload a tenant's replica from the Wrapper; returns the changes it made."""
        ...

    def loaded_tenants(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """One change the pipeline made to the cache, for WatchChanges subscribers.

    Field for field the hub's `HubEvent`. `resync=True` marks "tenant `tenant_id`, kind
    `kind` was reloaded" (keys empty). `event_time_ms` is the publisher's `publishedAt`
    when it sent one, else the time the event was received (epoch milliseconds).
    """

    tenant_id: str
    kind: Kind
    keys: tuple[str, ...]
    changed_fields: tuple[str, ...]
    event_id: str
    event_type: str
    event_time_ms: int
    resync: bool = False
    version: int = 0
    deleted: bool = False
    value: Value | None = None

    @classmethod
    def of_change(
        cls,
        change: AppliedChange,
        *,
        event_id: str,
        event_type: str,
        event_time_ms: int,
        changed_fields: tuple[str, ...] = (),
    ) -> ChangeNotice:
        return cls(
            tenant_id=change.tenant_id,
            kind=change.kind,
            keys=(change.key,),
            changed_fields=changed_fields,
            event_id=event_id,
            event_type=event_type,
            event_time_ms=event_time_ms,
            version=change.version,
            deleted=change.deleted,
            value=change.value,
        )

    def __repr__(self) -> str:  # values may be PII (profiles): keep them out of logs
        return (
            f"ChangeNotice(tenant_id={self.tenant_id!r}, kind={self.kind.value!r}, keys={self.keys!r}, "
            f"event_id={self.event_id!r}, event_type={self.event_type!r}, version={self.version}, "
            f"deleted={self.deleted}, resync={self.resync})"
        )


NoticeSink = Callable[[ChangeNotice], object]  # the return value, if any, is ignored
"""Receives every change the pipeline applied. Called from the reader or the repair thread;
it must be quick and must not raise (exceptions are logged and counted, not propagated)."""


if TYPE_CHECKING:  # mypy proves the real core satisfies the port (no import at run time)
    from hybridcache.server.core import HybridCache

    def _core_is_a_change_cache(cache: HybridCache) -> ChangeCache:
        return cache
