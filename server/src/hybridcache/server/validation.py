"""Request field limits, checked before anything else happens.

Ids are short, printable and free of separators we use elsewhere, so a key can never
escape its tenant and nothing odd reaches a URL, a log line or a Redis channel:

| field                         | length | characters       |
|-------------------------------|--------|------------------|
| tenant id                     | 1-64   | A-Z a-z 0-9 . _ - |
| operation code, flag key, org unit id, role id | 1-128 | A-Z a-z 0-9 . _ : - |
| user id                       | 1-128  | A-Z a-z 0-9 . _ : - @ |
| permission                    | 1-256  | A-Z a-z 0-9 . _ : - * |
| operation codes per batch     | 1-1000 |                  |
"""

from __future__ import annotations

import re

from hybridcache.server.core.errors import InvalidRequest

MAX_BATCH = 1000

_TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_USER = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_PERMISSION = re.compile(r"[A-Za-z0-9._:*-]{1,256}")


def _check(pattern: re.Pattern[str], value: str, field: str, limit: int, chars: str) -> str:
    if pattern.fullmatch(value) is None:
        if not value:
            raise InvalidRequest(f"{field} is required", reason="FIELD_REQUIRED")
        if len(value) > limit:
            raise InvalidRequest(f"{field} is longer than {limit} characters", reason="FIELD_TOO_LONG")
        raise InvalidRequest(f"{field} may only contain {chars}", reason="FIELD_INVALID")
    return value


def check_tenant_id(value: str) -> str:
    return _check(_TENANT, value, "tenant_id", 64, "letters, digits, '.', '_' and '-'")


def check_key(value: str, field: str) -> str:
    return _check(_KEY, value, field, 128, "letters, digits, '.', '_', ':' and '-'")


def check_user_id(value: str) -> str:
    return _check(_USER, value, "user_id", 128, "letters, digits, '.', '_', ':', '@' and '-'")


def check_permission(value: str) -> str:
    return _check(_PERMISSION, value, "permission", 256, "letters, digits, '.', '_', ':', '*' and '-'")


def check_batch(values: list[str], field: str) -> list[str]:
    """Validate every code; return them de-duplicated in the order first asked."""
    if not values:
        raise InvalidRequest(f"{field} must name at least one entry", reason="FIELD_REQUIRED")
    if len(values) > MAX_BATCH:
        raise InvalidRequest(f"{field} may name at most {MAX_BATCH} entries", reason="BATCH_TOO_LARGE")
    return [check_key(v, field) for v in dict.fromkeys(values)]
