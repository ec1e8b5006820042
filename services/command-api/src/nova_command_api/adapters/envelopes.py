"""Builds the envelopes of a commit: consecutive versions, one timestamp."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from nova_events import DomainEvent, EventEnvelope, EventMetadata, dumps, encode_payload

from ..application.ports import MAX_EVENT_BYTES, EventTooLargeError


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is refused, its instant is unknown."""
    if moment.utcoffset() is None:
        raise ValueError(
            f"from_time must be timezone-aware (got {moment.isoformat()}); "
            "pass e.g. datetime.now(UTC)"
        )
    return moment.astimezone(UTC)


def new_envelopes(
    aggregate_type: str,
    aggregate_id: UUID,
    events: Sequence[DomainEvent],
    expected_version: int,
    metadata: EventMetadata,
    occurred_at: datetime | None = None,
) -> list[EventEnvelope]:
    if not events:
        raise ValueError("append_events needs at least one event")
    if expected_version < 0:
        raise ValueError(f"expected_version must be >= 0, got {expected_version}")
    occurred_at = occurred_at or utc_now()
    envelopes = [
        EventEnvelope(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            event_type=event.event_type(),
            schema_version=event.schema_version,
            version=expected_version + offset,
            occurred_at=occurred_at,
            metadata=metadata,
            data=encode_payload(event),
        )
        for offset, event in enumerate(events, start=1)
    ]
    for envelope in envelopes:
        size = len(dumps(envelope))
        if size > MAX_EVENT_BYTES:
            raise EventTooLargeError(envelope.event_type, size)
    return envelopes
