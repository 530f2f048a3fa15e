"""Raw HTTP/2 against the gRPC port, for what grpc's own client will not send: streams that
open with HEADERS and then never send their request message (no DATA, no END_STREAM).

    H2Flood(port, path).hold(110)   # one TCP connection, 110 such streams kept open

The flood keeps `hold` streams open for as long as it runs: a stream the server ends (its
trailers, or RST_STREAM) is replaced at once, so a server that refuses quickly sees a
sustained stream of new ones, and one that lets them wait sees them all waiting. It respects
the server's SETTINGS_MAX_CONCURRENT_STREAMS (h2 refuses to exceed it), as a real attacker
would have to, and counts what the server answered. (One call and its answer, with any
headers or body: `raw_h2.RawH2`; this is the sustained many-stream variant.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class H2Flood:
    def __init__(self, port: int, path: str, *, token: str | None = None, refill: bool = True) -> None:
        self.port = port
        self.path = path
        self.token = token
        # grpc-status of each stream the server ended; "RST" for resets
        self.statuses: Counter[str] = Counter()
        self.opened = 0
        self._refill = refill  # False: open `hold` streams once, replace none the server ends
        self.server_max_streams: int | None = None
        self._hold = 0
        self._open: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._sock.settimeout(0.05)
        self._conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self._conn.initiate_connection()
        self._sock.sendall(self._conn.data_to_send())
        self._reader = threading.Thread(target=self._run, name="h2-flood", daemon=True)

    def _headers(self) -> list[tuple[str, str]]:
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", self.path),
            (":authority", f"127.0.0.1:{self.port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if self.token is not None:
            headers.append(("authorization", f"Bearer {self.token}"))
        return headers

    def _top_up(self) -> None:
        """Open streams (HEADERS only) until `hold` are open or the server's limit stops us."""
        while len(self._open) < self._hold and (self._refill or self.opened < self._hold):
            try:
                stream_id = self._conn.get_next_available_stream_id()
                self._conn.send_headers(stream_id, self._headers(), end_stream=False)
            except h2.exceptions.TooManyStreamsError:
                break
            self._open.add(stream_id)
            self.opened += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._top_up()
                pending = self._conn.data_to_send()
            if pending:
                self._sock.sendall(pending)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with self._lock:
                for event in self._conn.receive_data(data):
                    self._on_event(event)

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            setting = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            if setting is not None:
                self.server_max_streams = setting.new_value
        elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            status = dict(event.headers).get(b"grpc-status")
            if status is not None:
                self.statuses[status.decode()] += 1
        elif isinstance(event, h2.events.DataReceived):
            self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            if isinstance(event, h2.events.StreamReset):
                self.statuses["RST"] += 1
            self._open.discard(event.stream_id)
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                if isinstance(event, h2.events.StreamEnded):
                    self._conn.reset_stream(event.stream_id)  # we never finish sending: end our side

    def hold(self, streams: int) -> H2Flood:
        self._hold = streams
        if not self._reader.is_alive():
            self._reader.start()
        return self

    @property
    def open_now(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(5)
        with contextlib.suppress(OSError):
            self._sock.close()


@contextlib.contextmanager
def flood(
    port: int, path: str, streams: int, *, token: str | None = None, refill: bool = True
) -> Iterator[H2Flood]:
    attack = H2Flood(port, path, token=token, refill=refill).hold(streams)
    try:
        yield attack
    finally:
        attack.close()
