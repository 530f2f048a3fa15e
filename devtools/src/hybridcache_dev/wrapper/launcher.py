"""Starting the development Wrapper as a subprocess and waiting until it serves.

A subprocess, not a thread: the Wrapper is a separate service in production, and the tests
of "Wrapper down" need to kill it without taking the test process along.

Only the standard library is imported here, so the test process never loads FastAPI.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from hybridcache_dev.stack import lifeline
from hybridcache_dev.wrapper.defaults import DEFAULT_APP, DEFAULT_TOKEN, READY_PREFIX


class DevWrapperProcess:
    """A running development Wrapper; stop it with `stop()` or use it as a context manager."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, *, token: str, app: str) -> None:
        self.process = process
        self.url = url
        self.token = token
        self.app = app
        port = urlsplit(url).port
        assert port is not None
        self.port: int = port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header the Wrapper expects."""
        return {"Authorization": f"Bearer {self.token}"}

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def kill(self) -> int:
        """SIGKILL at once: a crashed Wrapper, for the tests of the product's degradation."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def __enter__(self) -> DevWrapperProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def launch(
    redis_url: str | None,
    *,
    token: str = DEFAULT_TOKEN,
    db_path: str | Path = ":memory:",
    publish_mode: str = "pubsub",
    app: str = DEFAULT_APP,
    port: int = 0,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    scale: str | None = None,
    stream_maxlen: int | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 30.0,
    die_with_parent: bool = False,
) -> DevWrapperProcess:
    """Start `python -m hybridcache_dev.wrapper` and wait for its READY line.

    `redis_url=None` runs without Redis (every write answers "published": false). `env` is
    merged over the current environment. `scale` is "TENANTSxUSERSxOPS" (big benchmark
    tenants instead of the demo ones). Raises RuntimeError when the Wrapper exits or does
    not get ready within `ready_timeout` seconds (it is killed then). `die_with_parent`: the
    Wrapper gets SIGTERM when the thread that launched it ends, however (lifeline.py).
    """
    argv = [
        sys.executable,
        "-m",
        "hybridcache_dev.wrapper",
        "--host",
        host,
        "--port",
        str(port),
        "--db",
        str(db_path),
        "--token",
        token,
        "--publish-mode",
        publish_mode,
        "--app",
        app,
    ]
    if redis_url is not None:
        argv += ["--redis-url", redis_url]
    if scale is not None:
        argv += ["--scale", scale]
    if stream_maxlen is not None:
        argv += ["--stream-maxlen", str(stream_maxlen)]
    argv += list(extra_args)
    child_env = {**os.environ, **(env or {})}
    # Its own session: a Ctrl-C in the terminal reaches only the parent, which stops its
    # children in order (server, then Wrapper, then Redis) instead of all at once.
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        env=child_env,
        start_new_session=True,
        preexec_fn=lifeline.die_with_parent() if die_with_parent else None,  # noqa: PLW1509 - only prctl
    )
    try:
        url = _wait_ready(process, ready_timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        assert process.stdout is not None
        process.stdout.close()  # the child moved its stdout onto stderr after READY
    return DevWrapperProcess(process, url, token=token, app=app)


def _wait_ready(process: subprocess.Popen[bytes], timeout: float) -> str:
    """Read the child's stdout until the READY line (no sleeping: select with a deadline)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    seen: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"dev wrapper not ready within {timeout} s; stdout: {seen[-5:]}")
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = process.wait()
                raise RuntimeError(f"dev wrapper exited with status {code} before ready; stdout: {seen[-5:]}")
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").strip()
                if line.startswith(READY_PREFIX):
                    return line[len(READY_PREFIX) :].strip()
                seen.append(line)
