"""What the cache core hands back: reads, applied changes, apply outcomes.

Kept apart from `cache.py` so the replica and reference stores can build them without an
import cycle; `hybridcache.server.core.cache` re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import Value


class Source(StrEnum):
    """Where a read's value came from."""

    CACHE = "cache"  # held locally and fresh (replica, or a reference entry within its TTL)
    WRAPPER = "wrapper"  # fetched from the Wrapper for this read
    STALE = "stale"  # the Wrapper could not answer; an older value within the kind's max staleness


@dataclass(frozen=True, slots=True)
class Read:
    value: Value
    source: Source
    age_s: float  # now - when the value was stored (fetched, applied, or loaded by snapshot)
    version: int  # the entity's version; 0 when the Wrapper does not say


_new = object.__new__
_set_value, _set_source, _set_age_s, _set_version = (
    getattr(Read, name).__set__ for name in ("value", "source", "age_s", "version")
)


def make_read(value: Value, source: Source, age_s: float, version: int) -> Read:
    """`Read(value, source, age_s, version)` for the hit paths. A frozen dataclass's __init__
    sets each field through object.__setattr__ (~750 ns for four here, most of a hit's cost);
    setting the slots through their descriptors builds the same object in ~430 ns."""
    read: Read = _new(Read)
    _set_value(read, value)
    _set_source(read, source)
    _set_age_s(read, age_s)
    _set_version(read, version)
    return read


@dataclass(frozen=True, slots=True)
class Change:
    """A key-level change the core applied; the caller publishes it to WatchChanges."""

    tenant_id: str
    kind: Kind
    key: str
    value: Value | None  # None when deleted
    version: int  # 0 when unknown (e.g. a deletion found by a snapshot diff)
    deleted: bool

    def __repr__(self) -> str:  # values may be profiles (PII): keep them out of logs
        return (
            f"Change(tenant_id={self.tenant_id!r}, kind={self.kind.value!r}, key={self.key!r}, "
            f"version={self.version}, deleted={self.deleted})"
        )


class ApplyOutcome(StrEnum):
    APPLIED = "applied"
    OLD_VERSION = "old-version"  # the event's version is not newer than the held one: ignored
    OLD_VALUE_MISMATCH = "old-value-mismatch"  # held value != the event's old value: refetch the key
    NOT_LOADED = "not-loaded"  # tenant not loaded: nothing to do, it will load fresh
    INVALIDATED = "invalidated"  # on-demand kind: the entry was dropped
    # The version is beyond the tenant-kind's highest seen + the window: not applied (one
    # forged or corrupt event must not pin a key); refetch the key, the Wrapper's answer wins.
    IMPLAUSIBLE_VERSION = "implausible-version"


class _Missing(Enum):
    TOKEN = 0

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.TOKEN
"""`apply(expected_old=MISSING)`: the event carried no old value (None means "did not exist")."""
