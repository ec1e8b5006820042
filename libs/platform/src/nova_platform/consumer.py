"""The consume loop shared by every Kafka consumer service.

Records arrive in batches (FastStream over aiokafka, `read_committed`). The
batch is applied through `BatchProcessor`, which parks poison events per
audio, and only then is the offset committed. A transient failure rewinds the
batch and retries it with exponential backoff, so an outage of a backend delays
the consumer but never loses or parks an event (see `batches` for the bound on
one audio that keeps failing while the backends work).

Each consumer app serves `/healthz` (the consume loop runs and the batch in
progress, if any, has not been handled for longer than the service's
`stuck_after_s`), `/readyz` (Kafka, the parking table and the service's own
`ready_checks` answer) and `/metrics` (lag per partition, age of the last
applied event, applied and parked counts). A handler stuck forever would keep
its partitions (the heartbeats go on) until `max.poll.interval` and look
healthy; failing `/healthz` instead makes Kubernetes restart the pod.
On SIGTERM it stops fetching, lets the batch in flight finish for up to
`NOVA_SHUTDOWN_GRACE_S` and exits; an unfinished batch is not committed and is
delivered again to whichever instance takes over its partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from importlib.metadata import version
from typing import Annotated, Any

import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.factories.asyncapi.route import AsyncAPIRoute
from faststream.asgi.types import Scope
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.specification import AsyncAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, make_asgi_app
from pydantic import PlainValidator

from nova_events.messages import AudioEventMessage
from nova_events.topics import HEADER_TRACEPARENT

from .aws import client_kwargs, session
from .batches import BatchHandler, BatchProcessor, to_record
from .kafka import kafka_security, make_producer
from .parking import KafkaDynamoDBParking, Record
from .personal import PersonalData
from .settings import NovaSettings
from .tracing import batch_span

logger = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
ReadyCheck = Callable[[], Awaitable[object]]
"""Raises (or times out) when a backend the service needs does not answer."""

MAX_BACKOFF_S = 30.0
READY_TIMEOUT_S = 5.0
DEFAULT_MAX_POLL_INTERVAL_MS = 5 * 60 * 1000
"""Kafka's default: a batch must be handled within it, or the group rebalances."""
BATCH_WAIT_MS = 20
"""How long a fetch waits for records. FastStream also sleeps this long after
a fetch that found none, so it bounds the delay an idle consumer adds to the
next record: at 10 commands/s in `make bench`, 20 ms instead of 100 took the
median from the relay's send to the read model from 54 to 38 ms."""
STUCK_AFTER_S = 180.0
"""A batch handled for longer than this, plus the key cache TTL that a batch
holding a `UserErased` waits out, means a stuck handler (a projector's or
integration's batch takes seconds). With the TTL's default (30 s) and the
liveness probe's 6 failures 10 s apart in `deploy/k8s`, the pod restarts about
4.5 min in, before the default max.poll.interval (5 min) moves the partitions."""


class ConsumerMetrics:
    def __init__(
        self, registry: CollectorRegistry, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self.lag = Gauge(
            "nova_consumer_lag",
            "Records in the partition not yet consumed by this group",
            ["partition"],
            registry=registry,
        )
        self.last_applied = Gauge(
            "nova_consumer_last_applied_timestamp_seconds",
            "When the newest event applied was produced (Unix time; 0: none yet)",
            registry=registry,
        )
        self.last_applied_age = Gauge(
            "nova_consumer_last_applied_age_seconds",
            "Seconds since the newest event applied was produced, at scrape "
            "time (NaN: none applied yet), so a stalled consumer ages",
            registry=registry,
        )
        self._newest_applied_s: float | None = None
        self.last_applied_age.set_function(self._age)
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

    def applied_up_to(self, produced_s: float) -> None:
        """The batch just applied holds an event produced at `produced_s`."""
        if self._newest_applied_s is None or produced_s > self._newest_applied_s:
            self._newest_applied_s = produced_s
            self.last_applied.set(produced_s)

    def _age(self) -> float:
        if self._newest_applied_s is None:
            return math.nan
        return max(0.0, self._clock() - self._newest_applied_s)


class ParkedAudiosReload(ConsumerRebalanceListener):  # type: ignore[misc]
    """Has the processor reload the parked audios when partitions move here,
    and drops the lag of partitions that moved away."""

    def __init__(
        self, processor: Callable[[], BatchProcessor | None], metrics: ConsumerMetrics
    ) -> None:
        self._processor = processor
        self._metrics = metrics

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(str(tp.partition))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        processor = self._processor()
        if processor is not None and assigned:
            processor.partitions_assigned()


class ConsumeLoop:
    """What the subscriber does with each batch: apply it, then commit it, or
    rewind it and wait before the retry."""

    def __init__(
        self,
        processor: BatchProcessor,
        metrics: ConsumerMetrics,
        span_attributes: Mapping[str, str],
        stopping: asyncio.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._processor = processor
        self._metrics = metrics
        self._span_attributes = dict(span_attributes)
        self._stopping = stopping
        self._clock = clock
        self._batch_started: float | None = None
        self.failures = 0
        """Consecutive batches rewound; the backoff grows with it."""

    def busy_for_s(self) -> float:
        """How long the batch in progress has been handled (its commit or
        rewind included, not the backoff after a rewind); 0 between batches."""
        started = self._batch_started
        return 0.0 if started is None else max(0.0, self._clock() - started)

    async def on_batch(self, message: KafkaMessage) -> None:
        self._batch_started = self._clock()
        try:
            delay = await self._handle(message)
        finally:
            self._batch_started = None
        if delay is not None:
            # A shutdown does not wait out the backoff: the batch is rewound.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _handle(self, message: KafkaMessage) -> float | None:
        """Apply and commit the batch, or rewind it; the backoff before the
        retry, or None."""
        processor, metrics = self._processor, self._metrics
        raws = _raws(message.raw_message)
        records = [to_record(r) for r in raws]
        applied, parked = processor.applied, processor.parked_events
        try:
            with batch_span(
                f"{records[0].topic} process" if records else "process",
                [_traceparent(r) for r in records],
                {
                    **self._span_attributes,
                    "messaging.batch.message_count": len(records),
                },
            ):
                await processor.process(records)
        except Exception:
            self.failures += 1
            metrics.batch_failures.inc()
            self._count(applied, parked)
            delay: float = min(MAX_BACKOFF_S, 0.2 * 2 ** min(self.failures, 8))
            logger.exception(
                "batch failed; rewinding to retry",
                extra={
                    "records": len(records),
                    "attempt": self.failures,
                    "retry_in_s": delay,
                },
            )
            await message.nack()
            await _record_lag(message, metrics)
            return delay
        self.failures = 0
        await message.ack()
        self._count(applied, parked)
        newest = max((r.timestamp for r in raws), default=None)
        if newest is not None:
            metrics.applied_up_to(newest / 1000)
        await _record_lag(message, metrics)
        return None

    def _count(self, applied: int, parked: int) -> None:
        metrics, processor = self._metrics, self._processor
        metrics.applied.inc(processor.applied - applied)
        metrics.parked_events.inc(processor.parked_events - parked)
        metrics.parked_aggregates.set(processor.parked_aggregates)


async def open_parking(
    settings: NovaSettings, service: str, stack: AsyncExitStack
) -> KafkaDynamoDBParking:
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
    max_poll_interval_ms: int = DEFAULT_MAX_POLL_INTERVAL_MS,
    stuck_after_s: float | None = None,
    ready_checks: Mapping[str, ReadyCheck] | None = None,
    registry: CollectorRegistry | None = None,
    description: str | None = None,
    personal: Callable[[], PersonalData | None] | None = None,
) -> AsgiFastStream:
    """An ASGI app that consumes the events topic as group `nova-<service>`.

    Its AsyncAPI document, generated by FastStream from the subscriber and the
    dead-letter publisher below, is served at `/asyncapi` (a page) and
    `/asyncapi.json`; `description` says there what the service does with the
    events.

    `max_poll_interval_ms` must exceed the longest a batch of `max_records`
    can take to handle. `/healthz` fails once the batch in progress has been
    handled for longer than `stuck_after_s` (its handler is stuck), so that
    Kubernetes restarts the instance; set it above the longest a healthy
    batch takes (by default `STUCK_AFTER_S` plus the key cache TTL).
    `ready_checks` (by name) are the service's own
    backends, asked by `/readyz` next to Kafka and the parking table; they
    also tell the processor whether a lone failing audio meets working
    backends. `/metrics` serves `registry` (a fresh one by default), so a
    service can add its own metrics next to the consumer's.

    `personal` gives, once `on_startup` ran, the `PersonalData` that opens
    each record before `handle_batch` sees it (see `nova_platform.personal`).
    """
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        security=kafka_security(settings),
        client_id=f"nova-{service}",
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
        graceful_timeout=settings.shutdown_grace_s,
    )
    registry = registry or CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    stack = AsyncExitStack()
    processor: BatchProcessor | None = None
    loop: ConsumeLoop | None = None
    parking: KafkaDynamoDBParking | None = None
    stopping = asyncio.Event()
    stuck_s = (
        stuck_after_s
        if stuck_after_s is not None
        else STUCK_AFTER_S + settings.key_cache_ttl_s
    )

    async def kafka_answers() -> None:
        if not await broker.ping(READY_TIMEOUT_S):
            raise ConnectionError(
                f"Kafka at {settings.kafka_bootstrap_servers} does not answer"
            )

    async def parking_table_answers() -> None:
        if parking is None:
            raise RuntimeError("the consumer has not opened its parking yet")
        await parking.check()

    checks: dict[str, ReadyCheck] = {
        "kafka": kafka_answers,
        "parking": parking_table_answers,
        **(ready_checks or {}),
    }

    async def backends_up() -> bool:
        return not await failing_checks(checks)

    async def start() -> None:
        nonlocal processor, loop, parking
        parking = await open_parking(settings, service, stack)
        opener = personal() if personal is not None else None
        if personal is not None and opener is None:
            raise RuntimeError(
                f"{service} did not open its personal data keys on start-up"
            )
        processor = BatchProcessor(
            handle_batch,
            parking,
            max_attempts=settings.consumer_max_attempts,
            backends_up=backends_up,
            personal=opener,
        )
        loop = ConsumeLoop(
            processor,
            metrics,
            {
                "messaging.system": "kafka",
                "messaging.consumer.group.name": settings.consumer_group(service),
            },
            stopping,
        )

    async def stop_waiting() -> None:
        stopping.set()

    subscriber = broker.subscriber(
        settings.events_topic,
        group_id=settings.consumer_group(service),
        batch=True,
        max_records=max_records,
        batch_timeout_ms=BATCH_WAIT_MS,
        max_poll_interval_ms=max_poll_interval_ms,
        auto_offset_reset="earliest",
        # The relay publishes in transactions: never read an aborted batch.
        isolation_level="read_committed",
        ack_policy=AckPolicy.MANUAL,
        decoder=_raw,
        listener=ParkedAudiosReload(lambda: processor, metrics),
        title=settings.consumer_group(service),
        description=description,
    )
    # Parking copies a record to the dead-letter topic with its key, value and
    # headers, plus the nova_dlq_* headers; declared so the document shows it.
    broker.publisher(
        settings.dead_letter_topic,
        title=f"{settings.consumer_group(service)}:dead-letter",
        description=(
            "Records this group parked (undecodable, or failing every retry), "
            "unchanged, with the headers nova_dlq_group, nova_dlq_reason and "
            "nova_dlq_source (topic/partition/offset)."
        ),
        schema=AudioEventMessage,
    )

    @subscriber
    async def on_batch(body: RecordBatch, message: KafkaMessage) -> None:
        if loop is None:
            raise RuntimeError("the consumer started before its parking")
        await loop.on_batch(message)

    @get(include_in_schema=False)
    async def liveness(scope: Scope) -> AsgiResponse:
        consuming = subscriber.running and any(not t.done() for t in subscriber.tasks)
        if not consuming:
            return _problem(503, "the consume loop is not running")
        busy_s = loop.busy_for_s() if loop is not None else 0.0
        if busy_s > stuck_s:
            return _problem(
                503,
                f"the batch in progress has been handled for {busy_s:.0f} s, "
                f"longer than {stuck_s:g} s: its handler is stuck; "
                "restart the instance (its partitions then go to another one)",
            )
        return AsgiResponse(b"", 204)

    @get(include_in_schema=False)
    async def readiness(scope: Scope) -> AsgiResponse:
        failing = await failing_checks(checks)
        if not failing:
            return AsgiResponse(b"", 204)
        return _problem(503, "a backend does not answer", failing)

    return AsgiFastStream(
        broker,
        asgi_routes=[
            ("/healthz", liveness),
            ("/readyz", readiness),
            ("/metrics", make_asgi_app(registry)),
        ],
        logger=logging.getLogger("faststream"),
        specification=AsyncAPI(
            broker,
            title=f"Nova {service}",
            version=version("nova-platform"),
            description=description,
        ),
        # No "try it out" page: it would publish to Kafka for anyone who can
        # reach this port.
        asyncapi_path=AsyncAPIRoute("/asyncapi", try_it_out_path=None),
        on_startup=[*on_startup, start],
        on_shutdown=[stop_waiting],
        after_shutdown=[*on_shutdown, stack.aclose],
    )


async def failing_checks(checks: Mapping[str, ReadyCheck]) -> dict[str, str]:
    """The checks that raise or take longer than `READY_TIMEOUT_S`, by name."""

    async def run(check: ReadyCheck) -> str | None:
        try:
            await asyncio.wait_for(check(), READY_TIMEOUT_S)
        except TimeoutError:
            return f"no answer within {READY_TIMEOUT_S:.0f}s"
        except Exception as exc:  # noqa: BLE001 - reported, the probe fails
            return repr(exc)[:300]
        return None

    names = list(checks)
    outcomes = await asyncio.gather(*(run(checks[name]) for name in names))
    return {name: error for name, error in zip(names, outcomes, strict=True) if error}


def _problem(
    status: int, title: str, failing: Mapping[str, str] | None = None
) -> AsgiResponse:
    body: dict[str, Any] = {"status": status, "title": title}
    if failing:
        body["failing"] = dict(failing)
    return AsgiResponse(
        orjson.dumps(body), status, headers={"content-type": "application/problem+json"}
    )


# What a batch handler is documented to receive: the records' values. The
# decoder below hands FastStream nothing to validate, so this only feeds the
# AsyncAPI document; the BatchProcessor decodes and upcasts each record.
RecordBatch = Annotated[
    Any,
    PlainValidator(lambda value: value, json_schema_input_type=list[AudioEventMessage]),
]


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
    """Lag of each assigned partition; after a rewind, counted from the rewind."""
    consumer = getattr(message, "consumer", None)
    if consumer is None:
        return
    try:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            metrics.lag.labels(partition=str(tp.partition)).set(
                max(0, highwater - position)
            )
    except Exception:
        # Only a metric: a Kafka hiccup here must not skip the retry backoff.
        logger.warning("consumer lag unknown", exc_info=True)
