"""The per-RPC log line: its fast path writes exactly the line structlog's chain renders, to the
same stream, and steps aside (to the ordinary path) whenever logging is set up otherwise."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import re
from collections.abc import Iterator
from typing import Literal
from unittest.mock import patch

import pytest
import structlog

from hybridcache.server.ops import logs
from hybridcache.server.ops.logs import configure_logging, log_rpc

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"
FIELDS = ["event", "level", "logger", "timestamp", "caller", "method", "code", "duration_ms"]


@pytest.fixture
def stdout() -> Iterator[io.StringIO]:
    """Where `configure` (below) points configure_logging's handler; the process's logging
    setup is restored afterwards."""
    loggers = [logging.getLogger(name) for name in ("", "httpx", "httpcore", "urllib3")]
    levels = [logger.level for logger in loggers]
    handlers, config = loggers[0].handlers[:], structlog.get_config()
    json_output = logs._json_handler, logs._json_formatter
    yield io.StringIO()
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    loggers[0].handlers[:] = handlers
    structlog.configure(**config)
    logs._json_handler, logs._json_formatter = json_output


def configure(
    stdout: io.StringIO, fmt: Literal["json", "console"], level: str, flush_interval_s: float = 0.0
) -> None:
    # pytest's capture swaps sys.stdout between a test's phases, so swap it here, in the test.
    with patch("sys.stdout", stdout):
        configure_logging(fmt, level, flush_interval_s=flush_interval_s)


def drained(stdout: io.StringIO) -> io.StringIO:
    """`stdout` once the lines a CoalescedStream holds were written (a no-op without one)."""
    stream = getattr(logs._json_handler, "stream", None)
    if isinstance(stream, logs.CoalescedStream):
        stream.close()
    return stdout


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def through_the_chain(caller: str, method: str, code: str, duration_ms: float) -> None:
    """The line as any other log line is made: logging, then structlog's processors."""
    logging.getLogger("hybridcache.rpc").info(
        "rpc", extra={"caller": caller, "method": method, "code": code, "duration_ms": duration_ms}
    )


@pytest.mark.parametrize(
    ("caller", "method", "code", "duration_ms"),
    [
        ("crm", "GetCreditCost", "OK", 0.123),
        ("-", "GetUserProfile", "UNAUTHENTICATED", 12.0),
        ('odd "caller" \\ é ✓', "CheckPermission", "RESOURCE_EXHAUSTED", 1234.5),
    ],
)
@pytest.mark.parametrize("flush_interval_s", [0.0, 30.0], ids=["each-line-at-once", "coalesced"])
def test_fast_line_is_the_line_the_chain_renders(  # noqa: PLR0917 (pytest parameters)
    stdout: io.StringIO, caller: str, method: str, code: str, duration_ms: float, flush_interval_s: float
) -> None:
    configure(stdout, "json", "info", flush_interval_s)
    log_rpc(caller, method, code, duration_ms)
    assert logs._only_handler(logging.getLogger("hybridcache.rpc")) is logs._json_handler  # fast path
    through_the_chain(caller, method, code, duration_ms)
    if flush_interval_s:
        assert lines(stdout) == [], "a coalesced line was written before its interval ended"
    fast, chain = lines(drained(stdout))
    parsed = json.loads(fast)
    assert list(parsed) == FIELDS
    assert parsed == {
        **parsed,
        "event": "rpc",
        "level": "info",
        "logger": "hybridcache.rpc",
        "caller": caller,
        "method": method,
        "code": code,
        "duration_ms": duration_ms,
    }
    assert re.fullmatch(ISO_UTC, parsed["timestamp"])
    # Byte for byte the chain's line, timestamps aside.
    assert re.sub(ISO_UTC, "T", fast) == re.sub(ISO_UTC, "T", chain)


def test_rpc_line_honours_the_log_level(stdout: io.StringIO) -> None:
    configure(stdout, "json", "warning")
    log_rpc("crm", "GetCreditCost", "OK", 0.5)
    assert lines(stdout) == []


def test_another_handler_gets_the_line_too(stdout: io.StringIO) -> None:
    """A handler added after configure_logging (a capture, a file) sees the line: the fast path
    only runs when configure_logging's handler is the one that would get it."""
    configure(stdout, "json", "info")
    extra = logging.handlers.BufferingHandler(10)
    logging.getLogger("hybridcache").addHandler(extra)
    try:
        log_rpc("crm", "GetCreditCost", "OK", 0.5)
    finally:
        logging.getLogger("hybridcache").removeHandler(extra)
    assert [record.getMessage() for record in extra.buffer] == ["rpc"]
    assert json.loads(lines(stdout)[0])["method"] == "GetCreditCost"


def test_a_filter_on_the_rpc_logger_is_honoured(stdout: io.StringIO) -> None:
    configure(stdout, "json", "info")
    rpc = logging.getLogger("hybridcache.rpc")
    drop = logging.Filter("nothing-matches")
    rpc.addFilter(drop)
    try:
        log_rpc("crm", "GetCreditCost", "OK", 0.5)
    finally:
        rpc.removeFilter(drop)
    assert lines(stdout) == []


def test_another_formatter_on_the_handler_is_used(stdout: io.StringIO) -> None:
    configure(stdout, "json", "info")
    assert logs._json_handler is not None
    logs._json_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    log_rpc("crm", "GetCreditCost", "OK", 0.5)
    assert lines(stdout) == ["INFO hybridcache.rpc rpc"]


def test_console_mode_renders_through_the_chain(stdout: io.StringIO) -> None:
    configure(stdout, "console", "info")
    log_rpc("crm", "GetCreditCost", "OK", 0.5)
    (line,) = lines(stdout)
    assert "rpc" in line
    assert "GetCreditCost" in line
    assert not line.startswith("{")


def test_traced_line_is_the_line_the_chain_renders(stdout: io.StringIO) -> None:
    """With tracing on, both paths end the line with the same trace_id key."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    logs.set_trace_id_source(lambda: trace_id)
    try:
        configure(stdout, "json", "info")
        log_rpc("crm", "GetCreditCost", "OK", 0.25)
        assert logs._only_handler(logging.getLogger("hybridcache.rpc")) is logs._json_handler  # fast path
        logging.getLogger("hybridcache.rpc").info(
            "rpc",
            extra={
                "caller": "crm",
                "method": "GetCreditCost",
                "code": "OK",
                "duration_ms": 0.25,
                "trace_id": trace_id,
            },
        )
        logs.set_trace_id_source(lambda: "")  # no span current: no key at all
        log_rpc("crm", "GetCreditCost", "OK", 0.25)
    finally:
        logs.set_trace_id_source(None)
    fast, chain, untraced = lines(stdout)
    assert list(json.loads(fast)) == [*FIELDS, "trace_id"]
    assert json.loads(fast)["trace_id"] == trace_id
    assert re.sub(ISO_UTC, "T", fast) == re.sub(ISO_UTC, "T", chain)
    assert list(json.loads(untraced)) == FIELDS
