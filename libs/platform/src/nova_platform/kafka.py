"""Kafka settings and message shapes shared by the relay and the consumers."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from faststream.kafka.security import parse_security
from faststream.security import (
    BaseSecurity,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)

from nova_events import EventEnvelope, dumps
from nova_events import topics as t

from .settings import NovaSettings

Headers = list[tuple[str, bytes]]


_SASL = {
    "PLAIN": SASLPlaintext,
    "SCRAM-SHA-256": SASLScram256,
    "SCRAM-SHA-512": SASLScram512,
}


def kafka_security(settings: NovaSettings) -> BaseSecurity | None:
    """How every Kafka client of Nova reaches the brokers: TLS and SASL sign-in.

    FastStream's broker takes this object; `kafka_client_options` turns it into
    aiokafka's arguments, so both kinds of client connect the same way.
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    use_ssl = protocol.endswith("SSL")
    context: ssl.SSLContext | None = None
    if use_ssl:
        context = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    # The settings' validator guarantees the sign-in's parts for SASL_*.
    assert settings.kafka_sasl_mechanism is not None
    assert settings.kafka_sasl_username is not None
    assert settings.kafka_sasl_password is not None
    return _SASL[settings.kafka_sasl_mechanism](
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=use_ssl,
    )


def kafka_client_options(settings: NovaSettings) -> dict[str, Any]:
    """`bootstrap_servers` and the security arguments of an aiokafka client."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap_servers}
    options.update(parse_security(kafka_security(settings)))
    return options


def make_producer(settings: NovaSettings, **overrides: object) -> AIOKafkaProducer:
    """A producer that does not lose acknowledged messages or reorder retries."""
    options: dict[str, object] = {
        **kafka_client_options(settings),
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
