"""Structured logs: JSON lines on stdout (console format on a TTY), via structlog.

The standard library's `logging` is routed through the same renderer, so modules simply
use `logging.getLogger(__name__)`. What is logged never includes profile fields, tokens or
secrets: values are logged by id and kind only, and `SecretStr` settings render masked.

grpc's own log records are the exception to "values by id only": grpc logs a header value
it cannot decode, and a body it cannot parse, in full (an `authorization: Bearer <token>\xff`
header put the token in the log). They pass `GrpcRecordGuard` on the way out: the two known
floods (undecodable metadata, undeserializable messages) become one counted line per reason
per minute, and any other grpc record keeps only its text, with quoted values, arguments and
tracebacks removed.

One line is hot: the gate's line per RPC (`log_rpc`). Through logging and structlog's chain
it costs ~55 µs, ~10 % of an RPC; in JSON mode it is rendered from a fixed template instead,
the same line the chain renders. The service writes its JSON lines through a
`CoalescedStream` (`HYBRIDCACHE_LOG_FLUSH_INTERVAL_S`, 0.1 s by default): the RPC line is
handed over as a record and rendered by the stream's writer thread, with every line of the
interval in one `write(2)` — the call itself pays an append (docs/BENCHMARKS.md has the cost
of each way).
"""

from __future__ import annotations

import atexit
import datetime
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring_ascii
from typing import Any, Literal

import structlog

from hybridcache.server.events.ratelog import RateLimitedLog
from hybridcache.server.ops.metrics import counter

_rpc_log = logging.getLogger("hybridcache.rpc")

# The handler configure_logging installed in JSON mode and its formatter (None: console mode or
# not configured).
_json_handler: logging.StreamHandler[Any] | None = None
_json_formatter: logging.Formatter | None = None

# What the chain below renders for the RPC line: json.dumps' separators and key order (the
# shared processors' keys, then the extras in the order given), strings ASCII-escaped like
# json.dumps (ensure_ascii), the float as its repr (json.dumps' float format). Nothing in the
# service binds structlog contextvars, so merge_contextvars adds no key to it.
# tests/unit/test_logs.py checks it against the chain's rendering.
_RPC_LINE = (
    '{"event": "rpc", "level": "info", "logger": "hybridcache.rpc", "timestamp": "%s", '
    '"caller": %s, "method": %s, "code": %s, "duration_ms": %r}'
)
# With tracing on, the line also carries the RPC's trace id, as its last key.
_RPC_LINE_TRACED = _RPC_LINE[:-1] + ', "trace_id": %s}'
_UTC = datetime.UTC
_from_timestamp = datetime.datetime.fromtimestamp
_time = time.time

# The current trace id ("" when none), set by tracing when it is on (hybridcache.server.ops.tracing).
_trace_id: Callable[[], str] | None = None


def set_trace_id_source(source: Callable[[], str] | None) -> None:
    global _trace_id  # noqa: PLW0603 (one tracing configuration per process, like the logging one)
    _trace_id = source


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "info", *, flush_interval_s: float = 0.0
) -> None:
    """`flush_interval_s` > 0 (JSON lines only): lines are gathered and written together at most
    that long after they were logged (`CoalescedStream`), instead of one write per line."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    stream: Any = sys.stdout
    if flush_interval_s > 0 and not use_console:
        stream = CoalescedStream(sys.stdout, flush_interval_s, render=rpc_line)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    global _json_handler, _json_formatter  # the process has one logging configuration
    _json_handler, _json_formatter = (None, None) if use_console else (handler, handler.formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    guard_grpc_logs(handler)
    # httpx logs every request at INFO, URL included (tenant and user ids): our own fetch
    # metrics and errors say what operators need, so keep the libraries to warnings.
    for noisy in ("httpx", "httpcore"):  # (devtools and tests still use httpx)
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # urllib3 (the Wrapper client) logs each request's URL at DEBUG and, for a response with
    # malformed headers, at WARNING: it has nothing at ERROR, so nothing of it is kept.
    logging.getLogger("urllib3").setLevel(max(logging.ERROR, root.level))


def log_rpc(caller: str, method: str, code: str, duration_ms: float) -> None:
    """The gate's line per RPC, at INFO on the `hybridcache.rpc` logger."""
    if not _rpc_log.isEnabledFor(logging.INFO):
        return
    trace_id = _trace_id() if _trace_id is not None else ""
    handler = _json_handler
    if handler is not None and _only_handler(_rpc_log) is handler and handler.formatter is _json_formatter:
        record = (_time(), caller, method, code, duration_ms, trace_id)
        stream = handler.stream
        if type(stream) is CoalescedStream:
            stream.write_record(record)  # rendered by its writer, with the interval's others
            return
        if _write(handler, rpc_line(record)):
            return
    extra: dict[str, object] = {"caller": caller, "method": method, "code": code, "duration_ms": duration_ms}
    if trace_id:
        extra["trace_id"] = trace_id
    _rpc_log.info("rpc", extra=extra)


RpcRecord = tuple[float, str, str, str, float, str]  # epoch seconds, caller, method, code, ms, trace id


def rpc_line(record: RpcRecord) -> str:
    """The RPC line as structlog's chain renders it, newline included (`_RPC_LINE`)."""
    at, caller, method, code, duration_ms, trace_id = record
    fields = (
        # structlog's TimeStamper(fmt="iso", utc=True), as the chain stamps other lines.
        _from_timestamp(at, _UTC).isoformat().replace("+00:00", "Z"),
        encode_basestring_ascii(caller),
        encode_basestring_ascii(method),
        encode_basestring_ascii(code),
        duration_ms,
    )
    if trace_id:
        return _RPC_LINE_TRACED % (*fields, encode_basestring_ascii(trace_id)) + "\n"
    return _RPC_LINE % fields + "\n"


def _write(handler: logging.StreamHandler[Any], line: str) -> bool:
    """What StreamHandler.emit does with a formatted line, under the handler's lock as
    Handler.handle takes it. False if it failed: the caller then logs the line through logging,
    which reports the failure its way (Handler.handleError)."""
    handler.acquire()
    try:
        handler.stream.write(line)
        handler.stream.flush()
    except Exception:
        return False
    finally:
        handler.release()
    return True


_RECORD_CHARS = 160  # about a rendered RPC line, for the buffer's bound


class CoalescedStream:
    """A text stream that gathers what is written and passes it on in one write per interval.

    With a line per RPC, writing each line at once costs a `write(2)` per call (~5-10 µs here,
    and the lines of concurrent calls contend for the stream's lock while it runs). Gathered,
    the lines of an interval leave together from a background thread, in the order written.
    A line is late by at most `interval_s`; what is gathered when the process is killed
    (SIGKILL, not SIGTERM: `close` runs at exit) is lost. Thread-safe.
    """

    def __init__(
        self,
        target: Any,
        interval_s: float,
        *,
        max_buffered_chars: int = 1 << 16,
        render: Callable[[Any], str] = str,
    ) -> None:
        self._target = target
        self._render = render  # turns a `write_record` record into its text, at write time
        self._interval_s = interval_s
        self._max = max_buffered_chars
        self._parts: list[Any] = []  # text, or records still to render
        self._size = 0
        self._lock = threading.Lock()  # one lock for gathering and writing: lines keep their order
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hybridcache-log-flush", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            if self._size >= self._max:  # a burst: write now rather than hold unbounded text
                self._drain_locked()
        return len(text)

    def write_record(self, record: object) -> None:
        """A line given as a record: rendered when written, so the caller pays only this append."""
        with self._lock:
            self._parts.append(record)
            self._size += _RECORD_CHARS
            if self._size >= self._max:
                self._drain_locked()

    def flush(self) -> None:
        """Called by the handler after every line: the line leaves with its interval's others."""

    def drain(self) -> None:
        """Write what is gathered now."""
        with self._lock:
            self._drain_locked()

    def close(self) -> None:
        self._closed.set()
        self.drain()

    def isatty(self) -> bool:
        return False

    def _drain_locked(self) -> None:
        if not self._parts:
            return
        parts, self._parts, self._size = self._parts, [], 0
        try:
            render = self._render
            text = "".join(part if type(part) is str else render(part) for part in parts)
            self._target.write(text)
            self._target.flush()
        except Exception:  # noqa: S110 (a closed or broken stdout: nowhere left to say so)
            pass

    def _run(self) -> None:
        while not self._closed.wait(self._interval_s):
            self.drain()


def _only_handler(logger: logging.Logger) -> logging.Handler | None:
    """The one handler a record of `logger` at INFO would reach with nothing else in the way
    (no filter, no other handler), else None: then the line goes through logging as usual, so
    whatever was added after configure_logging (a test's capture, a filter) still sees it."""
    if logger.disabled or logger.filters:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or handler.filters or handler.level > logging.INFO:
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


# --- grpc's own records

# grpc's loggers' messages for the two floods anyone can cause (cygrpc's metadata decoder and
# grpc._common's deserializer). Matched by prefix: the rest of the line is the data.
_GRPC_FLOODS = (
    ("Invalid encoding on", "metadata-not-utf8"),
    ("Exception deserializing", "message-not-parsable"),
)
GRPC_LOG_REASONS = (*(reason for _, reason in _GRPC_FLOODS), "other")  # every one exported, 0 or not
_QUOTED = re.compile(r"""b?'[^']*'|b?"[^"]*"|<[^>]*>""")
_MAX_GRPC_TEXT = 200


class GrpcRecordGuard(logging.Filter):
    """Lets no value from a grpc log record through (see the module docstring).

    A handler filter on the `grpc` logger's own handler: grpc's records come from child
    loggers (`grpc._common`, `grpc._cython.cygrpc`, ...), and only handler filters see what
    children propagate. Counts by reason are kept for metrics (`counts`).
    """

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._summary = RateLimitedLog(
            logging.getLogger("hybridcache.grpc"),
            "grpc could not decode part of a request: %s (%d since the last line; values not logged)",
            interval_s=interval_s,
        )

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        reason = next((r for prefix, r in _GRPC_FLOODS if text.startswith(prefix)), None)
        with self._lock:
            self.counts[reason or "other"] += 1
        if reason is not None:
            self._summary.note(reason)  # logs on hybridcache.grpc, which is not filtered by us
            return False
        exc = record.exc_info[1] if record.exc_info else None
        record.msg = _QUOTED.sub("<value>", text)[:_MAX_GRPC_TEXT]
        if exc is not None:
            record.msg += f" ({type(exc).__name__})"
        record.args = None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


grpc_guard = GrpcRecordGuard()


def guard_grpc_logs(handler: logging.Handler) -> None:
    """Route grpc's loggers to a copy of `handler` (same stream and formatter) behind
    `grpc_guard`, instead of the root handler: a filter there would cost the per-RPC line its
    fast path, and grpc's records are rare."""
    grpc_logger = logging.getLogger("grpc")
    stream = getattr(handler, "stream", sys.stdout)
    guarded = logging.StreamHandler(stream)
    guarded.setFormatter(handler.formatter)
    guarded.addFilter(grpc_guard)
    grpc_logger.handlers[:] = [guarded]
    grpc_logger.propagate = False


def grpc_guard_metrics() -> Iterator[Any]:
    """Scrape-time: grpc's own log records by reason (metadata-not-utf8, message-not-parsable, other)."""
    yield counter(
        "hybridcache_grpc_log_records",
        "grpc's own log records, by reason; their values are never logged.",
        ["reason"],
        [([reason], grpc_guard.counts.get(reason, 0)) for reason in GRPC_LOG_REASONS],
    )
