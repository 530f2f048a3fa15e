"""The operator's commands of `hybridcache`: `stats` (a table of GetCacheStats) and `watch`
(a live, filtered change feed), against any server, with the client's credential options.

    hybridcache stats --target hybridcache:50051 --tls-ca ca.pem
    HYBRIDCACHE_TOKEN=… hybridcache watch --tenant acme --kind credit-costs --prefix crm.

`register(commands)` adds them to the `hybridcache` parser (cli.py); each sets `run`.
"""

from __future__ import annotations

import argparse
from typing import Any

from hybridcache.server.ops.cli.stats import add_stats_command
from hybridcache.server.ops.cli.watch import add_watch_command


def register(commands: Any) -> None:
    """Add `stats` and `watch` to an argparse sub-parsers object."""
    add_stats_command(commands)
    add_watch_command(commands)


def run(args: argparse.Namespace) -> int | None:
    """Run the parsed command when it is one of ours; None otherwise."""
    command = getattr(args, "run", None)
    return None if command is None else int(command(args))


__all__ = ["register", "run"]
