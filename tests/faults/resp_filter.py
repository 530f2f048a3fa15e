"""A filter for the fault proxy's Redis -> server direction that understands RESP: it eats
some pub/sub deliveries and holds others back past the next one (out-of-order delivery),
recording each, while every other reply (subscribe confirmations, PONGs) passes untouched.

    proxy = FaultProxy(redis.port, down_filter=lambda: DeliveryChaos(plan))

RESP2 and RESP3 frames are both framed here (`*` arrays and `>` pushes of bulk strings,
integers and simple strings: what pub/sub sends). A delivery is an array or push whose
first element is `message` or `pmessage`.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Delivery:
    at: float  # time.monotonic() when the proxy saw it
    channel: str
    data: bytes


@dataclass
class ChaosPlan:
    """Shared by every connection's filter: the odds, the switch, and what was done."""

    drop_p: float = 0.0
    hold_p: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    enabled: bool = True
    dropped: list[Delivery] = field(default_factory=list)
    held: list[Delivery] = field(default_factory=list)
    passed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _frame_end(buf: bytes, pos: int) -> tuple[int, list[bytes]] | None:  # noqa: PLR0911 (one per frame type)
    """(end, the bulk strings / scalars of a top-level frame) or None when incomplete."""
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        return None
    kind, head = buf[pos : pos + 1], buf[pos + 1 : line_end]
    after = line_end + 2
    if kind in (b"+", b"-", b":", b"_", b"#", b",", b"("):
        return after, [head]
    if kind in (b"$", b"=", b"!"):
        size = int(head)
        if size < 0:
            return after, [b""]
        if len(buf) < after + size + 2:
            return None
        return after + size + 2, [buf[after : after + size]]
    if kind in (b"*", b">", b"~", b"%"):
        count = int(head) * (2 if kind == b"%" else 1)
        parts: list[bytes] = []
        cursor = after
        for _ in range(max(0, count)):
            inner = _frame_end(buf, cursor)
            if inner is None:
                return None
            cursor, items = inner
            parts.extend(items)
        return cursor, parts
    raise ValueError(f"not RESP: {buf[pos : pos + 20]!r}")


class DeliveryChaos:
    """One connection's filter (the proxy builds one per connection): bytes in, bytes out."""

    def __init__(self, plan: ChaosPlan) -> None:
        self.plan = plan
        self._buf = b""
        self._held: bytes | None = None

    def __call__(self, data: bytes) -> bytes:
        self._buf += data
        out: list[bytes] = []
        pos = 0
        while pos < len(self._buf):
            found = _frame_end(self._buf, pos)
            if found is None:
                break
            end, parts = found
            out.append(self._decide(self._buf[pos:end], parts))
            pos = end
        self._buf = self._buf[pos:]
        return b"".join(out)

    def _decide(self, frame: bytes, parts: list[bytes]) -> bytes:
        plan = self.plan
        is_delivery = bool(parts) and parts[0] in (b"message", b"pmessage")
        released = b""
        if self._held is not None:
            # Whatever comes next goes first, then the held delivery: out of order.
            released, self._held = self._held, None
        if not is_delivery or not plan.enabled:
            return frame + released
        delivery = Delivery(time.monotonic(), parts[-2].decode(errors="replace"), parts[-1])
        with plan.lock:
            roll = plan.rng.random()
            if roll < plan.drop_p:
                plan.dropped.append(delivery)
                return released
            if not released and roll < plan.drop_p + plan.hold_p:
                plan.held.append(delivery)
                self._held = frame
                return b""
            plan.passed += 1
        return frame + released
