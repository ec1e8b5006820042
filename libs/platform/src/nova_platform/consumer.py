"""The consume loop shared by every Kafka consumer service.

Records arrive in batches (FastStream over aiokafka, `read_committed`). The
batch is applied through `BatchProcessor`, which parks poison events per
audio, and only then is the offset committed. A transient failure rewinds the
batch and retries it with exponential backoff, so an outage of a backend delays
the consumer but never loses or parks an event.

Each consumer app serves `/healthz`, `/readyz` and `/metrics` (lag per
partition, age of the last applied event, applied and parked counts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry, Counter, Gauge, make_asgi_app

from nova_events.topics import HEADER_TRACEPARENT

from .aws import client_kwargs, session
from .batches import BatchHandler, BatchProcessor, to_record
from .kafka import make_producer
from .parking import KafkaDynamoDBParking, Parking, Record
from .settings import NovaSettings
from .tracing import batch_span

logger = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]

MAX_BACKOFF_S = 30.0


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "nova_consumer_lag",
            "Records in the partition not yet consumed by this group",
            ["partition"],
            registry=registry,
        )
        self.last_applied_age = Gauge(
            "nova_consumer_last_applied_age_seconds",
            "Age of the newest event applied, when it was applied",
            registry=registry,
        )
        self.applied = Counter(
            "nova_consumer_applied_events", "Events applied", registry=registry
        )
        self.parked_events = Counter(
            "nova_consumer_parked_events",
            "Events sent to the dead-letter topic",
            registry=registry,
        )
        self.parked_aggregates = Gauge(
            "nova_consumer_parked_aggregates",
            "Audios parked for this group, waiting for a redrive",
            registry=registry,
        )
        self.batch_failures = Counter(
            "nova_consumer_batch_failures",
            "Batches rewound after a transient failure",
            registry=registry,
        )


async def open_parking(
    settings: NovaSettings, service: str, stack: AsyncExitStack
) -> Parking:
    """Parking on the dead-letter topic and the parking table, closed by `stack`."""
    ddb = await stack.enter_async_context(
        session().client("dynamodb", **client_kwargs(settings))
    )
    producer = make_producer(settings)
    await producer.start()
    stack.push_async_callback(producer.stop)
    return KafkaDynamoDBParking(
        producer,
        settings.dead_letter_topic,
        ddb,
        settings.parking_table,
        settings.consumer_group(service),
    )


def build_consumer_app(
    settings: NovaSettings,
    *,
    service: str,
    handle_batch: BatchHandler,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    max_records: int = 500,
    registry: CollectorRegistry | None = None,
) -> AsgiFastStream:
    """An ASGI app that consumes the events topic as group `nova-<service>`.

    `/metrics` serves `registry` (a fresh one by default), so a service can
    add its own metrics next to the consumer's.
    """
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"nova-{service}",
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
    )
    registry = registry or CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    stack = AsyncExitStack()
    processor: BatchProcessor | None = None
    failures = 0

    async def start() -> None:
        nonlocal processor
        parking = await open_parking(settings, service, stack)
        processor = BatchProcessor(handle_batch, parking)

    @broker.subscriber(
        settings.events_topic,
        group_id=settings.consumer_group(service),
        batch=True,
        max_records=max_records,
        batch_timeout_ms=100,
        auto_offset_reset="earliest",
        # The relay publishes in transactions: never read an aborted batch.
        isolation_level="read_committed",
        ack_policy=AckPolicy.MANUAL,
        decoder=_raw,
    )
    async def on_batch(body: Any, message: KafkaMessage) -> None:
        nonlocal failures
        if processor is None:
            raise RuntimeError("the consumer started before its parking")
        raw = message.raw_message
        records = [to_record(r) for r in (raw if isinstance(raw, tuple) else (raw,))]
        applied, parked = processor.applied, processor.parked_events
        try:
            with batch_span(
                f"{settings.events_topic} process",
                [_traceparent(r) for r in records],
                {
                    "messaging.system": "kafka",
                    "messaging.consumer.group.name": settings.consumer_group(service),
                    "messaging.batch.message_count": len(records),
                },
            ):
                await processor.process(records)
        except Exception:
            failures += 1
            metrics.batch_failures.inc()
            delay = min(MAX_BACKOFF_S, 0.2 * 2 ** min(failures, 8))
            logger.exception(
                "batch failed; rewinding to retry",
                extra={
                    "records": len(records),
                    "attempt": failures,
                    "retry_in_s": delay,
                },
            )
            await message.nack()
            await asyncio.sleep(delay)
            return
        failures = 0
        await message.ack()
        metrics.applied.inc(processor.applied - applied)
        metrics.parked_events.inc(processor.parked_events - parked)
        metrics.parked_aggregates.set(processor.parked_aggregates)
        newest = max((r.timestamp for r in _raws(raw)), default=None)
        if newest is not None:
            metrics.last_applied_age.set(max(0.0, time.time() - newest / 1000))
        await _record_lag(message, metrics)

    ping = make_ping_asgi(broker, timeout=5.0, include_in_schema=False)
    return AsgiFastStream(
        broker,
        asgi_routes=[
            ("/healthz", ping),
            ("/readyz", ping),
            ("/metrics", make_asgi_app(registry)),
        ],
        logger=logging.getLogger("faststream"),
        on_startup=[*on_startup, start],
        after_shutdown=[*on_shutdown, stack.aclose],
    )


async def _raw(message: Any) -> Any:
    # Records are decoded (and validated) once, by the BatchProcessor.
    return None


def _traceparent(record: Record) -> str | None:
    for key, value in record.headers:
        if key == HEADER_TRACEPARENT:
            return value.decode(errors="replace")
    return None


def _raws(raw: Any) -> tuple[Any, ...]:
    return raw if isinstance(raw, tuple) else (raw,)


async def _record_lag(message: KafkaMessage, metrics: ConsumerMetrics) -> None:
    consumer = getattr(message, "consumer", None)
    if consumer is None:
        return
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        position = await consumer.position(tp)
        metrics.lag.labels(partition=str(tp.partition)).set(
            max(0, highwater - position)
        )
