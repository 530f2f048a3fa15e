"""The one table of identifier shapes: requests (`api/validation.py`), WatchChanges filters
(`api/watch.py`) and change notifications (`events/decode.py`) all check ids against it.

Ids end up in Wrapper URL paths, Redis channel names and log lines, so they are short,
printable and free of anything with a meaning there: no `/`, `\\`, `%`, `?`, `#`, space,
quote or control character (only the characters listed), and never made only of dots —
`.` and `..` are dot segments that HTTP clients and proxies resolve, so a tenant `..` would
turn `/api/tenants/../users/u/profile` into `/api/users/u/profile`.

| shape      | used for                                              | length | characters            |
|------------|-------------------------------------------------------|--------|-----------------------|
| TENANT     | tenant ids (requests, filters, channels, event bodies) | 1-64   | A-Z a-z 0-9 . _ -     |
| KEY        | operation codes, flag keys, org unit and role ids      | 1-128  | A-Z a-z 0-9 . _ : -   |
| USER       | user ids (and an event's key field, which may be one)  | 1-128  | A-Z a-z 0-9 . _ : @ - |
| PERMISSION | permissions asked about                                | 1-256  | A-Z a-z 0-9 . _ : * - |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_NOT_ONLY_DOTS = r"(?!\.+\Z)"  # a lookahead: the whole id may not be dots alone


@dataclass(frozen=True, slots=True)
class IdShape:
    pattern: re.Pattern[str]
    max_length: int
    characters: str  # for error messages, in words

    def matches(self, value: str) -> bool:
        return self.pattern.fullmatch(value) is not None


def _shape(chars: str, max_length: int, words: str) -> IdShape:
    return IdShape(re.compile(rf"{_NOT_ONLY_DOTS}[{chars}]{{1,{max_length}}}"), max_length, words)


TENANT: Final = _shape(r"A-Za-z0-9._-", 64, "letters, digits, '.', '_' and '-' (not only dots)")
KEY: Final = _shape(r"A-Za-z0-9._:-", 128, "letters, digits, '.', '_', ':' and '-' (not only dots)")
USER: Final = _shape(r"A-Za-z0-9._:@-", 128, "letters, digits, '.', '_', ':', '@' and '-' (not only dots)")
PERMISSION: Final = _shape(
    r"A-Za-z0-9._:*-", 256, "letters, digits, '.', '_', ':', '*' and '-' (not only dots)"
)
