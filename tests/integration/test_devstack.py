"""The dev stack owns its children: whatever ends it, Redis, the Wrapper and the server end too,
and a start that finds leftovers of an earlier one says so in one line.

Real processes throughout: `hybridcache dev` on free ports in a directory of the test's own,
ended by a real signal (or by closing its terminal), its children watched by pid.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridcache_dev.stack.devstack_leftovers import DB_FILE, LOCK_FILE, read_pids, write_pids
from tests.devstack_process import HYBRIDCACHE, STATE_DIR, DevStack, wait_gone
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)

ON_FREE_PORTS = [HYBRIDCACHE, "dev", "--port", "0", "--wrapper-port", "0", "--redis-port", "0"]
GONE_WITHIN_S = 40.0  # generous: the server drains and the machine is shared


@pytest.fixture
def stacks() -> Iterator[list[DevStack]]:
    started: list[DevStack] = []
    yield started
    for stack in started:
        stack.kill_tree()


@pytest.mark.parametrize(
    "ending",
    [signal.SIGINT, signal.SIGTERM, signal.SIGKILL, "terminal closed (SIGHUP)"],
    ids=["SIGINT", "SIGTERM", "SIGKILL", "SIGHUP"],
)
def test_every_child_dies_with_the_dev_stack(
    ending: signal.Signals | str, tmp_path: Path, stacks: list[DevStack]
) -> None:
    stack = DevStack.start(ON_FREE_PORTS, cwd=tmp_path, terminal=isinstance(ending, str))
    stacks.append(stack)
    children = stack.children()
    assert len(children) == 3, f"expected Redis, the Wrapper and the server: {children}"

    if isinstance(ending, str):
        stack.close_terminal()
    else:
        stack.process.send_signal(ending)

    left = wait_gone(children, timeout=GONE_WITHIN_S)
    orphans = {pid: command for pid, command in children.items() if pid in left}
    assert not orphans, (
        f"still running {GONE_WITHIN_S} s after the dev stack was ended by {ending}: {orphans}"
    )
    assert stack.process.wait(GONE_WITHIN_S) is not None


def test_a_start_after_a_sigkill_finds_only_a_stale_pid_file(tmp_path: Path, stacks: list[DevStack]) -> None:
    first = DevStack.start(ON_FREE_PORTS, cwd=tmp_path)
    stacks.append(first)
    children = first.children()
    named = first.pid_file()
    assert set(children) == {named["redis-server"], named["development Wrapper"], named["server"]}, named
    first.process.kill()
    assert not wait_gone(children, timeout=GONE_WITHIN_S), "children outlived a SIGKILLed dev stack"

    second = DevStack.start(ON_FREE_PORTS, cwd=tmp_path)  # same directory, same SQLite file
    stacks.append(second)
    assert "removed a stale" in second.output, second.output
    assert "disk I/O error" not in second.output


def refused(argv: list[str], cwd: Path) -> str:
    """Run a dev stack that must refuse to start: its one line of explanation."""
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, f"exit {result.returncode}, expected 2; stderr:\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    return lines[0]


@pytest.mark.parametrize(
    ("flag", "role"),
    [("--port", "gRPC server"), ("--wrapper-port", "development Wrapper"), ("--redis-port", "Redis")],
)
def test_a_taken_port_is_named_with_its_flag(flag: str, role: str, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        argv = [*ON_FREE_PORTS]
        argv[argv.index(flag) + 1] = str(port)
        line = refused(argv, tmp_path)
    assert f"port {port} ({role}) is already in use" in line, line
    assert f"by pid {os.getpid()}" in line, line
    assert flag in line, line


def test_processes_named_in_the_pid_file_are_reported(tmp_path: Path) -> None:
    (tmp_path / STATE_DIR).mkdir()
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_pids(tmp_path / STATE_DIR, {"dev stack": 999_999_999, "redis-server": survivor.pid})
        line = refused(ON_FREE_PORTS, tmp_path)
    finally:
        survivor.kill()
        survivor.wait()
    assert f"redis-server pid {survivor.pid}" in line, line
    assert f"kill {survivor.pid}" in line, line


def test_a_database_still_open_elsewhere_is_reported(tmp_path: Path) -> None:
    (tmp_path / STATE_DIR).mkdir()
    leftover = sqlite3.connect(tmp_path / STATE_DIR / DB_FILE)  # what a leftover Wrapper holds
    try:
        leftover.execute("PRAGMA journal_mode=WAL")
        leftover.execute("CREATE TABLE t (x)")
        line = refused(ON_FREE_PORTS, tmp_path)
    finally:
        leftover.close()
    assert f"database {STATE_DIR}/{DB_FILE} is still open" in line, line


def test_a_second_dev_stack_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / STATE_DIR).mkdir()
    with (tmp_path / STATE_DIR / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a running dev stack holds
        line = refused(ON_FREE_PORTS, tmp_path)
    assert "another dev stack is running" in line, line


def test_ctrl_c_while_it_is_still_starting_stops_it_cleanly(tmp_path: Path) -> None:
    stack = subprocess.Popen(ON_FREE_PORTS, cwd=tmp_path, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: "redis-server" in read_pids(tmp_path / STATE_DIR), timeout=60, what="Redis started")
        started = read_pids(tmp_path / STATE_DIR)
        stack.send_signal(signal.SIGINT)  # the Wrapper and the server are still starting
        assert stack.wait(GONE_WITHIN_S) == 0, stack.stderr.read().decode() if stack.stderr else ""
        assert not wait_gone(
            [pid for name, pid in started.items() if name != "dev stack"], timeout=GONE_WITHIN_S
        )
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
        if stack.stderr:
            stack.stderr.close()
