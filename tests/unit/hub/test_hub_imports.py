"""The in-memory hub is pure: importing it loads neither redis-py nor the event readers."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def test_importing_the_hub_loads_no_redis() -> None:
    probe = (
        "import sys, hybridcache.server.hub, hybridcache.server.hub.wire\n"
        "loaded = sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')"
        " or m.startswith('hybridcache.server.events.') and not m.endswith('.ports'))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=50, check=True
    )
    assert out.stdout.strip() == "", f"importing the hub loaded: {out.stdout.strip()}"
