"""Trace context from an HTTP request into the events, and consumer spans.

An in-memory exporter records the spans. The global tracer provider can be
set once per process, so this module sets it once and every test filters the
spans of its own trace.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from nova_command_api.entrypoints.http import create_app
from nova_events import AUDIO_FILE
from nova_platform.logging import JsonFormatter
from nova_platform.tracing import batch_span, current_traceparent

from .test_command_api import World, upload

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def of_trace(spans: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    wanted = int(trace_id, 16)
    return [
        s
        for s in spans.get_finished_spans()
        if s.context is not None and s.context.trace_id == wanted
    ]


@pytest.fixture
def client(spans: InMemorySpanExporter) -> Iterator[tuple[TestClient, World]]:
    world = World()
    app = create_app(
        world.app_settings(),
        event_store=world.store,
        storage=world.storage,
        idempotency=world.idempotency,
    )
    with TestClient(app) as test_client:
        yield test_client, world


def test_a_command_continues_the_callers_trace_into_its_events(
    client: tuple[TestClient, World], spans: InMemorySpanExporter
) -> None:
    http, world = client
    created = upload(http, traceparent=f"00-{TRACE}-{CALLER_SPAN}-01")
    assert created.status_code == 201, created.text

    (server,) = [s for s in of_trace(spans, TRACE) if s.kind is trace.SpanKind.SERVER]
    assert server.name == "POST /commands/audio"
    assert server.kind is trace.SpanKind.SERVER
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 201

    audio_id = UUID(created.json()["audio_id"])
    (event,) = asyncio.run(world.store.get_events(AUDIO_FILE, audio_id))
    traceparent = event.metadata.traceparent
    assert traceparent is not None
    assert traceparent.split("-")[1] == TRACE
    # The span the event names is the request's (or a child FastAPI made).
    recorded = {
        format(s.context.span_id, "016x") for s in of_trace(spans, TRACE) if s.context
    }
    assert traceparent.split("-")[2] in recorded


def test_a_batch_of_one_command_continues_its_trace(
    spans: InMemorySpanExporter,
) -> None:
    parent = f"00-{TRACE}-{CALLER_SPAN}-01"
    with batch_span("events process", [parent, parent, None], {"n": 3}):
        inside = current_traceparent()
    assert inside is not None
    assert inside.split("-")[1] == TRACE
    batch = [s for s in of_trace(spans, TRACE) if s.name == "events process"]
    assert len(batch) == 1
    assert batch[0].kind is trace.SpanKind.CONSUMER
    assert [format(link.context.span_id, "016x") for link in batch[0].links] == [
        CALLER_SPAN
    ]


def test_a_batch_of_many_commands_links_to_each(spans: InMemorySpanExporter) -> None:
    parents = [f"00-{TRACE}-{CALLER_SPAN}-01", f"00-{OTHER_TRACE}-b7ad6b7169203331-01"]
    with batch_span("mixed batch", parents, {}):
        pass
    (batch,) = [s for s in spans.get_finished_spans() if s.name == "mixed batch"]
    assert batch.context is not None
    assert format(batch.context.trace_id, "032x") not in (TRACE, OTHER_TRACE)
    assert {format(link.context.trace_id, "032x") for link in batch.links} == {
        TRACE,
        OTHER_TRACE,
    }


def test_log_lines_inside_a_span_carry_its_trace_id(
    spans: InMemorySpanExporter,
) -> None:
    record = logging.LogRecord("t", logging.INFO, "f", 1, "hello", (), None)
    with batch_span("logged", [f"00-{TRACE}-{CALLER_SPAN}-01"], {}):
        inside = json.loads(JsonFormatter("test").format(record))
    outside = json.loads(JsonFormatter("test").format(record))
    assert inside["trace_id"] == TRACE
    assert "trace_id" not in outside
