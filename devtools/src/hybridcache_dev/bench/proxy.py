"""A byte-counting TCP proxy (its own process, on the load core) between the Service and
the Wrapper: the dev Wrapper counts requests, not bytes, and the strategy table needs the
HTTP bytes each way. Adds one loopback hop to every Wrapper call, alike for every strategy.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from multiprocessing.connection import Connection

from hybridcache_dev.bench import cpus
from hybridcache_dev.harness.tcp_proxy import Forwarder


async def _serve(upstream_port: int, conn: Connection) -> None:
    counts = [0, 0]  # [to the Wrapper, from the Wrapper]

    def up(data: bytes) -> None:
        counts[0] += len(data)

    def down(data: bytes) -> None:
        counts[1] += len(data)

    forwarder = await Forwarder(upstream_port, lambda: (up, down)).start()
    conn.send(forwarder.port)
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "counts":
            conn.send(tuple(counts))
        else:
            break
    await forwarder.close()


def _child(upstream_port: int, conn: Connection) -> None:
    cpus.pin(cpus.LOAD_CPU)
    asyncio.run(_serve(upstream_port, conn))


class CountingProxy:
    def __init__(self, upstream_port: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(upstream_port, child), daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(30):
            raise RuntimeError("proxy did not start")
        self.port: int = self._conn.recv()
        self.url = f"http://127.0.0.1:{self.port}"

    def counts(self) -> tuple[int, int]:
        """(bytes sent to the Wrapper, bytes received from it) so far."""
        self._conn.send("counts")
        sent, received = self._conn.recv()
        return int(sent), int(received)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
