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
* the HTTP client rewriting the path. The Wrapper client sends the request target it is
  given to urllib3's connection pool, which (for a target starting with `/`) does not
  resolve dot segments but does rewrite the rest: it percent-encodes any character outside
  RFC 3986's path and query characters (a space, a backslash, non-ASCII), upper-cases
  existing escapes (`%2e` -> `%2E`), encodes a `%` that starts no escape, and drops
  everything from a `#` on (`urllib3.util.url._encode_target`). `resolve` therefore only
  lets through a target made of exactly the characters urllib3 sends as they are
  (`_TARGET`), so the target on the wire is byte for byte the one built; its dot segments
  are refused as above (a proxy would still resolve those).

An id refused here is an `InvalidRequest` (INVALID_ARGUMENT): it names no entity.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from hybridcache.client.reasons import Reason
from hybridcache.server.core.errors import InvalidRequest

# RFC 3986 pchar (unreserved, sub-delims, ":" and "@"), an escape only with upper-case hex
# (what `quote` writes); a query may add "/" and "?". No "#", no space, no "%" alone, nothing
# above ASCII: every character here is one urllib3 writes unchanged.
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-F]{2})"
_TARGET = re.compile(rf"(?:/{_PCHAR}*)+(?:\?(?:{_PCHAR}|[/?])*)?")
_PREFIX = re.compile(rf"(?:/{_PCHAR}*)*")


class UnsafeWrapperPath(InvalidRequest):
    """An id that would change the Wrapper path, or a path the HTTP client would rewrite."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=Reason.FIELD_INVALID)


def segment(value: str) -> str:
    """`value` as one URL path segment: percent-encoded (UTF-8), never a dot segment."""
    if not value.strip("."):  # (`quote` never writes a dot as %2E: the value's dots are all)
        raise UnsafeWrapperPath("an id may not be empty or made only of dots")
    return quote(value, safe="")


def check_prefix(prefix: str) -> str:
    """The base URL's path (`/base`, or ""), without its trailing slash; ValueError when
    urllib3 would not send it as it is (the base URL is configuration, not an id)."""
    prefix = prefix.rstrip("/")
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"the Wrapper base URL's path {prefix!r} is not a plain percent-encoded path")
    return prefix


def resolve(prefix: str, path: str) -> str:
    """The request target `prefix` + `path` (built from literal parts and `segment`s,
    optionally with a query string), unchanged. `prefix` is the base URL's path, as
    `check_prefix` returned it.

    Raises UnsafeWrapperPath when the target would not reach the Wrapper byte for byte (a
    character urllib3 would encode, a fragment), or `path` has an empty or dot segment: a
    literal dot segment or an unencoded character slipped into `path`.
    """
    if not path.startswith("/") or not path.isascii():
        raise UnsafeWrapperPath("a Wrapper path must start with '/' and be percent-encoded ASCII")
    target = prefix + path
    segments = path.split("?", 1)[0][1:].split("/")  # (a query string is not path)
    if not _TARGET.fullmatch(target) or any(not unquote(s).strip(".") for s in segments):
        raise UnsafeWrapperPath("the Wrapper path would not be the one built from the ids")
    return target
