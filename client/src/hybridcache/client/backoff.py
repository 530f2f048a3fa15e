"""One backoff policy for every retry and reconnect loop, the client's and the service's.

The ceiling of attempt n (counted from 0) is `min(cap_s, initial_s * 2**n)`; the delay is
drawn below it:

- `"equal"` jitter (the default): uniform in [ceiling/2, ceiling]. The floor keeps a
  reconnect loop from spinning against a peer that is down; the spread keeps a fleet that
  lost the same peer from coming back in step. Used by the watch stream, the Redis reader,
  the repair worker and the service's warm-up.
- `"full"` jitter: uniform in [0, ceiling]. For short retries of one request inside a
  caller's deadline (the service's Wrapper client), where the earliest retry is wanted and
  the caller's deadline, not the floor, bounds the load.

Two faces: `BackoffPolicy.delay(attempt)` for a loop that keeps its own attempt count (the
repair worker counts per pending key), and `Backoff`, the "next delay, reset on success"
state a long-running reconnect loop holds.

Why not tenacity, stamina or backoff: they wrap one call in a decorator or a retry
iterator; these loops are long-running (a session that ends by failing, then a pause, then
a new session; a reset when one delivered), wait on a stop event rather than sleep, and one
keeps a count per key. What they would share is these few lines, and the client wheel's
consumers get no extra dependency for them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Jitter = Literal["equal", "full"]

# 2**32 times any sane initial delay is past any cap; stops the power from overflowing.
_MAX_DOUBLINGS = 32

_RNG = random.Random()  # when a loop passes none; a test that needs a known jitter passes its own


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Exponential backoff from `initial_s`, doubling up to `cap_s`, with jitter."""

    initial_s: float
    cap_s: float
    jitter: Jitter = "equal"

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.cap_s:
            raise ValueError(
                f"BackoffPolicy: need 0 < initial_s <= cap_s (got {self.initial_s}, {self.cap_s})"
            )

    def ceiling(self, attempt: int) -> float:
        """The longest delay after `attempt` failures before (0: the first pause)."""
        return min(self.cap_s, self.initial_s * 2.0 ** min(max(attempt, 0), _MAX_DOUBLINGS))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A jittered delay for the pause numbered `attempt` (from 0)."""
        ceiling = self.ceiling(attempt)
        low = ceiling / 2 if self.jitter == "equal" else 0.0
        return (rng or _RNG).uniform(low, ceiling)


class Backoff:
    """The state of one loop: `next_delay()` after each failure, `reset()` once one worked."""

    def __init__(self, policy: BackoffPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        delay = self.policy.delay(self._attempt, self._rng)
        self._attempt += 1
        return delay
