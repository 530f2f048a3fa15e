"""A measuring process of its own (spawned), driven over a pipe: it sends a first answer when
ready, then one answer per job until it is sent None. An exception it sends is raised here.

For figures that must run on a given core, apart from the runner's process (its GIL, its
threads): the http-client and peers groups.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


class Child:
    def __init__(self, target: Callable[..., None], *args: Any, ready_timeout_s: float = 120.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=target, args=(*args, child), daemon=True)
        self._proc.start()
        child.close()
        try:
            self.first: Any = self.answer(ready_timeout_s)
        except BaseException:
            self.close()
            raise

    def answer(self, timeout_s: float) -> Any:
        if not self._conn.poll(timeout_s):
            raise RuntimeError(f"the measuring process did not answer within {timeout_s} s")
        answer = self._conn.recv()
        if isinstance(answer, BaseException):
            raise RuntimeError(f"the measuring process failed: {answer!r}")
        return answer

    def ask(self, job: Any, timeout_s: float = 120.0) -> Any:
        self._conn.send(job)
        return self.answer(timeout_s)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(None)
        self._proc.join(15)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()


def serve_jobs(conn: Connection, setup: Callable[[], Any], handle: Callable[[Any], Any]) -> None:
    """The child's side: `setup()` (its result is the first answer), then `handle(job)` per job;
    an exception is sent to the parent before it ends the process."""
    try:
        conn.send(setup())
        while (job := conn.recv()) is not None:
            conn.send(handle(job))
    except BaseException as exc:
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(exc)
        raise
