"""OpenTelemetry traces: one command followed from its HTTP request through
Kafka into every consumer.

- The APIs' server span of each request comes from FastAPI's own
  OpenTelemetry support, which continues a caller's `traceparent` header.
- command-api writes the current `traceparent` into each event's metadata
  (`current_traceparent`); the relay sends it as the Kafka header of the same
  name.
- Each consumer batch is one span linked to the spans of the commands that
  made its events (`batch_span`): a batch mixes many commands, so links, not
  one parent (the OpenTelemetry messaging conventions).
- The transcriber sends `traceparent` with the result it posts, so the
  events of the result continue the same trace.

Spans are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with the exporter's usual
`OTEL_*` settings. Without it no SDK is installed: the API's no-op tracer
keeps only the incoming trace context, so tracing costs next to nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import (
    TraceContextTextMapPropagator,
)

logger = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("nova")
_configured = False

ENDPOINT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def configure_tracing(service: str) -> bool:
    """Export spans of `service` over OTLP when an endpoint is configured.

    Returns whether it did. Safe to call more than once.
    """
    global _configured
    if _configured or not any(os.environ.get(v) for v in ENDPOINT_VARIABLES):
        return _configured
    # Imported here: a process without an endpoint never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"nova-{service}"})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    logger.info("exporting traces over OTLP", extra={"service": service})
    return True


def shutdown_tracing() -> None:
    """Flush what is buffered (on shutdown)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, if there is one."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def trace_id() -> str | None:
    """The current trace id in hex, for logs; None outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


@contextmanager
def batch_span(
    name: str, traceparents: Sequence[str | None], attributes: Mapping[str, object]
) -> Iterator[trace.Span]:
    """A CONSUMER span for one batch, linked to the span of each event's command.

    It starts a trace of its own (a batch has many parents); with a single
    distinct parent, it continues that trace instead, which is what a
    one-command flow through the pipeline shows as one trace.
    """
    contexts = []
    for value in dict.fromkeys(t for t in traceparents if t):
        span_context = trace.get_current_span(
            _propagator.extract({TRACEPARENT: value})
        ).get_span_context()
        if span_context.is_valid:
            contexts.append(span_context)
    parent = (
        trace.set_span_in_context(trace.NonRecordingSpan(contexts[0]))
        if len(contexts) == 1
        else context.Context()
    )
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.CONSUMER,
        links=[Link(c) for c in contexts],
        attributes={k: str(v) for k, v in attributes.items()},
    ) as span:
        yield span
