"""The AsyncAPI document of what command-api's side puts on Kafka.

The relay publishes with a transactional aiokafka producer, not through
FastStream; this declares its publication on a FastStream broker that never
connects, so FastStream generates the document from the same event models the
consumers' documents use. Served by command-api at `/commands/asyncapi.json`,
beside its OpenAPI document.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from nova_events.messages import AudioEventMessage
from nova_events.topics import (
    HEADER_CAUSATION_ID,
    HEADER_CORRELATION_ID,
    HEADER_EVENT_TYPE,
    HEADER_SCHEMA_VERSION,
    HEADER_TRACEPARENT,
)
from nova_platform.settings import NovaSettings

RELAY_DESCRIPTION = (
    "Every committed event of the event store, published once per commit (at "
    "least once across relay restarts), in stream-version order per audio. Key: "
    "the audio id. Value: the JSON envelope. Headers: "
    f"{HEADER_EVENT_TYPE}, {HEADER_SCHEMA_VERSION}, {HEADER_CORRELATION_ID}, "
    f"{HEADER_CAUSATION_ID} (when known), {HEADER_TRACEPARENT} (when traced). "
    "Published in Kafka transactions: read with isolation.level=read_committed."
)


def relay_asyncapi(settings: NovaSettings) -> dict[str, Any]:
    """The relay's publication as an AsyncAPI 3.0 document (a JSON object)."""
    broker = KafkaBroker(settings.kafka_bootstrap_servers)
    broker.publisher(
        settings.events_topic,
        title="nova-relay",
        description=RELAY_DESCRIPTION,
        schema=AudioEventMessage,
    )
    document = AsyncAPI(
        broker,
        title="Nova events",
        version=version("nova-command-api"),
        description=(
            "The topic every Nova consumer reads. Each consumer serves its own "
            "document at /asyncapi.json on its HTTP port."
        ),
    )
    return dict(document.to_specification().to_jsonable())
