"""The Wrapper's HTTP API, as the cache core's `WrapperSource` (urllib3's connection pool, synchronous).

Why urllib3's `HTTPConnectionPool`, used directly: a cache miss is one GET to the Wrapper, and
its HTTP client was most of the miss's CPU. On this host a bare GET costs the client 188 µs
with urllib3 against 347 µs with `httpx.Client` (docs/BENCHMARKS.md, the `http-client`
group), and with httpx ~60 % of a miss's Python was httpx (request building, cookies, h11,
the pool's locks). The Wrapper is one origin, so one pool (no `PoolManager`): up to
`max_connections` keep-alive connections, a call waiting for a free one within its time
(`block=True`, as httpx's pool limit). The gRPC server is the sync one, so each RPC thread
makes its own blocking call on the shared pool (sync was also measured about twice as fast
as an asyncio client under concurrency here: "Measurements made before `make bench`").

What urllib3 is left to do: nothing but one attempt. Its own retries and redirects are off
(`retries=False`, `redirect=False`: a 3xx is an unexpected status, as it was with httpx), its
request target is the one `urls.resolve` built and checked (urllib3 sends it unchanged: see
urls.py), and nothing is asked compressed (urllib3 sends `Accept-Encoding: identity`). HTTPS
verifies against the system's CA store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured); proxy
variables (`HTTPS_PROXY`...) are not read: the Wrapper is reached directly.

Every call is bounded by the caller's absolute deadline (`time.monotonic()` clock): each
attempt's timeout (waiting for a pooled connection, then connect + response together) is the
smaller of `timeout_s` and the time left, and retries (only for idempotent reads failing with
a connection error, a timeout or a 502/503/504/500) back off with full jitter and stop when
the time left cannot cover another attempt. The caller therefore gets an answer or
`WrapperUnavailable` before its deadline, never a hang. A circuit breaker per endpoint kind
(`health.py`) makes calls to a Wrapper known to be down fail at once (`WRAPPER_KNOWN_DOWN`)
instead of each waiting out a timeout.

    fetch_item / fetch_snapshot
        -> _get(path)  --attempt-->  200: parse (codec) | 404: NotFound
                        \\-retry-/   5xx / timeout / refused: WrapperUnavailable when out of attempts or time
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import urllib3
from urllib3.exceptions import EmptyPoolError, HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import parse_url

from hybridcache.client.backoff import BackoffPolicy
from hybridcache.client.reasons import Reason
from hybridcache.server import codec
from hybridcache.server.core.digest import KindDigest
from hybridcache.server.core.errors import NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.source import Snapshot
from hybridcache.server.core.values import Value
from hybridcache.server.wrapper import urls
from hybridcache.server.wrapper.health import UNHEALTHY_REASONS, WrapperHealth
from hybridcache.server.wrapper.mapping import DEFAULT_MAP, KindMap, WrapperMap, dig, next_page, to_contract

log = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
_MIN_ATTEMPT_S = 0.005  # an attempt with less time than this left is not worth starting
# Full jitter: retries of one read inside the caller's deadline want the earliest retry.
_BACKOFF = BackoffPolicy(initial_s=0.04, cap_s=0.5, jitter="full")


class WrapperClient:
    """Reads from the Wrapper. Thread-safe: one urllib3 connection pool shared by all threads."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 2.0,
        retries: int = 2,
        max_connections: int = 32,
        on_fetch: Callable[[str, float, bool], None] | None = None,
        on_snapshot: Callable[[str], None] | None = None,
        on_body: Callable[[bytes], None] | None = None,
        max_concurrent_snapshots: int = 0,
        health: WrapperHealth | None = None,
        mapping: WrapperMap = DEFAULT_MAP,
    ) -> None:
        self.mapping = mapping  # URLs, paging and JSON shapes of this Wrapper (mapping.py)
        self.pages_loaded = 0  # list pages fetched, all kinds (paging is visible to the check)
        self._timeout_s = timeout_s
        self.health = health or WrapperHealth()
        self._retries = retries
        # Snapshot loads (warm-up, resyncs, first reads of a tenant) are the heavy requests a
        # fleet sends all at once after a shared gap: cap them per process (0: no cap).
        self._snapshot_slots = (
            threading.BoundedSemaphore(max_concurrent_snapshots) if max_concurrent_snapshots > 0 else None
        )
        self._on_fetch = on_fetch  # (what, seconds, ok) for metrics; no ids, low cardinality
        self._on_snapshot = on_snapshot  # (tenant) after a snapshot was fetched: the heap settles
        self._on_body = on_body  # (body) of every response: `wrapper-check` counts the bytes
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers
        base = parse_url(base_url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"the Wrapper URL must be http:// or https:// with a host, not {base_url!r}")
        self._prefix = urls.check_prefix(base.path or "")  # the base URL's path, e.g. "/base"
        pool_class = urllib3.HTTPSConnectionPool if base.scheme == "https" else urllib3.HTTPConnectionPool
        self._pool: urllib3.HTTPConnectionPool = pool_class(
            base.host,
            base.port,
            maxsize=max_connections,
            block=True,  # at most max_connections at once; a call waits for one within its time
            headers=headers,
            retries=False,  # one attempt per urlopen: the retries are ours (deadline, backoff)
        )

    def close(self) -> None:
        self._pool.close()

    def known_down(self, kind: Kind) -> bool:
        """Whether the item endpoint of `kind` is known to be failing (its breaker is not closed)."""
        return self.health.known_down(f"item:{kind}")

    @property
    def pool(self) -> urllib3.HTTPConnectionPool:
        """The connection pool (tracing instruments it: hybridcache.server.ops.tracing)."""
        return self._pool

    # --- WrapperSource

    def fetch_item(self, tenant_id: str, kind: Kind, key: str, deadline: float | None) -> Value:
        entry = self._entry(kind)
        path, headers = self.mapping.fetch_request(tenant_id, entry, key)
        body = self._get(path, deadline, what=f"item:{kind}", headers=headers)
        try:
            if entry.fetch.item is not None:
                body = dig(body, entry.fetch.item)
            return codec.parse_item(kind, to_contract(entry, body))
        except ValueError as exc:
            raise WrapperUnavailable(
                f"the Wrapper sent a malformed {kind} item: {exc}", reason=Reason.WRAPPER_BAD_RESPONSE
            ) from None

    def fetch_snapshot(self, tenant_id: str, kind: Kind, deadline: float | None) -> Snapshot:
        slots = self._snapshot_slots
        if slots is None:
            snapshot = self._load_snapshot(tenant_id, kind, deadline)
        else:
            if deadline is None:
                deadline = time.monotonic() + self._timeout_s * (self._retries + 1)
            if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise WrapperUnavailable(
                    "too many snapshot loads in progress; none finished in time", reason=Reason.WRAPPER_BUSY
                )
            try:
                snapshot = self._load_snapshot(tenant_id, kind, deadline)
            finally:
                slots.release()
        if self._on_snapshot is not None:
            self._on_snapshot(tenant_id)
        return snapshot

    def _load_snapshot(self, tenant_id: str, kind: Kind, deadline: float | None) -> Snapshot:
        """Every page of the kind's list endpoint (its mapping's paging style)."""
        entry = self._entry(kind)
        endpoint = entry.list
        if endpoint is None:
            raise WrapperUnavailable(
                f"the Wrapper mapping has no list endpoint for {kind}", reason=Reason.WRAPPER_ERROR
            )
        if deadline is None:  # one deadline for all the pages
            deadline = time.monotonic() + self._timeout_s * (self._retries + 1)
        paging = endpoint.paging
        items: dict[str, Value] = {}
        revision = 0
        cursor: str | None = None
        received = 0  # entities in the pages so far: the next offset
        for page in range(paging.max_pages):
            path, headers = self.mapping.list_request(tenant_id, endpoint, cursor, received)
            body = self._get(path, deadline, what=f"snapshot:{kind}", headers=headers)
            self.pages_loaded += 1
            try:
                items_raw = dig(body, endpoint.items)
                if page == 0 and endpoint.revision is not None:
                    found = dig(body, endpoint.revision)
                    revision = 0 if found is None else found  # a Wrapper without revisions: 0
                if (
                    not isinstance(items_raw, list)
                    or isinstance(revision, bool)
                    or not isinstance(revision, int)
                ):
                    raise ValueError(
                        f"{endpoint.items!r} must be a list and {endpoint.revision!r} an integer"
                    )
                known = len(items)
                for raw in items_raw:
                    value = codec.parse_item(kind, to_contract(entry, raw))
                    items[codec.key_of(kind, value)] = value
                if page > 0 and items_raw and len(items) == known:  # else: the same page, max_pages times
                    raise ValueError(f"page {page + 1} repeats the entities already listed (paging ignored?)")
                received += len(items_raw)
                more, cursor = next_page(paging, body, len(items_raw), received)
                if not more:
                    break
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise WrapperUnavailable(
                    f"the Wrapper sent a malformed {kind} snapshot: {exc}", reason=Reason.WRAPPER_BAD_RESPONSE
                ) from None
        else:
            raise WrapperUnavailable(
                f"the {kind} list did not end within {paging.max_pages} pages",
                reason=Reason.WRAPPER_BAD_RESPONSE,
            )
        return Snapshot(tenant_id=tenant_id, kind=kind, revision=revision, items=items)

    def _entry(self, kind: Kind) -> KindMap:
        entry = self.mapping.entry(kind)
        if entry is None:
            raise WrapperUnavailable(f"the Wrapper mapping does not map {kind}", reason=Reason.WRAPPER_ERROR)
        return entry

    def list_tenants(self, deadline: float | None = None) -> list[str]:
        body = self._get("/api/tenants", deadline, what="tenants")
        return [str(t["tenantId"]) for t in body.get("tenants", [])]

    # --- anti-entropy digests (docs/CONTRACTS-INTERNAL.md, "Digests"); NotFound(NOT_FOUND)
    # from a Wrapper that has no digest endpoint

    def fetch_digest(
        self, tenant_id: str, kind: Kind, bucket_count: int, deadline: float | None, *, buckets: bool = False
    ) -> KindDigest:
        """The Wrapper's digest of a tenant-kind: the top only, or with every bucket's."""
        self._digests_mapped()
        path = f"/api/tenants/{_seg(tenant_id)}/digests/{kind}" + ("/buckets" if buckets else "")
        body = self._get(f"{path}?bucketCount={int(bucket_count)}", deadline, what="digest")
        try:
            listed = tuple(str(b) for b in body["buckets"]) if buckets else ()
            digest = KindDigest(int(body["bucketCount"]), int(body["count"]), str(body["digest"]), listed)
            if digest.bucket_count != bucket_count or (buckets and len(listed) != bucket_count):
                raise ValueError("bucket count differs from the one asked for")
        except (KeyError, TypeError, ValueError) as exc:
            raise WrapperUnavailable(
                f"the Wrapper sent a malformed {kind} digest: {exc}", reason=Reason.WRAPPER_BAD_RESPONSE
            ) from None
        return digest

    def fetch_bucket(
        self, tenant_id: str, kind: Kind, bucket_count: int, bucket: int, deadline: float | None
    ) -> dict[str, Value]:
        """The items of one digest bucket of a tenant-kind (key -> value)."""
        self._digests_mapped()
        path = f"/api/tenants/{_seg(tenant_id)}/snapshots/{kind}/buckets/{int(bucket)}"
        body = self._get(f"{path}?bucketCount={int(bucket_count)}", deadline, what="bucket")
        try:
            return codec.parse_items(kind, body["items"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WrapperUnavailable(
                f"the Wrapper sent a malformed {kind} bucket: {exc}", reason=Reason.WRAPPER_BAD_RESPONSE
            ) from None

    def _digests_mapped(self) -> None:
        """Digests are not part of a mapping file: a Wrapper with its own API has none (as
        if it answered 404 there: the verifier then relies on events; docs/WRAPPER.md)."""
        if self.mapping != DEFAULT_MAP:
            raise NotFound("the Wrapper mapping has no digest endpoints", reason=Reason.NOT_FOUND)

    # --- one GET with deadline-bounded retries

    def _get(
        self, path: str, deadline: float | None, *, what: str, headers: dict[str, str] | None = None
    ) -> Any:
        """Through the endpoint kind's circuit breaker (`health.py`)."""
        breaker = self.health.breaker(what)
        probe = breaker.admit()  # raises WRAPPER_KNOWN_DOWN while open
        try:
            body = self._get_with_retries(path, deadline, what=what, headers=headers)
        except WrapperUnavailable as exc:
            if exc.reason in UNHEALTHY_REASONS:
                breaker.failed(probe)
            elif exc.reason == "WRAPPER_REJECTED":
                breaker.succeeded(probe)  # it answered: up, if misconfigured
            else:
                breaker.neutral(probe)  # e.g. the deadline left no time to call it
            raise
        except NotFound:
            breaker.succeeded(probe)
            raise
        except BaseException:
            breaker.neutral(probe)
            raise
        breaker.succeeded(probe)
        return body

    def _get_with_retries(
        self, path: str, deadline: float | None, *, what: str, headers: dict[str, str] | None = None
    ) -> Any:
        if deadline is None:
            deadline = time.monotonic() + self._timeout_s * (self._retries + 1)
        target = urls.resolve(self._prefix, path)  # exactly this path, or refused
        sent = self._headers if not headers else {**self._headers, **headers}
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left < _MIN_ATTEMPT_S:
                raise WrapperUnavailable(
                    "deadline exceeded before the Wrapper answered", reason=Reason.WRAPPER_DEADLINE
                )
            started = time.monotonic()
            wait = min(self._timeout_s, left)
            try:
                # (looked up each call: tracing may have wrapped the pool's urlopen)
                response = self._pool.urlopen(
                    "GET",
                    target,
                    headers=sent,
                    retries=False,
                    redirect=False,
                    timeout=urllib3.Timeout(total=wait),
                    pool_timeout=cast(int, wait),  # (typed int; a queue.get timeout: seconds)
                )
            except HTTPError as exc:  # refused, reset, timed out, TLS, a broken response
                failure = _transport_failure(exc)
            else:
                status = response.status
                body = response.data
                if self._on_body is not None:
                    self._on_body(body)
                if status == 200:
                    self._observe(what, started, ok=True)
                    try:
                        return json.loads(body)
                    except ValueError:
                        raise WrapperUnavailable(
                            "the Wrapper sent a body that is not JSON", reason=Reason.WRAPPER_BAD_RESPONSE
                        ) from None
                if status == 404:
                    self._observe(what, started, ok=True)
                    raise self._not_found(body)
                if status not in _RETRYABLE_STATUS:
                    self._observe(what, started, ok=False)
                    raise WrapperUnavailable(
                        f"the Wrapper refused the request (HTTP {status})",
                        reason=Reason.WRAPPER_REJECTED if status in (401, 403) else Reason.WRAPPER_ERROR,
                    )
                failure = WrapperUnavailable(
                    f"the Wrapper failed (HTTP {status})", reason=Reason.WRAPPER_ERROR
                )
            self._observe(what, started, ok=False)
            attempt += 1
            if attempt > self._retries:
                raise failure
            pause = _BACKOFF.delay(attempt - 1)
            if time.monotonic() + pause + _MIN_ATTEMPT_S >= deadline:
                raise failure
            time.sleep(pause)

    def _observe(self, what: str, started: float, *, ok: bool) -> None:
        if self._on_fetch is not None:
            self._on_fetch(what.split(":", 1)[-1], time.monotonic() - started, ok)

    def _not_found(self, data: bytes) -> NotFound:
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if self.mapping.tenant_unknown(body):
            return NotFound("unknown tenant", reason=Reason.TENANT_NOT_FOUND)
        return NotFound("not found", reason=Reason.NOT_FOUND)


def _transport_failure(exc: HTTPError) -> WrapperUnavailable:
    """The reason for an attempt that got no HTTP answer."""
    # (NewConnectionError first: urllib3 2 derives it from its TimeoutError)
    if isinstance(exc, (Urllib3Timeout, EmptyPoolError)) and not isinstance(exc, NewConnectionError):
        return WrapperUnavailable("the Wrapper did not answer in time", reason=Reason.WRAPPER_TIMEOUT)
    return WrapperUnavailable(
        f"cannot reach the Wrapper ({type(exc).__name__})", reason=Reason.WRAPPER_UNREACHABLE
    )


def _seg(value: str) -> str:
    """One URL path segment, percent-encoded, never a dot segment (`urls.py`); ids are
    validated already, this is defence in depth."""
    return urls.segment(value)
