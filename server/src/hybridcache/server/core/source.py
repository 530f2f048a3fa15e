"""What the cache core needs from the Wrapper, as an interface the core can call without I/O of its own.

The real implementation is `hybridcache.server.wrapper.client.WrapperClient` (urllib3);
unit tests pass an in-memory fake. Every call takes an absolute deadline on the
`time.monotonic()` clock (None: the implementation's own default timeout) and either
returns, raises `NotFound`, or raises `WrapperUnavailable` no later than that deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import Value


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every item of one replicated kind of one tenant, at one Wrapper revision."""

    tenant_id: str
    kind: Kind
    revision: int
    items: dict[str, Value]  # key -> value; the key is the entity id of the kind


class WrapperSource(Protocol):
    def fetch_item(self, tenant_id: str, kind: Kind, key: str, deadline: float | None) -> Value:
        """One entity. Raises NotFound (tenant or entity absent) or WrapperUnavailable."""
        ...

    def fetch_snapshot(self, tenant_id: str, kind: Kind, deadline: float | None) -> Snapshot:
        """Every entity of a replicated kind. Raises NotFound (unknown tenant) or WrapperUnavailable."""
        ...
