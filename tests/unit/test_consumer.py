"""The consume loop: metrics read at scrape, lag on failure, probes, settings."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import uuid4

import httpx
import pytest
import uvicorn
from aiokafka import TopicPartition
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry

from nova_events import EventEnvelope, EventMetadata, dumps
from nova_platform import consumer, serve
from nova_platform.batches import BatchProcessor
from nova_platform.consumer import (
    ConsumeLoop,
    ConsumerMetrics,
    ParkedAudiosReload,
    build_consumer_app,
    failing_checks,
)
from nova_platform.parking import InMemoryParking
from nova_platform.settings import NovaSettings
from nova_transcriber.entrypoints import consumer as transcriber_consumer
from nova_transcriber.entrypoints.consumer import create_app as transcriber_app
from nova_transcriber.settings import TranscriberSettings

TOPIC = "nova.audio.events.v1"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_last_applied_age_is_measured_when_scraped() -> None:
    registry, clock = CollectorRegistry(), Clock(1_000.0)
    metrics = ConsumerMetrics(registry, clock=clock)
    age = "nova_consumer_last_applied_age_seconds"
    assert math.isnan(registry.get_sample_value(age) or 0.0)

    metrics.applied_up_to(990.0)
    assert registry.get_sample_value(age) == 10.0
    clock.now = 1_300.0  # nothing applied since: the consumer ages
    assert registry.get_sample_value(age) == 310.0
    metrics.applied_up_to(980.0)  # an older event does not make it younger
    assert registry.get_sample_value(age) == 310.0
    assert (
        registry.get_sample_value("nova_consumer_last_applied_timestamp_seconds")
        == 990.0
    )


@dataclass
class Raw:
    """The part of an aiokafka ConsumerRecord the loop reads."""

    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    topic: str = TOPIC
    timestamp: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Consumer:
    """The part of AIOKafkaConsumer the loop reads: assignment and positions."""

    def __init__(self, highwater: dict[int, int], position: dict[int, int]) -> None:
        self._highwater = highwater
        self.positions = position

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, p) for p in self._highwater}

    def highwater(self, tp: TopicPartition) -> int:
        return self._highwater[tp.partition]

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp.partition]


class Message:
    def __init__(self, raws: Sequence[Raw], consumer: Consumer) -> None:
        self.raw_message = tuple(raws)
        self.consumer = consumer
        self.outcome: str | None = None

    async def ack(self) -> None:
        self.outcome = "ack"

    async def nack(self) -> None:
        self.outcome = "nack"
        for raw in self.raw_message:  # what FastStream's nack does: rewind
            current = self.consumer.positions[raw.partition]
            self.consumer.positions[raw.partition] = min(current, raw.offset)


def event(version: int = 1) -> tuple[bytes, bytes]:
    audio_id = uuid4()
    envelope = EventEnvelope(
        aggregate_type="AudioFile",
        aggregate_id=audio_id,
        event_type="AudioProcessingCompleted",
        schema_version=1,
        version=version,
        metadata=EventMetadata(correlation_id="c"),
        data={"audio_id": str(audio_id)},
    )
    return str(audio_id).encode(), dumps(envelope)


class Outage:
    def __init__(self) -> None:
        self.down = True

    async def __call__(self, envelopes: Sequence[EventEnvelope]) -> None:
        if self.down:
            raise ConnectionRefusedError("the read model does not answer")


def loop_with(
    handler: Outage, registry: CollectorRegistry, stopping: asyncio.Event
) -> ConsumeLoop:
    processor = BatchProcessor(handler, InMemoryParking())
    return ConsumeLoop(processor, ConsumerMetrics(registry), {}, stopping)


async def test_a_failed_batch_updates_the_lag_and_is_rewound() -> None:
    registry, stopping, outage = CollectorRegistry(), asyncio.Event(), Outage()
    stopping.set()  # no backoff wait in this test
    loop = loop_with(outage, registry, stopping)
    key, value = event()
    kafka = Consumer(highwater={0: 120, 1: 7}, position={0: 100, 1: 7})
    message = Message([Raw(0, 60, value, key, timestamp=5_000)], kafka)

    await loop.on_batch(cast(KafkaMessage, message))

    assert message.outcome == "nack"
    assert registry.get_sample_value("nova_consumer_lag", {"partition": "0"}) == 60
    assert registry.get_sample_value("nova_consumer_lag", {"partition": "1"}) == 0
    assert registry.get_sample_value("nova_consumer_batch_failures_total") == 1
    age = registry.get_sample_value("nova_consumer_last_applied_age_seconds")
    assert math.isnan(age or 0.0), "nothing was applied"

    outage.down = False
    kafka.positions[0] = 61
    await loop.on_batch(cast(KafkaMessage, message))

    assert message.outcome == "ack"
    assert registry.get_sample_value("nova_consumer_lag", {"partition": "0"}) == 59
    assert registry.get_sample_value("nova_consumer_applied_events_total") == 1
    assert (
        registry.get_sample_value("nova_consumer_last_applied_timestamp_seconds") == 5.0
    )


async def test_a_shutdown_cuts_the_retry_backoff_short() -> None:
    stopping = asyncio.Event()
    loop = loop_with(Outage(), CollectorRegistry(), stopping)
    loop.failures = 20  # the next backoff would be the longest, 30 s
    key, value = event()
    message = Message([Raw(0, 0, value, key)], Consumer({0: 1}, {0: 0}))

    failing = asyncio.create_task(loop.on_batch(cast(KafkaMessage, message)))
    while message.outcome is None:  # rewound: now waiting out the backoff
        await asyncio.sleep(0)
    stopping.set()

    await asyncio.wait_for(failing, timeout=5)
    assert message.outcome == "nack"


class NeverReturns:
    """A handler stuck forever (a backend call without a timeout), until the
    test releases it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(self, envelopes: Sequence[EventEnvelope]) -> None:
        self.entered.set()
        await self.released.wait()


async def test_the_loop_tells_how_long_its_batch_in_progress_has_been_handled() -> None:
    clock, handler = Clock(100.0), NeverReturns()
    processor = BatchProcessor(handler, InMemoryParking())
    loop = ConsumeLoop(
        processor, ConsumerMetrics(CollectorRegistry()), {}, asyncio.Event(), clock
    )
    key, value = event()
    message = Message([Raw(0, 0, value, key)], Consumer({0: 1}, {0: 0}))
    idle = loop.busy_for_s()

    batch = asyncio.create_task(loop.on_batch(cast(KafkaMessage, message)))
    await handler.entered.wait()
    clock.now = 400.0
    stuck_for = loop.busy_for_s()
    handler.released.set()
    await asyncio.wait_for(batch, timeout=5)

    assert (idle, stuck_for) == (0.0, 300.0)
    assert message.outcome == "ack"
    assert loop.busy_for_s() == 0.0


async def test_the_backoff_after_a_rewind_is_not_counted_as_busy() -> None:
    clock, stopping = Clock(100.0), asyncio.Event()
    processor = BatchProcessor(Outage(), InMemoryParking())
    loop = ConsumeLoop(
        processor, ConsumerMetrics(CollectorRegistry()), {}, stopping, clock
    )
    loop.failures = 20  # the next backoff is the longest, 30 s
    key, value = event()
    message = Message([Raw(0, 0, value, key)], Consumer({0: 1}, {0: 0}))

    failing = asyncio.create_task(loop.on_batch(cast(KafkaMessage, message)))
    while message.outcome is None:  # rewound: now waiting out the backoff
        await asyncio.sleep(0)
    clock.now = 1_000.0
    during_backoff = loop.busy_for_s()
    stopping.set()
    await asyncio.wait_for(failing, timeout=5)

    assert during_backoff == 0.0


def test_the_transcriber_is_stuck_only_past_its_longest_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given: dict[str, Any] = {}

    def capture(settings: NovaSettings, **options: Any) -> object:
        given.update(options)
        return object()

    monkeypatch.setattr(transcriber_consumer, "build_consumer_app", capture)
    settings = TranscriberSettings(jwt_secret="s" * 32)

    transcriber_consumer.create_app(settings)

    assert given["stuck_after_s"] == settings.longest_request_s + 60.0
    assert given["stuck_after_s"] * 1000 > given["max_poll_interval_ms"]


async def test_an_assignment_reloads_parked_audios_and_a_revoke_drops_lag() -> None:
    parking, registry = InMemoryParking(), CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    processor = BatchProcessor(Outage(), parking)
    listener = ParkedAudiosReload(lambda: processor, metrics)
    await processor.process([])  # the parked set is loaded once
    metrics.lag.labels(partition="3").set(12)

    await listener.on_partitions_revoked({TopicPartition(TOPIC, 3)})
    await parking.park("elsewhere", [], "parked by another instance")
    await listener.on_partitions_assigned({TopicPartition(TOPIC, 3)})
    await processor.process([])

    assert processor.parked_aggregates == 1
    assert registry.get_sample_value("nova_consumer_lag", {"partition": "3"}) is None


async def test_failing_checks_name_what_raises_and_what_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer, "READY_TIMEOUT_S", 0.05)
    never = asyncio.Event()

    async def fine() -> None:
        return None

    async def refused() -> None:
        raise ConnectionRefusedError("table unreachable")

    async def hangs() -> None:
        await never.wait()

    failing = await failing_checks({"ok": fine, "table": refused, "slow": hangs})

    assert set(failing) == {"table", "slow"}
    assert "table unreachable" in failing["table"]
    assert "no answer" in failing["slow"]


async def test_readyz_fails_when_a_ready_check_raises() -> None:
    async def opensearch_down() -> None:
        raise ConnectionError("OpenSearch at http://search:9200 is down")

    app = build_consumer_app(
        NovaSettings(kafka_bootstrap_servers="127.0.0.1:1"),
        service="test",
        handle_batch=Outage(),
        ready_checks={"opensearch": opensearch_down},
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://c") as http:
        ready = await http.get("/readyz")
        alive = await http.get("/healthz")

    assert ready.status_code == 503
    failing: dict[str, Any] = json.loads(ready.content)["failing"]
    assert "is down" in failing["opensearch"]
    assert {"kafka", "parking"} <= set(failing), "never started: no Kafka, no parking"
    assert alive.status_code == 503, "the consume loop never started"


def test_the_grace_and_the_poll_interval_reach_the_broker() -> None:
    app = build_consumer_app(
        NovaSettings(shutdown_grace_s=12.5),
        service="test",
        handle_batch=Outage(),
        max_records=7,
        max_poll_interval_ms=900_000,
    )

    assert app.broker is not None
    assert app.broker.config.graceful_timeout == 12.5
    (subscriber,) = app.broker.subscribers
    # FastStream hands these to AIOKafkaConsumer as they are.
    options = subscriber._connection_args  # type: ignore[attr-defined]
    assert options["max_poll_interval_ms"] == 900_000
    assert options["isolation_level"] == "read_committed"
    assert subscriber.max_records == 7  # type: ignore[attr-defined]
    assert isinstance(subscriber._listener, ParkedAudiosReload)  # type: ignore[attr-defined]


@pytest.mark.parametrize("engine", ["whisper", "aws"])
def test_the_transcriber_polls_one_request_at_a_time_within_its_bound(
    engine: str,
) -> None:
    settings = TranscriberSettings(
        jwt_secret="s" * 32, transcriber_engine=engine, transcriber_max_duration_s=3600
    )

    app = transcriber_app(settings)

    assert app.broker is not None
    (subscriber,) = app.broker.subscribers
    interval_s = subscriber._connection_args["max_poll_interval_ms"] / 1000  # type: ignore[attr-defined]
    recognition = 3600 * 1.5 if engine == "whisper" else settings.transcribe_timeout_s
    assert interval_s > recognition
    assert interval_s == settings.longest_request_s
    assert subscriber.max_records == 1  # type: ignore[attr-defined]


def test_serve_gives_uvicorn_the_shutdown_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(serve, "configure_logging", lambda *_: None)
    monkeypatch.setattr(serve, "configure_tracing", lambda *_: None)
    monkeypatch.setattr(serve, "shutdown_tracing", lambda: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options))

    serve.serve("test", NovaSettings(shutdown_grace_s=12.5), 8999, lambda _: object())

    assert seen["timeout_graceful_shutdown"] == 13
    assert seen["port"] == 8999
