"""What one tenant's replica of one kind holds, and its state transitions (no locks, no I/O).

`ReplicaSet` (replica.py) calls every mutating method here under its lock; readers only read
`KindReplica.map`, which is either updated one key at a time or replaced whole.

    map        key -> Entry         verified items: what reads answer from
    suspects   key -> Entry | None  invalidated items (None: "absent, unverified"): reads
                                    refetch them and fall back to them when the Wrapper is down;
                                    events for them land here too (they may be late)
    reload     bool                 invalidate_kind: every key not in `map` is unverified
    loading    Flight | None        the snapshot (or first load) in flight
    touched    key -> version       keys written while `loading`; kept over the snapshot on
                                    install unless the snapshot's version is newer
    tombstones key -> version       versioned deletions, so a late older event cannot resurrect
    high_water int                  the highest version seen (snapshots, fetches, applied events):
                                    an event far beyond it is implausible (replica.py)
"""

from __future__ import annotations

from dataclasses import replace

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.permissions import Grants
from hybridcache.server.core.results import Change
from hybridcache.server.core.singleflight import Flight
from hybridcache.server.core.values import RolePermissions, Value

_MAX_TOMBSTONES = 10_000  # per tenant-kind; past it the oldest are forgotten


class Entry:
    """One replicated item. Slotted (48 bytes); a snapshot's entries share one `stored_at`."""

    __slots__ = ("stored_at", "value")

    def __init__(self, value: Value, stored_at: float) -> None:
        self.value = value
        self.stored_at = stored_at


class RoleEntry(Entry):
    """A role, with its grants compiled once here rather than on every CheckPermission."""

    __slots__ = ("grants",)

    def __init__(self, value: RolePermissions, stored_at: float) -> None:
        super().__init__(value, stored_at)
        self.grants = Grants(value.permissions)


def make_entry(value: Value, stored_at: float) -> Entry:
    if isinstance(value, RolePermissions):
        return RoleEntry(value, stored_at)
    return Entry(value, stored_at)


def same_content(held: Value | None, expected: object) -> bool:
    """Whether `held` is what an event says the old value was, versions aside (events built
    from a changed field do not know the entity's version)."""
    if held is None or expected is None:
        return held is expected
    if type(held) is not type(expected):
        return False
    return held == replace(expected, version=held.version)


class KindReplica:
    __slots__ = (
        "high_water",
        "kind",
        "loaded_at",
        "loading",
        "map",
        "reload",
        "suspects",
        "tenant_id",
        "tombstones",
        "touched",
    )

    def __init__(self, tenant_id: str, kind: Kind, loading: Flight[None] | None) -> None:
        self.tenant_id = tenant_id
        self.kind = kind
        self.map: dict[str, Entry] = {}
        self.suspects: dict[str, Entry | None] = {}
        self.reload = False
        self.loading = loading
        self.touched: dict[str, int] = {}
        self.tombstones: dict[str, int] = {}
        self.high_water = 0
        self.loaded_at: float | None = None  # clock time of the installed snapshot's fetch

    def held_version(self, key: str) -> int:
        entry = self.map.get(key) or self.suspects.get(key)
        return entry.value.version if entry is not None else self.tombstones.get(key, 0)

    def verified(self, key: str) -> bool:
        """Whether an absent key is known to be absent (else a read must ask the Wrapper)."""
        return not self.reload and key not in self.suspects

    # --- snapshots

    def begin_load(self, flight: Flight[None]) -> None:
        self.loading = flight  # an older load in flight is superseded: it will not install
        self.touched = {}

    def end_load(self, flight: Flight[None]) -> None:
        if self.loading is flight:
            self.loading = None
            self.touched = {}

    def install(
        self, flight: Flight[None], new: dict[str, Entry], high_water: int, loaded_at: float, *, diff: bool
    ) -> list[Change]:
        """Swap in the snapshot `flight` loaded (its items, and `high_water`: no item's version is
        above it; `loaded_at`: when it was fetched), keeping what was written during the load;
        returns the key-level diff (if `diff`)."""
        if self.loading is not flight:
            if self.loading is None and self.reload:
                # Fenced by invalidate_kind and no newer load running: the items are only good as
                # fallbacks while the Wrapper is down; the next read reloads the kind.
                for key, entry in new.items():
                    if key not in self.map:
                        self.suspects.setdefault(key, entry)
            return []  # superseded by a newer snapshot, which will install
        suspects: dict[str, Entry | None] = {}
        for key, version in self.touched.items():
            loaded = new.get(key)
            if loaded is not None and 0 < version < loaded.value.version:
                continue  # the snapshot is newer than what was written during the load
            held = self.map.get(key)
            if held is not None:
                new[key] = held
                continue
            dropped = new.pop(key, None)
            if key in self.suspects:  # invalidated during the load: still unverified
                suspects[key] = dropped if dropped is not None else self.suspects[key]
        changes = self._diff(new, suspects) if diff else []
        self.high_water = max(self.high_water, high_water)
        self.loaded_at = loaded_at
        self.map = new  # the atomic swap readers see
        self.suspects = suspects
        if self.tombstones:
            self.tombstones = {k: v for k, v in self.tombstones.items() if k not in new}
        self.reload = False
        self.loading = None
        self.touched = {}
        return changes

    def _diff(self, new: dict[str, Entry], new_suspects: dict[str, Entry | None]) -> list[Change]:
        before = _visible(self.map, self.suspects)
        after = _visible(new, new_suspects)
        t, k = self.tenant_id, self.kind
        changes = [
            Change(t, k, key, entry.value, entry.value.version, False)
            for key, entry in after.items()
            if (prior := before.get(key)) is None or (prior is not entry and prior.value != entry.value)
        ]
        changes += [Change(t, k, key, None, 0, True) for key in before if key not in after]
        return changes

    # --- writes

    def write(
        self, key: str, value: Value | None, version: int, now: float, *, fetched: bool
    ) -> Change | None:
        """Store one key's new value (None: deleted); the Change if what is held changed.
        `fetched`: the Wrapper's answer, read after every fence (else: an event's value). The
        Wrapper is the authority: its answer is stored whatever version is held, so the held
        version becomes the Wrapper's (a forged or corrupt version is undone here)."""
        # Events reach here only within the plausible window, so this cannot be poisoned.
        self.high_water = max(self.high_water, version)
        if self.loading is not None:
            self.touched[key] = version
        held = self.map.get(key)
        # An event for a key invalidated since it was last verified may be a late one, older
        # than the Wrapper's state: keep its value only as a fallback, and let reads fetch.
        unverified = not fetched and held is None and not self.verified(key)
        suspect = self.suspects.pop(key, None)
        if value is None:
            if held is not None:
                del self.map[key]
            if unverified:
                self.suspects[key] = None
            if version > 0:
                self.tombstones[key] = version
                if len(self.tombstones) > _MAX_TOMBSTONES:
                    del self.tombstones[next(iter(self.tombstones))]
            existed = held is not None or suspect is not None
            return Change(self.tenant_id, self.kind, key, None, version, True) if existed else None
        self.tombstones.pop(key, None)
        if unverified:
            self.suspects[key] = make_entry(value, now)
            return Change(self.tenant_id, self.kind, key, value, value.version, False)
        self.map[key] = make_entry(value, now)
        if held is not None and held.value == value:
            return None
        return Change(self.tenant_id, self.kind, key, value, value.version, False)

    def invalidate(self, key: str) -> None:
        if self.loading is not None:
            self.touched[key] = 0
        held = self.map.pop(key, None)
        if held is not None or key not in self.suspects:
            self.suspects[key] = held

    def invalidate_all(self) -> None:
        self.loading = None  # the load in flight (if any) began before: it must not install
        self.touched = {}
        self.suspects.update(self.map)
        self.map = {}
        self.reload = True


def _visible(items: dict[str, Entry], suspects: dict[str, Entry | None]) -> dict[str, Entry]:
    if not suspects:
        return items
    return {**{k: e for k, e in suspects.items() if e is not None}, **items}
