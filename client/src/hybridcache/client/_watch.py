"""`watch()`: a change stream that survives reconnects, for the sync and async clients.

    open stream(resume_token) ──► read ──► ChangeEvent ────► remember token, yield it
         ▲                          │ ───► ChangeBatch ───► for each event: remember its token, yield it
         │                          │ ───► Progress ──────► remember token, on_progress
         │                          │ ───► ResyncRequired ─► remember token, on_resync(reason)
         │                          ▼                        (the stream goes on with live events)
         └── backoff + jitter ◄── UNAVAILABLE, connection lost, server ended the stream,
                                  or nothing at all for `idle_timeout` (watchdog)

The resume token is taken from every message, heartbeats included, so a reconnect asks
the server to replay exactly what was missed (or to say ResyncRequired: never a silent
gap). The stream asks for batches (`WatchConfig.max_batch`), which a busy server uses to
send many changes in one message; they are handed out one event at a time, each event's
token becoming the resume point only when that event is, so a token saved mid-batch
resumes mid-batch. A server that predates batches sends single changes, read the same way.
Errors that a reconnect cannot fix (INVALID_ARGUMENT, PERMISSION_DENIED, ...) end
the stream with the client's exception. Closing the stream (`close()`, leaving a `with`
block, or dropping the last reference) cancels the call and stops the watchdog thread.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from hybridcache.client._config import WatchConfig
from hybridcache.client.backoff import Backoff, BackoffPolicy
from hybridcache.client.errors import from_rpc_error
from hybridcache.v1 import hybridcache_pb2 as pb

# Codes a reconnect cannot fix: the same request would fail the same way.
_TERMINAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.DATA_LOSS,
    }
)

ResyncCallback = Callable[[str], object]
ProgressCallback = Callable[[pb.Progress], object]
Message = pb.ChangeEvent | pb.Progress | pb.ResyncRequired


def is_terminal(error: grpc.RpcError) -> bool:
    code = getattr(error, "code", None)
    return callable(code) and code() in _TERMINAL_CODES


def reconnect_backoff(config: WatchConfig) -> Backoff:
    """The stream's reconnect delays (equal jitter); `reset()` once a connection delivered."""
    return Backoff(BackoffPolicy(config.initial_backoff, config.max_backoff))


class WatchState:
    """What both stream flavours share: the request, the resume token, message triage and
    the rest of a received batch."""

    def __init__(self, request: pb.WatchChangesRequest, resume_token: str | None, max_batch: int) -> None:
        self._request = request
        self._max_batch = max_batch
        self.resume_token = resume_token or ""
        self._batch: deque[pb.ChangeEvent] = deque()

    def request(self) -> pb.WatchChangesRequest:
        request = pb.WatchChangesRequest()
        request.CopyFrom(self._request)
        request.resume_token = self.resume_token
        request.max_batch = self._max_batch
        # The stream reads again only once a batch is handed out, so this is empty; were it
        # not, the server replays those events after the token anyway.
        self._batch.clear()
        return request

    def buffered(self) -> pb.ChangeEvent | None:
        """The next event of the batch being handed out, its token now the resume point."""
        if not self._batch:
            return None
        event = self._batch.popleft()
        self._remember(event)
        return event

    def accept(self, response: pb.WatchChangesResponse) -> Message | None:
        """Take the resume token from a message; return its payload (None: skip it). Of a
        batch, the first event is returned and the rest kept for `buffered()`."""
        which = response.WhichOneof("message")
        if which is None:
            return None  # a message kind newer than this client
        if which == "changes":
            self._batch.extend(response.changes.events)
            return self.buffered()
        message: Message = getattr(response, which)
        self._remember(message)
        return message

    def _remember(self, message: Message) -> None:
        if message.resume_token:  # an empty token would restart from "now" and skip
            self.resume_token = message.resume_token


class _CallGuard:
    """The current call plus a watchdog thread that cancels it when it goes quiet.

    Shared between the iterating thread and the watchdog; holds no reference to the
    WatchStream, so dropping the stream lets it be collected (its finalizer closes this).
    Lock order: only `_lock`, never held while calling into gRPC.
    """

    def __init__(self, idle_timeout: float) -> None:
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._call: Any = None
        self._quiet_until = float("inf")
        self._idle_fired = False
        self._thread: threading.Thread | None = None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def attach(self, call: Any) -> bool:
        with self._lock:
            if not self._closed.is_set():
                self._call, self._idle_fired = call, False
                self._quiet_until = time.monotonic() + self._idle_timeout
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._watch, name="hybridcache-watch-watchdog", daemon=True
                    )
                    self._thread.start()
                return True
        call.cancel()
        return False

    def touch(self) -> None:
        # A plain float store: the watchdog reads it without the lock, at worst one
        # message late, which only delays a cancel it would not have needed.
        self._quiet_until = time.monotonic() + self._idle_timeout

    def detach(self) -> bool:
        """Forget the current call; True when the watchdog was what ended it."""
        with self._lock:
            self._call, self._quiet_until = None, float("inf")
            return self._idle_fired

    def sleep(self, seconds: float) -> bool:
        """Wait, unless closed first; False when closed."""
        return not self._closed.wait(seconds)

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _watch(self) -> None:
        while True:
            with self._lock:
                call, quiet_until = self._call, self._quiet_until
                now = time.monotonic()
                expired = call is not None and now >= quiet_until
                if expired:
                    self._idle_fired, self._quiet_until = True, float("inf")
            if expired:
                call.cancel()  # the reader sees CANCELLED and reconnects
                continue
            wait = self._idle_timeout if quiet_until == float("inf") else quiet_until - now
            if self._closed.wait(wait):
                return


class WatchStream(Iterator[pb.ChangeEvent]):
    """A resumable change stream; iterate it for `ChangeEvent`s.

    Made by `HybridCacheClient.watch()`. Iterate in one thread; `close()` may be called
    from any thread (it cancels the call, and the iterating thread's loop ends).
    """

    def __init__(
        self,
        open_call: Callable[[pb.WatchChangesRequest], Any],
        request: pb.WatchChangesRequest,
        *,
        config: WatchConfig,
        resume_token: str | None = None,
        on_resync: ResyncCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self._open_call = open_call
        self._state = WatchState(request, resume_token, config.max_batch)
        self._backoff = reconnect_backoff(config)
        self._on_resync = on_resync
        self._on_progress = on_progress
        self._guard = _CallGuard(config.idle_timeout)
        self._responses: Iterator[pb.WatchChangesResponse] | None = None
        self._delay: float | None = None
        # Runs guard.close once: on close(), or when the stream is garbage-collected.
        self._finalizer = weakref.finalize(self, self._guard.close)

    @property
    def resume_token(self) -> str:
        """The token of the last message seen ("" before any): persist it to resume later."""
        return self._state.resume_token

    def __iter__(self) -> WatchStream:
        return self

    def __next__(self) -> pb.ChangeEvent:
        while True:
            event = self._buffered()
            if event is not None:
                return event
            if self._responses is None:
                self._connect()
            assert self._responses is not None
            try:
                response = next(self._responses)
            except StopIteration:
                # The server ended the stream cleanly (say, draining for a restart).
                self._reconnect_later()
                continue
            except grpc.RpcError as error:
                idle = self._guard.detach()
                self._responses = None
                if self._guard.closed:
                    raise StopIteration from None
                if not idle and is_terminal(error):
                    self.close()
                    raise from_rpc_error(error) from error
                self._delay = self._backoff.next_delay()
                continue
            self._guard.touch()
            self._backoff.reset()
            message = self._state.accept(response)
            if isinstance(message, pb.ChangeEvent):
                return message
            if isinstance(message, pb.Progress) and self._on_progress is not None:
                self._on_progress(message)
            elif isinstance(message, pb.ResyncRequired) and self._on_resync is not None:
                self._on_resync(message.reason)

    def _buffered(self) -> pb.ChangeEvent | None:
        """The rest of a received batch, unless the stream was closed meanwhile."""
        return None if self._guard.closed else self._state.buffered()

    def _connect(self) -> None:
        if self._guard.closed:
            raise StopIteration
        if self._delay is not None and not self._guard.sleep(self._delay):
            raise StopIteration
        self._delay = None
        call = self._open_call(self._state.request())
        if not self._guard.attach(call):
            raise StopIteration
        self._responses = call

    def _reconnect_later(self) -> None:
        self._guard.detach()
        self._responses = None
        self._delay = self._backoff.next_delay()

    def close(self, timeout: float = 5.0) -> None:
        """Cancel the call and stop the watchdog thread. Idempotent; any thread."""
        self._finalizer()
        self._guard.join(timeout)

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
