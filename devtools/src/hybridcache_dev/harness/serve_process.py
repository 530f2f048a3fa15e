"""The one harness of `hybridcache serve` as a subprocess, for tests that need a real
process (SIGTERM, restart on the same port, RSS, several workers): its output goes to a log
file; `start()` waits until it answers SERVING (or fails as soon as it exits)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from hybridcache.server.ops.readiness import wait_serving
from hybridcache_dev.bench import cpus


class ServeProcess:
    """`hybridcache serve` as a subprocess (SIGTERM, RSS), on a fixed port so it can restart."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = int(env["HYBRIDCACHE_PORT"])
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> ServeProcess:
        exe = Path(sys.executable).parent / "hybridcache"
        argv = (
            [str(exe), "serve"] if exe.exists() else [sys.executable, "-m", "hybridcache.server.cli", "serve"]
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            wait_serving(self.target, timeout=timeout, alive=self.running)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def sigterm(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def rss_bytes(self) -> int:
        """Resident set size from /proc (no psutil here)."""
        assert self.process is not None
        rss = cpus.rss_bytes(self.process.pid)
        if not rss:
            raise RuntimeError("no VmRSS")
        return rss
