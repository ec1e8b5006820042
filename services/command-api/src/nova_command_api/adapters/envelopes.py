"""Builds the envelopes of a commit: consecutive versions, one timestamp; and
their stored form, personal fields sealed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from nova_events import (
    EventEnvelope,
    EventMetadata,
    EventPayload,
    dumps,
    encode_payload,
)
from nova_events.personal import personal_fields
from nova_platform.personal import PersonalData

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
    events: Sequence[EventPayload],
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
    _check_sizes(envelopes)
    return envelopes


async def stored_envelopes(
    envelopes: Sequence[EventEnvelope],
    personal: PersonalData | None,
    owner: UUID | None,
) -> list[EventEnvelope]:
    """What the store writes for `envelopes`: personal fields sealed with the
    key of `owner` (for an `AudioCreated`, its `user_id` by default), each
    still within one item. Without `personal`, the envelopes themselves."""
    if personal is None:
        return list(envelopes)
    stored: list[EventEnvelope] = []
    for envelope in envelopes:
        if not personal_fields(envelope.event_type, envelope.schema_version):
            stored.append(envelope)
            continue
        sealer = owner or _named_owner(envelope)
        stored.append(await personal.seal(envelope, sealer))
    # Sealed text takes a third more room (base64).
    _check_sizes(stored)
    return stored


def _named_owner(envelope: EventEnvelope) -> UUID:
    named = envelope.data.get("user_id")
    if named is None:
        raise ValueError(
            f"{envelope.event_type} holds personal data but names no owner; "
            "pass owner= (the audio's user) to append_events"
        )
    return UUID(str(named))


def _check_sizes(envelopes: Sequence[EventEnvelope]) -> None:
    for envelope in envelopes:
        size = len(dumps(envelope))
        if size > MAX_EVENT_BYTES:
            raise EventTooLargeError(envelope.event_type, size)
