"""W3C trace context on outgoing calls, when the OpenTelemetry API is installed.

`pip install 'hybridcache-client[tracing]'` (or any OpenTelemetry setup that brings the API):
while a span is current, each call's metadata also carries `traceparent` (and `tracestate`
/ `baggage`, as the configured propagators write them), so the service's span joins the
caller's trace. Without the API this module does nothing, and nothing else depends on it.
"""

from __future__ import annotations

Metadata = tuple[tuple[str, str], ...]  # what grpc's calls take

try:
    from opentelemetry import propagate, trace
except ImportError:  # the optional extra is not installed: no propagation
    _api_installed = False
else:
    _api_installed = True


def with_trace_context(metadata: Metadata) -> Metadata:
    """`metadata` plus the current span's trace context (unchanged when there is no span)."""
    if not _api_installed or not trace.get_current_span().get_span_context().is_valid:
        return tuple(metadata)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return (*metadata, *carrier.items())
