"""Defaults shared by the process that runs the Wrapper and the one that launches it.

Kept free of imports so that `launch()` does not load FastAPI into the test process.
"""

from __future__ import annotations

DEFAULT_TOKEN = "dev-wrapper-token"  # noqa: S105 (a development default, documented)
DEFAULT_APP = "crm"
READY_PREFIX = "DEVWRAPPER_READY "
