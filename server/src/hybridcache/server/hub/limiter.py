"""Caps on open change streams: in total, and per caller.

In the sync gRPC server every open stream holds a pool thread for its whole life, so the
total cap must stay below the pool size minus the workers unary RPCs need; the per-caller
cap stops one misbehaving client (a reconnect loop without backoff) from taking them all.
"""

from __future__ import annotations

import threading


class StreamLimitError(Exception):
    """No slot for another stream (RESOURCE_EXHAUSTED; retry later with backoff)."""


class StreamSlot:
    """One held stream slot. `release` is idempotent, so both the handler's `finally` and
    the RPC's termination callback may call it."""

    __slots__ = ("_caller", "_limiter", "_released")

    def __init__(self, limiter: StreamLimiter, caller: str) -> None:
        self._limiter = limiter
        self._caller = caller
        self._released = False

    def release(self) -> None:
        self._limiter._release(self)

    def __enter__(self) -> StreamSlot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class StreamLimiter:
    def __init__(self, *, max_streams: int, max_per_caller: int) -> None:
        if max_streams < 1 or max_per_caller < 1:
            raise ValueError("stream caps must be >= 1")
        self.max_streams = max_streams
        self.max_per_caller = max_per_caller
        self._lock = threading.Lock()
        self._total = 0  # guarded by _lock
        self._by_caller: dict[str, int] = {}  # guarded by _lock; no zero entries

    def acquire(self, caller: str) -> StreamSlot:
        """Take a slot for `caller`, or raise StreamLimitError."""
        with self._lock:
            if self._total >= self.max_streams:
                raise StreamLimitError(f"too many open change streams (limit {self.max_streams})")
            held = self._by_caller.get(caller, 0)
            if held >= self.max_per_caller:
                raise StreamLimitError(
                    f"too many open change streams for this caller (limit {self.max_per_caller})"
                )
            self._total += 1
            self._by_caller[caller] = held + 1
        return StreamSlot(self, caller)

    def in_use(self, caller: str | None = None) -> int:
        """Slots held in total, or by `caller`."""
        with self._lock:
            return self._total if caller is None else self._by_caller.get(caller, 0)

    def _release(self, slot: StreamSlot) -> None:
        with self._lock:
            if slot._released:
                return
            slot._released = True
            self._total -= 1
            left = self._by_caller[slot._caller] - 1
            if left:
                self._by_caller[slot._caller] = left
            else:
                del self._by_caller[slot._caller]
