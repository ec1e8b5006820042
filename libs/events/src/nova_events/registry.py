"""Maps an envelope's `(event_type, schema_version)` to its payload model."""

from __future__ import annotations

from .audio import AUDIO_EVENTS, DomainEvent
from .envelope import EventEnvelope


class UnknownEventError(ValueError):
    """Raised when an envelope names an event type or schema version this
    package does not know; upgrade `nova-events` on the reading service."""


_MODELS: dict[str, type[DomainEvent]] = {m.event_type(): m for m in AUDIO_EVENTS}


def model_for(event_type: str, schema_version: int) -> type[DomainEvent]:
    """The payload model of `event_type` at `schema_version`."""
    model = _MODELS.get(event_type)
    if model is None:
        raise UnknownEventError(
            f"unknown event type {event_type!r}; known: {sorted(_MODELS)}"
        )
    if schema_version != model.schema_version:
        raise UnknownEventError(
            f"{event_type} schema version {schema_version} is not supported; this "
            f"reader knows version {model.schema_version}"
        )
    return model


def decode_payload(envelope: EventEnvelope) -> DomainEvent:
    """The typed payload of `envelope`, validated against its model."""
    model = model_for(envelope.event_type, envelope.schema_version)
    return model.model_validate(envelope.data)


def encode_payload(event: DomainEvent) -> dict[str, object]:
    """The JSON-ready payload of `event`, as stored in an envelope's `data`."""
    return event.model_dump(mode="json")
