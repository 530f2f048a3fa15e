"""docs/wrapper-api.yaml, generated from the app so that it cannot drift from it.

`python -m hybridcache_dev.wrapper --write-openapi docs/wrapper-api.yaml` rewrites it;
a test fails when the committed file differs from `render_openapi()`.

No YAML library is a dependency, so this module emits the (JSON-shaped) document itself:
block mappings and sequences, every string double-quoted with JSON escapes (valid YAML
1.2 double-quoted scalars), keys plain only when they cannot be read as anything but a
string.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hybridcache_dev.wrapper.app import create_app
from hybridcache_dev.wrapper.store import Store

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
# YAML 1.1 readers take these as booleans or null even though 1.2 does not: quote them.
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}

_HEADER = "# Generated from the development Wrapper's app by write_openapi(); do not edit.\n"


def openapi_document() -> dict[str, Any]:
    store = Store(":memory:")
    try:
        return create_app(store, None).openapi()
    finally:
        store.close()


def render_openapi() -> str:
    return _HEADER + to_yaml(openapi_document())


def write_openapi(path: str | Path) -> None:
    Path(path).write_text(render_openapi(), encoding="utf-8")


def to_yaml(value: Any) -> str:
    """YAML text of a JSON-compatible value (dicts, lists, str, int, float, bool, None)."""
    return "".join(_block(value, 0))


def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) and key.lower() not in _RESERVED else json.dumps(key)


def _scalar(value: Any) -> str:
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, list) and not value:
        return "[]"
    if isinstance(value, str | bool | int | float) or value is None:
        return json.dumps(value)
    raise TypeError(f"not JSON-compatible: {type(value).__name__}")


def _is_block(value: Any) -> bool:
    return isinstance(value, dict | list) and bool(value)


def _block(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict) and value:
        for key, item in value.items():
            if _is_block(item):
                lines.append(f"{pad}{_key(str(key))}:\n")
                # Sequences under a mapping key sit at the key's indentation (common style).
                lines += _block(item, indent if isinstance(item, list) else indent + 2)
            else:
                lines.append(f"{pad}{_key(str(key))}: {_scalar(item)}\n")
    elif isinstance(value, list) and value:
        for item in value:
            if _is_block(item):
                nested = _block(item, indent + 2)
                # The first line of the item goes after the dash.
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines += nested[1:]
            else:
                lines.append(f"{pad}- {_scalar(item)}\n")
    else:
        lines.append(f"{pad}{_scalar(value)}\n")
    return lines
