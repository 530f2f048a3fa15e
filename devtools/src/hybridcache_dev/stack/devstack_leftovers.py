"""What an earlier dev stack may have left behind, found before a new one starts.

The dev stack keeps its state in one directory (`.devstack/` where it runs): a lock held for
its lifetime, a pid file naming its children, and the development Wrapper's SQLite file.
A start that finds leftovers (another dev stack holding the lock, processes named in the pid
file still alive, a port taken, the SQLite file held open) is refused with ONE line saying
what is in the way and what to do (`LeftoverError`), instead of a bind error or SQLite's "disk I/O
error" later. A pid file whose processes are all gone is stale: it is removed, with a note.

Linux details (/proc) only sharpen the messages (which process holds a port or the SQLite
file); without /proc the checks still run, the messages just name no process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PID_FILE = "pids.json"
LOCK_FILE = "lock"
DB_FILE = "wrapper.db"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


class LeftoverError(Exception):
    """A start is refused; the message is one line: what is in the way, and what to do."""


@dataclass(frozen=True, slots=True)
class Port:
    role: str  # "gRPC server", "development Wrapper", "Redis"
    number: int  # 0: a free one (nothing to check)
    flag: str  # the option that changes it


def take_lock(state_dir: Path) -> IO[str]:
    """Hold the state directory's lock until the returned file is closed (or the process dies)."""
    state_dir.mkdir(exist_ok=True)
    handle = (state_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        owner = read_pids(state_dir).get("dev stack")
        who = f" (pid {owner})" if owner else ""
        raise LeftoverError(
            f"another dev stack is running from {state_dir}{who}: stop it (Ctrl-C in its terminal"
            f"{f', or kill {owner}' if owner else ''}), or run this one from another directory"
        ) from None
    return handle


def check_before_start(state_dir: Path, ports: Sequence[Port]) -> str | None:
    """Raise LeftoverError when something is in the way; return a one-line note for a stale pid file."""
    note = _check_pid_file(state_dir)
    for port in ports:
        _check_port(port)
    _check_database(state_dir / DB_FILE)
    return note


def read_pids(state_dir: Path) -> dict[str, int]:
    try:
        loaded = json.loads((state_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, Mapping):
        return {}
    return {str(name): pid for name, pid in loaded.items() if isinstance(pid, int)}


def write_pids(state_dir: Path, pids: Mapping[str, int]) -> None:
    temporary = state_dir / f"{PID_FILE}.tmp"
    temporary.write_text(json.dumps(dict(pids), indent=1) + "\n")
    temporary.replace(state_dir / PID_FILE)  # never a half-written file for the next start


def remove_state(state_dir: Path) -> None:
    """After a clean stop: nothing of this run is left for the next start to wonder about."""
    (state_dir / PID_FILE).unlink(missing_ok=True)


def remove_database(state_dir: Path) -> None:
    """Fresh demo data on every start: the SQLite file and its WAL companions go together."""
    db = state_dir / DB_FILE
    for path in (db, *(db.with_name(db.name + suffix) for suffix in SQLITE_COMPANIONS)):
        path.unlink(missing_ok=True)


def _check_pid_file(state_dir: Path) -> str | None:
    pids = read_pids(state_dir)
    if not pids:
        return None
    alive = {name: pid for name, pid in pids.items() if name != "dev stack" and _alive(pid)}
    if alive:
        listed = ", ".join(f"{name} pid {pid}" for name, pid in alive.items())
        raise LeftoverError(
            f"processes of an earlier dev stack are still running ({listed}): "
            f"stop them with `kill {' '.join(str(pid) for pid in alive.values())}`, then start again"
        )
    (state_dir / PID_FILE).unlink(missing_ok=True)
    return (
        f"removed a stale {state_dir / PID_FILE} "
        "(the last dev stack did not stop cleanly; its processes are gone)"
    )


def _check_port(port: Port) -> None:
    if port.number == 0:
        return
    with socket.socket() as probe:
        # The servers set SO_REUSEADDR too: a port in TIME_WAIT is free for them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port.number))
            probe.listen()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        else:
            return
    holder = _describe(_port_holders(port.number))
    raise LeftoverError(
        f"port {port.number} ({port.role}) is already in use{holder}: stop what holds it "
        f"(a leftover dev stack?), or pick another with {port.flag} N (0: a free one)"
    )


def _check_database(db: Path) -> None:
    files = [db, *(db.with_name(db.name + suffix) for suffix in SQLITE_COMPANIONS)]
    holders = sorted({pid for path in files if path.exists() for pid in _file_holders(path)})
    locked = any(_locked_elsewhere(path) for path in files if path.exists())
    if holders or locked:
        raise LeftoverError(
            f"the development Wrapper's database {db} is still open{_describe(holders)} "
            f"(a leftover Wrapper?): stop it{f' with `kill {holders[0]}`' if len(holders) == 1 else ''}, "
            "then start again"
        )


def _locked_elsewhere(path: Path) -> bool:
    """True when another process holds a POSIX (SQLite) lock on any byte of `path`."""
    try:
        with path.open("r+b") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    return True
                raise
            fcntl.lockf(handle, fcntl.LOCK_UN)
    except FileNotFoundError:
        pass
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process by now: still in the way of nothing, but alive
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"  # a zombie is dead, only not yet reaped
    return True


def _describe(pids: Sequence[int]) -> str:
    if not pids:
        return ""
    named = ", ".join(f"pid {pid} {_name(pid)}".rstrip() for pid in pids)
    return f" by {named}"


def _name(pid: int) -> str:
    with contextlib.suppress(OSError):
        return f"({Path(f'/proc/{pid}/comm').read_text().strip()})"
    return ""


def _port_holders(port: int) -> list[int]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(fields[9])
    return sorted({pid for pid, target in _open_fds() if target in {f"socket:[{i}]" for i in inodes}})


def _file_holders(path: Path) -> list[int]:
    wanted = str(path.resolve())
    return sorted({pid for pid, target in _open_fds() if target == wanted and pid != os.getpid()})


def _open_fds() -> Iterator[tuple[int, str]]:
    """(pid, what the fd points at) for every process of ours /proc lets us read."""
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in os.scandir(f"/proc/{entry.name}/fd"):
                    with contextlib.suppress(OSError):
                        yield int(entry.name), os.readlink(fd.path)
