"""`hybridcache stats`: GetCacheStats as a table an operator can read at a glance."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from google.protobuf import json_format

from hybridcache.client import HybridCacheError
from hybridcache.server.ops.cli.target import TargetError, add_target_options, connect
from hybridcache.v1 import hybridcache_pb2 as pb

COLUMNS = (
    "KIND",
    "TIER",
    "HITS",
    "MISSES",
    "STALE",
    "HIT %",
    "FETCHES",
    "ERRORS",
    "FETCH ms",
    "ENTRIES",
    "TTL s",
)


def add_stats_command(commands: Any) -> None:
    parser = commands.add_parser("stats", help="a running server's cache counters (GetCacheStats) as a table")
    add_target_options(parser)
    parser.add_argument("--json", action="store_true", help="print the response as JSON instead")
    parser.set_defaults(run=stats_command)


def kind_name(kind: int) -> str:
    """KIND_CREDIT_COSTS -> credit-costs (the name the metrics and the configuration use)."""
    return pb.Kind.Name(kind).removeprefix("KIND_").lower().replace("_", "-")  # type: ignore[arg-type]


def _row(kind: pb.KindStats) -> list[str]:
    reads = kind.hits + kind.misses + kind.stale
    return [
        kind_name(kind.kind),
        kind.tier,
        f"{kind.hits:,}",
        f"{kind.misses:,}",
        f"{kind.stale:,}",
        f"{100 * kind.hits / reads:.1f}" if reads else "-",
        f"{kind.fetches:,}",
        f"{kind.fetch_errors:,}",
        f"{kind.fetch_latency_ms_mean:.1f}" if kind.fetches else "-",
        f"{kind.entries:,}",
        f"{kind.ttl_ms / 1000:g}" if kind.ttl_ms else "-",
    ]


def render(target: str, stats: pb.GetCacheStatsResponse) -> str:
    freshness = pb.Freshness.Name(stats.freshness).removeprefix("FRESHNESS_")
    tenants = ", ".join(sorted(stats.loaded_tenant_ids)) or "(none loaded)"
    header = [
        f"{target}  freshness {freshness}",
        f"tenants loaded: {tenants}",
        f"events applied {stats.events_applied:,}, rejected {stats.events_rejected:,}",
        "",
    ]
    rows = [list(COLUMNS), *(_row(kind) for kind in stats.kinds)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(header + lines)


def stats_command(args: argparse.Namespace) -> int:
    try:
        with connect(args) as client:
            stats = client.get_cache_stats()
    except TargetError as exc:
        print(f"hybridcache stats: {exc}", file=sys.stderr)
        return 2
    except HybridCacheError as exc:
        print(f"hybridcache stats: {args.target}: {exc.code.name}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json_format.MessageToJson(stats, preserving_proto_field_name=True))
    else:
        print(render(args.target, stats))
    return 0
