"""Events as the store holds them, for tests that write streams by hand."""

from __future__ import annotations

from uuid import UUID

from nova_events import EventEnvelope, EventMetadata, EventPayload, encode_payload


def envelope(
    aggregate_type: str,
    aggregate_id: UUID,
    version: int,
    event: EventPayload,
    *,
    correlation_id: str = "c",
) -> EventEnvelope:
    """`event` as version `version` of the stream, in plaintext."""
    return EventEnvelope(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_type=event.event_type(),
        schema_version=event.schema_version,
        version=version,
        metadata=EventMetadata(correlation_id=correlation_id),
        data=encode_payload(event),
    )
