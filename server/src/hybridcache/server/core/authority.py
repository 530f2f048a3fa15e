"""The Wrapper's answer installed over the replica: the authority wins over any event.

Anti-entropy (the verifier) reads part of a tenant-kind from the Wrapper and must then make
the replica hold exactly that — value and version, even when the held version is higher
(a forged or buggy event may have put it there). It must not, though, overwrite what a
*newer* event wrote while the Wrapper was being read. So a verification opens a
`VerifyMark` before its first Wrapper call; every write to that tenant-kind while the mark
is open records its key there, and a snapshot starting (or the kind being invalidated)
voids the mark: that key (or the whole mark) is left alone, and the next verification
looks again.

`WriteMarks` is owned by `ReplicaSet` and mutated only under its lock, like the flight
tables. No I/O here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import Value


class VerifyMark:
    __slots__ = ("kind", "skipped", "tenant_id", "void", "written")

    def __init__(self, tenant_id: str, kind: Kind) -> None:
        self.tenant_id = tenant_id
        self.kind = kind
        self.written: set[str] = set()  # keys written since the mark opened
        self.void = False  # a snapshot (or invalidate_kind) overtook the verification
        self.skipped = 0  # keys that differed from the Wrapper but were written meanwhile


class WriteMarks:
    """The open verification marks, by tenant-kind."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[tuple[str, Kind], list[VerifyMark]] = {}

    def open(self, tenant_id: str, kind: Kind) -> VerifyMark:
        mark = VerifyMark(tenant_id, kind)
        self._open.setdefault((tenant_id, kind), []).append(mark)
        return mark

    def close(self, mark: VerifyMark) -> None:
        slot = (mark.tenant_id, mark.kind)
        marks = self._open.get(slot)
        if marks is not None and mark in marks:
            marks.remove(mark)
            if not marks:
                del self._open[slot]

    def note(self, tenant_id: str, kind: Kind, key: str) -> None:
        """A write (event, fetch, invalidation) of one key."""
        if self._open:
            for mark in self._open.get((tenant_id, kind), ()):
                mark.written.add(key)

    def void(self, tenant_id: str, kind: Kind) -> None:
        """A snapshot began or the kind was invalidated: the open verifications must not install."""
        for mark in self._open.get((tenant_id, kind), ()):
            mark.void = True


def to_install(
    mark: VerifyMark, held: Mapping[str, Value], truth: Mapping[str, Value], scope: Collection[str]
) -> list[tuple[str, Value | None]]:
    """What to write so that the keys of `scope` (a bucket: the replica's keys and the
    Wrapper's) hold the Wrapper's `truth`: (key, value) pairs, None meaning "delete".
    Keys written since the mark opened are skipped (a newer event may have written them)."""
    if mark.void:
        return []
    writes: list[tuple[str, Value | None]] = []
    for key in scope:
        want = truth.get(key)
        have = held.get(key)
        if key in mark.written:
            mark.skipped += have != want
            continue
        if want is None:
            if have is not None:
                writes.append((key, None))
        elif have is None or have != want:  # dataclass equality: every field, version included
            writes.append((key, want))
    return writes
