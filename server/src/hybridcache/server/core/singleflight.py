"""Single-flight fetches that double as no-stale-set placeholders.

A `Flight` is one Wrapper call in progress. Concurrent misses for the same key find it in a
`FlightTable` and wait for its outcome instead of calling the Wrapper again (no thundering
herd). The same object is the placeholder of Redis' client-side-caching guide: an
invalidation, an applied event, or a newer snapshot *fences* the flight (and removes it from
the table, so later misses start a fresh fetch); a fenced flight's value is still handed to
the callers already waiting on it, but the store that owns the table will not keep it.

The table is not locked by itself: its owner mutates it under the owner's own lock, in the
same critical section as the writes it fences against. Waiting happens with no lock held.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar, cast

from hybridcache.client.reasons import Reason
from hybridcache.server.core.errors import CacheError, WrapperUnavailable

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

# A waiter gives up this much before its deadline, so that its error reaches the caller (and
# the gRPC layer can still answer) *before* the deadline rather than just after it.
_WAKE_EARLY_S = 0.002


class Flight(Generic[T]):
    __slots__ = ("_done", "_error", "_result", "fenced")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: object = None
        self._error: BaseException | None = None
        self.fenced = False  # set (under the owner's lock) when the result must not be stored

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def resolve(self, result: T) -> None:
        self._result = result
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def wait(self, deadline: float | None, clock: Callable[[], float]) -> T:
        """The flight's result, or its error re-raised. Raises WrapperUnavailable shortly before
        `deadline` (on `clock`) if the flight has not finished by then."""
        if not self._done.is_set():
            if deadline is None:
                self._done.wait()
            else:
                remaining = deadline - clock() - _WAKE_EARLY_S
                if remaining <= 0 or not self._done.wait(remaining):
                    raise WrapperUnavailable(
                        "deadline exceeded waiting for the Wrapper", reason=Reason.WRAPPER_DEADLINE
                    )
        error = self._error
        if error is not None:
            # Each waiter raises its own copy: one exception object raised in many threads
            # would collect all their tracebacks.
            if isinstance(error, CacheError):
                raise copy.copy(error) from error
            raise WrapperUnavailable("the Wrapper fetch failed", reason=Reason.WRAPPER_ERROR) from error
        return cast(T, self._result)


class FlightTable(Generic[K, T]):
    """The flights in progress, by key. Callers hold their owner's lock around every method."""

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[K, Flight[T]] = {}

    def join_or_start(self, key: K) -> tuple[Flight[T], bool]:
        """The flight in progress for `key` (False: wait on it) or a new one (True: you fetch)."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight, False
        flight = self._flights[key] = Flight()
        return flight, True

    def start(self, key: K) -> Flight[T]:
        """A new flight for `key` that supersedes (fences) any in progress: for fetches that must
        begin after the call that asked for them, e.g. a refetch after an event."""
        self.fence(key)
        flight = self._flights[key] = Flight()
        return flight

    def finish(self, key: K, flight: Flight[T]) -> None:
        """Forget `flight` if it is still the current one for `key` (before resolving it)."""
        if self._flights.get(key) is flight:
            del self._flights[key]

    def fence(self, key: K) -> None:
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.fenced = True

    def fence_where(self, predicate: Callable[[K], bool]) -> None:
        for key in [key for key in self._flights if predicate(key)]:
            self.fence(key)

    def fence_all(self) -> None:
        for flight in self._flights.values():
            flight.fenced = True
        self._flights.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)
