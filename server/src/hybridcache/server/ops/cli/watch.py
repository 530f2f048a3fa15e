"""`hybridcache watch`: the change feed of a running server, filtered, one line per change,
with a progress line (changes seen, rate, resyncs, last heartbeat, resume token).

Changes go to stdout (pipe them, grep them); the progress line goes to stderr, rewritten in
place on a terminal and printed as a line at each heartbeat otherwise. The stream resumes
by itself after a disconnect (the shipped client's `watch()`); Ctrl-C ends it with a summary
and the resume token to continue from (`--resume`).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from google.protobuf import json_format

from hybridcache.client import HybridCacheError
from hybridcache.server.ops.cli.stats import kind_name
from hybridcache.server.ops.cli.target import TargetError, add_target_options, connect
from hybridcache.v1 import hybridcache_pb2 as pb

KINDS = {kind_name(value): value for value in pb.Kind.values() if value != pb.KIND_UNSPECIFIED}


def add_watch_command(commands: Any) -> None:
    parser = commands.add_parser(
        "watch", help="a running server's change feed (WatchChanges), filtered, live"
    )
    add_target_options(parser)
    parser.add_argument("--tenant", action="append", default=[], help="only this tenant (repeatable)")
    parser.add_argument(
        "--kind", action="append", default=[], choices=sorted(KINDS), help="only this kind (repeatable)"
    )
    parser.add_argument("--prefix", default="", help="only keys starting with this")
    parser.add_argument("--resume", default=None, help="continue after this resume token")
    parser.add_argument("--count", type=int, default=0, help="stop after this many changes (0: never)")
    parser.add_argument("--json", action="store_true", help="one JSON object per change instead of a line")
    parser.set_defaults(run=watch_command)


def describe_value(event: pb.ChangeEvent) -> str:
    which = event.WhichOneof("new_value")
    if event.deleted:
        return "deleted"
    if which == "credit_cost":
        return f"cost={event.credit_cost.cost.value}"
    if which == "role_permissions":
        return f"grants={','.join(event.role_permissions.permissions)}"
    if which == "user_status":
        roles = ",".join(event.user_status.role_ids)
        return f"active={str(event.user_status.active).lower()} roles={roles}"
    if which == "feature_flag":
        flag = event.feature_flag
        return f"enabled={str(flag.enabled).lower()}" + (f" value={flag.value}" if flag.value else "")
    return "resync: re-read the kind" if event.resync else "invalidated"


def change_line(event: pb.ChangeEvent) -> str:
    when = event.event_time.ToDatetime(tzinfo=UTC) if event.HasField("event_time") else datetime.now(UTC)
    keys = ",".join(event.keys) or "*"
    version = f"v{event.version}" if event.version else "v?"
    source = f"  ({event.event_type})" if event.event_type else ""
    return (
        f"{when.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}  #{event.sequence}  "
        f"{event.tenant_id}  {kind_name(event.kind)}  {keys}  {version}  {describe_value(event)}{source}"
    )


class Progress:
    """The progress line: what the stream has done so far."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.changes = 0
        self.resyncs = 0
        self.last_heartbeat: float | None = None
        self.sequence = 0
        self.token = ""

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        beat = (
            "none yet"
            if self.last_heartbeat is None
            else f"{time.monotonic() - self.last_heartbeat:.0f}s ago"
        )
        return (
            f"{self.changes} changes ({self.changes / elapsed:.1f}/s), {self.resyncs} resyncs, "
            f"sequence {self.sequence}, heartbeat {beat}, resume token {self.token or '-'}"
        )

    def show(self, *, final: bool = False) -> None:
        with self._lock:
            if self._tty and not final:
                self._out.write("\r\x1b[K" + self.line())
            else:
                self._out.write(("\r\x1b[K" if self._tty else "") + self.line() + "\n")
            self._out.flush()

    def heartbeat(self, progress: pb.Progress) -> None:
        self.last_heartbeat = time.monotonic()
        self.sequence, self.token = progress.sequence, progress.resume_token
        self.show()

    def resync(self, reason: str) -> None:
        self.resyncs += 1
        with self._lock:
            self._out.write(("\r\x1b[K" if self._tty else "") + f"RESYNC REQUIRED: {reason}\n")
        self.show()

    def change(self, event: pb.ChangeEvent) -> None:
        self.changes += 1
        self.sequence, self.token = event.sequence, event.resume_token
        if self._tty:
            self.show()


def watch_command(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr)
    try:
        client = connect(args)
    except TargetError as exc:
        print(f"hybridcache watch: {exc}", file=sys.stderr)
        return 2
    with client:
        stream = client.watch(
            tenant_ids=args.tenant,
            kinds=[KINDS[k] for k in args.kind],
            key_prefix=args.prefix,
            resume_token=args.resume,
            on_resync=progress.resync,
            on_progress=progress.heartbeat,
        )
        print(f"watching {args.target} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            for event in stream:
                if args.json:
                    print(json_format.MessageToJson(event, preserving_proto_field_name=True, indent=None))
                else:
                    print(change_line(event))
                sys.stdout.flush()
                progress.change(event)
                if args.count and progress.changes >= args.count:
                    break
        except HybridCacheError as exc:
            print(f"\nhybridcache watch: {args.target}: {exc.code.name}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            pass
        finally:
            stream.close()
    progress.show(final=True)
    return 0
