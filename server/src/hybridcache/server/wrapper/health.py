"""A shared view of the Wrapper's health: one circuit breaker per Wrapper endpoint kind.

Without it, every call to a hung Wrapper waits out its timeout (a SIGSTOPped Wrapper cost
913 ms of a 1 s deadline on each read, stale ones included). With it, once an endpoint kind
(`item:user-profiles`, `snapshot:credit-costs`, `digest`, ...) has failed `failure_threshold`
times in a row, it is *open*: calls fail at once with `WrapperUnavailable(WRAPPER_KNOWN_DOWN)`,
and the cache core serves what it may serve stale at once (`known_down`). After
`reset_timeout_s` one call is let through as a *probe* (half-open); its success closes the
breaker, its failure opens it for another `reset_timeout_s`. Only one probe runs at a time:
every other call still fails fast meanwhile.

    closed ──N failures in a row──► open ──reset_timeout_s──► half-open (one probe)
      ▲                               ▲                            │
      └────────── probe succeeds ─────┼──────── probe fails ───────┘

What counts: a timeout, a refused or reset connection, a 5xx or a malformed body is a
failure; any answer (200, 404, even 401/403) is a success — the Wrapper is up; a call that
never reached the Wrapper (the caller's deadline too short to start) counts as neither.

Why not a library: `pybreaker` (1.2) holds one lock across the guarded call, which would
serialise every Wrapper call of an endpoint kind behind the slowest; `circuitbreaker` (2.1)
lets every call through while half-open, so each caller would pay a timeout per reset
period again, and is untyped. This is ~100 lines, with its own unit tests.

The lock is a leaf held for a few assignments, never across the call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import IntEnum

from hybridcache.client.reasons import Reason
from hybridcache.server.core.errors import WrapperUnavailable

KNOWN_DOWN_REASON = Reason.WRAPPER_KNOWN_DOWN
# WrapperUnavailable reasons that say the Wrapper itself is unwell (not the caller or config).
UNHEALTHY_REASONS = frozenset(
    {Reason.WRAPPER_TIMEOUT, Reason.WRAPPER_UNREACHABLE, Reason.WRAPPER_ERROR, Reason.WRAPPER_BAD_RESPONSE}
)


class BreakerState(IntEnum):
    """The metric's values (`hybridcache_wrapper_breaker_state`)."""

    CLOSED = 0
    HALF_OPEN = 1  # the reset timeout has passed: the next call (or the one running) is the probe
    OPEN = 2


class Breaker:
    """One endpoint kind's breaker. `admit()` before a call, then exactly one of
    `succeeded(probe)`, `failed(probe)` or `neutral(probe)` with what `admit` returned."""

    def __init__(
        self,
        endpoint: str,
        *,
        failure_threshold: int = 3,
        reset_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self._threshold = failure_threshold
        self._reset_s = reset_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0  # in a row, while closed
        self._opened_at: float | None = None  # None: closed
        self._probing = False
        self.opened_total = 0  # times it went from closed to open

    @property
    def state(self) -> BreakerState:
        opened_at = self._opened_at
        if opened_at is None:
            return BreakerState.CLOSED
        if self._probing or self._clock() >= opened_at + self._reset_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def known_down(self) -> bool:
        """True while not closed: readers that have something to serve should not wait for it."""
        return self._opened_at is not None

    def admit(self) -> bool:
        """Let a call through (returns whether it is the probe) or raise WRAPPER_KNOWN_DOWN."""
        if self._opened_at is None:  # the common case, without the lock
            return False
        with self._lock:
            opened_at = self._opened_at
            if opened_at is None:
                return False
            wait_s = opened_at + self._reset_s - self._clock()
            if wait_s <= 0 and not self._probing:
                self._probing = True
                return True
        raise WrapperUnavailable(
            f"the Wrapper is known to be down ({self.endpoint} calls failed {self._threshold} times in a "
            f"row); not calling it until a probe succeeds (next in {max(wait_s, 0.0):.1f} s)",
            reason=KNOWN_DOWN_REASON,
        )

    def succeeded(self, probe: bool) -> None:
        if self._opened_at is None and self._failures == 0:
            return
        with self._lock:
            self._failures = 0
            self._opened_at = None
            if probe:
                self._probing = False

    def failed(self, probe: bool) -> None:
        with self._lock:
            if probe:
                self._probing = False
                self._opened_at = self._clock()  # open for another reset period
                return
            if self._opened_at is not None or self._threshold <= 0:
                return  # admitted before the breaker opened (already down), or breakers are off
            self._failures += 1
            if self._failures >= self._threshold:
                self._opened_at = self._clock()
                self.opened_total += 1

    def neutral(self, probe: bool) -> None:
        """The call never reached the Wrapper: a probe slot is given back."""
        if probe:
            with self._lock:
                self._probing = False


class WrapperHealth:
    """The breakers of one Wrapper, created on first use of each endpoint kind."""

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        reset_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failure_threshold
        self._reset_s = reset_timeout_s
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}
        self._lock = threading.Lock()

    def breaker(self, endpoint: str) -> Breaker:
        found = self._breakers.get(endpoint)
        if found is not None:
            return found
        with self._lock:
            return self._breakers.setdefault(
                endpoint,
                Breaker(
                    endpoint,
                    failure_threshold=self._threshold,
                    reset_timeout_s=self._reset_s,
                    clock=self._clock,
                ),
            )

    def known_down(self, endpoint: str) -> bool:
        found = self._breakers.get(endpoint)
        return found is not None and found.known_down

    def breakers(self) -> list[Breaker]:
        return sorted(self._breakers.values(), key=lambda b: b.endpoint)
