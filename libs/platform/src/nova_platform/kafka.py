"""Kafka settings and message shapes shared by the relay and the consumers."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from nova_events import EventEnvelope, dumps
from nova_events import topics as t

from .settings import NovaSettings

Headers = list[tuple[str, bytes]]


def make_producer(settings: NovaSettings, **overrides: object) -> AIOKafkaProducer:
    """A producer that does not lose acknowledged messages or reorder retries."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def message_key(envelope: EventEnvelope) -> bytes:
    """Events of one audio share a key, hence a partition, hence an order."""
    return str(envelope.aggregate_id).encode()


def message_headers(envelope: EventEnvelope) -> Headers:
    meta = envelope.metadata
    headers: Headers = [
        (t.HEADER_EVENT_TYPE, envelope.event_type.encode()),
        (t.HEADER_SCHEMA_VERSION, str(envelope.schema_version).encode()),
        (t.HEADER_CORRELATION_ID, meta.correlation_id.encode()),
    ]
    if meta.causation_id:
        headers.append((t.HEADER_CAUSATION_ID, meta.causation_id.encode()))
    if meta.traceparent:
        headers.append((t.HEADER_TRACEPARENT, meta.traceparent.encode()))
    return headers


def message_value(envelope: EventEnvelope) -> bytes:
    return dumps(envelope)
