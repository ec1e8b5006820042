"""A consumer app against the real broker and DynamoDB: probes, metrics, logs."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import httpx
import pytest
from prometheus_client import CollectorRegistry

from nova_events import AUDIO_FILE, EventEnvelope, EventMetadata, dumps
from nova_events.topics import HEADER_CORRELATION_ID
from nova_platform.consumer import build_consumer_app
from nova_platform.kafka import make_producer
from nova_platform.logging import audio_id, correlation_id, event_id
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from ..waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def own_settings(settings: NovaSettings) -> NovaSettings:
    """A topic of its own, so the test's event is alone in its batch."""
    mine = settings.model_copy(
        update={"resource_suffix": settings.resource_suffix + "c"}
    )
    await ensure_all(mine)
    return mine


def probe_event() -> EventEnvelope:
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=uuid4(),
        event_type="AudioProcessingCompleted",
        schema_version=1,
        version=1,
        metadata=EventMetadata(correlation_id="corr-probe"),
        data={},
    )


async def publish(settings: NovaSettings, envelope: EventEnvelope) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.events_topic,
            dumps(envelope),
            key=str(envelope.aggregate_id).encode(),
            headers=[(HEADER_CORRELATION_ID, b"corr-probe")],
        )
    finally:
        await producer.stop()


async def test_a_handler_stuck_longer_than_the_bound_fails_liveness(
    settings: NovaSettings,
) -> None:
    settings = settings.model_copy(
        update={"resource_suffix": settings.resource_suffix + "s"}
    )
    await ensure_all(settings)
    entered, released = asyncio.Event(), asyncio.Event()

    async def never_returns(envelopes: Sequence[EventEnvelope]) -> None:
        entered.set()
        await released.wait()  # forever, until the test lets it go

    app = build_consumer_app(
        settings,
        service=f"stuck-{uuid4().hex[:8]}",
        handle_batch=never_returns,
        stuck_after_s=1.5,
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.start_lifespan_context(),
        httpx.AsyncClient(transport=transport, base_url="http://c") as http,
    ):

        async def liveness(wanted: int) -> dict[str, Any] | None:
            answer = await http.get("/healthz")
            if answer.status_code != wanted:
                return None
            return answer.json() if answer.content else {}

        await eventually(lambda: liveness(204), what="the consume loop runs")
        await publish(settings, probe_event())
        await asyncio.wait_for(entered.wait(), timeout=60)
        alive_at_first = (await http.get("/healthz")).status_code

        problem = await eventually(
            lambda: liveness(503), timeout=10, what="/healthz failing"
        )
        released.set()
        await eventually(lambda: liveness(204), what="/healthz passing again")

    assert alive_at_first == 204, "not stuck yet: within the bound"
    assert "longer than 1.5 s: its handler is stuck" in problem["title"]


async def test_a_running_consumer_is_alive_ready_and_applies_with_context(
    own_settings: NovaSettings,
) -> None:
    settings = own_settings
    seen: dict[str, tuple[str | None, str | None, str | None]] = {}
    search_down = False

    async def handle(envelopes: Sequence[EventEnvelope]) -> None:
        for envelope in envelopes:
            seen[str(envelope.event_id)] = (
                correlation_id.get(),
                event_id.get(),
                audio_id.get(),
            )

    async def search_answers() -> None:
        if search_down:
            raise ConnectionError("search is down")

    registry = CollectorRegistry()
    app = build_consumer_app(
        settings,
        service=f"probe-{uuid4().hex[:8]}",
        handle_batch=handle,
        ready_checks={"search": search_answers},
        registry=registry,
    )
    envelope = EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=uuid4(),
        event_type="AudioProcessingCompleted",
        schema_version=1,
        version=1,
        metadata=EventMetadata(correlation_id="corr-probe"),
        data={},
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.start_lifespan_context(),
        httpx.AsyncClient(transport=transport, base_url="http://c") as http,
    ):

        async def answers(path: str) -> int | None:
            status = (await http.get(path)).status_code
            return status if status == 204 else None

        await eventually(lambda: answers("/healthz"), what="the consume loop runs")
        await eventually(lambda: answers("/readyz"), what="the backends answer")

        producer = make_producer(settings)
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.events_topic,
                dumps(envelope),
                key=str(envelope.aggregate_id).encode(),
                headers=[(HEADER_CORRELATION_ID, b"corr-probe")],
            )
        finally:
            await producer.stop()

        async def applied_age() -> float | None:
            age = registry.get_sample_value("nova_consumer_last_applied_age_seconds")
            return None if age is None or math.isnan(age) else age

        await eventually(applied_age, what="the event applied and committed")
        assert str(envelope.event_id) in seen

        search_down = True
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503
        assert "search is down" in not_ready.json()["failing"]["search"]
        assert (await http.get("/healthz")).status_code == 204

    # Alone in its batch (its own topic), the event's ids were set meanwhile.
    assert seen[str(envelope.event_id)] == (
        "corr-probe",
        str(envelope.event_id),
        str(envelope.aggregate_id),
    )
