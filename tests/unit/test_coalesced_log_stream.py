"""JSON log lines gathered and written once per interval (ops/logs.py CoalescedStream)."""

from __future__ import annotations

import io
import threading

import pytest

from hybridcache.server.ops.logs import CoalescedStream
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


class CountingTarget(io.StringIO):
    """A stdout that counts the writes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_leave_together_within_the_interval_in_their_order() -> None:
    target = CountingTarget()
    stream = CoalescedStream(target, interval_s=0.2)
    try:
        for i in range(100):
            stream.write(f"line {i}\n")
            stream.flush()  # what logging.StreamHandler does after each line: no write yet
        wait_for(lambda: target.getvalue().count("\n") == 100, timeout=10, what="the lines to leave")
        assert target.getvalue().splitlines() == [f"line {i}" for i in range(100)]
        assert target.writes < 10, f"{target.writes} writes for 100 lines: they were not gathered"
    finally:
        stream.close()


def test_a_burst_beyond_the_buffer_is_written_at_once_and_close_writes_the_rest() -> None:
    target = CountingTarget()
    stream = CoalescedStream(target, interval_s=60.0, max_buffered_chars=1000)
    line = "x" * 99 + "\n"
    for _ in range(25):  # 2,500 characters: two drains on the way, the rest held
        stream.write(line)
    assert target.getvalue().count("\n") == 20, "the buffer's bound did not make it write"
    stream.close()
    assert target.getvalue().count("\n") == 25, "close() did not write what was held"


def test_lines_from_many_threads_are_all_written_whole() -> None:
    target = CountingTarget()
    stream = CoalescedStream(target, interval_s=0.05)

    def log(n: int) -> None:
        for i in range(1000):
            stream.write(f"thread {n} line {i}\n")

    threads = [threading.Thread(target=log, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stream.close()
    lines = target.getvalue().splitlines()
    assert len(lines) == 4000
    for n in range(4):
        mine = [line for line in lines if line.startswith(f"thread {n} ")]
        assert mine == [f"thread {n} line {i}" for i in range(1000)], f"thread {n}'s lines out of order"
