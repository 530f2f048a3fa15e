"""Which core each side runs on, so that every figure is "per server core".

The server under test gets core 0 to itself; load generators, the Wrapper and Redis (the
"other machines") share core 1. On a machine with a single core pinning is skipped and
the report says so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

SERVER_CPU = 0
LOAD_CPU = 1


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > LOAD_CPU


def pin(cpu: int, pid: int = 0) -> None:
    """Pin process `pid` (0: this one) to `cpu`, when the machine has that core."""
    if can_pin():
        os.sched_setaffinity(pid, {cpu})


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def pin_process_tree(pid: int, cpu: int) -> None:
    """Pin every thread of process `pid` (sched_setaffinity on a pid moves one thread only)."""
    if not can_pin():
        return
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = [str(pid)]
    for task in tasks:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task), {cpu})


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of process `pid`; 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """The child processes of `pid` (of its main thread: where `subprocess` starts them)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listed:
            return [int(child) for child in listed.read().split()]
    except OSError:
        return []


@contextlib.contextmanager
def thread_pinned(cores: set[int]) -> Iterator[None]:
    """Run the block with this thread on `cores`: a process started in it (and every process
    that one starts) inherits them. Restored after."""
    if not can_pin():
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)
