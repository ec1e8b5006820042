"""The consume loop shared by every Kafka consumer service.

Records arrive in batches; the batch's effects are applied by the service's
handler, and only then is the offset committed. A failed batch is rewound
(not committed) and retried with exponential backoff, so a transient outage
of a backend delays the projection but never loses an event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from nova_events import EventEnvelope, loads

from .settings import NovaSettings

logger = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[EventEnvelope]], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]

MAX_BACKOFF_S = 30.0


def decode_records(records: Sequence[Any]) -> list[EventEnvelope]:
    """Envelopes of a batch's records; an undecodable record is logged and left out."""
    envelopes: list[EventEnvelope] = []
    for record in records:
        try:
            envelopes.append(loads(record.value))
        except (ValidationError, ValueError) as exc:
            logger.error(
                "undecodable record skipped",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "error": str(exc)[:500],
                },
            )
    return envelopes


async def _raw(message: Any) -> Any:
    # Records are decoded (and validated) by `decode_records`, once, not by
    # FastStream's JSON decoding.
    return None


def build_consumer_app(
    settings: NovaSettings,
    *,
    service: str,
    handle_batch: BatchHandler,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    max_records: int = 500,
) -> AsgiFastStream:
    """An ASGI app that consumes the events topic as group `nova-<service>`.

    It serves `/healthz` and `/readyz` (the broker answers) beside the consumer.
    """
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"nova-{service}",
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
    )
    failures = 0

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
        records = message.raw_message
        batch = records if isinstance(records, tuple) else (records,)
        envelopes = decode_records(batch)
        try:
            await handle_batch(envelopes)
        except Exception:
            failures += 1
            delay = min(MAX_BACKOFF_S, 0.2 * 2 ** min(failures, 8))
            logger.exception(
                "batch failed; rewinding to retry",
                extra={"records": len(batch), "attempt": failures, "retry_in_s": delay},
            )
            await message.nack()
            await asyncio.sleep(delay)
            return
        failures = 0
        await message.ack()
        logger.debug("batch applied", extra={"records": len(batch)})

    ping = make_ping_asgi(broker, timeout=5.0, include_in_schema=False)
    return AsgiFastStream(
        broker,
        logger=logging.getLogger("faststream"),
        asgi_routes=[("/healthz", ping), ("/readyz", ping)],
        on_startup=list(on_startup),
        after_shutdown=list(on_shutdown),
    )
