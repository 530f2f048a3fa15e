"""OpenTelemetry tracing: off unless the standard OTEL_* variables switch it on.

    OTEL_TRACES_EXPORTER=otlp (or console; several comma-separated)   -> on
    unset, "none", or OTEL_SDK_DISABLED=true                          -> off

Off, nothing of OpenTelemetry is imported or installed: the server gets the same interceptors,
cache and Wrapper source objects as without this module, so the hit path pays nothing. On
(`hybridcache-server[tracing]`; `spans.py`), `Tracing` hands `app.py` wrapped versions of the same
parts. Everything else (endpoint, protocol, sampler, batch sizes, resource attributes) is the
SDK's own OTEL_* configuration. docs/OPERATIONS.md ("Tracing") lists the spans, attributes
and events.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

    from hybridcache.server.core import HybridCache
    from hybridcache.server.core.source import WrapperSource
    from hybridcache.server.wrapper.client import WrapperClient

_EXPORTERS_VAR = "OTEL_TRACES_EXPORTER"


def requested_exporters(environ: Mapping[str, str]) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER names; [] means tracing is off (the SDK's default
    would be otlp: here it must be asked for)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip().lower() for name in environ.get(_EXPORTERS_VAR, "").split(",")]
    return [name for name in names if name and name != "none"]


class Tracing:
    """What the service wires in for tracing. This base class is tracing off: every method
    hands back what it was given."""

    enabled = False

    def interceptors(self) -> Sequence[grpc.ServerInterceptor]:
        return ()

    def instrument_wrapper(self, wrapper: WrapperClient) -> WrapperSource:
        return wrapper

    def traced_cache(self, cache: HybridCache) -> Any:
        """What the servicer reads through (the cache itself, or a proxy recording span events)."""
        return cache

    def shutdown(self) -> None:
        """Export what is still buffered (at service stop)."""


def from_environment(environ: Mapping[str, str] | None = None) -> Tracing:
    """Tracing as the OTEL_* variables ask; fails with one clear line when they ask for it but
    the `tracing` extra is not installed or an exporter name is unknown."""
    env = os.environ if environ is None else environ
    exporters = requested_exporters(env)
    if not exporters:
        return Tracing()
    try:
        from hybridcache.server.ops.tracing.spans import OtelTracing, provider_from_environment  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError(
            f"{_EXPORTERS_VAR} asks for tracing but OpenTelemetry is not installed "
            f"(pip install 'hybridcache-server[tracing]'): {exc}"
        ) from None
    return OtelTracing(provider_from_environment(exporters))
