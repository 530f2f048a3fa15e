"""The dev stack (`hybridcache dev` / `scripts/dev`) as a real process tree a test starts and ends.

    stack = DevStack.start([HYBRIDCACHE, "dev", "--port", "0", ...], cwd=tmp_path)  # banner seen
    children = stack.children()   # {pid: command line} of its direct children (/proc)
    stack.process.send_signal(signal.SIGKILL)
    wait_gone(children, timeout=30)

Output is read through a pipe (or a pseudo-terminal, `terminal=True`, to close it as a user
closing the window would) until the "is up" banner, against a deadline, never a sleep.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from hybridcache_dev.stack.devstack_leftovers import PID_FILE, read_pids

HYBRIDCACHE = str(Path(sys.executable).parent / "hybridcache")
READY = "dev stack is up"
STATE_DIR = ".devstack"


class WatchedProcess:
    """A process in its own session whose output is kept, so a test can wait for a line of it."""

    def __init__(self, process: subprocess.Popen[bytes], output_fd: int, cwd: Path) -> None:
        self.process = process
        self.cwd = cwd
        self._fd = output_fd
        self.started_children: dict[int, str] = {}  # once ready; teardown kills them whatever happened
        self._output: list[str] = []
        self._seen = threading.Condition()
        self._ended = False  # the output reached its end (the stack exited or closed it)
        self._closing = threading.Event()
        # Drained all the time, so a chatty child never blocks on a full pipe or terminal.
        self._reader = threading.Thread(target=self._drain, name="watched-output", daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        terminal: bool = False,
        ready: str | None = None,
        ready_timeout: float = 90.0,
    ) -> Self:
        """Start it in its own session (a signal to it reaches no one else); wait for `ready`."""
        if terminal:
            controller, tty = os.openpty()
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=tty,
                stdout=tty,
                stderr=tty,
                start_new_session=True,
                preexec_fn=_take_controlling_terminal,  # noqa: PLW1509 - one ioctl before exec
            )
            os.close(tty)
            stack = cls(process, controller, cwd)
        else:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            assert process.stdout is not None
            own_fd = os.dup(process.stdout.fileno())  # read raw, closed by us alone
            process.stdout.close()
            stack = cls(process, own_fd, cwd)
        try:
            if ready is not None:
                stack.read_until(ready, timeout=ready_timeout)
            stack.on_ready()
        except BaseException:
            stack.kill_tree()
            raise
        return stack

    def on_ready(self) -> None:
        """Subclasses note what they must clean up once started."""

    @property
    def output(self) -> str:
        with self._seen:
            return "".join(self._output)

    def read_until(self, text: str, *, timeout: float) -> str:
        """Wait until `text` is in the output; fail naming what was seen (or the exit) otherwise."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while text not in "".join(self._output):
                remaining = deadline - time.monotonic()
                if self._ended:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(10)
                    raise AssertionError(
                        f"its output ended (exit {self.process.returncode}) before {text!r}:\n"
                        f"{''.join(self._output)[-3000:]}"
                    )
                if remaining <= 0:
                    raise AssertionError(
                        f"no {text!r} within {timeout} s; output so far:\n{''.join(self._output)[-3000:]}"
                    )
                self._seen.wait(remaining)
            return "".join(self._output)

    def _drain(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._fd, selectors.EVENT_READ)
            while not self._closing.is_set():
                if not selector.select(0.2):
                    continue
                try:
                    chunk = os.read(self._fd, 65536)
                except OSError:  # a pseudo-terminal whose other side has closed
                    chunk = b""
                with self._seen:
                    if chunk:
                        self._output.append(chunk.decode(errors="replace"))
                    else:
                        self._ended = True
                    self._seen.notify_all()
                if not chunk:
                    return

    def close_terminal(self) -> None:
        """What closing the terminal window does: the kernel sends SIGHUP to the dev stack."""
        self._stop_reading()

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """`signum` to its whole process group (as a terminal's Ctrl-C would); its exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)
        try:
            return self.process.wait(timeout)
        finally:
            self._stop_reading()

    def kill_tree(self) -> None:
        """Teardown: whatever the test did, leave no process of it behind."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._stop_reading()

    def leftover_pids(self) -> list[int]:
        return []

    def _stop_reading(self) -> None:
        self._closing.set()
        self._reader.join(5)
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class DevStack(WatchedProcess):
    """`hybridcache dev` (or `scripts/dev`): started means its "is up" banner was printed."""

    @classmethod
    def start(  # type: ignore[override]
        cls, argv: Sequence[str], *, cwd: Path, ready: str | None = READY, **options: Any
    ) -> Self:
        return super().start(argv, cwd=cwd, ready=ready, **options)

    def on_ready(self) -> None:
        self.started_children = self.children()

    def children(self) -> dict[int, str]:
        """The dev stack's direct children, pid -> command line, as the kernel sees them (/proc)."""
        found: dict[int, str] = {}
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            listed: list[str] = []
            with contextlib.suppress(OSError):  # a thread may end meanwhile
                listed = (task / "children").read_text().split()
            for pid in listed:
                with contextlib.suppress(OSError):
                    found[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        return found

    def pid_file(self) -> dict[str, int]:
        pids = read_pids(self.cwd / STATE_DIR)
        assert pids, f"no {STATE_DIR}/{PID_FILE} in {self.cwd}"
        return pids

    def leftover_pids(self) -> list[int]:
        state = self.cwd / STATE_DIR
        return [*(read_pids(state).values() if state.exists() else ()), *self.started_children]


def alive(pid: int) -> bool:
    """Running (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: Iterable[int], *, timeout: float) -> list[int]:
    """The pids still alive after `timeout` seconds (polled): empty when every one is gone."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if alive(pid)]
        time.sleep(0.05)  # polling process state against a deadline
    return [pid for pid in remaining if alive(pid)]


def _take_controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
