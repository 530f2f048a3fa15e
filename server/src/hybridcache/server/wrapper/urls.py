"""Wrapper URLs whose path no id can change.

Ids are validated before they get here (`ids.py`); this is the second, independent line.
Three things could let an id steer a request to another route of the Wrapper, and each is
closed here:

* a separator inside an id (`a/b`, `?`, `#`): every id segment is percent-encoded with
  nothing left "safe", so only unreserved characters stay as they are;
* a dot segment (`.`, `..`): percent-encoding leaves dots alone (they are unreserved) and
  an HTTP client or a proxy in front of the Wrapper resolves them, so `tenants/../users`
  would become `users`. A segment that is empty or made only of dots is refused outright,
  and so is a built path with an encoded one (`%2E%2E` is the same segment to RFC 3986);
* the HTTP client rewriting the path: httpx resolves dot segments whenever it parses a
  URL, so the final URL is checked to carry exactly the path that was built.

An id refused here is an `InvalidRequest` (INVALID_ARGUMENT): it names no entity.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

import httpx

from hybridcache.client.reasons import Reason
from hybridcache.server.core.errors import InvalidRequest


class UnsafeWrapperPath(InvalidRequest):
    """An id that would change the Wrapper path, or a path the HTTP client would rewrite."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=Reason.FIELD_INVALID)


def segment(value: str) -> str:
    """`value` as one URL path segment: percent-encoded (UTF-8), never a dot segment."""
    if not value.strip("."):  # (`quote` never writes a dot as %2E: the value's dots are all)
        raise UnsafeWrapperPath("an id may not be empty or made only of dots")
    return quote(value, safe="")


def resolve(base: httpx.URL, path: str) -> httpx.URL:
    """`base` with `path` (built from literal parts and `segment`s, optionally with a query
    string) appended, unchanged.

    Raises UnsafeWrapperPath when the URL httpx builds has any other path: a literal dot
    segment or an unencoded character slipped into `path`.
    """
    if not path.startswith("/") or not path.isascii():
        raise UnsafeWrapperPath("a Wrapper path must start with '/' and be percent-encoded ASCII")
    wanted = base.raw_path.rstrip(b"/") + path.encode("ascii")
    url = base.copy_with(raw_path=wanted, query=None, fragment=None)
    segments = path.split("?", 1)[0][1:].split("/")  # (a query string is not path)
    if url.raw_path != wanted or any(not unquote(s).strip(".") for s in segments):
        raise UnsafeWrapperPath("the Wrapper path would not be the one built from the ids")
    return url
