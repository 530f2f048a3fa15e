"""`hybridcache wrapper-check`: does a real Wrapper answer the way its mapping says? Read-only.

For each kind of the mapping it lists the tenant's entities (every page), lists them again
(versions and revision must not go back), fetches one entity and compares it with the
list, fetches an id that cannot exist (it must be a 404 "not found") and an unknown
tenant (a 404 the mapping's `not_found` convention tells apart). It prints one row per
check and a verdict; exit 0 when nothing failed, 1 when something did, 2 when it could not
start (a bad option, mapping or token file). It goes through the service's own Wrapper
client, so what it accepts is exactly what the service accepts.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from hybridcache.client.reasons import Reason
from hybridcache.server.core.errors import NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.source import Snapshot
from hybridcache.server.wrapper.client import WrapperClient
from hybridcache.server.wrapper.mapping import DEFAULT_MAP, KindMap, MappingError, WrapperMap, load_map

OK, WARN, FAIL, SKIP = "ok", "WARN", "FAIL", "skip"
T = TypeVar("T")

# What to fix, by the reason the Wrapper client gave.
_FIX: dict[str, str] = {
    Reason.WRAPPER_BAD_RESPONSE: "the JSON is not where the mapping says: check items, fields, item",
    Reason.WRAPPER_REJECTED: "the token was refused (401/403): check --token-file",
    Reason.WRAPPER_ERROR: "the Wrapper failed or answered an unexpected status",
    Reason.WRAPPER_TIMEOUT: "the Wrapper did not answer within --timeout",
    Reason.WRAPPER_UNREACHABLE: "cannot connect: check --url",
}


_NEXT = {"cursor": "next", "offset": "total", "none": "style"}


@dataclass(frozen=True)
class Row:
    kind: str
    check: str
    status: str
    detail: str


@dataclass
class Check:
    client: WrapperClient
    mapping: WrapperMap
    tenant: str
    keys: dict[Kind, str]
    bytes_read: list[int]
    rows: list[Row]

    def add(self, kind: Kind | str, check: str, status: str, detail: str) -> None:
        self.rows.append(Row(str(kind), check, status, detail))

    def run(self) -> None:
        for kind, entry in self.mapping.kinds.items():
            snapshot = self._list(kind, entry)
            self._fetch(kind, snapshot)
            self._absent(kind)

    def _timed(self, call: Callable[[], T]) -> tuple[T, float, int]:
        before, started = self.bytes_read[0], time.monotonic()
        result = call()
        return result, (time.monotonic() - started) * 1000, self.bytes_read[0] - before

    def _list(self, kind: Kind, entry: KindMap) -> Snapshot | None:
        if entry.list is None:
            self.add(kind, "list", SKIP, "no list endpoint in the mapping (the kind can only be on-demand)")
            return None
        endpoint, paging = entry.list.url, entry.list.paging
        pages_before = self.client.pages_loaded
        try:
            snapshot, ms, size = self._timed(lambda: self.client.fetch_snapshot(self.tenant, kind, None))
        except NotFound as exc:
            self.add(
                kind,
                "list",
                FAIL,
                f"GET {endpoint}: 404 ({exc.reason}): the URL template or the tenant is wrong",
            )
            return None
        except WrapperUnavailable as exc:
            self.add(kind, "list", FAIL, f"GET {endpoint}: {exc} ({_FIX.get(exc.reason, exc.reason)})")
            return None
        pages = self.client.pages_loaded - pages_before
        self.add(
            kind,
            "list",
            OK,
            f"GET {endpoint}: {len(snapshot.items)} items, revision {snapshot.revision}, {pages} page(s) "
            f"({paging.style}), {ms:.0f} ms, {size / 1024:.1f} KiB",
        )
        if paging.style != "none" and pages == 1 and len(snapshot.items) >= paging.limit:
            self.add(
                kind,
                "paging",
                FAIL,
                f"a full page of {paging.limit} but no next page: check paging.{_NEXT[paging.style]}",
            )
        versions = [value.version for value in snapshot.items.values()]
        if versions and not any(versions):
            self.add(
                kind, "versions", WARN, "every version is 0: changes cannot be ordered; map fields.version"
            )
        self._again(kind, snapshot)
        return snapshot

    def _again(self, kind: Kind, first: Snapshot) -> None:
        try:
            second = self.client.fetch_snapshot(self.tenant, kind, None)
        except (NotFound, WrapperUnavailable) as exc:
            self.add(kind, "versions", FAIL, f"the second list failed: {exc}")
            return
        back = [
            key
            for key, value in first.items.items()
            if key in second.items and second.items[key].version < value.version
        ]
        if second.revision < first.revision or back:
            what = (
                f"revision {first.revision} -> {second.revision}"
                if second.revision < first.revision
                else f"{len(back)} item(s), e.g. {back[0]!r}"
            )
            self.add(
                kind, "versions", FAIL, f"went back between two lists ({what}): versions must never decrease"
            )
        else:
            self.add(kind, "versions", OK, "monotonic over two lists")

    def _fetch(self, kind: Kind, snapshot: Snapshot | None) -> None:
        key = self.keys.get(kind) or (min(snapshot.items) if snapshot and snapshot.items else None)
        endpoint = self.mapping.kinds[kind].fetch.url
        if key is None:
            self.add(kind, "fetch", SKIP, f"GET {endpoint}: no id to try (pass --key {kind}=ID)")
            return
        try:
            value, ms, _ = self._timed(lambda: self.client.fetch_item(self.tenant, kind, key, None))
        except NotFound as exc:
            self.add(
                kind, "fetch", FAIL, f"GET {endpoint} with {key!r}: 404 ({exc.reason}) for an id that exists"
            )
            return
        except WrapperUnavailable as exc:
            self.add(
                kind,
                "fetch",
                FAIL,
                f"GET {endpoint} with {key!r}: {exc} ({_FIX.get(exc.reason, exc.reason)})",
            )
            return
        if snapshot is not None and key in snapshot.items and snapshot.items[key] != value:
            self.add(
                kind,
                "fetch",
                FAIL,
                f"GET {endpoint} with {key!r}: differs from the list's entity (fields mapped alike?)",
            )
            return
        self.add(kind, "fetch", OK, f"GET {endpoint} with {key!r}: {ms:.0f} ms, version {value.version}")

    def _absent(self, kind: Kind) -> None:
        absent = f"hybridcache-check-absent-{secrets.token_hex(4)}"
        for what, tenant, wanted in (
            ("404 item", self.tenant, Reason.NOT_FOUND),
            ("404 tenant", f"hybridcache-check-no-tenant-{secrets.token_hex(4)}", Reason.TENANT_NOT_FOUND),
        ):
            try:
                self.client.fetch_item(tenant, kind, absent, None)
            except NotFound as exc:
                if exc.reason == wanted:
                    self.add(kind, what, OK, f"404, read as {wanted}")
                else:  # an unknown tenant read as an absent item: cached as a miss, not refused
                    self.add(
                        kind,
                        what,
                        WARN,
                        f"404 read as {exc.reason}, not {wanted}: check not_found.code / tenant_code",
                    )
            except WrapperUnavailable as exc:
                self.add(
                    kind, what, FAIL, f"answered {exc.reason} ({exc}), not a 404: an absent id must be a 404"
                )
            else:
                self.add(kind, what, FAIL, "answered 200 for an id that cannot exist: it must be a 404")


def print_table(rows: list[Row], out: TextIO) -> None:
    widths = [
        max(len(getattr(row, f)) for row in [Row("kind", "check", "result", ""), *rows])
        for f in ("kind", "check", "status")
    ]
    for row in [Row("kind", "check", "result", "detail"), *rows]:
        print(
            f"{row.kind:<{widths[0]}}  {row.check:<{widths[1]}}  {row.status:<{widths[2]}}  {row.detail}",
            file=out,
        )


def verdict(rows: list[Row], out: TextIO) -> int:
    failed = [row for row in rows if row.status == FAIL]
    warned = [row for row in rows if row.status == WARN]
    if failed:
        print(
            f"\nwrapper-check: FAIL: {len(failed)} check(s) failed, {len(warned)} warning(s). To fix:",
            file=out,
        )
        for row in failed + warned:
            print(f"  - {row.kind} {row.check}: {row.detail}", file=out)
        return 1
    print(f"\nwrapper-check: PASS ({len(rows)} checks, {len(warned)} warning(s))", file=out)
    for row in warned:
        print(f"  - {row.kind} {row.check}: {row.detail}", file=out)
    return 0


def register(commands: Any) -> None:
    """Add `wrapper-check` to the `hybridcache` command line (cli.py)."""
    cmd = commands.add_parser("wrapper-check", help="check a real Wrapper against its mapping (read-only)")
    cmd.add_argument("--url", required=True, help="the Wrapper's base URL")
    cmd.add_argument("--token-file", required=True, help="file holding the Wrapper's bearer token")
    cmd.add_argument("--map", default=None, help="the mapping file (default: hybridcache's own Wrapper API)")
    cmd.add_argument("--tenant", required=True, help="a tenant the Wrapper has")
    cmd.add_argument(
        "--key", action="append", default=[], metavar="KIND=ID", help="an id to fetch (repeatable)"
    )
    cmd.add_argument("--timeout", type=float, default=5.0, help="longest single call, seconds")
    cmd.add_argument(
        "--events", type=float, default=0, metavar="SECONDS", help="also listen to notifications"
    )
    cmd.add_argument("--redis-url", default=None, help="the Wrapper's Redis (needed with --events)")
    cmd.add_argument("--app", action="append", default=None, help="app part of the channels (default crm)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # (looked up now: a test may have replaced it)
    try:
        mapping = load_map(args.map) if args.map else DEFAULT_MAP
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
        keys = {Kind(kind): key for kind, _, key in (item.partition("=") for item in args.key)}
    except MappingError as exc:
        print(f"hybridcache wrapper-check: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"hybridcache wrapper-check: cannot read {args.token_file}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    except ValueError as exc:
        print(f"hybridcache wrapper-check: --key: {exc}", file=sys.stderr)
        return 2
    if args.events > 0 and not args.redis_url:
        print("hybridcache wrapper-check: --events needs --redis-url", file=sys.stderr)
        return 2
    bytes_read = [0]

    def count(body: bytes) -> None:
        bytes_read[0] += len(body)

    try:
        client = WrapperClient(
            args.url, token, timeout_s=args.timeout, retries=0, mapping=mapping, on_body=count
        )
    except ValueError as exc:  # not an http(s) URL with a host
        print(f"hybridcache wrapper-check: --url: {exc}", file=sys.stderr)
        return 2
    check = Check(client, mapping, args.tenant, keys, bytes_read, [])
    try:
        check.run()
    finally:
        client.close()
    if args.events > 0:
        from hybridcache.server.wrapper.events_check import listen  # noqa: PLC0415 (redis only here)

        for name, status, detail in listen(args.redis_url, args.app or ["crm"], args.events):
            check.add("(all)", name, status, detail)
    print_table(check.rows, out)
    return verdict(check.rows, out)
