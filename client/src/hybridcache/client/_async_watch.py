"""The asyncio flavour of `watch()`; the behaviour is drawn in `_watch.py`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc import aio

from hybridcache.client._config import WatchConfig
from hybridcache.client._watch import (
    ProgressCallback,
    ResyncCallback,
    WatchState,
    is_terminal,
    reconnect_backoff,
)
from hybridcache.client.errors import from_rpc_error
from hybridcache.v1 import hybridcache_pb2 as pb


async def _call_back(callback: Callable[[Any], object] | None, argument: Any) -> None:
    if callback is not None:
        result = callback(argument)
        if inspect.isawaitable(result):
            await result


class AsyncWatchStream(AsyncIterator[pb.ChangeEvent]):
    """A resumable change stream; `async for` it for `ChangeEvent`s.

    Made by `AsyncHybridCacheClient.watch()`. The idle watchdog is a timeout on each read,
    so no thread or task is started. Callbacks may be plain functions or coroutines. Close
    it with `await stream.aclose()` or `async with`; a stream that is merely dropped is
    cancelled when gRPC's call object is collected.
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
        self._idle_timeout = config.idle_timeout
        self._on_resync = on_resync
        self._on_progress = on_progress
        self._call: Any = None
        self._delay: float | None = None
        self._closed = asyncio.Event()

    @property
    def resume_token(self) -> str:
        """The token of the last message seen ("" before any): persist it to resume later."""
        return self._state.resume_token

    def __aiter__(self) -> AsyncWatchStream:
        return self

    async def __anext__(self) -> pb.ChangeEvent:
        while True:
            event = self._buffered()
            if event is not None:
                return event
            call = await self._connect()
            try:
                async with asyncio.timeout(self._idle_timeout):
                    response = await call.read()
            except TimeoutError:
                # Nothing, not even a heartbeat: the read's cancellation cancelled the
                # call too; open a new one from the last token.
                self._drop(call)
                continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed.is_set() and (task is None or not task.cancelling()):
                    raise StopAsyncIteration from None  # aclose() cancelled the call
                raise
            except grpc.RpcError as error:
                self._drop(call)
                if self._closed.is_set():
                    raise StopAsyncIteration from None
                if is_terminal(error):
                    await self.aclose()
                    raise from_rpc_error(error) from error
                continue
            if response is aio.EOF:  # the server ended the stream cleanly
                self._drop(call)
                continue
            self._backoff.reset()
            message = self._state.accept(response)
            if isinstance(message, pb.ChangeEvent):
                return message
            if isinstance(message, pb.Progress):
                await _call_back(self._on_progress, message)
            elif isinstance(message, pb.ResyncRequired):
                await _call_back(self._on_resync, message.reason)

    def _buffered(self) -> pb.ChangeEvent | None:
        """The rest of a received batch, unless the stream was closed meanwhile."""
        return None if self._closed.is_set() else self._state.buffered()

    async def _connect(self) -> Any:
        if self._call is not None:
            return self._call
        if self._delay is not None:
            with contextlib.suppress(TimeoutError):  # the backoff, cut short by aclose()
                await asyncio.wait_for(self._closed.wait(), self._delay)
        if self._closed.is_set():
            raise StopAsyncIteration
        self._delay = None
        self._call = self._open_call(self._state.request())
        return self._call

    def _drop(self, call: Any) -> None:
        call.cancel()
        self._call = None
        self._delay = self._backoff.next_delay()

    async def aclose(self) -> None:
        """Cancel the call. Idempotent."""
        self._closed.set()
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    async def __aenter__(self) -> AsyncWatchStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
