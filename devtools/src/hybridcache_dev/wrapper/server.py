"""Running the development Wrapper under uvicorn, announcing the port when ready.

The socket is bound here (port 0: the OS picks a free one) and handed to uvicorn, so the
real port is known without parsing logs; the one line `DEVWRAPPER_READY http://HOST:PORT`
goes to stdout once uvicorn serves (after the app's start-up), for `launch()` to read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from dataclasses import dataclass
from types import FrameType

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from hybridcache_dev.wrapper.app import create_app
from hybridcache_dev.wrapper.defaults import DEFAULT_APP, DEFAULT_TOKEN, READY_PREFIX
from hybridcache_dev.wrapper.instrument import ConnectionRegistry
from hybridcache_dev.wrapper.publisher import DEFAULT_STREAM_MAXLEN, Publisher, PublishMode
from hybridcache_dev.wrapper.seed import demo_tenants, scaled_tenants
from hybridcache_dev.wrapper.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scale:
    tenants: int
    users: int
    operations: int

    @classmethod
    def parse(cls, text: str) -> Scale:
        """`"10x10000x200"`: tenants x users x operation codes."""
        try:
            tenants, users, operations = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"scale must look like 10x1000x50, not {text!r}") from None
        return cls(tenants, users, operations)

    def __str__(self) -> str:
        return f"{self.tenants}x{self.users}x{self.operations}"


@dataclass(frozen=True)
class WrapperSettings:
    host: str = "127.0.0.1"
    port: int = 0
    redis_url: str | None = None
    db_path: str = ":memory:"
    token: str = DEFAULT_TOKEN
    publish_mode: PublishMode = PublishMode.PUBSUB
    app_name: str = DEFAULT_APP
    stream_maxlen: int = DEFAULT_STREAM_MAXLEN
    scale: Scale | None = None  # None: the demo tenants
    reseed: bool = False  # reload the seed even when the database has data
    access_log: bool = False
    log_level: str = "warning"
    api_shape: str = "contract"  # or "crm": the design note's shape (crm_routes.py)


def open_store(settings: WrapperSettings) -> Store:
    """Open the database, seeding it when it is empty (or when asked to)."""
    store = Store(settings.db_path)
    if settings.reseed or store.is_empty():
        if settings.scale is None:
            store.load(demo_tenants())
        else:
            s = settings.scale
            store.load(scaled_tenants(s.tenants, s.users, s.operations))
    return store


def tracked_protocol(registry: ConnectionRegistry) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, recording each connection's transport for fault resets."""

    class TrackedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            registry.add(self.client, transport)

        def connection_lost(self, exc: Exception | None) -> None:
            registry.discard(self.client)
            super().connection_lost(exc)

    return TrackedH11Protocol


class _AnnouncingServer(uvicorn.Server):
    """Prints the READY line once uvicorn is serving."""

    def __init__(self, config: uvicorn.Config, url: str, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._url = url
        self._stopping = stopping
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A signal handler: hand the event over to the loop rather than set it here.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if self.started:
            sys.stdout.write(f"{READY_PREFIX}{self._url}\n")
            sys.stdout.flush()
            # From now on stdout is the same as stderr: a parent that read the READY line
            # need not keep draining a pipe that stray output could otherwise fill up.
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP explicitly: asyncio turns on TCP_NODELAY only for sockets that say
    # so, and without it every answer waited ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


def run(settings: WrapperSettings) -> None:
    """Serve until SIGTERM / SIGINT."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    store = open_store(settings)
    registry = ConnectionRegistry()
    publisher = Publisher(
        settings.redis_url,
        app=settings.app_name,
        mode=settings.publish_mode,
        stream_maxlen=settings.stream_maxlen,
    )
    app = create_app(
        store,
        publisher,
        token=settings.token,
        app_name=settings.app_name,
        connections=registry,
        api_shape=settings.api_shape,
    )
    stopping = app.state.wrapper.faults.stopping
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    config = uvicorn.Config(
        app,
        http=tracked_protocol(registry),
        ws="none",
        lifespan="on",
        access_log=settings.access_log,
        log_level=settings.log_level,
        # In-flight requests (a hung one included) get this long after SIGTERM.
        timeout_graceful_shutdown=2,
    )
    try:
        _AnnouncingServer(config, url, stopping).run(sockets=[sock])
    finally:
        sock.close()
        store.close()
