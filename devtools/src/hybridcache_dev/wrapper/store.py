"""The development Wrapper's data: SQLite (stdlib), one connection behind a lock.

Items come out as the JSON objects the Wrapper HTTP API serves (docs/CONTRACTS-INTERNAL.md),
so the HTTP layer is a thin shell and the unit tests can check the shapes with the same
parser the product uses (`hybridcache.server.codec.parse_item`).

Versions: every entity has a `version`, +1 on each change. Deletes of the critical kinds
are tombstones (a `deleted` flag, version +1) rather than row removals, so that an entity
deleted and created again keeps moving forward; a consumer that keeps the highest version
it has seen never mistakes the new entity for an old one.

Revisions: each tenant has a change counter, +1 per admin write; a snapshot carries the
counter read in the same transaction as its items.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hybridcache.server import codec
from hybridcache.server.core import digest as digests
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import canonical_decimal
from hybridcache_dev.wrapper.seed import TenantSeed

JsonObject = dict[str, Any]

# The kinds with a per-tenant snapshot endpoint (the critical kinds of the seed's split).
SNAPSHOT_KINDS: tuple[Kind, ...] = (
    Kind.CREDIT_COSTS,
    Kind.ROLE_PERMISSIONS,
    Kind.USER_STATUS,
    Kind.FEATURE_FLAGS,
)

# Profile fields an admin may PATCH: JSON name -> column.
PROFILE_FIELDS: dict[str, str] = {
    "displayName": "display_name",
    "email": "email",
    "title": "title",
    "department": "department",
    "orgUnitId": "org_unit_id",
    "phone": "phone",
}
ORG_UNIT_FIELDS: dict[str, str] = {
    "name": "name",
    "parentId": "parent_id",
    "managerUserId": "manager_user_id",
}

_MAX_ORG_DEPTH = 1000  # a guard against a cycle in a hand-edited database
_DIGESTS_KEPT = 256  # digests remembered by revision (cleared whole when full)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY, name TEXT NOT NULL, revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS credit_costs (
    tenant_id TEXT NOT NULL, operation_code TEXT NOT NULL, cost TEXT NOT NULL,
    config_id TEXT NOT NULL, version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, operation_code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roles (
    tenant_id TEXT NOT NULL, role_id TEXT NOT NULL, permissions TEXT NOT NULL,
    version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, role_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_status (
    tenant_id TEXT NOT NULL, user_id TEXT NOT NULL, active INTEGER NOT NULL, roles TEXT NOT NULL,
    version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feature_flags (
    tenant_id TEXT NOT NULL, flag_key TEXT NOT NULL, enabled INTEGER NOT NULL, value TEXT NOT NULL,
    version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, flag_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profiles (
    tenant_id TEXT NOT NULL, user_id TEXT NOT NULL, display_name TEXT NOT NULL, email TEXT NOT NULL,
    title TEXT NOT NULL, department TEXT NOT NULL, org_unit_id TEXT NOT NULL, phone TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_units (
    tenant_id TEXT NOT NULL, org_unit_id TEXT NOT NULL, name TEXT NOT NULL,
    parent_id TEXT, manager_user_id TEXT, version INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, org_unit_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS org_units_by_parent ON org_units (tenant_id, parent_id);
"""


class StoreError(Exception):
    """A request the store cannot serve; `code` is the API error code."""

    code = "store_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TenantNotFoundError(StoreError):
    code = "tenant_not_found"


class NotFoundError(StoreError):
    code = "not_found"


class InvalidChangeError(StoreError):
    code = "invalid_change"


@dataclass(frozen=True)
class Change:
    """One entity changed by an admin write: what the notification is built from."""

    tenant_id: str
    kind: Kind
    key: str
    old: JsonObject | None  # None: the entity did not exist (or was deleted) before
    new: JsonObject | None  # None: the entity was deleted
    changed_fields: tuple[str, ...]
    version: int
    revision: int
    config_id: str | None = None  # credit costs only (the seed's `configId`)

    @property
    def deleted(self) -> bool:
        return self.new is None


@dataclass(frozen=True)
class _Table:
    """How one critical kind is stored and turned into its API item."""

    name: str
    key_column: str
    key_field: str
    columns: tuple[str, ...]  # value columns in row order after the key
    to_item: Callable[[sqlite3.Row], JsonObject]
    # JSON field of the item -> name used in an event's changedFields
    changed_names: dict[str, str]


def _credit_item(row: sqlite3.Row) -> JsonObject:
    return {"operationCode": row["operation_code"], "cost": row["cost"], "version": row["version"]}


def _role_item(row: sqlite3.Row) -> JsonObject:
    return {
        "roleId": row["role_id"],
        "permissions": json.loads(row["permissions"]),
        "version": row["version"],
    }


def _status_item(row: sqlite3.Row) -> JsonObject:
    return {
        "userId": row["user_id"],
        "active": bool(row["active"]),
        "roles": json.loads(row["roles"]),
        "version": row["version"],
    }


def _flag_item(row: sqlite3.Row) -> JsonObject:
    return {
        "flagKey": row["flag_key"],
        "enabled": bool(row["enabled"]),
        "value": row["value"],
        "version": row["version"],
    }


def _profile_item(row: sqlite3.Row) -> JsonObject:
    item = {field: row[column] for field, column in PROFILE_FIELDS.items()}
    return {"userId": row["user_id"], **item, "version": row["version"]}


_TABLES: dict[Kind, _Table] = {
    # credit_cost: the seed's own name for the field in changedFields
    Kind.CREDIT_COSTS: _Table(
        "credit_costs", "operation_code", "operationCode", ("cost",), _credit_item, {"cost": "credit_cost"}
    ),
    Kind.ROLE_PERMISSIONS: _Table(
        "roles", "role_id", "roleId", ("permissions",), _role_item, {"permissions": "permissions"}
    ),
    Kind.USER_STATUS: _Table(
        "user_status",
        "user_id",
        "userId",
        ("active", "roles"),
        _status_item,
        {"active": "active", "roles": "roles"},
    ),
    Kind.FEATURE_FLAGS: _Table(
        "feature_flags",
        "flag_key",
        "flagKey",
        ("enabled", "value"),
        _flag_item,
        {"enabled": "enabled", "value": "value"},
    ),
}


class Store:
    """All reads and writes of the development Wrapper's data.

    One connection guarded by a lock: the app calls the store from its event loop (each call
    takes microseconds), tests may call it from any thread.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self._lock = threading.Lock()
        # isolation_level=None: transactions are explicit (BEGIN/COMMIT in _tx).
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if path != ":memory:":
            # A dev database: WAL so readers never wait; NORMAL sync is durable enough here.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # (tenant, kind, bucket count) -> (revision, digest): recomputed only after a write
        self._digests: dict[tuple[str, Kind, int], tuple[int, digests.KindDigest]] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- seeding -------------------------------------------------------------------------

    def is_empty(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM tenants LIMIT 1").fetchone() is None

    def load(self, tenants: Iterable[TenantSeed]) -> int:
        """Replace the named tenants' data with the given rows (version 1, revision 1).

        Returns the number of tenants loaded. Each tenant is its own transaction, so a
        large scaled load never holds one giant transaction.
        """
        count = 0
        for seed in tenants:
            with self._tx() as db:
                self._load_one(db, seed)
            count += 1
        return count

    @staticmethod
    def _load_one(db: sqlite3.Connection, seed: TenantSeed) -> None:
        t = seed.tenant_id
        for table in ("credit_costs", "roles", "user_status", "feature_flags", "profiles", "org_units"):
            db.execute(f"DELETE FROM {table} WHERE tenant_id = ?", (t,))  # noqa: S608 (fixed names)
        db.execute("INSERT OR REPLACE INTO tenants VALUES (?, ?, 1)", (t, seed.name))
        db.executemany(
            "INSERT INTO credit_costs VALUES (?, ?, ?, ?, 1, 0)",
            ((t, r.operation_code, canonical_decimal(r.cost), r.config_id) for r in seed.credit_costs),
        )
        db.executemany(
            "INSERT INTO roles VALUES (?, ?, ?, 1, 0)",
            ((t, r.role_id, json.dumps(list(r.permissions))) for r in seed.roles),
        )
        db.executemany(
            "INSERT INTO user_status VALUES (?, ?, ?, ?, 1, 0)",
            ((t, r.user_id, int(r.active), json.dumps(list(r.roles))) for r in seed.users),
        )
        db.executemany(
            "INSERT INTO feature_flags VALUES (?, ?, ?, ?, 1, 0)",
            ((t, r.flag_key, int(r.enabled), r.value) for r in seed.flags),
        )
        db.executemany(
            "INSERT INTO profiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)", ((t, *r) for r in seed.profiles)
        )
        db.executemany("INSERT INTO org_units VALUES (?, ?, ?, ?, ?, 1)", ((t, *r) for r in seed.org_units))

    # ---- reads ---------------------------------------------------------------------------

    def tenants(self) -> list[JsonObject]:
        with self._lock:
            rows = self._db.execute("SELECT tenant_id, name FROM tenants ORDER BY tenant_id").fetchall()
        return [{"tenantId": r["tenant_id"], "name": r["name"]} for r in rows]

    def revision(self, tenant_id: str) -> int:
        with self._lock:
            return self._revision(self._db, tenant_id)

    def snapshot(self, tenant_id: str, kind: Kind) -> JsonObject:
        """All live items of a critical kind, with the tenant's revision (one transaction)."""
        table = _TABLES.get(kind)
        if table is None:
            raise NotFoundError(f"no snapshot for kind {kind!r}")
        with self._tx() as db:
            revision = self._revision(db, tenant_id)
            rows = db.execute(
                f"SELECT * FROM {table.name} WHERE tenant_id = ? AND deleted = 0",  # noqa: S608
                (tenant_id,),
            ).fetchall()
        return {
            "tenantId": tenant_id,
            "kind": str(kind),
            "revision": revision,
            "items": [table.to_item(row) for row in rows],
        }

    def digest(self, tenant_id: str, kind: Kind, bucket_count: int) -> tuple[int, digests.KindDigest]:
        """(revision, digest) of a critical kind: the anti-entropy contract's canonical form
        (core/digest.py), over the same items a snapshot serves."""
        slot = (tenant_id, kind, bucket_count)
        revision = self.revision(tenant_id)
        known = self._digests.get(slot)
        if known is not None and known[0] == revision:
            return known  # nothing written since: the same digest (a verifier asks often)
        snapshot = self.snapshot(tenant_id, kind)
        pairs = ((codec.key_of(kind, v), v) for v in (codec.parse_item(kind, i) for i in snapshot["items"]))
        computed = snapshot["revision"], digests.digest_of(pairs, bucket_count)
        if len(self._digests) >= _DIGESTS_KEPT:
            self._digests.clear()
        self._digests[slot] = computed
        return computed

    def bucket_snapshot(self, tenant_id: str, kind: Kind, bucket_count: int, bucket: int) -> JsonObject:
        """A snapshot of only the items whose keys fall in one digest bucket."""
        body = self.snapshot(tenant_id, kind)
        key_field = _TABLES[kind].key_field
        body["items"] = [i for i in body["items"] if digests.bucket_of(i[key_field], bucket_count) == bucket]
        return {**body, "bucketCount": bucket_count, "bucket": bucket}

    def item(self, tenant_id: str, kind: Kind, key: str) -> JsonObject:
        """One item as the item endpoint serves it; NotFoundError when absent or deleted."""
        with self._lock:
            if kind in (Kind.USER_PROFILES, Kind.ORG_UNITS):
                return self._item_in_tx(self._db, tenant_id, kind, key)
            self._revision(self._db, tenant_id)  # TenantNotFoundError before NotFoundError
            table = _TABLES[kind]
            row = self._row(self._db, table, tenant_id, key)
            if row is None or row["deleted"]:
                raise NotFoundError(f"no {kind} item {key!r}")
            return table.to_item(row)

    @staticmethod
    def _revision(db: sqlite3.Connection, tenant_id: str) -> int:
        row = db.execute("SELECT revision FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
        if row is None:
            raise TenantNotFoundError(f"no tenant {tenant_id!r}")
        revision: int = row["revision"]
        return revision

    @staticmethod
    def _row(db: sqlite3.Connection, table: _Table, tenant_id: str, key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = db.execute(
            f"SELECT * FROM {table.name} WHERE tenant_id = ? AND {table.key_column} = ?",  # noqa: S608
            (tenant_id, key),
        ).fetchone()
        return row

    def _org_unit_item(self, db: sqlite3.Connection, tenant_id: str, unit_id: str) -> JsonObject:
        row = self._org_row(db, tenant_id, unit_id)
        if row is None:
            raise NotFoundError(f"no org unit {unit_id!r}")
        ancestors: list[JsonObject] = []
        parent_id: str | None = row["parent_id"]
        while parent_id is not None and len(ancestors) < _MAX_ORG_DEPTH:
            parent = self._org_row(db, tenant_id, parent_id)
            if parent is None:
                break
            ancestors.append({"orgUnitId": parent["org_unit_id"], "name": parent["name"]})
            parent_id = parent["parent_id"]
        children = db.execute(
            "SELECT org_unit_id, name FROM org_units WHERE tenant_id = ? AND parent_id = ? "
            "ORDER BY org_unit_id",
            (tenant_id, unit_id),
        ).fetchall()
        return {
            "orgUnitId": row["org_unit_id"],
            "name": row["name"],
            "parentId": row["parent_id"],
            "managerUserId": row["manager_user_id"],
            "ancestors": ancestors,
            "children": [{"orgUnitId": c["org_unit_id"], "name": c["name"]} for c in children],
            "version": row["version"],
        }

    @staticmethod
    def _org_row(db: sqlite3.Connection, tenant_id: str, unit_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM org_units WHERE tenant_id = ? AND org_unit_id = ?", (tenant_id, unit_id)
        ).fetchone()
        return row

    # ---- writes (each bumps the entity's version and the tenant's revision) ---------------

    def put_credit_cost(self, tenant_id: str, operation_code: str, cost: str) -> Change:
        """Create or update; `cost` is any exact decimal text (stored canonical)."""
        canonical = canonical_decimal(cost)
        if canonical.startswith("-"):
            raise InvalidChangeError("cost must not be negative")
        return self._put(Kind.CREDIT_COSTS, tenant_id, operation_code, (canonical,))

    def put_role(self, tenant_id: str, role_id: str, permissions: Iterable[str]) -> Change:
        return self._put(Kind.ROLE_PERMISSIONS, tenant_id, role_id, (json.dumps(list(permissions)),))

    def put_user_status(self, tenant_id: str, user_id: str, active: bool, roles: Iterable[str]) -> Change:
        return self._put(Kind.USER_STATUS, tenant_id, user_id, (int(active), json.dumps(list(roles))))

    def put_feature_flag(self, tenant_id: str, flag_key: str, enabled: bool, value: str) -> Change:
        return self._put(Kind.FEATURE_FLAGS, tenant_id, flag_key, (int(enabled), value))

    def delete(self, tenant_id: str, kind: Kind, key: str) -> Change:
        """Tombstone an item of a critical kind; NotFoundError when it is absent already."""
        table = _TABLES.get(kind)
        if table is None:
            raise NotFoundError(f"{kind} items cannot be deleted")
        with self._tx() as db:
            self._revision(db, tenant_id)
            row = self._row(db, table, tenant_id, key)
            if row is None or row["deleted"]:
                raise NotFoundError(f"no {kind} item {key!r}")
            version = row["version"] + 1
            db.execute(
                f"UPDATE {table.name} SET deleted = 1, version = ? "  # noqa: S608
                f"WHERE tenant_id = ? AND {table.key_column} = ?",
                (version, tenant_id, key),
            )
            revision = self._bump(db, tenant_id)
        return Change(
            tenant_id,
            kind,
            key,
            table.to_item(row),
            None,
            tuple(table.changed_names.values()),
            version,
            revision,
            _config_id(row),
        )

    def _put(self, kind: Kind, tenant_id: str, key: str, values: tuple[Any, ...]) -> Change:
        table = _TABLES[kind]
        with self._tx() as db:
            self._revision(db, tenant_id)
            row = self._row(db, table, tenant_id, key)
            old = table.to_item(row) if row is not None and not row["deleted"] else None
            version = (row["version"] if row is not None else 0) + 1
            if kind is Kind.CREDIT_COSTS:
                # configId stays with the entity for its whole life, like the seed's cfg-789.
                config_id = _config_id(row) or f"cfg-{tenant_id}-{key}"
                values = (*values, config_id)
            columns = (table.key_column, *table.columns) + (
                ("config_id",) if kind is Kind.CREDIT_COSTS else ()
            )
            marks = ", ".join("?" for _ in range(len(columns) + 3))
            db.execute(
                f"INSERT OR REPLACE INTO {table.name} "  # noqa: S608 (fixed names)
                f"(tenant_id, {', '.join(columns)}, version, deleted) VALUES ({marks})",
                (tenant_id, key, *values, version, 0),
            )
            revision = self._bump(db, tenant_id)
            new_row = self._row(db, table, tenant_id, key)
        assert new_row is not None
        new = table.to_item(new_row)
        return Change(
            tenant_id, kind, key, old, new, _changed(table, old, new), version, revision, _config_id(new_row)
        )

    def patch_profile(self, tenant_id: str, user_id: str, fields: Mapping[str, str]) -> Change:
        """Set some profile fields (JSON names, see PROFILE_FIELDS); the profile must exist."""
        unknown = set(fields) - set(PROFILE_FIELDS)
        if unknown or not fields:
            raise InvalidChangeError(f"profile fields must be some of {sorted(PROFILE_FIELDS)}")
        if not all(isinstance(value, str) for value in fields.values()):
            raise InvalidChangeError("profile fields must be strings")
        with self._tx() as db:
            old = self._item_in_tx(db, tenant_id, Kind.USER_PROFILES, user_id)
            names = [f for f in PROFILE_FIELDS if f in fields]
            sets = ", ".join(f"{PROFILE_FIELDS[f]} = ?" for f in names)
            db.execute(
                f"UPDATE profiles SET {sets}, version = version + 1 "  # noqa: S608 (fixed names)
                "WHERE tenant_id = ? AND user_id = ?",
                (*(fields[f] for f in names), tenant_id, user_id),
            )
            revision = self._bump(db, tenant_id)
            new = self._item_in_tx(db, tenant_id, Kind.USER_PROFILES, user_id)
        return Change(
            tenant_id, Kind.USER_PROFILES, user_id, old, new, tuple(names), new["version"], revision
        )

    def patch_org_unit(self, tenant_id: str, unit_id: str, fields: Mapping[str, str | None]) -> list[Change]:
        """Set some of name / parentId / managerUserId of an existing unit.

        A move (parentId) changes the children of the old and the new parent too: those
        units get a version bump and a Change of their own (changedFields ["children"]), so
        every consumer whose cached copy lists the wrong children hears about it.
        """
        unknown = set(fields) - set(ORG_UNIT_FIELDS)
        if unknown or not fields:
            raise InvalidChangeError(f"org unit fields must be some of {sorted(ORG_UNIT_FIELDS)}")
        if "name" in fields and not isinstance(fields["name"], str):
            raise InvalidChangeError("name must be a string")
        with self._tx() as db:
            old = self._item_in_tx(db, tenant_id, Kind.ORG_UNITS, unit_id)
            moved_from: str | None = old["parentId"]
            moved = "parentId" in fields and fields["parentId"] != moved_from
            if moved:
                self._check_new_parent(db, tenant_id, unit_id, fields["parentId"])
            names = [f for f in ORG_UNIT_FIELDS if f in fields]
            sets = ", ".join(f"{ORG_UNIT_FIELDS[f]} = ?" for f in names)
            db.execute(
                f"UPDATE org_units SET {sets}, version = version + 1 "  # noqa: S608 (fixed names)
                "WHERE tenant_id = ? AND org_unit_id = ?",
                (*(fields[f] for f in names), tenant_id, unit_id),
            )
            revision = self._bump(db, tenant_id)
            new = self._item_in_tx(db, tenant_id, Kind.ORG_UNITS, unit_id)
            changes = [
                Change(tenant_id, Kind.ORG_UNITS, unit_id, old, new, tuple(names), new["version"], revision)
            ]
            if moved:
                parents = [p for p in (moved_from, fields["parentId"]) if p is not None]
                changes += [self._touch_org_unit(db, tenant_id, p, revision) for p in parents]
        return changes

    def _touch_org_unit(self, db: sqlite3.Connection, tenant_id: str, unit_id: str, revision: int) -> Change:
        old = self._item_in_tx(db, tenant_id, Kind.ORG_UNITS, unit_id)
        db.execute(
            "UPDATE org_units SET version = version + 1 WHERE tenant_id = ? AND org_unit_id = ?",
            (tenant_id, unit_id),
        )
        new = self._item_in_tx(db, tenant_id, Kind.ORG_UNITS, unit_id)
        return Change(tenant_id, Kind.ORG_UNITS, unit_id, old, new, ("children",), new["version"], revision)

    def _check_new_parent(
        self, db: sqlite3.Connection, tenant_id: str, unit_id: str, parent_id: str | None
    ) -> None:
        # Walk up from the new parent: meeting the unit itself would make a cycle.
        cursor = parent_id
        for _ in range(_MAX_ORG_DEPTH):
            if cursor is None:
                return
            if cursor == unit_id:
                raise InvalidChangeError("an org unit cannot move under itself or its descendants")
            row = self._org_row(db, tenant_id, cursor)
            if row is None:
                raise InvalidChangeError(f"no org unit {cursor!r} to be the parent")
            cursor = row["parent_id"]
        raise InvalidChangeError("org tree too deep")

    def _item_in_tx(self, db: sqlite3.Connection, tenant_id: str, kind: Kind, key: str) -> JsonObject:
        # Profiles and org units, for callers that already hold the lock.
        self._revision(db, tenant_id)
        if kind is Kind.ORG_UNITS:
            return self._org_unit_item(db, tenant_id, key)
        row = db.execute(
            "SELECT * FROM profiles WHERE tenant_id = ? AND user_id = ?", (tenant_id, key)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no profile for user {key!r}")
        return _profile_item(row)

    @staticmethod
    def _bump(db: sqlite3.Connection, tenant_id: str) -> int:
        row = db.execute(
            "UPDATE tenants SET revision = revision + 1 WHERE tenant_id = ? RETURNING revision", (tenant_id,)
        ).fetchone()
        revision: int = row["revision"]
        return revision


def _config_id(row: sqlite3.Row | None) -> str | None:
    if row is None or "config_id" not in row.keys():  # noqa: SIM118 (sqlite3.Row has no __contains__ on names)
        return None
    config_id: str = row["config_id"]
    return config_id


def _changed(table: _Table, old: JsonObject | None, new: JsonObject) -> tuple[str, ...]:
    """The changedFields of a PUT: the fields that differ; all of them on a create or a no-op."""
    names = table.changed_names
    if old is None:
        return tuple(names.values())
    differ = tuple(name for field, name in names.items() if old[field] != new[field])
    return differ or tuple(names.values())
