"""Several worker processes on one port: `HYBRIDCACHE_WORKERS=N` / `hybridcache serve --workers N`.

The supervisor (this module, in the `hybridcache serve` process) starts N `hybridcache serve`
children with the same environment. Each child is a full replica (its own cache, Redis
subscription and hub) and binds the same port with SO_REUSEPORT, so the kernel spreads
*connections* (not calls) across them. Worker i serves /metrics on METRICS_PORT + i.

SIGTERM / SIGINT go to every child (each drains gracefully); a child still running after
HYBRIDCACHE_DRAIN_S + HYBRIDCACHE_GRACE_S + 5 s is killed. When a child exits on its own
the supervisor stops the others and exits with that status: the process manager (Kubernetes,
systemd) restarts the whole set, rather than this module growing a restart policy.

Only the standard library here: the CLI imports it before anything heavy.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybridcache.server.config import Settings

log = logging.getLogger("hybridcache.workers")

WORKER_ENV = "_HYBRIDCACHE_WORKER_INDEX"  # set in children: run as a worker, never supervise
_POLL_S = 0.2  # how often the supervisor looks for a child that exited on its own
_KILL_AFTER_S = 5.0  # beyond the drain and grace periods


def worker_argv() -> list[str]:
    return [sys.executable, "-m", "hybridcache.server.cli", "serve"]


def supervise(settings: Settings) -> int:
    from hybridcache.server.ops.logs import configure_logging  # noqa: PLC0415

    configure_logging(settings.log_format, settings.log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping workers", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[subprocess.Popen[bytes]] = []
    for index in range(settings.workers):
        env = {**os.environ, WORKER_ENV: str(index)}
        if settings.metrics_port:
            env["HYBRIDCACHE_METRICS_PORT"] = str(settings.metrics_port + index)
        children.append(subprocess.Popen(worker_argv(), env=env))
    log.info("workers started", extra={"workers": len(children), "port": settings.port})
    status = 0
    while not stop.wait(_POLL_S):
        exited = [(i, c.returncode) for i, c in enumerate(children) if c.poll() is not None]
        if exited:
            index, code = exited[0]
            log.error("worker %d exited with status %s; stopping the others", index, code)
            status = code or 1
            break
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    # Each child drains (NOT_SERVING while still taking calls), then gives calls in flight the
    # grace period: one deadline for all of them covers both, and a margin, before any kill.
    deadline = time.monotonic() + settings.drain_s + settings.grace_s + _KILL_AFTER_S
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %d still running after drain + grace; killing it", child.pid)
            child.kill()
            child.wait()
    return status
