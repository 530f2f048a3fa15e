#!/usr/bin/env python3
"""Generate deploy/grafana/hybridcache.json, the Grafana dashboard of hybridcache.

    .venv/bin/python deploy/grafana/generate.py           # rewrite the JSON
    .venv/bin/python deploy/grafana/generate.py --check   # exit 1 when the JSON has drifted

The panels are written here as data (title, what it tells an operator, PromQL), so every
panel has the same datasource, legend and layout rules, and the JSON is never edited by
hand. A few functions are enough for that; a dashboard SDK would add a dependency for what
is 20 panels of plain JSON. tests/integration/test_monitoring.py checks that every query
names only metrics of deploy/prometheus/metrics.yml, which it holds to a running server's
/metrics. docs/OPERATIONS.md explains each panel.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "hybridcache.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
INSTANCE = 'instance=~"$instance"'
WIDTH = 24  # Grafana's grid is 24 columns wide


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: list[Panel]


def selector(metric: str, match: str = "") -> str:
    """`metric{instance=~"$instance",match}`: every query follows the dashboard's instance choice."""
    return f"{metric}{{{INSTANCE}{',' + match if match else ''}}}"


def rate_by(by: str, metric: str, match: str = "") -> str:
    return f"sum by ({by}) (rate({selector(metric, match)}[$__rate_interval]))"


def increase_by(by: str, metric: str) -> str:
    return f"sum by ({by}) (increase({selector(metric)}[$__rate_interval]))"


def quantiles(metric: str, by: str, match: str, legend: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, {rate_by(by + ', le', metric + '_bucket', match)})",
            f"p{round(q * 100)} {legend}",
        )
        for q in (0.5, 0.99)
    ]


UNARY = 'grpc_method!="WatchChanges"'

ROWS = [
    Row(
        "RPCs",
        [
            Panel(
                "RPC rate per method",
                "Calls completed per second, by method (every status code).",
                [
                    (
                        rate_by("grpc_method", "grpc_server_handled_total"),
                        "{{grpc_method}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "RPC errors per method and code",
                "Calls per second that did not end OK, by method and gRPC code. INVALID_ARGUMENT, "
                "NOT_FOUND, PERMISSION_DENIED and UNAUTHENTICATED are callers' mistakes; UNAVAILABLE, "
                "INTERNAL, UNKNOWN and DEADLINE_EXCEEDED are the service's (alert HybridcacheRpcErrors).",
                [
                    (
                        rate_by("grpc_method, grpc_code", "grpc_server_handled_total", 'grpc_code!="OK"'),
                        "{{grpc_method}} {{grpc_code}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "RPC latency per method (p50, p99)",
                "Server-side handling time of unary RPCs (WatchChanges is a stream, left out). Replica "
                "reads take well under a millisecond; on-demand reads that miss wait for the Wrapper.",
                quantiles("grpc_server_handling_seconds", "grpc_method", UNARY, "{{grpc_method}}"),
                unit="s",
            ),
            Panel(
                "Calls refused by caller limits",
                "Calls per second refused RESOURCE_EXHAUSTED by a caller's rate limit or in-flight cap.",
                [
                    (
                        rate_by("limit", "hybridcache_rate_limited_total"),
                        "{{limit}}",
                    )
                ],
                unit="reqps",
                width=12,
            ),
            Panel(
                "Calls in progress",
                "RPCs started minus RPCs completed: calls in progress, open WatchChanges streams included.",
                [
                    (
                        f"sum({selector('grpc_server_started_total')})"
                        f" - sum({selector('grpc_server_handled_total')})",
                        "in progress",
                    )
                ],
                width=12,
            ),
        ],
    ),
    Row(
        "Cache",
        [
            Panel(
                "Hit ratio per kind",
                "Share of reads answered from memory, by kind. Replicated kinds stay at 100% (a miss "
                "there is an unknown key); on-demand kinds depend on TTL and traffic.",
                [
                    (
                        rate_by("kind", "hybridcache_cache_requests_total", 'result="hit"')
                        + " / "
                        + rate_by("kind", "hybridcache_cache_requests_total"),
                        "{{kind}}",
                    )
                ],
                unit="percentunit",
                extra={"min": 0, "max": 1},
            ),
            Panel(
                "Reads per kind and result",
                "Reads per second by kind and result: hit (memory), miss (needed the Wrapper), stale "
                "(served past its TTL because the Wrapper failed).",
                [
                    (
                        rate_by("kind, result", "hybridcache_cache_requests_total"),
                        "{{kind}} {{result}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Entries and TTL per kind",
                "Entries held per kind (largest instance), and the adaptive TTL of on-demand kinds.",
                [
                    (f"max by (kind) ({selector('hybridcache_cache_entries')})", "{{kind}} entries"),
                    (f"max by (kind) ({selector('hybridcache_cache_ttl_seconds')})", "{{kind}} TTL (s)"),
                ],
            ),
        ],
    ),
    Row(
        "Freshness",
        [
            Panel(
                "Freshness per instance",
                "1 (LIVE): change notifications flowing and the replica resynced; 0 (DEGRADED): answers "
                "may miss changes since their age (alert HybridcacheFreshnessDegraded after 5 min).",
                [(f"min by (instance) ({selector('hybridcache_freshness_live')})", "{{instance}}")],
                kind="state-timeline",
                extra={
                    "mappings": [
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "DEGRADED", "color": "red"},
                                "1": {"text": "LIVE", "color": "green"},
                            },
                        }
                    ]
                },
                width=12,
            ),
            Panel(
                "Replica age per tenant",
                "Seconds since each tenant's replica was last loaded from a Wrapper snapshot (oldest "
                "instance). It saws up to the refresh interval (600 s by default) and drops at every "
                "load; above 30 min, loads are failing (alert HybridcacheReplicaNotRefreshed).",
                [
                    (
                        "max by (tenant) ("
                        + selector("hybridcache_replica_age_seconds", 'tenant=~"$tenant"')
                        + ")",
                        "{{tenant}}",
                    )
                ],
                unit="s",
                width=12,
            ),
            Panel(
                "Resyncs and subscription gaps",
                "Full replica resyncs, subscription gaps (times notifications may have been missed), "
                "Redis reconnects and failed tenant resyncs per interval. One resync per refresh "
                "interval is normal; many mean a flapping subscription (alert HybridcacheResyncStorm); "
                "failed resyncs keep answers DEGRADED until one succeeds (the Wrapper's snapshots).",
                [
                    (
                        increase_by("instance", "hybridcache_resyncs_total"),
                        "{{instance}} resyncs",
                    ),
                    (
                        increase_by("instance", "hybridcache_subscription_gaps_total"),
                        "{{instance}} gaps",
                    ),
                    (
                        increase_by("instance", "hybridcache_redis_reconnects_total"),
                        "{{instance}} reconnects",
                    ),
                    (
                        increase_by("instance", "hybridcache_resync_failures_total"),
                        "{{instance}} failed resyncs",
                    ),
                ],
                width=24,
                height=7,
            ),
        ],
    ),
    Row(
        "Change notifications",
        [
            Panel(
                "Event lag (p50, p99)",
                "From a change notification's publish time to its effect applied in memory.",
                quantiles("hybridcache_event_lag_seconds", "instance", "", "{{instance}}"),
                unit="s",
            ),
            Panel(
                "Events by outcome",
                "Change notifications per second: received, applied (value replaced), invalidated "
                "(on-demand entry dropped), refetched (value read again from the Wrapper), not_loaded "
                "(tenant not held here).",
                [
                    (
                        rate_by("outcome", "hybridcache_events_total"),
                        "{{outcome}}",
                    )
                ],
                unit="ops",
            ),
            Panel(
                "Events rejected by reason",
                "Change notifications not applied, by reason. duplicate and old-version are normal "
                "(redelivered or overtaken); the others are bad input (alert HybridcacheEventsRejected).",
                [
                    (
                        rate_by("reason", "hybridcache_events_rejected_total"),
                        "{{reason}}",
                    )
                ],
                unit="ops",
            ),
        ],
    ),
    Row(
        "Wrapper",
        [
            Panel(
                "Wrapper fetch latency (p50, p99)",
                "Wrapper HTTP calls by what was fetched (snapshots per kind, single entities).",
                quantiles("hybridcache_wrapper_fetch_seconds", "what", "", "{{what}}"),
                unit="s",
            ),
            Panel(
                "Wrapper calls by outcome",
                "Wrapper HTTP calls per second by what was fetched and outcome (alert "
                "HybridcacheWrapperErrors above 10% errors).",
                [
                    (
                        rate_by("what, outcome", "hybridcache_wrapper_fetch_seconds_count"),
                        "{{what}} {{outcome}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Wrapper breaker state",
                "1 while the circuit breaker of a Wrapper endpoint is open: the service stopped calling "
                "it, serves stale where allowed and fails fast otherwise (alert "
                "HybridcacheWrapperBreakerOpen).",
                [
                    (
                        f"max by (instance, endpoint) ({selector('hybridcache_wrapper_breaker_open')})",
                        "{{instance}} {{endpoint}}",
                    )
                ],
                kind="state-timeline",
                extra={
                    "mappings": [
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "closed", "color": "green"},
                                "1": {"text": "open", "color": "red"},
                            },
                        }
                    ]
                },
            ),
            Panel(
                "Repairs pending and oldest age",
                "Keys waiting for a successful refetch, and how long the oldest has waited (alert "
                "HybridcacheRepairBacklog above 5 min).",
                [
                    (
                        f"sum by (instance) ({selector('hybridcache_repairs_pending')})",
                        "{{instance}} pending",
                    ),
                    (
                        f"max by (instance) ({selector('hybridcache_repairs_oldest_pending_seconds')})",
                        "{{instance}} oldest (s)",
                    ),
                ],
                width=12,
            ),
            Panel(
                "Anti-entropy mismatches per kind",
                "Keys found different from the Wrapper's digest (then repaired), per interval and kind "
                "(alert HybridcacheReplicaDivergence when steady).",
                [
                    (
                        increase_by("kind", "hybridcache_antientropy_mismatches_total"),
                        "{{kind}}",
                    )
                ],
                width=12,
            ),
        ],
    ),
    Row(
        "WatchChanges streams",
        [
            Panel(
                "Open streams",
                "Open WatchChanges subscriptions per instance (each holds a server thread; the cap is "
                "HYBRIDCACHE_MAX_STREAMS).",
                [(f"sum by (instance) ({selector('hybridcache_stream_subscribers')})", "{{instance}}")],
                width=12,
            ),
            Panel(
                "Stream buffer overflows",
                "Subscribers that fell behind (their buffer overflowed) and were told RESYNC_REQUIRED, "
                "per interval (alert HybridcacheStreamSubscribersLagging).",
                [
                    (
                        increase_by("instance", "hybridcache_stream_resync_required_total"),
                        "{{instance}}",
                    )
                ],
                width=12,
            ),
        ],
    ),
]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    for key in ("min", "max", "mappings"):
        if key in panel.extra:
            defaults[key] = panel.extra[key]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,  # on time range change: instances come and go
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id, y = 1, 0
    for row in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel(panel, panel_id, x, y))
            panel_id, x, row_height = panel_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "uid": "hybridcache",
        "title": "hybridcache",
        "description": "The hybridcache service: RPCs, cache, freshness, change notifications, Wrapper, "
        "streams. Generated by deploy/grafana/generate.py; explained in docs/OPERATIONS.md.",
        "tags": ["hybridcache"],
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _variable("instance", "Instance", "label_values(hybridcache_freshness_live, instance)"),
                _variable("tenant", "Tenant", "label_values(hybridcache_replica_age_seconds, tenant)"),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail when the committed JSON differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.name} is out of date: run deploy/grafana/generate.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
