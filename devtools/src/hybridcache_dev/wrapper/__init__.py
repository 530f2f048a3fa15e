"""The development Wrapper: a real HTTP application over SQLite, seeded with demo tenants.

It serves the Wrapper HTTP API that hybridcache calls (`/api`, docs/wrapper-api.yaml) and
admin endpoints (`/admin`) that change data and publish change notifications on Redis in
the seed's format. Run it with `python -m hybridcache_dev.wrapper --help`, or from a
test with `launch(redis_url, ...)`.

Only the launcher is imported here: a process that starts the Wrapper never loads FastAPI.
"""

from __future__ import annotations

from hybridcache_dev.wrapper.defaults import DEFAULT_APP, DEFAULT_TOKEN
from hybridcache_dev.wrapper.launcher import DevWrapperProcess, launch

__all__ = ["DEFAULT_APP", "DEFAULT_TOKEN", "DevWrapperProcess", "launch"]
